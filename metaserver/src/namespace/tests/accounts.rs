//! Accounts (users, groups, sign-ins), quotas, shares, reachability, and
//! ACLs set through their extended attributes.

use super::*;
use crate::namespace::accounts::{self as acct, AccountOp, FIRST_ID};
use crate::namespace::acl::{Acl, Tag, ACCESS_XATTR, DEFAULT_XATTR};
use crate::namespace::blocks::{SlotWrite, SLOT_SIZE};
use crate::namespace::perm::{R as RD, W as WR, X as EX};
use crate::namespace::quota::{Usage, UsageCheck};
use crate::namespace::shares::Grantee;
use nimbus_common::{BlockId, ServerId};

const MIB: u64 = 1 << 20;
const SLOT: u64 = SLOT_SIZE;

fn account(op: AccountOp) -> Op {
    Op::Account(op)
}

fn add_user(name: &str, quota_bytes: u64, quota_inodes: u64) -> Op {
    account(AccountOp::AddUser {
        name: name.into(),
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1${name}"),
        admin: false,
        quota_bytes,
        quota_inodes,
    })
}

fn add_admin(name: &str) -> Op {
    let mut op = add_user(name, 0, 0);
    if let Op::Account(AccountOp::AddUser { admin, .. }) = &mut op {
        *admin = true;
    }
    op
}

fn init_admin(name: &str) -> Op {
    let (name, hash) = (name.into(), format!("hash-of-{name}"));
    account(AccountOp::InitAdmin { name, hash })
}

fn add_group(name: &str) -> Op {
    account(AccountOp::AddGroup { name: name.into() })
}

fn set_member(gid: u32, uid: u32, add: bool) -> Op {
    let (gid, uid) = (Gid(gid), Uid(uid));
    account(AccountOp::SetMember { gid, uid, add })
}

fn set_quota(uid: u32, bytes: Option<u64>, inodes: Option<u64>) -> Op {
    let uid = Uid(uid);
    account(AccountOp::SetQuota { uid, bytes, inodes })
}

fn check_quota(fix: bool) -> Op {
    account(AccountOp::CheckQuota { fix })
}

fn remove_user(uid: u32) -> Op {
    account(AccountOp::RemoveUser { uid: Uid(uid) })
}

fn sign_in(id: u8, uid: u32, expires_ms: u64) -> Op {
    let (id, uid) = ([id; 16], Uid(uid));
    account(AccountOp::SignIn { id, uid, expires_ms })
}

fn sign_out(id: u8) -> Op {
    account(AccountOp::SignOut { id: [id; 16] })
}

fn set_disabled(uid: u32, disabled: bool) -> Op {
    let uid = Uid(uid);
    account(AccountOp::SetDisabled { uid, disabled })
}

fn share(ino: Ino, grantee: Grantee, rw: bool) -> Op {
    Op::Share { ino, grantee, rw }
}

fn unshare(ino: Ino, grantee: Grantee) -> Op {
    Op::Unshare { ino, grantee }
}

fn to_user(uid: u32) -> Grantee {
    Grantee::User(Uid(uid))
}

/// Block `n`, `len` bytes, written into `slot` on server 1.
fn slot(slot: u64, n: u8, len: u64) -> SlotWrite {
    SlotWrite {
        slot,
        block: BlockId([n; 16]),
        len,
        crc: u32::from(n),
        servers: vec![ServerId(1)],
    }
}

fn commit(ino: Ino, slots: Vec<SlotWrite>, size: u64) -> Op {
    Op::CommitWrite { ino, slots, size }
}

/// MakeNode with the creator's umask.
fn masked(parent: Ino, name: &str, kind: FileKind, perm: u16, mask: u16) -> Op {
    let mut op = node(parent, name, kind, perm);
    if let Op::MakeNode { umask, .. } = &mut op {
        *umask = Some(mask);
    }
    op
}

