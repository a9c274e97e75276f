//! Accounts (users, groups, sign-ins) and quotas; the helpers here serve
//! `sharing.rs` too.

use super::*;
use crate::namespace::accounts::{self as acct, AccountOp, FIRST_ID};
use crate::namespace::acl::{Acl, Tag};
use crate::namespace::blocks::{SlotWrite, SLOT_SIZE};
use crate::namespace::quota::{Usage, UsageCheck};
use crate::namespace::shares::Grantee;
use nimbus_common::{BlockId, ServerId};

pub(super) const MIB: u64 = 1 << 20;
pub(super) const SLOT: u64 = SLOT_SIZE;

pub(super) fn account(op: AccountOp) -> Op {
    Op::Account(op)
}

pub(super) fn add_user(name: &str, quota_bytes: u64, quota_inodes: u64) -> Op {
    account(AccountOp::AddUser {
        name: name.into(),
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1${name}"),
        admin: false,
        quota_bytes,
        quota_inodes,
    })
}

pub(super) fn add_admin(name: &str) -> Op {
    let mut op = add_user(name, 0, 0);
    if let Op::Account(AccountOp::AddUser { admin, .. }) = &mut op {
        *admin = true;
    }
    op
}

pub(super) fn init_admin(name: &str) -> Op {
    let (name, hash) = (name.into(), format!("hash-of-{name}"));
    account(AccountOp::InitAdmin { name, hash })
}

pub(super) fn add_group(name: &str) -> Op {
    account(AccountOp::AddGroup { name: name.into() })
}

pub(super) fn set_member(gid: u32, uid: u32, add: bool) -> Op {
    let (gid, uid) = (Gid(gid), Uid(uid));
    account(AccountOp::SetMember { gid, uid, add })
}

pub(super) fn set_quota(uid: u32, bytes: Option<u64>, inodes: Option<u64>) -> Op {
    let uid = Uid(uid);
    account(AccountOp::SetQuota { uid, bytes, inodes })
}

pub(super) fn check_quota(fix: bool) -> Op {
    account(AccountOp::CheckQuota { fix })
}

pub(super) fn remove_user(uid: u32) -> Op {
    account(AccountOp::RemoveUser { uid: Uid(uid) })
}

pub(super) fn sign_in(id: u8, uid: u32, expires_ms: u64) -> Op {
    let (id, uid) = ([id; 16], Uid(uid));
    account(AccountOp::SignIn { id, uid, expires_ms })
}

pub(super) fn sign_out(id: u8) -> Op {
    account(AccountOp::SignOut { id: [id; 16] })
}

pub(super) fn set_disabled(uid: u32, disabled: bool) -> Op {
    let uid = Uid(uid);
    account(AccountOp::SetDisabled { uid, disabled })
}

pub(super) fn share(ino: Ino, grantee: Grantee, rw: bool) -> Op {
    Op::Share { ino, grantee, rw }
}

pub(super) fn unshare(ino: Ino, grantee: Grantee) -> Op {
    Op::Unshare { ino, grantee }
}

pub(super) fn to_user(uid: u32) -> Grantee {
    Grantee::User(Uid(uid))
}

/// Block `n`, `len` bytes, written into `slot` on server 1.
pub(super) fn slot(slot: u64, n: u8, len: u64) -> SlotWrite {
    SlotWrite {
        slot,
        block: BlockId([n; 16]),
        len,
        crc: u32::from(n),
        servers: vec![ServerId(1)],
    }
}

pub(super) fn commit(ino: Ino, slots: Vec<SlotWrite>, size: u64) -> Op {
    Op::CommitWrite { ino, slots, size }
}

/// MakeNode with the creator's umask.
pub(super) fn masked(parent: Ino, name: &str, kind: FileKind, perm: u16, mask: u16) -> Op {
    let mut op = node(parent, name, kind, perm);
    if let Op::MakeNode(MakeNode { umask, .. }) = &mut op {
        *umask = Some(mask);
    }
    op
}

// ACL entry tags, as Linux encodes them.
pub(super) const USER_OBJ: u16 = 0x01;
pub(super) const NAMED_USER: u16 = 0x02;
pub(super) const GROUP_OBJ: u16 = 0x04;
pub(super) const MASK: u16 = 0x10;
pub(super) const OTHER: u16 = 0x20;

