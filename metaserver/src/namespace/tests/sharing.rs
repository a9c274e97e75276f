//! Shares, reachability through cached paths, and ACLs set through their
//! extended attributes.

use super::accounts::*;
use super::*;
use crate::namespace::acl::{Acl, Tag, ACCESS_XATTR, DEFAULT_XATTR};
use crate::namespace::caller::{R as RD, W as WR, X as EX};
use crate::namespace::shares::Grantee;

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
