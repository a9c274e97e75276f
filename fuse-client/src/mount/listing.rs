//! Folder listings kept for lookups. A process that stats, opens, creates
//! or removes many names of one folder (`ls -l` without readdirplus, `stat`
//! of a file list, `git status`, `tar x`, `cp -a`, a build's dependency
//! checks) costs the kernel one LOOKUP per name, and each would be a round
//! trip to the meta leader. After a few lookups in one folder, the mount
//! reads the folder's entries with their attributes in one call and answers
//! the next lookups there from it, for the attribute TTL: the freshness the
//! kernel already gives a name it has looked up once, found or missing.
//!
//! Three rules keep this honest:
//! - a listing holds only while every change this mount made in the cluster
//!   since it was read is one the listing took in: its count of finished
//!   namespace writes is the one the listing has reached. A create, mkdir,
//!   unlink or rmdir that was the only write to finish while it ran is
//!   taken in by every listing (the name added with the attributes the
//!   cluster answered, or taken out, in its folder's listing; the folder's
//!   own entry in its parent's listing, whose times changed, asked for
//!   again); any other change drops them all, so the mount's own changes
//!   always show;
//! - a name a listing lacks is missing only if the listing is the whole
//!   folder (read in one page, or a folder made here and empty since);
//!   otherwise it is asked for;
//! - listings are per caller: the cluster decided what the caller who read
//!   it may see.
//!
//! Another mount's changes show once the TTL from the listing's read has
//! passed, as they do for names the kernel keeps.

use nimbus_proto as pb;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lookups in one folder, within the TTL, before the next one reads the
/// folder's listing.
const LOOKED_BEFORE_LISTING: u32 = 2;
/// Entries read per listing (the meta servers' largest readdir page): a
/// bigger folder is listed in part, and its other names are asked for.
pub const LISTING_MAX: u32 = 4096;
/// Entries a listing grows to through this mount's own creates.
const GROWN_MAX: usize = 65_536;
/// Folders whose listing the mount keeps.
const MAX_LISTINGS: usize = 64;
/// Folders whose lookups the mount counts.
const MAX_COUNTED: usize = 1024;
/// A listing dropped by a change of this mount's before it answered this
/// many lookups did not pay for itself: the folder is not listed again
/// for `BACKOFF_TTLS` TTLs (a `chmod -R` looks up and changes in turn).
/// One that did is read again as soon as it expires.
const PAYOFF_HITS: u32 = 8;
const BACKOFF_TTLS: u32 = 10;

/// What a lookup should do, as the listings see it.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// The name, as listed, for what is left of the TTL.
    Listed(pb::Attr, Duration),
    /// The whole folder is listed without the name: missing, for what is
    /// left of the TTL.
    Missing(Duration),
    /// Read the folder's listing first.
    List,
    /// Ask the cluster for this name.
    Ask,
}

impl Plan {
    /// The lookup's answer when the listing gave one: the name's
    /// attributes (None: missing) and for how long.
    pub fn answer(self) -> Option<(Option<pb::Attr>, Duration)> {
        match self {
            Plan::Listed(a, ttl) => Some((Some(a), ttl)),
            Plan::Missing(ttl) => Some((None, ttl)),
            Plan::List | Plan::Ask => None,
        }
    }
}

/// A change this mount made in a folder, as the cluster answered it.
#[derive(Debug)]
pub enum Change<'a> {
    /// A name made (create, mkdir, mknod, symlink) with these attributes.
    Added(&'a [u8], pb::Attr),
    /// A name removed (unlink, rmdir).
    Removed(&'a [u8]),
}

struct Listing {
    caller: pb::Caller,
    read_at: Instant,
    /// This mount's finished namespace writes the listing holds.
    writes: u64,
    /// Names and attributes; false: the attributes changed here since (a
    /// folder's times), so they are asked for.
    entries: HashMap<Vec<u8>, (pb::Attr, bool)>,
    /// The entries' names by inode (more than one: hard links).
    inos: HashMap<u64, Vec<Vec<u8>>>,
    /// Every entry of the folder, so that a name it lacks is missing.
    complete: bool,
    hits: u32,
    /// What the cluster said a new file made here would be (the caller's
    /// rights, the folder's default ACL and group), by what was asked, with
    /// when it answered.
    plans: Vec<(PlanKey, pb::Attr, Instant)>,
}

/// What a plan for a new node depends on besides its folder and caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanKey {
    kind: i32,
    perm: u32,
    umask: Option<u32>,
    rdev: u32,
}