/// The `system.posix_acl_*` encoding of (tag, perm, id) entries.
pub(super) fn acl_value(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// user::rw-, user:`uid`:`named`, group::---, mask::`mask`, other::---.
pub(super) fn named_acl(uid: u32, named: u16, mask: u16) -> Vec<u8> {
    acl_value(&[
        (USER_OBJ, 6, 0),
        (NAMED_USER, named, uid),
        (GROUP_OBJ, 0, 0),
        (MASK, mask, 0),
        (OTHER, 0, 0),
    ])
}

/// The perm of the entry tagged `tag` in a stored ACL.
pub(super) fn entry_perm(value: &[u8], tag: Tag) -> Option<u16> {
    let acl = Acl::parse(value).unwrap();
    acl.entries().iter().find(|e| e.tag == tag).map(|e| e.perm)
}

impl Fs {
    /// Adds a user as root; their uid.
    #[track_caller]
    pub(super) fn add_account(&mut self, name: &str, quota_bytes: u64, quota_inodes: u64) -> u32 {
        match self.ok(add_user(name, quota_bytes, quota_inodes)) {
            Reply::Id(id) => id,
            other => panic!("expected an id, got {other:?}"),
        }
    }

    #[track_caller]
    pub(super) fn add_group_id(&mut self, name: &str) -> u32 {
        match self.ok(add_group(name)) {
            Reply::Id(id) => id,
            other => panic!("expected an id, got {other:?}"),
        }
    }

    pub(super) fn find_user(&self, name: &str) -> Option<acct::User> {
        acct::user_by_name(&Txn::new(&self.store), name).unwrap()
    }

    #[track_caller]
    pub(super) fn account_of(&self, name: &str) -> acct::User {
        self.find_user(name).unwrap_or_else(|| panic!("no user {name}"))
    }

    /// The caller a signed-in `name` acts as.
    pub(super) fn acting_as(&self, name: &str) -> Caller {
        acct::caller_of(&Txn::new(&self.store), &self.account_of(name)).unwrap()
    }

    pub(super) fn home_of(&self, name: &str) -> Ino {
        self.account_of(name).home
    }

    pub(super) fn usage_of(&self, uid: u32) -> Usage {
        quota::usage(&Txn::new(&self.store), Uid(uid)).unwrap()
    }

    pub(super) fn inode_of(&self, ino: Ino) -> Inode {
        Txn::new(&self.store).inode(ino).unwrap().unwrap()
    }

    /// perm::access: mode bits, ACL, then shares.
    pub(super) fn may(&self, c: &Caller, ino: Ino, mask: u16) -> Result<(), Errno> {
        errno(perm::access(&Txn::new(&self.store), &self.inode_of(ino), c, mask))
    }

    pub(super) fn reach(&self, c: &Caller, ino: Ino) -> Result<(), Errno> {
        errno(perm::reachable(&Txn::new(&self.store), &self.inode_of(ino), c))
    }

    /// What CheckQuota{fix} (as root) reports.
    #[track_caller]
    pub(super) fn quota_diffs(&mut self, fix: bool) -> Vec<UsageCheck> {
        match self.ok(check_quota(fix)) {
            Reply::Usage(u) => u,
            other => panic!("expected usage, got {other:?}"),
        }
    }

    /// The names in `dir` as `c` lists them.
    pub(super) fn ls_as(&self, c: &Caller, dir: Ino) -> Result<String, Errno> {
        let (entries, _) = self.page(c, dir, 0, READDIR_MAX)?;
        let mut names: Vec<String> = entries.iter().map(|e| text(&e.name)).collect();
        names.sort();
        Ok(names.join(" "))
    }

    pub(super) fn signed_in(&self, id: u8) -> Option<acct::SignIn> {
        acct::sign_in(&Txn::new(&self.store), &[id; 16]).unwrap()
    }
}

pub(super) fn usage(bytes: u64, inodes: u64) -> Usage {
    Usage { bytes, inodes }
}

// ---- users and groups ----

#[test]
fn add_user_is_the_superusers_and_makes_a_private_home() {
    let mut fs = Fs::new();
    fs.no_as(&user(), add_user("alice", 0, 0), E::EPERM);
    assert_eq!(fs.look(R, "home"), Err(E::ENOENT), "a refused AddUser leaves nothing");
    let alice = fs.add_account("alice", 0, 0);
    let bob = fs.add_account("bob", 0, 0);
    assert_eq!((alice, bob), (FIRST_ID, FIRST_ID + 1));
    let home = fs.look(R, "home").unwrap();
    let h = fs.attr(home);
    assert_eq!((h.kind, h.perm, h.uid, h.gid), (DIR, 0o755, Uid(0), Gid(0)));
    assert_eq!(fs.ls(home), "alice bob");
    for (name, id) in [("alice", alice), ("bob", bob)] {
        let a = fs.look_as(&root(), home, name).unwrap();
        assert_eq!((a.kind, a.perm, a.uid, a.gid), (DIR, 0o700, Uid(id), Gid(id)));
        let u = fs.account_of(name);
        assert_eq!((u.uid, u.home, u.admin, u.disabled), (Uid(id), a.ino, false, false));
        assert_eq!((u.quota_bytes, u.quota_inodes), (0, 0));
    }
    // The home is its owner's alone.
    let (a, b) = (fs.acting_as("alice"), fs.acting_as("bob"));
    assert_eq!(
        (a.uid, a.gids.clone(), a.superuser),
        (Uid(alice), vec![Gid(alice)], false)
    );
    let alice_home = fs.home_of("alice");
    let f = fs.make(&a, file(alice_home, "f"));
    assert_eq!((f.uid, f.gid), (Uid(alice), Gid(alice)));
    fs.no_as(&b, file(alice_home, "g"), E::EACCES);
    assert_eq!(fs.look_as(&b, alice_home, "f"), Err(E::EACCES));
    // A non-admin account cannot add users either.
    fs.no_as(&a, add_user("carol", 0, 0), E::EPERM);
}

#[test]
fn an_admin_account_is_the_superuser() {
    let mut fs = Fs::new();
    let boss = match fs.ok(add_admin("boss")) {
        Reply::Id(id) => id,
        other => panic!("{other:?}"),
    };
    let c = fs.acting_as("boss");
    assert!(c.is_root() && c.uid == Uid(boss));
    assert_eq!(fs.ok_as(&c, add_user("alice", 0, 0)), Reply::Id(boss + 1));
    fs.ok_as(&c, check_quota(false));
}

#[test]
fn add_user_rejects_duplicates_and_bad_names() {
    let mut fs = Fs::new();
    fs.add_account("alice", 0, 0);
    fs.no(add_user("alice", 0, 0), E::EEXIST);
    let long = "a".repeat(acct::NAME_MAX + 1);
    for bad in [
        "Alice",
        "ALICE",
        "../x",
        "a/b",
        "",
        long.as_str(),
        "1st",
        "-x",
        ".x",
        "a b",
        "é",
    ] {
        fs.no(add_user(bad, 0, 0), E::EINVAL);
    }
    // The longest name and every allowed character are fine; refused
    // commands used up no id.
    let max = "b".repeat(acct::NAME_MAX);
    assert_eq!(fs.add_account(&max, 0, 0), FIRST_ID + 1);
    assert_eq!(fs.add_account("_a1.b-c_", 0, 0), FIRST_ID + 2);
    // A folder in /home that belongs to no account is never handed over.
    let home = fs.look(R, "home").unwrap();
    fs.mkdir(home, "carol");
    fs.no(add_user("carol", 0, 0), E::EEXIST);
    assert!(fs.find_user("carol").is_none());
    assert_eq!(fs.attr(fs.look(home, "carol").unwrap()).uid, Uid(0));
    assert_eq!(fs.ls(home), format!("_a1.b-c_ alice {max} carol"));
}

#[test]
fn init_admin_makes_uid_0_the_admin_once() {
    let mut fs = Fs::new();
    fs.no_as(&user(), init_admin("admin"), E::EPERM);
    fs.no(init_admin("Admin"), E::EINVAL);
    assert_eq!(fs.ok(init_admin("admin")), Reply::Id(0));
    let a = fs.account_of("admin");
    assert_eq!(
        (a.uid, a.admin, a.home, a.hash.as_str()),
        (Uid(0), true, R, "hash-of-admin")
    );
    assert!(fs.acting_as("admin").is_root());
    assert_eq!(fs.look(R, "home"), Err(E::ENOENT), "the admin's home is the root");
    // Once users exist it does nothing, whoever asks.
    assert_eq!(fs.ok(init_admin("boss")), Reply::Done);
    assert_eq!(fs.ok_as(&user(), init_admin("boss")), Reply::Done);
    assert!(fs.find_user("boss").is_none());
    assert_eq!(fs.account_of("admin"), a);
    assert_eq!(
        fs.add_account("alice", 0, 0),
        FIRST_ID,
        "uid 0 does not come from the counter"
    );

    // On a cluster whose first account came from AddUser, it does nothing too.
    let mut fs = Fs::new();
    fs.add_account("alice", 0, 0);
    assert_eq!(fs.ok(init_admin("admin")), Reply::Done);
    assert!(fs.find_user("admin").is_none());
    assert!(acct::user_by_uid(&Txn::new(&fs.store), Uid(0)).unwrap().is_none());
}

#[test]
fn groups_and_membership() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 0);
    fs.no_as(&fs.acting_as("alice"), add_group("team"), E::EPERM);
    let team = fs.add_group_id("team");
    assert_eq!(team, alice + 1, "users and groups share one id counter");
    fs.no(add_group("team"), E::EEXIST);
    fs.no(add_group("Team"), E::EINVAL);
    fs.no_as(&fs.acting_as("alice"), set_member(team, alice, true), E::EPERM);
    fs.no(set_member(team, 4242, true), E::ENOENT);
    fs.no(set_member(4242, alice, true), E::ENOENT);
    fs.ok(set_member(team, alice, true));
    let txn = Txn::new(&fs.store);
    assert_eq!(acct::groups_of(&txn, Uid(alice)).unwrap(), [Gid(team)]);
    assert_eq!(acct::members(&txn, Gid(team)).unwrap(), [Uid(alice)]);
    assert_eq!(fs.acting_as("alice").gids, [Gid(alice), Gid(team)]);
    fs.ok(set_member(team, alice, false));
    assert_eq!(fs.acting_as("alice").gids, [Gid(alice)]);
}