// ACL entry tags, as Linux encodes them.
const USER_OBJ: u16 = 0x01;
const NAMED_USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// The `system.posix_acl_*` encoding of (tag, perm, id) entries.
fn acl_value(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// user::rw-, user:`uid`:`named`, group::---, mask::`mask`, other::---.
fn named_acl(uid: u32, named: u16, mask: u16) -> Vec<u8> {
    acl_value(&[
        (USER_OBJ, 6, 0),
        (NAMED_USER, named, uid),
        (GROUP_OBJ, 0, 0),
        (MASK, mask, 0),
        (OTHER, 0, 0),
    ])
}

/// The perm of the entry tagged `tag` in a stored ACL.
fn entry_perm(value: &[u8], tag: Tag) -> Option<u16> {
    let acl = Acl::parse(value).unwrap();
    acl.entries().iter().find(|e| e.tag == tag).map(|e| e.perm)
}

impl Fs {
    /// Adds a user as root; their uid.
    #[track_caller]
    fn add_account(&mut self, name: &str, quota_bytes: u64, quota_inodes: u64) -> u32 {
        match self.ok(add_user(name, quota_bytes, quota_inodes)) {
            Reply::Id(id) => id,
            other => panic!("expected an id, got {other:?}"),
        }
    }

    #[track_caller]
    fn add_group_id(&mut self, name: &str) -> u32 {
        match self.ok(add_group(name)) {
            Reply::Id(id) => id,
            other => panic!("expected an id, got {other:?}"),
        }
    }

    fn find_user(&self, name: &str) -> Option<acct::User> {
        acct::user_by_name(&Txn::new(&self.store), name).unwrap()
    }

    #[track_caller]
    fn account_of(&self, name: &str) -> acct::User {
        self.find_user(name).unwrap_or_else(|| panic!("no user {name}"))
    }

    /// The caller a signed-in `name` acts as.
    fn acting_as(&self, name: &str) -> Caller {
        acct::caller_of(&Txn::new(&self.store), &self.account_of(name)).unwrap()
    }

    fn home_of(&self, name: &str) -> Ino {
        self.account_of(name).home
    }

    fn usage_of(&self, uid: u32) -> Usage {
        quota::usage(&Txn::new(&self.store), Uid(uid)).unwrap()
    }

    fn inode_of(&self, ino: Ino) -> Inode {
        Txn::new(&self.store).inode(ino).unwrap().unwrap()
    }

    /// perm::access: mode bits, ACL, then shares.
    fn may(&self, c: &Caller, ino: Ino, mask: u16) -> Result<(), Errno> {
        errno(perm::access(&Txn::new(&self.store), &self.inode_of(ino), c, mask))
    }

    fn reach(&self, c: &Caller, ino: Ino) -> Result<(), Errno> {
        errno(perm::reachable(&Txn::new(&self.store), &self.inode_of(ino), c))
    }

    /// What CheckQuota{fix} (as root) reports.
    #[track_caller]
    fn quota_diffs(&mut self, fix: bool) -> Vec<UsageCheck> {
        match self.ok(check_quota(fix)) {
            Reply::Usage(u) => u,
            other => panic!("expected usage, got {other:?}"),
        }
    }

    /// The names in `dir` as `c` lists them.
    fn ls_as(&self, c: &Caller, dir: Ino) -> Result<String, Errno> {
        let (entries, _) = self.page(c, dir, 0, READDIR_MAX)?;
        let mut names: Vec<String> = entries.iter().map(|e| text(&e.name)).collect();
        names.sort();
        Ok(names.join(" "))
    }

    fn signed_in(&self, id: u8) -> Option<acct::SignIn> {
        acct::sign_in(&Txn::new(&self.store), &[id; 16]).unwrap()
    }
}

fn usage(bytes: u64, inodes: u64) -> Usage {
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

// ---- shares ----

/// alice with /home/alice/proj (0700) holding doc (0600), and diary (0600)
/// in her home; bob and carol with nothing.
struct Sharing {
    fs: Fs,
    alice: u32,
    bob: u32,
    carol: u32,
    home: Ino,
    proj: Ino,
    doc: Ino,
}

fn sharing() -> Sharing {
    let mut fs = Fs::new();
    let alice = fs.add_account("alice", 0, 0);
    let bob = fs.add_account("bob", 0, 0);
    let carol = fs.add_account("carol", 0, 0);
    let (a, home) = (fs.acting_as("alice"), fs.home_of("alice"));
    let proj = fs.make(&a, node(home, "proj", DIR, 0o700)).ino;
    let doc = fs.make(&a, node(proj, "doc", REG, 0o600)).ino;
    fs.make(&a, node(home, "diary", REG, 0o600));
    Sharing {
        fs,
        alice,
        bob,
        carol,
        home,
        proj,
        doc,
    }
}

#[test]
fn a_share_lets_the_grantee_reach_only_the_shared_folder() {
    let Sharing {
        mut fs,
        alice,
        bob,
        home,
        proj,
        doc,
        ..
    } = sharing();
    let (a, bc) = (fs.acting_as("alice"), fs.acting_as("bob"));
    let ino = |r: Result<Attr, Errno>| r.map(|a| a.ino);
    // Before: nothing.
    assert_eq!(ino(fs.look_as(&bc, home, "proj")), Err(E::EACCES));
    assert_eq!(fs.ls_as(&bc, home), Err(E::EACCES));
    assert_eq!(fs.ls_as(&bc, proj), Err(E::EACCES));
    assert_eq!(fs.may(&bc, doc, RD), Err(E::EACCES));
    assert_eq!(fs.reach(&bc, doc), Err(E::EACCES));
    fs.no_as(&bc, file(proj, "new"), E::EACCES);

    // Read-write.
    fs.ok_as(&a, share(proj, to_user(bob), true));
    assert_eq!(ino(fs.look_as(&bc, home, "proj")), Ok(proj));
    assert_eq!(ino(fs.look_as(&bc, home, "diary")), Err(E::EACCES));
    assert_eq!(ino(fs.look_as(&bc, home, "nothing")), Err(E::EACCES), "not even ENOENT");
    assert_eq!(fs.ls_as(&bc, home), Err(E::EACCES));
    assert_eq!(fs.ls_as(&bc, proj).as_deref(), Ok("doc"));
    assert_eq!(ino(fs.look_as(&bc, proj, "doc")), Ok(doc));
    assert_eq!(ino(fs.look_as(&bc, proj, "..")), Ok(home));
    assert_eq!((fs.reach(&bc, doc), fs.reach(&bc, proj)), (Ok(()), Ok(())));
    assert_eq!(fs.may(&bc, doc, RD | WR), Ok(()));
    assert_eq!(fs.may(&bc, doc, EX), Err(E::EACCES), "a share makes nothing executable");
    assert_eq!(fs.may(&bc, home, RD), Err(E::EACCES));
    let new = fs.make(&bc, file(proj, "new"));
    assert_eq!(new.uid, Uid(bob));
    fs.ok_as(&bc, commit(doc, vec![slot(0, 1, 10)], 10));
    assert_eq!(fs.usage_of(alice).bytes, 10, "the owner pays for the grantee's writes");
    assert_eq!(fs.usage_of(bob), usage(0, 2));
    // Carol has no share.
    let cc = fs.acting_as("carol");
    assert_eq!(ino(fs.look_as(&cc, home, "proj")), Err(E::EACCES));

    // Read-only replaces read-write.
    fs.ok_as(&a, share(proj, to_user(bob), false));
    fs.no_as(&bc, file(proj, "more"), E::EACCES);
    fs.no_as(&bc, unlink(proj, "new"), E::EACCES);
    fs.no_as(&bc, commit(doc, vec![slot(0, 2, 20)], 20), E::EACCES);
    assert_eq!(fs.may(&bc, doc, RD), Ok(()));
    assert_eq!(fs.may(&bc, doc, WR), Err(E::EACCES));
    assert_eq!(
        errno(access(&Txn::new(&fs.store), &bc, doc, RD)).map(|a| a.size),
        Ok(10)
    );
    assert_eq!(ino(fs.look_as(&bc, home, "proj")), Ok(proj));
    assert_eq!(fs.ls_as(&bc, proj).as_deref(), Ok("doc new"));
    assert_eq!(fs.reach(&bc, doc), Ok(()));

    // Revoked: at once.
    fs.ok_as(&a, unshare(proj, to_user(bob)));
    assert_eq!(ino(fs.look_as(&bc, home, "proj")), Err(E::EACCES));
    assert_eq!(fs.ls_as(&bc, proj), Err(E::EACCES));
    assert_eq!(fs.may(&bc, doc, RD), Err(E::EACCES));
    assert_eq!(fs.reach(&bc, doc), Err(E::EACCES));
    fs.no_as(&a, unshare(proj, to_user(bob)), E::ENOENT);
}

#[test]
fn only_the_owner_or_the_superuser_shares() {
    let Sharing {
        mut fs,
        bob,
        carol,
        home,
        proj,
        ..
    } = sharing();
    let (a, bc) = (fs.acting_as("alice"), fs.acting_as("bob"));
    fs.no_as(&bc, share(proj, to_user(bob), true), E::EPERM);
    fs.no_as(&bc, share(proj, to_user(carol), false), E::EPERM);
    fs.no_as(&a, share(proj, to_user(4242), true), E::ENOENT);
    fs.no_as(&a, share(proj, Grantee::Group(Gid(4242)), true), E::ENOENT);
    fs.no_as(&a, share(Ino(999_999), to_user(bob), true), E::ENOENT);
    assert_eq!(fs.look_as(&bc, home, "proj").map(|a| a.ino), Err(E::EACCES));
    // Root may share anyone's folder; the share is the owner's to end.
    fs.ok(share(proj, to_user(bob), true));
    assert_eq!(fs.look_as(&bc, home, "proj").map(|a| a.ino), Ok(proj));
    fs.no_as(&bc, unshare(proj, to_user(bob)), E::EPERM);
    fs.ok_as(&a, unshare(proj, to_user(bob)));
    fs.no(unshare(proj, to_user(bob)), E::ENOENT);
    // A grantee cannot pass a read-write share on.
    fs.ok_as(&a, share(proj, to_user(bob), true));
    fs.no_as(&bc, share(proj, to_user(carol), true), E::EPERM);
    let cc = fs.acting_as("carol");
    assert_eq!(fs.look_as(&cc, home, "proj").map(|a| a.ino), Err(E::EACCES));
}

#[test]
fn a_group_share_reaches_the_groups_members() {
    let Sharing {
        mut fs,
        bob,
        home,
        proj,
        doc,
        ..
    } = sharing();
    let a = fs.acting_as("alice");
    let team = fs.add_group_id("team");
    let stale = fs.acting_as("bob");
    fs.ok(set_member(team, bob, true));
    fs.ok_as(&a, share(proj, Grantee::Group(Gid(team)), true));
    let bc = fs.acting_as("bob");
    assert!(bc.in_group(Gid(team)) && !stale.in_group(Gid(team)));
    assert_eq!(fs.look_as(&bc, home, "proj").map(|a| a.ino), Ok(proj));
    assert_eq!(fs.look_as(&stale, home, "proj").map(|a| a.ino), Err(E::EACCES));
    assert_eq!(fs.reach(&bc, doc), Ok(()));
    assert_eq!(fs.may(&bc, doc, RD | WR), Ok(()));
    fs.make(&bc, file(proj, "bobs"));
    let cc = fs.acting_as("carol");
    assert_eq!(fs.look_as(&cc, home, "proj").map(|a| a.ino), Err(E::EACCES));
    // Leaving the group ends it for the next caller made.
    fs.ok(set_member(team, bob, false));
    let bc = fs.acting_as("bob");
    assert_eq!(fs.look_as(&bc, home, "proj").map(|a| a.ino), Err(E::EACCES));
    assert_eq!(fs.reach(&bc, doc), Err(E::EACCES));
}

#[test]
fn a_shared_file_opens_the_way_to_itself_only() {
    let Sharing {
        mut fs,
        carol,
        home,
        proj,
        doc,
        ..
    } = sharing();
    let a = fs.acting_as("alice");
    fs.make(&a, node(proj, "secret", REG, 0o600));
    fs.ok_as(&a, share(doc, to_user(carol), false));
    let cc = fs.acting_as("carol");
    assert_eq!(fs.look_as(&cc, home, "proj").map(|a| a.ino), Ok(proj));
    assert_eq!(fs.look_as(&cc, proj, "doc").map(|a| a.ino), Ok(doc));
    assert_eq!(fs.look_as(&cc, proj, "secret").map(|a| a.ino), Err(E::EACCES));
    assert_eq!(fs.ls_as(&cc, proj), Err(E::EACCES));
    assert_eq!((fs.reach(&cc, doc), fs.may(&cc, doc, RD)), (Ok(()), Ok(())));
    assert_eq!(fs.may(&cc, doc, WR), Err(E::EACCES));
}

// ---- reachability ----

#[test]
fn reachable_needs_search_on_every_ancestor() {
    let mut fs = Fs::new();
    let d = fs.dir_with("d", 0o700);
    let sub = fs.mkdir(d, "sub");
    let f = fs.make(&root(), node(sub, "f", REG, 0o644)).ino;
    let u = user();
    assert_eq!(fs.may(&u, f, RD), Ok(()), "the file's own mode allows reading");
    assert_eq!(fs.may(&u, sub, RD | EX), Ok(()));
    assert_eq!(fs.reach(&u, f), Err(E::EACCES));
    assert_eq!(fs.reach(&u, sub), Err(E::EACCES));
    assert_eq!(fs.reach(&u, d), Ok(()), "the root is searchable");
    assert_eq!(fs.reach(&root(), f), Ok(()));
    // Search (x) is enough; read is not needed.
    fs.ok(chmod(d, 0o711));
    assert_eq!(fs.reach(&u, f), Ok(()));
    // Only the directories above count, not the inode itself.
    fs.ok(chmod(sub, 0o700));
    assert_eq!((fs.reach(&u, f), fs.reach(&u, sub)), (Err(E::EACCES), Ok(())));
    // A file moved out follows its new parent.
    fs.ok(mv(sub, "f", R, "f"));
    assert_eq!(fs.reach(&u, f), Ok(()));
    fs.ok(mv(R, "f", sub, "f"));
    assert_eq!(fs.reach(&u, f), Err(E::EACCES));
}

// ---- ACLs through setxattr ----

#[test]
fn an_access_acl_grants_a_named_user_and_chmod_narrows_its_mask() {
    let mut fs = Fs::new();
    let open = fs.dir_with("open", 0o777);
    let owner = user();
    let f = fs.make(&owner, node(open, "f", REG, 0o600)).ino;
    let (named, stranger, member) = (other(), caller(3000, &[3000]), caller(4000, &[1000]));
    assert_eq!(fs.may(&named, f, RD), Err(E::EACCES));
    let value = named_acl(2000, 4, 4);
    fs.no_as(&named, setx(f, ACCESS_XATTR, &value, 0), E::EPERM);
    fs.ok_as(&owner, setx(f, ACCESS_XATTR, &value, 0));
    assert_eq!(fs.attr(f).perm, 0o640, "the group bits are the mask");
    let stored = fs.xget(&named, f, ACCESS_XATTR).unwrap();
    assert_eq!(Acl::parse(&stored), Acl::parse(&value));
    assert_eq!(fs.may(&named, f, RD), Ok(()));
    assert_eq!(fs.may(&named, f, WR), Err(E::EACCES));
    assert_eq!(fs.may(&stranger, f, RD), Err(E::EACCES));
    assert_eq!(fs.may(&member, f, RD), Err(E::EACCES), "group::--- despite the mask");
    assert_eq!(fs.may(&owner, f, RD | WR), Ok(()));
    // chmod 0600 sets the mask to ---: the named entry stays, masked out.
    fs.ok_as(&owner, chmod(f, 0o600));
    assert_eq!(fs.attr(f).perm, 0o600);
    assert_eq!(fs.may(&named, f, RD), Err(E::EACCES));
    let stored = fs.xget(&root(), f, ACCESS_XATTR).unwrap();
    assert_eq!(entry_perm(&stored, Tag::Mask), Some(0));
    assert_eq!(entry_perm(&stored, Tag::User(Uid(2000))), Some(4));
    // Widening the mask again restores the entry.
    fs.ok_as(&owner, chmod(f, 0o660));
    assert_eq!(fs.may(&named, f, RD), Ok(()));
    assert_eq!(fs.may(&named, f, WR), Err(E::EACCES), "the entry itself is r--");
    // A mask wider than the named entry: rw- for the named user.
    fs.ok_as(&owner, setx(f, ACCESS_XATTR, named_acl(2000, 7, 6), 0));
    assert_eq!(fs.attr(f).perm, 0o660);
    assert_eq!(fs.may(&named, f, RD | WR), Ok(()));
    assert_eq!(fs.may(&named, f, EX), Err(E::EACCES));
}

#[test]
fn a_minimal_acl_is_not_stored_and_a_malformed_one_is_einval() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let d = fs.mkdir(R, "d");
    fs.ok(setx(f, ACCESS_XATTR, named_acl(2000, 4, 4), 0));
    assert!(fs.xget(&root(), f, ACCESS_XATTR).is_ok());
    let minimal = acl_value(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 1, 0)]);
    fs.ok(setx(f, ACCESS_XATTR, &minimal, 0));
    assert_eq!(fs.attr(f).perm, 0o751, "the mode says it all");
    assert_eq!(fs.xget(&root(), f, ACCESS_XATTR), Err(E::ENODATA));
    assert_eq!(fs.xlist(&root(), f), Ok(String::new()));
    assert_eq!(fs.may(&other(), f, RD), Err(E::EACCES), "the named entry is gone");
    fs.ok(setx(d, ACCESS_XATTR, &minimal, 0));
    assert_eq!(fs.attr(d).perm, 0o751);
    assert_eq!(fs.xlist(&root(), d), Ok(String::new()));
    // Malformed values change nothing.
    let mut v1 = named_acl(2000, 4, 4);
    v1[0] = 1;
    let no_mask = acl_value(&[
        (USER_OBJ, 6, 0),
        (NAMED_USER, 4, 2000),
        (GROUP_OBJ, 0, 0),
        (OTHER, 0, 0),
    ]);
    let bad_perm = acl_value(&[(USER_OBJ, 8, 0), (GROUP_OBJ, 0, 0), (OTHER, 0, 0)]);
    let full = named_acl(2000, 4, 4);
    let cut = full[..full.len() - 3].to_vec();
    for bad in [b("junk"), b"\x02\0\0\0".to_vec(), v1, no_mask, bad_perm, cut] {
        fs.no(setx(f, ACCESS_XATTR, &bad, 0), E::EINVAL);
        fs.no(setx(d, DEFAULT_XATTR, &bad, 0), E::EINVAL);
    }
    assert_eq!(fs.attr(f).perm, 0o751);
    assert_eq!(fs.xlist(&root(), f), Ok(String::new()));
    assert_eq!(fs.xlist(&root(), d), Ok(String::new()));
    // A default ACL belongs on directories only.
    fs.no(setx(f, DEFAULT_XATTR, named_acl(2000, 4, 4), 0), E::EACCES);
}

