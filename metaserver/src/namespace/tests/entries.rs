//! Creating and removing directory entries: create, mknod, mkdir, symlink, link,
//! unlink and rmdir, and the permissions they need.

use super::*;

#[test]
fn create_mknod_and_mkdir() {
    let mut fs = Fs::new();
    let f = fs.make(&root(), node(R, "f", REG, 0o640));
    let t = fs.now();
    assert_eq!((f.kind, f.perm, f.nlink, f.size), (REG, 0o640, 1, 0));
    assert_eq!((f.atime, f.mtime, f.ctime), (t, t, t));
    assert_eq!(fs.look_as(&root(), R, "f"), Ok(f.clone()));
    let r = fs.attr(R);
    assert_eq!((r.mtime, r.ctime, r.nlink), (t, t, 2));
    let p = fs.make(&root(), mknod(R, "p", FileKind::Fifo, 0o600, 77));
    assert_eq!((p.kind, p.rdev), (FileKind::Fifo, 0));
    let c = fs.make(&root(), mknod(R, "c", FileKind::CharDevice, 0o600, 0x0103));
    assert_eq!((c.rdev, fs.attr(c.ino).rdev), (0x0103, 0x0103));
    fs.ok(node(R, "s", FileKind::Socket, 0o755));
    assert_eq!(fs.make(&root(), node(R, "m", REG, 0o177_777)).perm, 0o7777);
    fs.no(file(R, "f"), E::EEXIST);
    fs.no(dir(R, "p"), E::EEXIST);
    fs.no(file(Ino(999), "x"), E::ENOENT);
    fs.no(file(f.ino, "x"), E::ENOTDIR);
    // mkdir: two links, one more for the parent, ".." is the parent.
    let a = fs.make(&root(), dir(R, "a"));
    assert_eq!((a.kind, a.nlink, a.size, a.perm), (DIR, 2, DIR_SIZE, 0o755));
    let d = fs.mkdir(a.ino, "d");
    let (t, aa) = (fs.now(), fs.attr(a.ino));
    assert_eq!((aa.nlink, aa.mtime, aa.ctime, fs.nlink(R)), (3, t, t, 3));
    assert_eq!((fs.look(d, ".."), fs.look(d, ".")), (Ok(a.ino), Ok(d)));
    assert_eq!(fs.look(a.ino, "missing"), Err(E::ENOENT));
    assert_eq!(fs.look(f.ino, "x"), Err(E::ENOTDIR));
    assert_eq!(fs.ls(R), "a c f m p s");
}

#[test]
fn create_needs_write_and_search_permission() {
    let mut fs = Fs::new();
    let u = user();
    fs.no_as(&u, file(R, "x"), E::EACCES);
    fs.no_as(&u, dir(R, "x"), E::EACCES);
    fs.no_as(&u, sym(R, "x", "t"), E::EACCES);
    let no_x = fs.dir_with("nox", 0o776);
    fs.no_as(&u, file(no_x, "x"), E::EACCES);
    assert_eq!(fs.look_as(&u, no_x, "x"), Err(E::EACCES));
    let no_w = fs.dir_with("now", 0o775);
    fs.no_as(&u, file(no_w, "x"), E::EACCES);
    let open = fs.dir_with("open", 0o777);
    let x = fs.make(&u, file(open, "x"));
    assert_eq!((x.uid, x.gid), (Uid(1000), Gid(1000)));
    assert_eq!(fs.ls(R), "now nox open");
}

#[test]
fn setgid_directories_pass_on_their_group() {
    let mut fs = Fs::new();
    let u = user();
    let sg = fs.dir_with("sg", 0o2777);
    fs.ok(chgrp(sg, 500));
    assert_eq!(fs.attr(sg).perm, 0o2777);
    let sub = fs.make(&u, dir(sg, "sub"));
    assert_eq!((sub.gid, sub.perm), (Gid(500), 0o2755));
    let f = fs.make(&u, file(sg, "f"));
    assert_eq!((f.gid, f.perm), (Gid(500), 0o644));
    let g = fs.make(&u, node(sg, "g", REG, 0o2755));
    assert_eq!(g.perm, 0o755, "not a member of 500");
    let deeper = fs.make(&u, node(sub.ino, "d", DIR, 0o700));
    assert_eq!((deeper.gid, deeper.perm), (Gid(500), 0o2700));
}

#[test]
fn symlinks_and_readlink() {
    let mut fs = Fs::new();
    let l = fs.make(&root(), sym(R, "l", "some/where"));
    assert_eq!((l.perm, l.size, l.nlink), (0o777, 10, 1));
    assert_eq!(fs.link_target(l.ino), Ok(b("some/where")));
    fs.no(sym(R, "e", ""), E::ENOENT);
    fs.no(sym(R, "e", "t".repeat(PATH_MAX + 1)), E::ENAMETOOLONG);
    fs.no(sym(R, "e", "a\0b"), E::EINVAL);
    fs.no(sym(R, "l", "x"), E::EEXIST);
    let max = "t".repeat(PATH_MAX);
    let m = fs.make(&root(), sym(R, "max", &max)).ino;
    assert_eq!(fs.link_target(m), Ok(b(max)));
    let f = fs.create(R, "f");
    assert_eq!(fs.link_target(f), Err(E::EINVAL));
    assert_eq!(fs.link_target(R), Err(E::EINVAL));
    assert_eq!(fs.link_target(Ino(999)), Err(E::ENOENT));
    assert_eq!(fs.ls(R), "f l max");
}

