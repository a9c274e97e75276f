//! Folder listings kept for lookups. A process that stats, opens or removes
//! many names of one folder (`ls -l` without readdirplus, `stat` of a file
//! list, `git status`, a build's dependency checks) costs the kernel one
//! LOOKUP per name, and each would be a round trip to the meta leader.
//! After a few lookups in one folder find names, the mount reads the
//! folder's entries with their attributes in one call and answers the next
//! lookups there from it, for the attribute TTL: the freshness the kernel
//! already gives a name it has looked up once.
//!
//! Two rules keep this honest:
//! - only names a listing holds are answered from it; a name it lacks is
//!   asked of the cluster (another mount may just have made it);
//! - a listing holds only while this mount has changed nothing in the
//!   cluster since it was read (its count of finished namespace writes is
//!   the one the listing was read at), so the mount's own changes always
//!   show. An unlink or rmdir whose write is the only one in between updates
//!   the listing instead, so that `rm` of listed names keeps it.
//!
//! Listings are per caller: the cluster decided what the caller who read it
//! may see.

use nimbus_proto as pb;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lookups in one folder that find a name, within the TTL, before the next
/// one reads the folder's listing.
const FOUND_BEFORE_LISTING: u32 = 2;
/// Entries read per listing (the meta servers' largest readdir page): a
/// bigger folder is listed in part, and its other names are asked for.
pub const LISTING_MAX: u32 = 4096;
/// Folders whose listing the mount keeps.
const MAX_LISTINGS: usize = 64;
/// Folders whose lookups the mount counts.
const MAX_COUNTED: usize = 1024;
/// A listing dropped by a change of this mount's before it answered this
/// many lookups did not pay for itself: the folder is not listed again
/// for `BACKOFF_TTLS` TTLs (a `chmod -R` looks up and changes in turn).
const PAYOFF_HITS: u32 = 8;
const BACKOFF_TTLS: u32 = 10;

/// What a lookup should do, as the listings see it.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// The name, as listed.
    Listed(pb::Attr, Duration),
    /// Read the folder's listing first.
    List,
    /// Ask the cluster for this name.
    Ask,
}

struct Listing {
    caller: pb::Caller,
    read_at: Instant,
    /// This mount's finished namespace writes when it was read.
    writes: u64,
    entries: HashMap<Vec<u8>, pb::Attr>,
    hits: u32,
}

/// Lookups in one folder since `since`.
struct Count {
    since: Instant,
    found: u32,
    /// Not listed again before this.
    quiet_until: Option<Instant>,
}

/// The listings of one mount.
pub struct Listings {
    ttl: Duration,
    enabled: bool,
    folders: HashMap<u64, Listing>,
    counts: HashMap<u64, Count>,
}