#[test]
fn a_default_acl_is_inherited_and_overrides_the_umask() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let def = acl_value(&[
        (USER_OBJ, 7, 0),
        (NAMED_USER, 7, 2000),
        (GROUP_OBJ, 5, 0),
        (MASK, 7, 0),
        (OTHER, 0, 0),
    ]);
    fs.ok(setx(d, DEFAULT_XATTR, &def, 0));
    assert_eq!(fs.attr(d).perm, 0o755, "a default ACL leaves the mode alone");
    assert_eq!(fs.xget(&root(), d, ACCESS_XATTR), Err(E::ENODATA));
    // A file: the umask 077 is ignored; the create mode masks the ACL.
    let f = fs.make(&root(), masked(d, "f", REG, 0o666, 0o077)).ino;
    assert_eq!(fs.attr(f).perm, 0o660);
    let acc = fs.xget(&root(), f, ACCESS_XATTR).expect("an inherited access ACL");
    assert_eq!(entry_perm(&acc, Tag::User(Uid(2000))), Some(7));
    assert_eq!(entry_perm(&acc, Tag::Mask), Some(6));
    assert_eq!(entry_perm(&acc, Tag::Other), Some(0));
    assert_eq!(
        fs.xget(&root(), f, DEFAULT_XATTR),
        Err(E::ENODATA),
        "files get no default ACL"
    );
    assert_eq!(fs.may(&other(), f, RD | WR), Ok(()));
    assert_eq!(fs.may(&caller(3000, &[3000]), f, RD), Err(E::EACCES));
    // A directory gets both, and passes them on.
    let sub = fs.make(&root(), masked(d, "sub", DIR, 0o777, 0o022)).ino;
    assert_eq!(fs.attr(sub).perm, 0o770);
    let sub_def = fs.xget(&root(), sub, DEFAULT_XATTR).unwrap();
    assert_eq!(Acl::parse(&sub_def), Acl::parse(&def));
    assert!(fs.xget(&root(), sub, ACCESS_XATTR).is_ok());
    let g = fs.make(&root(), masked(sub, "g", REG, 0o640, 0o077)).ino;
    assert_eq!(fs.attr(g).perm, 0o640);
    let acc = fs.xget(&root(), g, ACCESS_XATTR).unwrap();
    assert_eq!(entry_perm(&acc, Tag::Mask), Some(4));
    assert_eq!(fs.may(&other(), g, RD), Ok(()));
    assert_eq!(fs.may(&other(), g, WR), Err(E::EACCES));
    // Without a default ACL, the umask applies and no ACL appears.
    let e = fs.mkdir(R, "e");
    let h = fs.make(&root(), masked(e, "h", REG, 0o666, 0o022));
    assert_eq!(h.perm, 0o644);
    assert_eq!(fs.xlist(&root(), h.ino), Ok(String::new()));
    assert_eq!(fs.make(&root(), masked(e, "i", DIR, 0o777, 0o027)).perm, 0o750);
    assert_eq!(fs.make(&root(), node(e, "j", REG, 0o666)).perm, 0o666, "no umask given");
}

