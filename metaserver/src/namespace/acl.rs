//! POSIX access control lists (`system.posix_acl_access` / `..._default`):
//! the Linux xattr encoding, the access check, and how ACLs follow chmod and
//! are inherited on create.
//!
//! Everything here is pure (no I/O, no clock), so the replicated state
//! machine can call it and every replica reaches the same answer.

use nimbus_common::{Errno, Gid, Uid};

/// The xattr holding an inode's access ACL.
pub const ACCESS_XATTR: &[u8] = b"system.posix_acl_access";
/// The xattr holding a directory's default ACL (what new children inherit).
pub const DEFAULT_XATTR: &[u8] = b"system.posix_acl_default";

/// The only xattr header version Linux writes or accepts.
const VERSION: u32 = 2;
/// The id written for entries that name nobody (`ACL_UNDEFINED_ID`).
const UNDEFINED_ID: u32 = u32::MAX;
// On-the-wire tag values, as in <linux/posix_acl.h>.
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// Who an entry applies to. The declaration order is the canonical entry
/// order (the one `getfacl` shows and Linux requires), so sorting canonicalizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tag {
    UserObj,
    User(Uid),
    GroupObj,
    Group(Gid),
    Mask,
    Other,
}

/// One ACL entry: a tag and its rwx bits (r=4 w=2 x=1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: Tag,
    pub perm: u16,
}