#[test]
fn sign_ins() {
    let mut fs = Fs::new();
    let (alice, bob) = (fs.add_account("alice", 0, 0), fs.add_account("bob", 0, 0));
    let (a, b) = (fs.acting_as("alice"), fs.acting_as("bob"));
    fs.no(sign_in(1, 4242, 10), E::ENOENT);
    fs.ok(sign_in(1, alice, 1_000));
    fs.ok(sign_in(2, alice, 3));
    fs.ok(sign_in(3, bob, 1_000));
    assert_eq!(
        fs.signed_in(1).map(|s| (s.uid, s.expires_ms)),
        Some((Uid(alice), 1_000))
    );
    fs.no_as(&b, sign_out(1), E::EPERM);
    fs.ok_as(&a, sign_out(1));
    assert!(fs.signed_in(1).is_none());
    fs.ok_as(&a, sign_out(1)); // already gone: fine
                               // Expiry, at 5 ms.
    fs.advance(5_000_000);
    fs.ok(Op::ExpireSessions);
    assert!(fs.signed_in(2).is_none());
    assert!(fs.signed_in(3).is_some());
    // Disabling ends sign-ins and refuses new ones.
    fs.no_as(&a, set_disabled(bob, true), E::EPERM);
    fs.ok(set_disabled(bob, true));
    assert!(fs.signed_in(3).is_none());
    fs.no(sign_in(4, bob, 1_000), E::EACCES);
    fs.ok(set_disabled(bob, false));
    fs.ok(sign_in(4, bob, 1_000));
}