#[test]
fn a_file_moved_out_of_a_shared_folder_leaves_the_share() {
    let Sharing {
        mut fs,
        bob,
        home,
        proj,
        doc,
        ..
    } = sharing();
    let a = fs.acting_as("alice");
    let diary = fs.look(home, "diary").unwrap();
    fs.ok_as(&a, share(proj, to_user(bob), false));
    let bc = fs.acting_as("bob");
    fs.ok_as(&a, mv(proj, "doc", home, "doc"));
    assert_eq!(
        (fs.may(&bc, doc, RD), fs.reach(&bc, doc)),
        (Err(E::EACCES), Err(E::EACCES))
    );
    fs.ok_as(&a, mv(home, "diary", proj, "diary"));
    assert_eq!((fs.may(&bc, diary, RD), fs.reach(&bc, diary)), (Ok(()), Ok(())));
}

#[test]
#[ignore = "bug: ops::exchange updates `parent` only for directories, so an exchanged file keeps its old folder's share"]
fn an_exchanged_file_follows_its_new_folder_for_shares() {
    let Sharing {
        mut fs,
        bob,
        home,
        proj,
        doc,
        ..
    } = sharing();
    let a = fs.acting_as("alice");
    let diary = fs.look(home, "diary").unwrap();
    fs.ok_as(&a, share(proj, to_user(bob), false));
    let bc = fs.acting_as("bob");
    fs.ok_as(&a, rename(home, "diary", proj, "doc", RENAME_EXCHANGE));
    assert_eq!((fs.look(proj, "doc"), fs.look(home, "diary")), (Ok(diary), Ok(doc)));
    // doc now lives only in alice's private home; diary in the shared folder.
    assert_eq!(fs.may(&bc, doc, RD), Err(E::EACCES), "doc left the share");
    assert_eq!(fs.reach(&bc, doc), Err(E::EACCES), "doc left the share");
    assert_eq!(fs.may(&bc, diary, RD), Ok(()), "diary is in the share now");
    assert_eq!(fs.reach(&bc, diary), Ok(()), "diary is in the share now");
}

#[test]
#[ignore = "bug: ops::link does not make the new name the file's `parent`, so a file whose shared name is removed stays shared"]
fn a_file_whose_shared_name_is_removed_leaves_the_share() {
    let Sharing {
        mut fs,
        bob,
        home,
        proj,
        doc,
        ..
    } = sharing();
    let a = fs.acting_as("alice");
    fs.ok_as(&a, share(proj, to_user(bob), true));
    let bc = fs.acting_as("bob");
    assert_eq!(fs.may(&bc, doc, RD | WR), Ok(()));
    // `ln proj/doc kept; rm proj/doc`: doc is only in alice's private home.
    fs.ok_as(&a, link(doc, home, "kept"));
    fs.ok_as(&a, unlink(proj, "doc"));
    assert_eq!(fs.look(home, "kept"), Ok(doc));
    assert_eq!(fs.may(&bc, doc, RD), Err(E::EACCES));
    assert_eq!(fs.reach(&bc, doc), Err(E::EACCES));
    fs.no_as(&bc, commit(doc, vec![slot(0, 1, 10)], 10), E::EACCES);
}