/// A valid ACL. Invariant (established by every constructor): entries sorted
/// by tag, no duplicate tags, exactly one USER_OBJ, GROUP_OBJ and OTHER, and a
/// MASK whenever there is a named entry — so lookups of base entries succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// Parses the Linux xattr encoding; EINVAL if malformed or not a valid ACL.
    ///
    /// Entries may arrive in any order (they are canonicalized); the ids of
    /// non-named entries are ignored, as Linux does.
    pub fn parse(bytes: &[u8]) -> Result<Acl, Errno> {
        let [v0, v1, v2, v3, body @ ..] = bytes else {
            return Err(Errno::EINVAL);
        };
        if u32::from_le_bytes([*v0, *v1, *v2, *v3]) != VERSION || body.is_empty() || body.len() % 8 != 0 {
            return Err(Errno::EINVAL);
        }
        let mut entries = Vec::with_capacity(body.len() / 8);
        for chunk in body.chunks_exact(8) {
            let &[t0, t1, p0, p1, i0, i1, i2, i3] = chunk else {
                return Err(Errno::EINVAL);
            };
            let id = u32::from_le_bytes([i0, i1, i2, i3]);
            let tag = match u16::from_le_bytes([t0, t1]) {
                ACL_USER_OBJ => Tag::UserObj,
                ACL_USER => Tag::User(Uid(id)),
                ACL_GROUP_OBJ => Tag::GroupObj,
                ACL_GROUP => Tag::Group(Gid(id)),
                ACL_MASK => Tag::Mask,
                ACL_OTHER => Tag::Other,
                _ => return Err(Errno::EINVAL),
            };
            let perm = u16::from_le_bytes([p0, p1]);
            if perm > 7 {
                return Err(Errno::EINVAL);
            }
            entries.push(Entry { tag, perm });
        }
        entries.sort_by_key(|e| e.tag);
        // Sorted, so any repeated tag (base or named) sits next to its twin.
        if entries.windows(2).any(|w| w[0].tag == w[1].tag) {
            return Err(Errno::EINVAL);
        }
        let has = |tag: Tag| entries.iter().any(|e| e.tag == tag);
        let named = entries.iter().any(|e| matches!(e.tag, Tag::User(_) | Tag::Group(_)));
        if !has(Tag::UserObj) || !has(Tag::GroupObj) || !has(Tag::Other) || (named && !has(Tag::Mask)) {
            return Err(Errno::EINVAL);
        }
        Ok(Acl { entries })
    }

    /// The Linux xattr encoding (canonical order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            let (tag, id) = match e.tag {
                Tag::UserObj => (ACL_USER_OBJ, UNDEFINED_ID),
                Tag::User(u) => (ACL_USER, u.0),
                Tag::GroupObj => (ACL_GROUP_OBJ, UNDEFINED_ID),
                Tag::Group(g) => (ACL_GROUP, g.0),
                Tag::Mask => (ACL_MASK, UNDEFINED_ID),
                Tag::Other => (ACL_OTHER, UNDEFINED_ID),
            };
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// The ACL equivalent to permission bits `perm` (0o777 part used): 3 entries.
    pub fn from_mode(perm: u16) -> Acl {
        let [u, g, o] = [6, 3, 0].map(|shift| (perm >> shift) & 7);
        let e = |tag, perm| Entry { tag, perm };
        Acl {
            entries: vec![e(Tag::UserObj, u), e(Tag::GroupObj, g), e(Tag::Other, o)],
        }
    }

    /// Whether it has only the three base entries (then a mode says it all).
    pub fn is_minimal(&self) -> bool {
        self.entries.len() == 3
    }

    /// The rwxrwxrwx bits this ACL implies: owner = USER_OBJ, group = MASK if
    /// present else GROUP_OBJ, other = OTHER.
    pub fn mode(&self) -> u16 {
        let owner = self.perm(Tag::UserObj).unwrap_or(0);
        let group = self.perm(Tag::Mask).or_else(|| self.perm(Tag::GroupObj)).unwrap_or(0);
        let other = self.perm(Tag::Other).unwrap_or(0);
        (owner << 6) | (group << 3) | other
    }

    /// This ACL after chmod to `perm`: USER_OBJ, OTHER and MASK (GROUP_OBJ when
    /// no mask) take the new bits. Named entries keep theirs: the mask is what
    /// chmod narrows, so widening it again restores them (as Linux's
    /// posix_acl_chmod does).
    pub fn with_mode(&self, perm: u16) -> Acl {
        let mut acl = self.clone();
        acl.update(Tag::UserObj, |_| (perm >> 6) & 7);
        acl.update(acl.group_class_tag(), |_| (perm >> 3) & 7);
        acl.update(Tag::Other, |_| perm & 7);
        acl
    }

    /// Whether a caller who is not the superuser gets every bit of `want` (rwx bits)
    /// on an object owned by `owner`/`group`, per the POSIX.1e algorithm:
    /// owner -> USER_OBJ; named user -> entry & MASK; else if the caller is in the
    /// owning group or any named group: granted if ANY matching group entry (each
    /// masked) has all wanted bits, else denied; else OTHER.
    pub fn allows(&self, owner: Uid, group: Gid, uid: Uid, gids: &[Gid], want: u16) -> bool {
        let want = want & 7;
        let grants = |perm: u16| perm & want == want;
        if uid == owner {
            return self.perm(Tag::UserObj).is_some_and(grants);
        }
        // Without a mask there are no named entries and GROUP_OBJ stands alone.
        let mask = self.perm(Tag::Mask).unwrap_or(7);
        if let Some(perm) = self.perm(Tag::User(uid)) {
            return grants(perm & mask);
        }
        // The first matching class wins: a caller in some group never falls
        // through to OTHER, even when OTHER would grant more.
        let mut in_group = false;
        for e in &self.entries {
            let member = match e.tag {
                Tag::GroupObj => gids.contains(&group),
                Tag::Group(g) => gids.contains(&g),
                _ => false,
            };
            if member {
                if grants(e.perm & mask) {
                    return true;
                }
                in_group = true;
            }
        }
        !in_group && self.perm(Tag::Other).is_some_and(grants)
    }

    /// Inheritance on create (like Linux posix_acl_create): given the parent's
    /// DEFAULT acl and the requested create mode `perm` (07777 bits; only 0o777 interact),
    /// returns (the new object's mode, its access ACL or None when minimal,
    /// and for directories the default ACL it inherits = the parent's default unchanged).
    ///
    /// The umask is not applied: with a default ACL present it is ignored.
    pub fn inherit(default: &Acl, perm: u16, is_dir: bool) -> (u16, Option<Acl>, Option<Acl>) {
        let mut access = default.clone();
        access.update(Tag::UserObj, |p| p & (perm >> 6) & 7);
        access.update(access.group_class_tag(), |p| p & (perm >> 3) & 7);
        access.update(Tag::Other, |p| p & perm & 7);
        let mode = (perm & !0o777) | access.mode();
        let access = (!access.is_minimal()).then_some(access);
        (mode, access, is_dir.then(|| default.clone()))
    }

    /// The entries, in canonical order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The perm of the entry with exactly this tag, if any.
    fn perm(&self, tag: Tag) -> Option<u16> {
        self.entries.iter().find(|e| e.tag == tag).map(|e| e.perm)
    }

    /// The entry that carries the group bits of the mode: MASK if present.
    fn group_class_tag(&self) -> Tag {
        self.perm(Tag::Mask).map_or(Tag::GroupObj, |_| Tag::Mask)
    }

    /// Rewrites the perm of the entry with this tag (if any) through `f`.
    fn update(&mut self, tag: Tag, f: impl Fn(u16) -> u16) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.tag == tag) {
            e.perm = f(e.perm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tag::*;
    use super::*;

    /// What `setfacl -m u:1001:rx` leaves on a 0644 file.
    fn setfacl_bytes() -> Vec<u8> {
        let mut b = vec![2, 0, 0, 0];
        b.extend_from_slice(&[0x01, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]); // user::rw-
        b.extend_from_slice(&[0x02, 0, 5, 0, 0xe9, 0x03, 0, 0]); // user:1001:r-x
        b.extend_from_slice(&[0x04, 0, 4, 0, 0xff, 0xff, 0xff, 0xff]); // group::r--
        b.extend_from_slice(&[0x10, 0, 5, 0, 0xff, 0xff, 0xff, 0xff]); // mask::r-x
        b.extend_from_slice(&[0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff]); // other::r--
        b
    }

    fn entry(tag: u16, perm: u16, id: u32) -> [u8; 8] {
        let mut e = [0u8; 8];
        e[..2].copy_from_slice(&tag.to_le_bytes());
        e[2..4].copy_from_slice(&perm.to_le_bytes());
        e[4..].copy_from_slice(&id.to_le_bytes());
        e
    }

    fn encode(entries: &[[u8; 8]]) -> Vec<u8> {
        let mut b = VERSION.to_le_bytes().to_vec();
        entries.iter().for_each(|e| b.extend_from_slice(e));
        b
    }

    fn acl(tags: &[Tag], perms: &[u16]) -> Acl {
        let mut entries: Vec<Entry> = tags
            .iter()
            .zip(perms)
            .map(|(&tag, &perm)| Entry { tag, perm })
            .collect();
        entries.sort_by_key(|e| e.tag);
        let acl = Acl { entries };
        assert_eq!(Acl::parse(&acl.to_bytes()), Ok(acl.clone()), "test ACL must be valid");
        acl
    }

    /// owner rw-, user 1001 rwx, group_obj r-x, group 50 -w-, mask r-x, other r--.
    fn rich() -> Acl {
        let tags = [UserObj, User(Uid(1001)), GroupObj, Group(Gid(50)), Mask, Other];
        acl(&tags, &[6, 7, 5, 2, 5, 4])
    }

    #[test]
    fn setfacl_encoding_round_trips() {
        let a = Acl::parse(&setfacl_bytes()).unwrap();
        let tags: Vec<Tag> = a.entries().iter().map(|e| e.tag).collect();
        assert_eq!(tags, [UserObj, User(Uid(1001)), GroupObj, Mask, Other]);
        assert_eq!(a.entries().iter().map(|e| e.perm).collect::<Vec<_>>(), [6, 5, 4, 5, 4]);
        assert_eq!(a.to_bytes(), setfacl_bytes());
        assert_eq!(a.mode(), 0o654); // group class from MASK r-x, not GROUP_OBJ r--
        assert!(!a.is_minimal());
    }

    #[test]
    fn parse_canonicalizes_order_and_base_ids() {
        let b = encode(&[
            entry(ACL_OTHER, 4, 0),
            entry(ACL_MASK, 5, 7),
            entry(ACL_GROUP_OBJ, 4, 0),
            entry(ACL_USER, 5, 1001),
            entry(ACL_USER_OBJ, 6, 123),
        ]);
        assert_eq!(Acl::parse(&b).unwrap().to_bytes(), setfacl_bytes());
    }

    #[test]
    fn parse_rejects_malformed() {
        let inval = |b: &[u8]| assert_eq!(Acl::parse(b), Err(Errno::EINVAL), "{b:?}");
        let good = setfacl_bytes();
        inval(&[]);
        inval(&[2, 0, 0]);
        inval(&good[..4]); // header only
        inval(&good[..good.len() - 1]); // length not 4 + 8k
        inval(&[good.as_slice(), &[0]].concat());
        let mut v1 = good.clone();
        v1[0] = 1;
        inval(&v1); // version
        let (uo, go) = (entry(ACL_USER_OBJ, 6, 0), entry(ACL_GROUP_OBJ, 4, 0));
        let (ot, mask) = (entry(ACL_OTHER, 4, 0), entry(ACL_MASK, 7, 0));
        inval(&encode(&[uo, go, ot, entry(0x40, 4, 0)])); // unknown tag
        inval(&encode(&[uo, go, entry(ACL_OTHER, 8, 0)])); // perm > 7
        inval(&encode(&[go, ot])); // no USER_OBJ
        inval(&encode(&[uo, ot])); // no GROUP_OBJ
        inval(&encode(&[uo, go])); // no OTHER
        inval(&encode(&[uo, uo, go, ot])); // two USER_OBJ
        inval(&encode(&[uo, go, go, ot])); // two GROUP_OBJ
        inval(&encode(&[uo, go, ot, ot])); // two OTHER
        inval(&encode(&[uo, go, mask, mask, ot])); // two MASK
        let (u1, g1) = (entry(ACL_USER, 4, 1), entry(ACL_GROUP, 4, 1));
        inval(&encode(&[uo, u1, entry(ACL_USER, 5, 1), go, mask, ot])); // duplicate named user
        inval(&encode(&[uo, go, g1, entry(ACL_GROUP, 5, 1), mask, ot])); // duplicate named group
        inval(&encode(&[uo, u1, go, ot])); // named user, no MASK
        inval(&encode(&[uo, go, g1, ot])); // named group, no MASK

        // The same shapes made valid are accepted: a user and a group may share an id.
        assert!(Acl::parse(&encode(&[uo, u1, go, g1, mask, ot])).is_ok());
        assert!(Acl::parse(&encode(&[uo, go, mask, ot])).is_ok()); // MASK alone is fine
    }

    #[test]
    fn from_mode_is_minimal_and_round_trips() {
        let a = Acl::from_mode(0o4751);
        assert!(a.is_minimal());
        assert_eq!(a.mode(), 0o751);
        assert_eq!(Acl::parse(&a.to_bytes()), Ok(a.clone()));
        let want = encode(&[entry(1, 7, !0), entry(4, 5, !0), entry(0x20, 1, !0)]);
        assert_eq!(a.to_bytes(), want);
    }

    #[test]
    fn with_mode_updates_mask_not_group_obj() {
        let a = rich().with_mode(0o710);
        assert_eq!(a.mode(), 0o710);
        assert_eq!(a.perm(GroupObj), Some(5)); // kept, hidden behind the mask
        assert_eq!(a.perm(User(Uid(1001))), Some(7));
        assert_eq!(a.with_mode(0o654), rich()); // widening the mask restores access
        assert_eq!(Acl::from_mode(0o644).with_mode(0o1750), Acl::from_mode(0o750));
    }

    #[test]
    fn allows_owner_and_named_user() {
        let a = rich();
        let (o, g) = (Uid(10), Gid(20));
        assert!(a.allows(o, g, o, &[], 6));
        assert!(!a.allows(o, g, o, &[], 1));
        // Owner uses USER_OBJ alone, even if a group entry would grant more.
        assert!(!a.allows(o, g, o, &[g], 1));
        // Named user 1001 has rwx, but the mask r-x takes w away.
        assert!(a.allows(o, g, Uid(1001), &[], 5));
        assert!(!a.allows(o, g, Uid(1001), &[], 2));
        // A named user is not judged by group entries or OTHER.
        assert!(!a.allows(o, g, Uid(1001), &[Gid(50)], 2));
        assert!(a.allows(o, g, Uid(1001), &[], 0));
    }

    #[test]
    fn allows_group_class() {
        let a = rich();
        let (o, g, u) = (Uid(10), Gid(20), Uid(30));
        assert!(a.allows(o, g, u, &[g], 5)); // GROUP_OBJ r-x & mask r-x
        assert!(!a.allows(o, g, u, &[g], 2));
        // Group 50 is -w- but the mask r-x masks it to nothing: no class member gets w.
        assert!(!a.allows(o, g, u, &[Gid(50)], 2));
        assert!(!a.allows(o, g, u, &[Gid(50)], 4)); // a group member does not fall back to OTHER r--
        assert!(a.allows(o, g, u, &[Gid(50), g], 4)); // any matching group entry suffices
        let wide = rich().with_mode(0o674);
        assert!(wide.allows(o, g, u, &[Gid(50)], 2));
        assert!(!wide.allows(o, g, u, &[Gid(50)], 6));
        assert!(!wide.allows(o, g, u, &[Gid(50), g], 6)); // r-x and -w- together, but no single entry has rw
        assert!(wide.allows(o, g, u, &[Gid(50), g], 5));
    }

    #[test]
    fn allows_other_and_minimal() {
        let a = rich();
        let (o, g, u) = (Uid(10), Gid(20), Uid(30));
        assert!(a.allows(o, g, u, &[Gid(99)], 4));
        assert!(!a.allows(o, g, u, &[], 1));
        let m = Acl::from_mode(0o640);
        assert!(m.allows(o, g, o, &[], 6));
        assert!(m.allows(o, g, u, &[g], 4));
        assert!(!m.allows(o, g, u, &[g], 2));
        assert!(!m.allows(o, g, u, &[], 4));
        assert!(m.allows(o, g, u, &[], 0));
    }

    #[test]
    fn inherit_file() {
        let (mode, access, default) = Acl::inherit(&rich(), 0o100640, false);
        assert_eq!(mode, 0o100640); // file type bits pass through
        let access = access.unwrap();
        assert_eq!(access.perm(Mask), Some(4)); // mask r-x & r--
        assert_eq!(access.perm(GroupObj), Some(5)); // the mask, not GROUP_OBJ, takes the bits
        assert_eq!(access.perm(User(Uid(1001))), Some(7));
        assert_eq!((access.perm(UserObj), access.perm(Other)), (Some(6), Some(0)));
        assert_eq!(default, None);
    }

    #[test]
    fn inherit_dir_keeps_default_and_special_bits() {
        let (mode, access, default) = Acl::inherit(&rich(), 0o3777, true);
        assert_eq!(mode, 0o3654);
        assert_eq!(access, Some(rich()));
        assert_eq!(default, Some(rich()));
    }

    #[test]
    fn inherit_minimal_default_gives_no_access_acl() {
        let def = Acl::from_mode(0o750);
        let (mode, access, default) = Acl::inherit(&def, 0o666, false);
        assert_eq!((mode, access, default), (0o640, None, None));
        let (mode, access, default) = Acl::inherit(&def, 0o777, true);
        assert_eq!((mode, access, default), (0o750, None, Some(def)));
    }
}