#[test]
fn removing_a_user_keeps_their_files_and_frees_the_name() {
    let mut fs = Fs::new();
    let (alice, bob) = (fs.add_account("alice", 0, 0), fs.add_account("bob", 0, 0));
    let a = fs.acting_as("alice");
    let home = fs.home_of("alice");
    let proj = fs.make(&a, dir(home, "proj")).ino;
    fs.ok_as(&a, share(proj, to_user(bob), true));
    fs.ok(sign_in(1, alice, u64::MAX));
    fs.no_as(&a, remove_user(alice), E::EPERM);
    fs.no(remove_user(0), E::EPERM);
    fs.no(remove_user(4242), E::ENOENT);
    fs.ok(remove_user(alice));
    assert!(fs.find_user("alice").is_none());
    assert!(fs.signed_in(1).is_none());
    let homes = fs.look(R, "home").unwrap();
    let kept = format!("alice.removed-{alice}");
    assert_eq!(fs.ls(homes), format!("{kept} bob"));
    assert_eq!(fs.look(homes, &kept), Ok(home));
    assert_eq!(fs.attr(home).uid, Uid(alice));
    assert_eq!(
        fs.look_as(&fs.acting_as("bob"), home, "proj"),
        Err(E::EACCES),
        "shares go"
    );
    // The name is free again, for a new uid.
    assert_eq!(fs.add_account("alice", 0, 0), bob + 1);
    assert_ne!(fs.home_of("alice"), home);
    assert_eq!(fs.quota_diffs(false), vec![]);
}