impl PlanKey {
    /// The key of a plan for `node`.
    pub fn of(node: &pb::MakeNode) -> PlanKey {
        PlanKey {
            kind: node.kind,
            perm: node.perm,
            umask: node.umask,
            rdev: node.rdev,
        }
    }
}

/// Plans kept per listing.
const MAX_PLANS: usize = 4;

/// Lookups in one folder since `since`.
struct Count {
    since: Instant,
    looked: u32,
    /// Not listed again before this.
    quiet_until: Option<Instant>,
}

/// The listings of one mount.
pub struct Listings {
    ttl: Duration,
    enabled: bool,
    /// Whether a whole listing answers that a name it lacks is missing.
    missing: bool,
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
            missing: false,
            folders: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// With `yes`, a whole listing answers that a name it lacks is missing
    /// (another mount's new names then show only after the TTL); else such
    /// names are asked for.
    pub fn answer_missing(self, yes: bool) -> Listings {
        Listings { missing: yes, ..self }
    }

    /// How to look up `name` in `parent` for `caller`, `writes` being this
    /// mount's finished namespace writes now.
    pub fn plan(&mut self, parent: u64, name: &[u8], caller: &pb::Caller, writes: u64, now: Instant) -> Plan {
        if !self.enabled || name == b"." || name == b".." {
            return Plan::Ask;
        }
        let mut read_again = false;
        if let Some(l) = self.folders.get_mut(&parent) {
            let age = now.saturating_duration_since(l.read_at);
            if age < self.ttl && l.writes == writes && l.caller == *caller {
                let left = self.ttl - age;
                return match l.entries.get(name) {
                    Some((a, true)) => {
                        l.hits += 1;
                        Plan::Listed(*a, left)
                    }
                    Some((_, false)) => Plan::Ask,
                    None if l.complete && self.missing => {
                        l.hits += 1;
                        Plan::Missing(left)
                    }
                    None => Plan::Ask,
                };
            }
            // Expired, not dropped by a change: worth reading again now.
            read_again = age >= self.ttl && l.writes == writes && l.hits >= PAYOFF_HITS;
            self.drop_listing(parent, now);
        }
        let ttl = self.ttl;
        match self.counts.get_mut(&parent) {
            Some(c) if c.quiet_until.is_some_and(|t| now < t) => Plan::Ask,
            _ if read_again => Plan::List,
            Some(c) if now.saturating_duration_since(c.since) < ttl && c.looked >= LOOKED_BEFORE_LISTING => {
                // One lookup reads the listing; concurrent ones ask meanwhile.
                c.looked = 0;
                Plan::List
            }
            _ => Plan::Ask,
        }
    }