#[test]
fn unlink_removes_files() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let f = fs.create(d, "f");
    fs.no(unlink(d, "nope"), E::ENOENT);
    fs.no(unlink(R, "d"), E::EISDIR);
    fs.no(unlink(f, "x"), E::ENOTDIR);
    fs.no(unlink(Ino(999), "x"), E::ENOENT);
    fs.no_as(&user(), unlink(d, "f"), E::EACCES);
    fs.ok(unlink(d, "f"));
    let (t, da) = (fs.now(), fs.attr(d));
    assert_eq!((da.mtime, da.ctime, da.nlink), (t, t, 2));
    assert_eq!(fs.get(f), Err(E::ENOENT));
    assert_eq!(fs.look(d, "f"), Err(E::ENOENT));
    fs.ok(sym(d, "l", "t"));
    fs.ok(node(d, "p", FileKind::Fifo, 0o644));
    fs.ok(unlink(d, "l"));
    fs.ok(unlink(d, "p"));
    assert_eq!((fs.stats().0, fs.ls(d)), (2, "".into()));
}

#[test]
fn unlink_of_dot_is_eisdir() {
    // Linux: unlink(2) of "." or ".." fails with EISDIR (do_unlinkat refuses a
    // last component that is not a normal name). Both always exist.
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    fs.no(unlink(d, "."), E::EISDIR);
    fs.no(unlink(d, ".."), E::EISDIR);
}

#[test]
fn hard_links() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let f = fs.create(R, "f");
    let a = fs.make(&root(), link(f, d, "g"));
    let t = fs.now();
    assert_eq!((a.ino, a.nlink, a.ctime, fs.nlink(f)), (f, 2, t, 2));
    assert_eq!((fs.look(d, "g"), fs.nlink(d)), (Ok(f), 2));
    assert_eq!(fs.attr(d).mtime, t);
    fs.no(link(d, R, "dl"), E::EPERM);
    fs.no(link(f, d, "g"), E::EEXIST);
    fs.no(link(f, R, "d"), E::EEXIST);
    fs.no(link(Ino(999), R, "x"), E::ENOENT);
    fs.no(link(f, Ino(999), "x"), E::ENOENT);
    fs.no(link(f, f, "x"), E::ENOTDIR);
    fs.no_as(&user(), link(f, d, "u"), E::EACCES);
    // Renaming one name of an inode onto another does nothing.
    fs.ok(link(f, R, "f2"));
    fs.ok(mv(R, "f", R, "f2"));
    fs.ok(rename(R, "f", R, "f2", RENAME_EXCHANGE));
    assert_eq!((fs.ls(R), fs.nlink(f)), ("d f f2".into(), 3));
    fs.ok(unlink(R, "f"));
    fs.ok(unlink(R, "f2"));
    let left = fs.attr(f);
    assert_eq!((left.nlink, left.ctime, fs.stats().0), (1, fs.now(), 3));
    fs.ok(unlink(d, "g"));
    assert_eq!((fs.get(f), fs.stats().0), (Err(E::ENOENT), 2));
    // EMLINK at LINK_MAX links.
    let h = fs.create(R, "h");
    let mut txn = Txn::new(&fs.store);
    let mut inode = txn.inode(h).unwrap().unwrap();
    inode.nlink = LINK_MAX;
    txn.put_inode(&inode);
    fs.store.apply(Tree::State, txn.into_writes()).unwrap();
    fs.no(link(h, R, "h2"), E::EMLINK);
}

#[test]
fn sticky_directories_protect_entries() {
    let mut fs = Fs::new();
    let (u, o) = (user(), other());
    let tmp = fs.dir_with("tmp", 0o1777);
    fs.ok_as(&u, node(tmp, "mine", REG, 0o666));
    fs.ok_as(&o, node(tmp, "theirs", REG, 0o666));
    fs.ok_as(&o, node(tmp, "tdir", DIR, 0o777));
    fs.no_as(&o, unlink(tmp, "mine"), E::EPERM);
    fs.no_as(&o, mv(tmp, "mine", tmp, "x"), E::EPERM);
    fs.no_as(&u, mv(tmp, "mine", tmp, "theirs"), E::EPERM);
    fs.no_as(&u, rmdir(tmp, "tdir"), E::EPERM);
    fs.ok_as(&u, unlink(tmp, "mine"));
    fs.ok(unlink(tmp, "theirs"));
    assert_eq!(fs.ls(tmp), "tdir");
}

#[test]
fn rmdir_removes_empty_directories() {
    let mut fs = Fs::new();
    let a = fs.mkdir(R, "a");
    let d = fs.mkdir(a, "d");
    fs.create(R, "f");
    fs.no(rmdir(R, "a"), E::ENOTEMPTY);
    fs.no(rmdir(R, "f"), E::ENOTDIR);
    fs.no(rmdir(R, "nope"), E::ENOENT);
    fs.no(rmdir(a, "."), E::EINVAL);
    fs.no(rmdir(d, ".."), E::ENOTEMPTY);
    fs.no_as(&user(), rmdir(a, "d"), E::EACCES);
    assert_eq!(fs.nlink(a), 3);
    fs.ok(rmdir(a, "d"));
    let (t, aa) = (fs.now(), fs.attr(a));
    assert_eq!((aa.nlink, aa.mtime, aa.ctime), (2, t, t));
    assert_eq!(fs.get(d), Err(E::ENOENT));
    fs.ok(rmdir(R, "a"));
    assert_eq!((fs.nlink(R), fs.stats().0, fs.ls(R)), (2, 2, "f".into()));
}