// ---- quotas ----

#[test]
fn a_write_past_the_byte_quota_is_edquot_and_changes_nothing() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 10 * MIB, 0);
    let (a, home) = (fs.acting_as("alice"), fs.home_of("alice"));
    let f = fs.make(&a, file(home, "f")).ino;
    fs.ok_as(&a, commit(f, vec![slot(0, 1, SLOT), slot(1, 2, SLOT)], 2 * SLOT));
    assert_eq!(fs.usage_of(alice), usage(8 * MIB, 2));
    let three = vec![slot(0, 1, SLOT), slot(1, 2, SLOT), slot(2, 3, SLOT)];
    fs.no_as(&a, commit(f, three, 3 * SLOT), E::EDQUOT);
    assert_eq!(fs.attr(f).size, 8 * MIB);
    assert_eq!(fs.usage_of(alice), usage(8 * MIB, 2));
    let txn = Txn::new(&fs.store);
    assert_eq!(
        txn.block(BlockId([3; 16])).unwrap(),
        None,
        "the refused block is not recorded"
    );
    // Exactly up to the limit is fine.
    let a10 = fs.make(&a, commit(f, vec![slot(2, 3, 2 * MIB)], 10 * MIB));
    assert_eq!(a10.size, 10 * MIB);
    assert_eq!(fs.usage_of(alice), usage(10 * MIB, 2));
    // Not a byte more, through any file or any way of growing.
    fs.no_as(&a, commit(f, vec![], 10 * MIB + 1), E::EDQUOT);
    fs.no_as(&a, truncate(f, 10 * MIB + 1), E::EDQUOT);
    let g = fs.make(&a, file(home, "g")).ino;
    fs.no_as(&a, commit(g, vec![slot(0, 4, 1)], 1), E::EDQUOT);
    assert_eq!((fs.attr(f).size, fs.attr(g).size), (10 * MIB, 0));
    // Root writing the user's file is charged to the owner all the same.
    fs.no(commit(g, vec![slot(0, 4, 1)], 1), E::EDQUOT);
    // Shrinking is always allowed, and makes room.
    fs.ok_as(&a, truncate(f, 9 * MIB));
    fs.ok_as(&a, commit(g, vec![slot(0, 4, MIB)], MIB));
    assert_eq!(fs.usage_of(alice), usage(10 * MIB, 3));
    assert_eq!(fs.quota_diffs(false), vec![]);
}

#[test]
fn a_lowered_quota_allows_shrinking_only() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 0);
    let (a, home) = (fs.acting_as("alice"), fs.home_of("alice"));
    let f = fs.make(&a, file(home, "f")).ino;
    fs.ok_as(&a, truncate(f, 8 * MIB));
    fs.no_as(&a, set_quota(alice, Some(4 * MIB), None), E::EPERM);
    fs.no(set_quota(4242, Some(4 * MIB), None), E::ENOENT);
    fs.ok(set_quota(alice, Some(4 * MIB), Some(2)));
    let u = fs.account_of("alice");
    assert_eq!((u.quota_bytes, u.quota_inodes), (4 * MIB, 2));
    fs.ok_as(&a, truncate(f, 6 * MIB));
    fs.no_as(&a, truncate(f, 6 * MIB + 1), E::EDQUOT);
    fs.no_as(&a, file(home, "g"), E::EDQUOT);
    // None leaves a limit as it is; 0 lifts it.
    fs.ok(set_quota(alice, None, Some(0)));
    assert_eq!(fs.account_of("alice").quota_bytes, 4 * MIB);
    fs.make(&a, file(home, "g"));
    fs.ok(set_quota(alice, Some(0), None));
    fs.ok_as(&a, truncate(f, 100 * MIB));
    let q = errno(statfs(&Txn::new(&fs.store), &a)).unwrap();
    assert_eq!(
        (q.quota_bytes, q.used_bytes, q.quota_inodes, q.used_inodes),
        (0, 100 * MIB, 0, 3)
    );
}