impl Listings {
    /// Listings kept for `ttl`; none at all when `enabled` is false or the
    /// TTL is zero.
    pub fn new(ttl: Duration, enabled: bool) -> Listings {
        Listings {
            ttl,
            enabled: enabled && !ttl.is_zero(),
            folders: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// How to look up `name` in `parent` for `caller`, `writes` being this
    /// mount's finished namespace writes now.
    pub fn plan(&mut self, parent: u64, name: &[u8], caller: &pb::Caller, writes: u64, now: Instant) -> Plan {
        if !self.enabled || name == b"." || name == b".." {
            return Plan::Ask;
        }
        if let Some(l) = self.folders.get_mut(&parent) {
            let age = now.saturating_duration_since(l.read_at);
            if age < self.ttl && l.writes == writes && l.caller == *caller {
                return match l.entries.get(name) {
                    Some(a) => {
                        l.hits += 1;
                        Plan::Listed(*a, self.ttl - age)
                    }
                    None => Plan::Ask,
                };
            }
            self.drop_listing(parent, now);
        }
        let ttl = self.ttl;
        match self.counts.get_mut(&parent) {
            Some(c) if c.quiet_until.is_some_and(|t| now < t) => Plan::Ask,
            Some(c) if now.saturating_duration_since(c.since) < ttl && c.found >= FOUND_BEFORE_LISTING => {
                // One lookup reads the listing; concurrent ones ask meanwhile.
                c.found = 0;
                Plan::List
            }
            _ => Plan::Ask,
        }
    }

    /// Records that the cluster found a name in `parent`.
    pub fn found(&mut self, parent: u64, now: Instant) {
        if !self.enabled {
            return;
        }
        if self.counts.len() >= MAX_COUNTED && !self.counts.contains_key(&parent) {
            let ttl = self.ttl;
            self.counts
                .retain(|_, c| now.saturating_duration_since(c.since) < ttl || c.quiet_until.is_some_and(|t| now < t));
            if self.counts.len() >= MAX_COUNTED {
                self.counts.clear();
            }
        }
        let ttl = self.ttl;
        let c = self.counts.entry(parent).or_insert(Count {
            since: now,
            found: 0,
            quiet_until: None,
        });
        if now.saturating_duration_since(c.since) >= ttl {
            c.since = now;
            c.found = 0;
        }
        c.found += 1;
    }

    /// Keeps the listing of `parent` read for `caller` when this mount had
    /// finished `writes` namespace writes; `complete` when it holds every
    /// entry. Entries without attributes (a folder the caller may list but
    /// not search) are not kept.
    pub fn keep(&mut self, parent: u64, caller: pb::Caller, writes: u64, page: pb::DirPage, now: Instant) {
        if !self.enabled {
            return;
        }
        let mut entries = HashMap::with_capacity(page.entries.len());
        for e in page.entries {
            let Some(a) = e.attr else {
                self.quiet(parent, now);
                return;
            };
            entries.insert(e.name, a);
        }
        if page.more {
            // Part of a big folder: kept, but not read again soon.
            self.quiet(parent, now);
        }
        if self.folders.len() >= MAX_LISTINGS && !self.folders.contains_key(&parent) {
            let ttl = self.ttl;
            self.folders
                .retain(|_, l| now.saturating_duration_since(l.read_at) < ttl);
            if self.folders.len() >= MAX_LISTINGS {
                if let Some(oldest) = self.folders.iter().min_by_key(|(_, l)| l.read_at).map(|(k, _)| *k) {
                    self.folders.remove(&oldest);
                }
            }
        }
        self.folders.insert(
            parent,
            Listing {
                caller,
                read_at: now,
                writes,
                entries,
                hits: 0,
            },
        );
    }

    /// The cluster would not list `parent` for this caller (or it is too
    /// big to list whole): per-name lookups for a while.
    pub fn quiet(&mut self, parent: u64, now: Instant) {
        let until = now + self.ttl * BACKOFF_TTLS;
        let c = self.counts.entry(parent).or_insert(Count {
            since: now,
            found: 0,
            quiet_until: None,
        });
        c.quiet_until = Some(until);
        c.found = 0;
    }

    /// `name` left `parent` through this mount (unlink, rmdir), the only
    /// namespace write that finished while the count went from `before` to
    /// `after`: the listing stays, without it. Anything less certain drops
    /// the listing, as would any other change.
    pub fn removed(&mut self, parent: u64, name: &[u8], before: u64, after: u64) {
        let Some(l) = self.folders.get_mut(&parent) else {
            return;
        };
        let only_write = after == before + 1 && l.writes == before;
        // A file with other names: their link counts changed too.
        let single = l
            .entries
            .get(name)
            .is_some_and(|a| a.kind == pb::FileKind::Directory as i32 || a.nlink <= 1);
        if only_write && single {
            l.entries.remove(name);
            l.writes = after;
        } else {
            self.folders.remove(&parent);
        }
    }

    fn drop_listing(&mut self, parent: u64, now: Instant) {
        let Some(l) = self.folders.remove(&parent) else {
            return;
        };
        let fresh = now.saturating_duration_since(l.read_at) < self.ttl;
        if fresh && l.hits < PAYOFF_HITS {
            // Dropped by this mount's changes before it paid for itself.
            self.quiet(parent, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1);

    fn me() -> pb::Caller {
        pb::Caller {
            uid: 1000,
            gids: vec![1000],
        }
    }

    fn attr(ino: u64, nlink: u32) -> pb::Attr {
        pb::Attr {
            ino,
            kind: pb::FileKind::Regular as i32,
            nlink,
            ..Default::default()
        }
    }

    fn page(names: &[(&str, u64, u32)], more: bool) -> pb::DirPage {
        pb::DirPage {
            entries: names
                .iter()
                .enumerate()
                .map(|(i, (n, ino, nlink))| pb::DirEntry {
                    name: n.as_bytes().to_vec(),
                    ino: *ino,
                    kind: pb::FileKind::Regular as i32,
                    cookie: i as u64 + 1,
                    attr: Some(attr(*ino, *nlink)),
                })
                .collect(),
            more,
        }
    }

    /// Two found lookups in a folder; the third plan says List.
    fn counted(l: &mut Listings, parent: u64, t: Instant) {
        assert_eq!(l.plan(parent, b"a", &me(), 5, t), Plan::Ask);
        l.found(parent, t);
        assert_eq!(l.plan(parent, b"b", &me(), 5, t), Plan::Ask);
        l.found(parent, t);
        assert_eq!(l.plan(parent, b"c", &me(), 5, t), Plan::List);
    }

    #[test]
    fn a_folder_is_listed_after_two_names_are_found_and_answers_for_the_ttl() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true);
        counted(&mut l, 7, t);
        assert_eq!(l.plan(7, b"c", &me(), 5, t), Plan::Ask, "one lookup reads the listing");
        l.keep(7, me(), 5, page(&[("c", 30, 1), ("d", 40, 1)], false), t);
        let later = t + Duration::from_millis(400);
        assert_eq!(
            l.plan(7, b"d", &me(), 5, later),
            Plan::Listed(attr(40, 1), Duration::from_millis(600)),
            "what is left of the TTL, so that the kernel keeps it no longer"
        );
        assert_eq!(
            l.plan(7, b"zz", &me(), 5, later),
            Plan::Ask,
            "a missing name is asked for"
        );
        assert_eq!(l.plan(7, b"d", &me(), 5, t + TTL), Plan::Ask, "expired");
    }

    #[test]
    fn a_change_through_this_mount_or_another_caller_is_never_answered_from_a_listing() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1)], false), t);
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask, "a write finished since");
        assert_eq!(
            l.plan(7, b"c", &me(), 5, t),
            Plan::Ask,
            "the listing was dropped, not kept for a later match"
        );
        assert!(!l.folders.contains_key(&7));

        counted(&mut l, 8, t);
        l.keep(8, me(), 5, page(&[("c", 30, 1)], false), t);
        let other = pb::Caller { uid: 0, gids: vec![0] };
        assert_eq!(l.plan(8, b"c", &other, 5, t), Plan::Ask, "read for another caller");
    }

    #[test]
    fn an_unlink_that_was_the_only_write_keeps_the_listing() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1), ("d", 40, 1), ("h", 50, 2)], false), t);
        l.removed(7, b"c", 5, 6);
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask);
        assert!(matches!(l.plan(7, b"d", &me(), 6, t), Plan::Listed(..)));
        // Another write finished meanwhile: no longer certain.
        l.removed(7, b"d", 6, 8);
        assert!(!l.folders.contains_key(&7));

        counted(&mut l, 8, t);
        l.keep(8, me(), 5, page(&[("h", 50, 2), ("k", 50, 2)], false), t);
        l.removed(8, b"h", 5, 6);
        assert!(!l.folders.contains_key(&8), "a hard link's other name changed too");
    }

    #[test]
    fn a_listing_that_did_not_pay_quiets_the_folder_and_a_big_one_is_kept_in_part() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1)], false), t);
        // A chmod here, then lookups again: not listed for a while.
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask);
        l.found(7, t);
        l.found(7, t);
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask);
        let after = t + TTL * BACKOFF_TTLS;
        l.found(7, after);
        l.found(7, after);
        assert_eq!(l.plan(7, b"c", &me(), 6, after), Plan::List);

        counted(&mut l, 9, t);
        l.keep(9, me(), 5, page(&[("c", 30, 1)], true), t);
        assert!(matches!(l.plan(9, b"c", &me(), 5, t), Plan::Listed(..)));
        let expired = t + TTL;
        l.found(9, expired);
        l.found(9, expired);
        assert_eq!(l.plan(9, b"x", &me(), 5, expired), Plan::Ask, "not read again soon");
    }

    #[test]
    fn off_means_always_ask() {
        let t = Instant::now();
        for mut l in [Listings::new(TTL, false), Listings::new(Duration::ZERO, true)] {
            for _ in 0..5 {
                l.found(7, t);
            }
            assert_eq!(l.plan(7, b"c", &me(), 5, t), Plan::Ask);
        }
    }
}