    /// Records that the cluster answered a lookup in `parent` (the name
    /// found or missing).
    pub fn looked(&mut self, parent: u64, now: Instant) {
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
            looked: 0,
            quiet_until: None,
        });
        if now.saturating_duration_since(c.since) >= ttl {
            c.since = now;
            c.looked = 0;
        }
        c.looked += 1;
    }

    /// Keeps the listing of `parent` read for `caller` when this mount had
    /// finished `writes` namespace writes. Entries without attributes (a
    /// folder the caller may list but not search) are not kept.
    pub fn keep(&mut self, parent: u64, caller: pb::Caller, writes: u64, page: pb::DirPage, now: Instant) {
        if !self.enabled {
            return;
        }
        let mut entries = HashMap::with_capacity(page.entries.len());
        let mut inos: HashMap<u64, Vec<Vec<u8>>> = HashMap::with_capacity(page.entries.len());
        for e in page.entries {
            let Some(a) = e.attr else {
                self.quiet(parent, now);
                return;
            };
            inos.entry(a.ino).or_default().push(e.name.clone());
            entries.insert(e.name, (a, true));
        }
        if page.more {
            // Part of a big folder: kept, but not read again soon.
            self.quiet(parent, now);
        }
        self.insert(
            parent,
            Listing {
                caller,
                read_at: now,
                writes,
                entries,
                inos,
                complete: !page.more,
                hits: 0,
                plans: Vec::new(),
            },
            now,
        );
    }

    /// `dir` was made by `caller` through this mount, the only namespace
    /// write that finished while the count went from `before` to `after`:
    /// it is empty, and its listing is known without reading it.
    pub fn made_empty(&mut self, dir: u64, caller: pb::Caller, before: u64, after: u64, now: Instant) {
        if !self.enabled || after != before + 1 {
            return;
        }
        self.insert(
            dir,
            Listing {
                caller,
                read_at: now,
                writes: after,
                entries: HashMap::new(),
                inos: HashMap::new(),
                complete: true,
                hits: 0,
                plans: Vec::new(),
            },
            now,
        );
    }

    /// What a new node `name` in `parent` made by `caller` would be, from
    /// a plan kept with the folder's listing, when that listing holds and
    /// is the whole folder without the name: its times moved on by the
    /// plan's age. None: ask the cluster for a plan.
    pub fn planned(
        &mut self,
        parent: u64,
        name: &[u8],
        caller: &pb::Caller,
        writes: u64,
        key: PlanKey,
        now: Instant,
    ) -> Option<pb::Attr> {
        let l = self.folders.get(&parent)?;
        let valid = now.saturating_duration_since(l.read_at) < self.ttl
            && l.writes == writes
            && l.caller == *caller
            && l.complete
            && !l.entries.contains_key(name);
        if !valid {
            return None;
        }
        let (_, a, at) = l.plans.iter().find(|(k, _, _)| *k == key)?;
        let age = i64::try_from(now.saturating_duration_since(*at).as_nanos()).unwrap_or(i64::MAX);
        let born = a.ctime_ns.saturating_add(age);
        Some(pb::Attr {
            atime_ns: born,
            mtime_ns: born,
            ctime_ns: born,
            ..*a
        })
    }

    /// Keeps the cluster's plan `a` for a node like `key` in `parent`, asked
    /// by `caller` at `at` when this mount had finished `writes` namespace
    /// writes, with the folder's listing if that still holds.
    pub fn keep_plan(&mut self, parent: u64, caller: &pb::Caller, writes: u64, key: PlanKey, a: pb::Attr, at: Instant) {
        let Some(l) = self.folders.get_mut(&parent) else {
            return;
        };
        if l.writes != writes || l.caller != *caller {
            return;
        }
        l.plans.retain(|(k, _, _)| *k != key);
        if l.plans.len() >= MAX_PLANS {
            l.plans.remove(0);
        }
        l.plans.push((key, a, at));
    }

    fn insert(&mut self, parent: u64, listing: Listing, now: Instant) {
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
        self.folders.insert(parent, listing);
    }

    /// The cluster would not list `parent` for this caller (or it is too
    /// big to list whole): per-name lookups for a while.
    pub fn quiet(&mut self, parent: u64, now: Instant) {
        let until = now + self.ttl * BACKOFF_TTLS;
        let c = self.counts.entry(parent).or_insert(Count {
            since: now,
            looked: 0,
            quiet_until: None,
        });
        c.quiet_until = Some(until);
        c.looked = 0;
    }

    /// `change` was made in `parent` through this mount, successfully, the
    /// only namespace write that finished while the count went from
    /// `before` to `after`: every listing that held the count before takes
    /// it in and stays. Anything less certain leaves the others behind the
    /// count (dropped when next asked) and drops the folder's own listing.
    pub fn changed(&mut self, parent: u64, change: Change, before: u64, after: u64) {
        // A file with other names: their link counts changed too, wherever
        // they are listed.
        let single = |a: &pb::Attr| a.kind == pb::FileKind::Directory as i32 || a.nlink <= 1;
        let removed = match change {
            Change::Removed(name) => self
                .folders
                .get(&parent)
                .and_then(|l| l.entries.get(name).map(|(a, _)| *a)),
            Change::Added(..) => None,
        };
        let certain = after == before + 1
            && match change {
                Change::Added(_, a) => single(&a),
                Change::Removed(_) => removed.is_some_and(|a| single(&a)),
            };
        if !certain {
            self.folders.remove(&parent);
            return;
        }
        if let Some(l) = self.folders.get_mut(&parent) {
            let taken = l.writes == before
                && match change {
                    Change::Added(name, a) if l.entries.len() < GROWN_MAX && !l.entries.contains_key(name) => {
                        l.inos.entry(a.ino).or_default().push(name.to_vec());
                        l.entries.insert(name.to_vec(), (a, true));
                        true
                    }
                    Change::Removed(name) => {
                        l.entries.remove(name);
                        if let Some(a) = removed {
                            l.inos.remove(&a.ino);
                        }
                        true
                    }
                    Change::Added(..) => false,
                };
            if taken {
                l.writes = after;
            } else {
                self.folders.remove(&parent);
            }
        }
        if let Some(gone) = removed.filter(|a| a.kind == pb::FileKind::Directory as i32) {
            self.folders.remove(&gone.ino);
        }
        // The changed folder's times (and link count) are new.
        self.advance(&[parent], before, after);
    }

    /// `from` (folder, name) was renamed to `to` through this mount (a
    /// plain rename, which replaces a target), the only namespace write
    /// that finished while the count went from `before` to `after`. Taken
    /// in when the listings know what moved and what it replaced: the name
    /// leaves one listing and joins the other (its times asked for again),
    /// a replaced file or empty folder goes. Anything less certain drops
    /// both folders' listings and leaves the others behind the count.
    pub fn renamed(&mut self, from: (u64, &[u8]), to: (u64, &[u8]), before: u64, after: u64) {
        let single = |a: &pb::Attr| a.kind == pb::FileKind::Directory as i32 || a.nlink <= 1;
        let held = |l: &Listing| l.writes == before;
        let moved = self
            .folders
            .get(&from.0)
            .filter(|l| held(l))
            .and_then(|l| l.entries.get(from.1).map(|(a, _)| *a));
        // Some(None): the target folder is listed whole without the name.
        let replaced = self
            .folders
            .get(&to.0)
            .filter(|l| held(l) && l.complete)
            .map(|l| l.entries.get(to.1).map(|(a, _)| *a));
        let known = match (moved, replaced) {
            (Some(m), Some(r)) if after == before + 1 && from != to && r.is_none_or(|r| single(&r)) => Some((m, r)),
            _ => None,
        };
        let Some((moved, replaced)) = known else {
            self.folders.remove(&from.0);
            self.folders.remove(&to.0);
            return;
        };
        if let Some(l) = self.folders.get_mut(&from.0) {
            l.entries.remove(from.1);
            forget_name(l, moved.ino, from.1);
        }
        if let Some(gone) = replaced {
            if gone.kind == pb::FileKind::Directory as i32 {
                self.folders.remove(&gone.ino);
            }
        }
        let grew = match self.folders.get_mut(&to.0) {
            Some(l) if l.entries.len() < GROWN_MAX => {
                if let Some(gone) = replaced {
                    forget_name(l, gone.ino, to.1);
                }
                l.entries.insert(to.1.to_vec(), (moved, false));
                l.inos.entry(moved.ino).or_default().push(to.1.to_vec());
                true
            }
            _ => false,
        };
        if !grew {
            self.folders.remove(&to.0);
        }
        for folder in [from.0, to.0] {
            if let Some(l) = self.folders.get_mut(&folder) {
                l.writes = after;
            }
        }
        // Both folders' times changed, and the moved inode's.
        self.advance(&[from.0, to.0, moved.ino], before, after);
    }

    /// The attributes of `ino` changed through this mount (a setattr, an
    /// xattr, a commit of its contents), the only namespace write that
    /// finished while the count went from `before` to `after`: listings
    /// ask for its entries again, and the rest of them stays. Its own
    /// listing, if it is a folder, goes: its rights may have changed.
    pub fn touched(&mut self, ino: u64, before: u64, after: u64) {
        self.folders.remove(&ino);
        if after == before + 1 {
            self.advance(&[ino], before, after);
        }
    }

    /// Every listing that held the count `before` takes in a write to
    /// `after` that changed the attributes of `inos` (and nothing else they
    /// hold): their entries are asked for again.
    fn advance(&mut self, inos: &[u64], before: u64, after: u64) {
        for l in self.folders.values_mut() {
            if l.writes != before {
                continue;
            }
            for name in inos.iter().filter_map(|ino| l.inos.get(ino)).flatten() {
                if let Some(entry) = l.entries.get_mut(name) {
                    entry.1 = false;
                }
            }
            l.writes = after;
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

/// Takes `name` out of the names `l` holds for `ino`.
fn forget_name(l: &mut Listing, ino: u64, name: &[u8]) {
    if let Some(names) = l.inos.get_mut(&ino) {
        names.retain(|n| n != name);
        if names.is_empty() {
            l.inos.remove(&ino);
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

    fn dir(ino: u64) -> pb::Attr {
        pb::Attr {
            ino,
            kind: pb::FileKind::Directory as i32,
            nlink: 2,
            ..Default::default()
        }
    }

    /// Two lookups asked of the cluster in a folder; the third plan says
    /// List.
    fn counted(l: &mut Listings, parent: u64, t: Instant) {
        assert_eq!(l.plan(parent, b"a", &me(), 5, t), Plan::Ask);
        l.looked(parent, t);
        assert_eq!(l.plan(parent, b"b", &me(), 5, t), Plan::Ask);
        l.looked(parent, t);
        assert_eq!(l.plan(parent, b"c", &me(), 5, t), Plan::List);
    }

    #[test]
    fn a_folder_is_listed_after_two_lookups_and_answers_for_the_ttl() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
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
            Plan::Missing(Duration::from_millis(600)),
            "the whole folder was listed"
        );
        assert_eq!(l.plan(7, b"d", &me(), 5, t + TTL), Plan::Ask, "expired");
    }

    #[test]
    fn by_default_a_name_a_listing_lacks_is_asked_for() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1)], false), t);
        assert!(matches!(l.plan(7, b"c", &me(), 5, t), Plan::Listed(..)));
        assert_eq!(
            l.plan(7, b"new", &me(), 5, t),
            Plan::Ask,
            "another mount may just have made it"
        );
    }

    #[test]
    fn a_listing_that_paid_is_read_again_when_it_expires() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1)], false), t);
        for _ in 0..PAYOFF_HITS {
            assert!(matches!(l.plan(7, b"x", &me(), 5, t), Plan::Missing(_)));
        }
        assert_eq!(l.plan(7, b"c", &me(), 5, t + TTL), Plan::List);
    }

    #[test]
    fn a_change_through_this_mount_or_another_caller_is_never_answered_from_a_listing() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
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
    fn a_part_of_a_big_folder_never_says_a_name_is_missing() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 9, t);
        l.keep(9, me(), 5, page(&[("c", 30, 1)], true), t);
        assert!(matches!(l.plan(9, b"c", &me(), 5, t), Plan::Listed(..)));
        assert_eq!(l.plan(9, b"x", &me(), 5, t), Plan::Ask);
    }

    #[test]
    fn removes_and_creates_that_were_the_only_write_keep_the_listing() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1), ("d", 40, 1), ("h", 50, 2)], false), t);
        l.changed(7, Change::Removed(b"c"), 5, 6);
        assert!(matches!(l.plan(7, b"c", &me(), 6, t), Plan::Missing(_)));
        assert!(matches!(l.plan(7, b"d", &me(), 6, t), Plan::Listed(..)));
        l.changed(7, Change::Added(b"n", attr(60, 1)), 6, 7);
        assert_eq!(l.plan(7, b"n", &me(), 7, t), Plan::Listed(attr(60, 1), TTL));
        // Another write finished meanwhile: no longer certain.
        l.changed(7, Change::Removed(b"d"), 7, 9);
        assert!(!l.folders.contains_key(&7));

        counted(&mut l, 8, t);
        l.keep(8, me(), 5, page(&[("h", 50, 2), ("k", 50, 2)], false), t);
        l.changed(8, Change::Removed(b"h"), 5, 6);
        assert!(!l.folders.contains_key(&8), "a hard link's other name changed too");

        counted(&mut l, 10, t);
        l.keep(10, me(), 5, page(&[("h", 50, 1)], false), t);
        l.changed(10, Change::Removed(b"zz"), 5, 6);
        assert!(!l.folders.contains_key(&10), "a name the listing did not hold");
    }

    #[test]
    fn a_change_in_a_subfolder_asks_again_for_its_entry_and_keeps_the_rest() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 7, t);
        let mut p = page(&[("f", 30, 1)], false);
        p.entries.push(pb::DirEntry {
            name: b"sub".to_vec(),
            ino: 8,
            kind: pb::FileKind::Directory as i32,
            cookie: 9,
            attr: Some(dir(8)),
        });
        l.keep(7, me(), 5, p, t);
        counted(&mut l, 20, t);
        l.keep(20, me(), 5, page(&[("x", 21, 1)], false), t);
        // A new folder inside "sub", made here: known empty.
        l.changed(8, Change::Added(b"new", dir(9)), 5, 6);
        l.made_empty(9, me(), 5, 6, t);
        assert!(matches!(l.plan(9, b"any", &me(), 6, t), Plan::Missing(_)));
        assert_eq!(l.plan(7, b"sub", &me(), 6, t), Plan::Ask, "its times changed");
        assert!(matches!(l.plan(7, b"f", &me(), 6, t), Plan::Listed(..)));
        assert!(matches!(l.plan(20, b"x", &me(), 6, t), Plan::Listed(..)), "untouched");
        // The folder removed, then: its entry goes, and so does its listing.
        l.changed(7, Change::Removed(b"sub"), 6, 7);
        assert!(matches!(l.plan(7, b"sub", &me(), 7, t), Plan::Missing(_)));
        l.changed(8, Change::Removed(b"new"), 7, 8);
        assert_eq!(l.plan(9, b"any", &me(), 8, t), Plan::Ask, "uncertain: 8 was not listed");
    }

    #[test]
    fn a_setattr_here_asks_for_that_entry_again_and_keeps_the_rest() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1), ("d", 40, 1)], false), t);
        counted(&mut l, 30, t);
        l.keep(30, me(), 5, page(&[("x", 31, 1)], false), t);
        l.touched(30, 5, 6);
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask, "its attributes changed");
        assert!(matches!(l.plan(7, b"d", &me(), 6, t), Plan::Listed(..)));
        assert!(matches!(l.plan(7, b"zz", &me(), 6, t), Plan::Missing(_)));
        assert!(!l.folders.contains_key(&30), "a folder's rights may have changed");
        // Two writes finished: anything may have changed.
        l.touched(40, 6, 8);
        assert_eq!(l.plan(7, b"d", &me(), 8, t), Plan::Ask);
    }

    #[test]
    fn a_rename_between_listed_folders_moves_the_name() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("a", 30, 1), ("b", 40, 1)], false), t);
        counted(&mut l, 8, t);
        l.keep(8, me(), 5, page(&[("b", 50, 1), ("h", 60, 2)], false), t);
        // Within one folder, onto a free name.
        l.renamed((7, b"a"), (7, b"c"), 5, 6);
        assert!(matches!(l.plan(7, b"a", &me(), 6, t), Plan::Missing(_)));
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask, "there, its times asked for");
        // Across folders, replacing a file.
        l.renamed((7, b"b"), (8, b"b"), 6, 7);
        assert!(matches!(l.plan(7, b"b", &me(), 7, t), Plan::Missing(_)));
        assert_eq!(l.plan(8, b"b", &me(), 7, t), Plan::Ask);
        assert!(matches!(l.plan(8, b"zz", &me(), 7, t), Plan::Missing(_)));
        // Replacing a hard link: uncertain.
        l.renamed((8, b"b"), (8, b"h"), 7, 8);
        assert!(!l.folders.contains_key(&8));
        // From a folder not listed: uncertain.
        l.renamed((99, b"x"), (7, b"x"), 8, 9);
        assert!(!l.folders.contains_key(&7));
    }

    #[test]
    fn a_plan_is_kept_with_a_whole_listing_for_free_names_only() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        let node = pb::MakeNode {
            parent: 7,
            name: b"new".to_vec(),
            kind: pb::FileKind::Regular as i32,
            perm: 0o644,
            umask: Some(0o022),
            ..Default::default()
        };
        let key = PlanKey::of(&node);
        let planned = pb::Attr {
            ctime_ns: 1_000,
            ..attr(0, 1)
        };
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1)], false), t);
        assert_eq!(l.planned(7, b"new", &me(), 5, key, t), None, "nothing asked yet");
        l.keep_plan(7, &me(), 5, key, planned, t);
        let later = t + Duration::from_millis(1);
        let a = l
            .planned(7, b"new", &me(), 5, key, later)
            .map(|a| (a.ctime_ns, a.mtime_ns));
        assert_eq!(a, Some((1_001_000, 1_001_000)), "its times moved on by its age");
        assert_eq!(l.planned(7, b"c", &me(), 5, key, t), None, "a taken name");
        let other = PlanKey::of(&pb::MakeNode { perm: 0o600, ..node });
        assert_eq!(l.planned(7, b"new", &me(), 5, other, t), None, "asked for another mode");
        assert_eq!(l.planned(7, b"new", &me(), 6, key, t), None, "a write since");
        counted(&mut l, 9, t);
        l.keep(9, me(), 5, page(&[("c", 30, 1)], true), t);
        l.keep_plan(9, &me(), 5, key, planned, t);
        assert_eq!(l.planned(9, b"new", &me(), 5, key, t), None, "part of a folder");
    }

    #[test]
    fn a_listing_that_did_not_pay_quiets_the_folder_and_a_big_one_is_kept_in_part() {
        let t = Instant::now();
        let mut l = Listings::new(TTL, true).answer_missing(true);
        counted(&mut l, 7, t);
        l.keep(7, me(), 5, page(&[("c", 30, 1)], false), t);
        // A chmod here, then lookups again: not listed for a while.
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask);
        l.looked(7, t);
        l.looked(7, t);
        assert_eq!(l.plan(7, b"c", &me(), 6, t), Plan::Ask);
        let after = t + TTL * BACKOFF_TTLS;
        l.looked(7, after);
        l.looked(7, after);
        assert_eq!(l.plan(7, b"c", &me(), 6, after), Plan::List);

        counted(&mut l, 9, t);
        l.keep(9, me(), 5, page(&[("c", 30, 1)], true), t);
        assert!(matches!(l.plan(9, b"c", &me(), 5, t), Plan::Listed(..)));
        let expired = t + TTL;
        l.looked(9, expired);
        l.looked(9, expired);
        assert_eq!(l.plan(9, b"x", &me(), 5, expired), Plan::Ask, "not read again soon");
    }

    #[test]
    fn off_means_always_ask() {
        let t = Instant::now();
        for mut l in [Listings::new(TTL, false), Listings::new(Duration::ZERO, true)] {
            for _ in 0..5 {
                l.looked(7, t);
            }
            assert_eq!(l.plan(7, b"c", &me(), 5, t), Plan::Ask);
            l.made_empty(9, me(), 5, 6, t);
            assert_eq!(l.plan(9, b"c", &me(), 6, t), Plan::Ask);
        }
    }
}