#[test]
fn usage_follows_creates_commits_truncates_and_unlinks() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 0);
    let (a, home) = (fs.acting_as("alice"), fs.home_of("alice"));
    assert_eq!(fs.usage_of(alice), usage(0, 1), "the home");
    let f = fs.make(&a, file(home, "f")).ino;
    let g = fs.make(&a, file(home, "g")).ino;
    let d = fs.make(&a, dir(home, "d")).ino;
    fs.make(&a, sym(home, "l", "a-target"));
    assert_eq!(fs.usage_of(alice), usage(0, 5), "a symlink's size is not charged");
    fs.ok_as(&a, commit(f, vec![slot(0, 1, SLOT), slot(1, 2, MIB)], SLOT + MIB));
    fs.ok_as(&a, commit(g, vec![slot(0, 3, 100)], 100));
    assert_eq!(fs.usage_of(alice), usage(5 * MIB + 100, 5));
    fs.ok_as(&a, truncate(f, 3));
    assert_eq!(fs.usage_of(alice), usage(3 + 100, 5));
    // A sparse file counts in full.
    fs.ok_as(&a, truncate(g, 1 << 30));
    assert_eq!(fs.usage_of(alice), usage(3 + (1 << 30), 5));
    // A second name is not a second charge; the last name frees it.
    fs.ok_as(&a, link(f, d, "f2"));
    assert_eq!(fs.usage_of(alice), usage(3 + (1 << 30), 5));
    fs.ok_as(&a, unlink(home, "f"));
    assert_eq!(fs.usage_of(alice), usage(3 + (1 << 30), 5));
    fs.ok_as(&a, unlink(d, "f2"));
    assert_eq!(fs.usage_of(alice), usage(1 << 30, 4));
    // A rename that replaces a file frees the replaced one.
    let h = fs.make(&a, file(home, "h")).ino;
    fs.ok_as(&a, commit(h, vec![slot(0, 4, 7)], 7));
    fs.ok_as(&a, mv(home, "h", home, "g"));
    assert_eq!(fs.usage_of(alice), usage(7, 4));
    fs.ok_as(&a, unlink(home, "g"));
    fs.ok_as(&a, unlink(home, "l"));
    fs.ok_as(&a, rmdir(home, "d"));
    assert_eq!(fs.usage_of(alice), usage(0, 1));
    // Another user's files are charged to them, wherever they are.
    let open = fs.dir_with("open", 0o777);
    let x = fs.make(&other(), file(open, "x")).ino;
    fs.ok_as(&other(), truncate(x, 5));
    assert_eq!((fs.usage_of(alice), fs.usage_of(2000)), (usage(0, 1), usage(5, 1)));
    assert_eq!(fs.quota_diffs(false), vec![]);
}

#[test]
fn a_file_removed_while_open_stays_charged_until_forgotten() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 0);
    let (a, home) = (fs.acting_as("alice"), fs.home_of("alice"));
    let f = fs.make(&a, file(home, "f")).ino;
    fs.ok_as(&a, truncate(f, 10));
    let op = Op::Unlink {
        parent: home,
        name: b("f"),
        keep_for: Some(4),
    };
    fs.ok_as(&a, op);
    assert_eq!(fs.usage_of(alice), usage(10, 2));
    assert_eq!(fs.quota_diffs(false), vec![]);
    fs.ok(Op::Forget { ino: f, session: 4 });
    assert_eq!(fs.usage_of(alice), usage(0, 1));
    assert_eq!(fs.quota_diffs(false), vec![]);
}

#[test]
fn the_inode_quota_stops_the_next_create() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 3);
    let (a, home) = (fs.acting_as("alice"), fs.home_of("alice"));
    let f = fs.make(&a, file(home, "f")).ino;
    fs.make(&a, dir(home, "d"));
    assert_eq!(fs.usage_of(alice), usage(0, 3));
    fs.no_as(&a, file(home, "g"), E::EDQUOT);
    fs.no_as(&a, dir(home, "e"), E::EDQUOT);
    fs.no_as(&a, sym(home, "l", "t"), E::EDQUOT);
    assert_eq!(fs.look(home, "g"), Err(E::ENOENT));
    assert_eq!(fs.ls(home), "d f");
    assert_eq!(fs.usage_of(alice), usage(0, 3));
    // A name is not an inode.
    fs.ok_as(&a, link(f, home, "f2"));
    // Others' creates in the user's folder are charged to them.
    fs.make(&root(), file(home, "roots"));
    fs.ok(unlink(home, "roots"));
    // Freeing an inode makes room for one.
    fs.ok_as(&a, unlink(home, "f"));
    fs.no_as(&a, file(home, "g"), E::EDQUOT);
    fs.ok_as(&a, unlink(home, "f2"));
    fs.make(&a, file(home, "g"));
    assert_eq!(fs.usage_of(alice), usage(0, 3));
    assert_eq!(fs.quota_diffs(false), vec![]);
}

#[test]
fn chown_to_a_user_without_room_is_edquot() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 10 * MIB, 0);
    let bob = fs.add_account("bob", 0, 2);
    let f = fs.create(R, "f");
    fs.ok(commit(f, vec![slot(0, 1, SLOT), slot(1, 2, SLOT)], 2 * SLOT));
    let (g, h, big) = (fs.create(R, "g"), fs.create(R, "h"), fs.create(R, "big"));
    fs.ok(commit(big, vec![slot(0, 3, 3 * MIB)], 3 * MIB));
    let root0 = fs.usage_of(0);
    // Root (/, /home, f, g, h, big) holds 11 MiB.
    assert_eq!(root0, usage(11 * MIB, 6));
    let a = fs.make(&root(), chown(f, alice));
    assert_eq!(a.uid, Uid(alice));
    assert_eq!(fs.usage_of(alice), usage(8 * MIB, 2));
    assert_eq!(fs.usage_of(0), usage(3 * MIB, 5));
    // 8 + 3 MiB would not fit in 10.
    fs.no(chown(big, alice), E::EDQUOT);
    assert_eq!(fs.attr(big).uid, Uid(0));
    assert_eq!(
        (fs.usage_of(alice), fs.usage_of(0)),
        (usage(8 * MIB, 2), usage(3 * MIB, 5))
    );
    // Bob has room for one inode more.
    fs.ok(chown(g, bob));
    fs.no(chown(h, bob), E::EDQUOT);
    assert_eq!((fs.attr(g).uid, fs.attr(h).uid), (Uid(bob), Uid(0)));
    assert_eq!(fs.usage_of(bob), usage(0, 2));
    // Giving back always works; and chown with a new size in one setattr
    // charges the new owner the new size.
    fs.ok(chown(f, 0));
    let both = setattr(big, |c| (c.uid, c.size) = (Some(Uid(alice)), Some(4 * MIB)));
    assert_eq!(fs.make(&root(), both).uid, Uid(alice));
    assert_eq!(fs.usage_of(alice), usage(4 * MIB, 2));
    assert_eq!(fs.quota_diffs(false), vec![]);
}

#[test]
fn check_quota_is_the_superusers_and_finds_and_fixes_drift() {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 0);
    let a = fs.acting_as("alice");
    let f = fs.make(&a, file(fs.home_of("alice"), "f")).ino;
    fs.ok_as(&a, truncate(f, 42));
    fs.no_as(&a, check_quota(false), E::EPERM);
    fs.no_as(&user(), check_quota(true), E::EPERM);
    assert_eq!(fs.ok(check_quota(false)), Reply::Usage(vec![]));
    // Drift the record behind the state machine's back.
    let mut txn = Txn::new(&fs.store);
    errno(quota::charge(&mut txn, Uid(alice), 100, 3)).unwrap();
    fs.store.apply(Tree::State, txn.into_writes()).unwrap();
    let drift = UsageCheck {
        uid: Uid(alice),
        recorded: usage(142, 5),
        actual: usage(42, 2),
    };
    assert_eq!(fs.quota_diffs(false), vec![drift.clone()]);
    assert_eq!(
        fs.quota_diffs(false),
        vec![drift.clone()],
        "without fix, nothing changes"
    );
    assert_eq!(fs.quota_diffs(true), vec![drift]);
    assert_eq!(fs.usage_of(alice), usage(42, 2));
    assert_eq!(fs.quota_diffs(false), vec![]);
}
