//! Unit tests of the namespace state machine over an in-memory store.

use super::read::READDIR_MAX;
use super::*;
use crate::store::{scan_all, MemStore, Store, Tree};
use nimbus_common::Errno as E;

const R: Ino = Ino::ROOT;
const REG: FileKind = FileKind::Regular;
const DIR: FileKind = FileKind::Directory;

fn root() -> Caller {
    Caller::root()
}

fn user() -> Caller {
    caller(1000, &[1000])
}

fn other() -> Caller {
    caller(2000, &[2000])
}

fn caller(uid: u32, gids: &[u32]) -> Caller {
    let (uid, gids) = (Uid(uid), gids.iter().map(|&g| Gid(g)).collect());
    Caller { uid, gids }
}

fn b(s: impl AsRef<[u8]>) -> Vec<u8> {
    s.as_ref().to_vec()
}

fn errno<T>(r: Result<T, NsError>) -> Result<T, Errno> {
    r.map_err(|e| match e {
        NsError::Errno(e) => e,
        NsError::Store(e) => panic!("store error: {e}"),
    })
}

fn mknod(parent: Ino, name: impl AsRef<[u8]>, kind: FileKind, perm: u16, rdev: u32) -> Op {
    let (name, target) = (b(name), vec![]);
    Op::MakeNode {
        parent,
        name,
        kind,
        perm,
        rdev,
        target,
    }
}

fn node(parent: Ino, name: impl AsRef<[u8]>, kind: FileKind, perm: u16) -> Op {
    mknod(parent, name, kind, perm, 0)
}

fn file(parent: Ino, name: impl AsRef<[u8]>) -> Op {
    node(parent, name, REG, 0o644)
}

fn dir(parent: Ino, name: impl AsRef<[u8]>) -> Op {
    node(parent, name, DIR, 0o755)
}

fn sym(parent: Ino, name: &str, target: impl AsRef<[u8]>) -> Op {
    let mut op = node(parent, name, FileKind::Symlink, 0);
    if let Op::MakeNode { target: t, .. } = &mut op {
        *t = b(target);
    }
    op
}

fn unlink(parent: Ino, name: impl AsRef<[u8]>) -> Op {
    let name = b(name);
    Op::Unlink { parent, name }
}

fn rmdir(parent: Ino, name: impl AsRef<[u8]>) -> Op {
    let name = b(name);
    Op::Rmdir { parent, name }
}

fn rename(parent: Ino, name: &str, new_parent: Ino, new_name: &str, flags: u32) -> Op {
    let (name, new_name) = (b(name), b(new_name));
    Op::Rename {
        parent,
        name,
        new_parent,
        new_name,
        flags,
    }
}

fn mv(parent: Ino, name: &str, new_parent: Ino, new_name: &str) -> Op {
    rename(parent, name, new_parent, new_name, 0)
}

fn link(ino: Ino, new_parent: Ino, new_name: impl AsRef<[u8]>) -> Op {
    let new_name = b(new_name);
    Op::Link {
        ino,
        new_parent,
        new_name,
    }
}

fn setattr(ino: Ino, f: impl FnOnce(&mut AttrChanges)) -> Op {
    let mut changes = AttrChanges::default();
    f(&mut changes);
    Op::SetAttr { ino, changes }
}

fn chmod(ino: Ino, perm: u16) -> Op {
    setattr(ino, |c| c.perm = Some(perm))
}

fn chown(ino: Ino, uid: u32) -> Op {
    setattr(ino, |c| c.uid = Some(Uid(uid)))
}

fn chgrp(ino: Ino, gid: u32) -> Op {
    setattr(ino, |c| c.gid = Some(Gid(gid)))
}

fn truncate(ino: Ino, size: u64) -> Op {
    setattr(ino, |c| c.size = Some(size))
}

fn utimens(ino: Ino, atime: Option<TimeSet>, mtime: Option<TimeSet>) -> Op {
    setattr(ino, |c| (c.atime, c.mtime) = (atime, mtime))
}

fn at(t: i64) -> Option<TimeSet> {
    Some(TimeSet::At(Timestamp(t)))
}

fn setx(ino: Ino, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>, flags: u32) -> Op {
    let (name, value) = (b(name), b(value));
    Op::SetXattr {
        ino,
        name,
        value,
        flags,
    }
}

fn rmx(ino: Ino, name: &str) -> Op {
    let name = b(name);
    Op::RemoveXattr { ino, name }
}

type Page = (Vec<DirEntry>, bool);

/// A namespace over a fresh in-memory store; its clock advances by one for
/// every batch, so `now()` is the time of the last command.
struct Fs {
    store: MemStore,
    clock: i64,
}

impl Fs {
    fn new() -> Fs {
        let store = MemStore::default();
        let mut fs = Fs { store, clock: 0 };
        fs.batch(vec![]);
        fs
    }

    fn batch(&mut self, cmds: Vec<(Caller, Op)>) -> Vec<Result<Reply, Errno>> {
        self.clock += 1;
        let cmds: Vec<Command> = cmds.into_iter().map(|(caller, op)| Command { caller, op }).collect();
        let mut txn = Txn::new(&self.store);
        let out = apply_batch(&mut txn, Timestamp(self.clock), &cmds).unwrap();
        self.store.apply(Tree::State, txn.into_writes()).unwrap();
        out
    }

    fn run(&mut self, caller: &Caller, op: Op) -> Result<Reply, Errno> {
        self.batch(vec![(caller.clone(), op)]).remove(0)
    }

    #[track_caller]
    fn ok_as(&mut self, caller: &Caller, op: Op) -> Reply {
        self.run(caller, op).unwrap()
    }

    #[track_caller]
    fn ok(&mut self, op: Op) -> Reply {
        self.ok_as(&root(), op)
    }

    #[track_caller]
    fn no_as(&mut self, caller: &Caller, op: Op, e: Errno) {
        assert_eq!(self.run(caller, op), Err(e));
    }

    #[track_caller]
    fn no(&mut self, op: Op, e: Errno) {
        self.no_as(&root(), op, e);
    }

    #[track_caller]
    fn make(&mut self, caller: &Caller, op: Op) -> Attr {
        match self.ok_as(caller, op) {
            Reply::Attr(a) => a,
            Reply::Done => panic!("expected attributes"),
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.clock)
    }

    fn mkdir(&mut self, parent: Ino, name: &str) -> Ino {
        self.make(&root(), dir(parent, name)).ino
    }

    fn create(&mut self, parent: Ino, name: &str) -> Ino {
        self.make(&root(), file(parent, name)).ino
    }

    /// A directory under the root, owned by root, with `perm`.
    fn dir_with(&mut self, name: &str, perm: u16) -> Ino {
        self.make(&root(), node(R, name, DIR, perm)).ino
    }

    fn get(&self, ino: Ino) -> Result<Attr, Errno> {
        errno(getattr(&Txn::new(&self.store), ino))
    }

    fn attr(&self, ino: Ino) -> Attr {
        self.get(ino).unwrap()
    }

    fn nlink(&self, ino: Ino) -> u32 {
        self.attr(ino).nlink
    }

    fn look_as(&self, caller: &Caller, dir: Ino, name: impl AsRef<[u8]>) -> Result<Attr, Errno> {
        errno(lookup(&Txn::new(&self.store), caller, dir, name.as_ref()))
    }

    fn look(&self, dir: Ino, name: impl AsRef<[u8]>) -> Result<Ino, Errno> {
        self.look_as(&root(), dir, name).map(|a| a.ino)
    }

    fn link_target(&self, ino: Ino) -> Result<Vec<u8>, Errno> {
        errno(readlink(&Txn::new(&self.store), ino))
    }

    fn page(&self, c: &Caller, dir: Ino, after: u64, n: usize) -> Result<Page, Errno> {
        errno(readdir(&Txn::new(&self.store), c, dir, after, n))
    }

    /// Every name in `dir`, sorted, separated by spaces.
    fn ls(&self, dir: Ino) -> String {
        let (entries, more) = self.page(&root(), dir, 0, READDIR_MAX).unwrap();
        assert!(!more);
        let mut names: Vec<String> = entries.iter().map(|e| text(&e.name)).collect();
        names.sort();
        names.join(" ")
    }

    /// The names of every page of `dir` after `after`, `n` at a time.
    fn pages(&self, dir: Ino, mut after: u64, n: usize) -> Vec<String> {
        let mut out = vec![];
        loop {
            let (entries, more) = self.page(&root(), dir, after, n).unwrap();
            after = entries.last().map_or(after, |e| e.cookie);
            let names: Vec<String> = entries.iter().map(|e| text(&e.name)).collect();
            out.push(names.join(" "));
            if !more {
                return out;
            }
        }
    }

    /// (inodes, bytes)
    fn stats(&self) -> (u64, u64) {
        let s = errno(statfs(&Txn::new(&self.store))).unwrap();
        (s.inodes, s.bytes)
    }

    fn xget(&self, c: &Caller, ino: Ino, name: impl AsRef<[u8]>) -> Result<Vec<u8>, Errno> {
        errno(getxattr(&Txn::new(&self.store), c, ino, name.as_ref()))
    }

    /// The attribute names `c` sees, separated by spaces.
    fn xlist(&self, c: &Caller, ino: Ino) -> Result<String, Errno> {
        let names = errno(listxattr(&Txn::new(&self.store), c, ino))?;
        Ok(names.iter().map(|n| text(n)).collect::<Vec<_>>().join(" "))
    }
}

fn text(name: &[u8]) -> String {
    String::from_utf8(name.to_vec()).unwrap()
}

#[test]
fn names_are_validated() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let long = "x".repeat(NAME_MAX + 1);
    for kind in [REG, DIR, FileKind::Fifo] {
        for bad in ["", "a/b", "/", "a\0b"] {
            fs.no(node(R, bad, kind, 0o644), E::EINVAL);
        }
        fs.no(node(R, &long, kind, 0o644), E::ENAMETOOLONG);
        for dot in [".", ".."] {
            assert!(fs.run(&root(), node(R, dot, kind, 0)).is_err());
        }
    }
    assert!(fs.run(&root(), sym(R, ".", "t")).is_err());
    assert!(fs.run(&root(), link(f, R, "..")).is_err());
    fs.no(link(f, R, "a/b"), E::EINVAL);
    fs.no(unlink(R, ""), E::EINVAL);
    fs.no(rmdir(R, "a\0"), E::EINVAL);
    fs.no(mv(R, "f", R, &long), E::ENAMETOOLONG);
    fs.no(mv(R, "f", R, "x/y"), E::EINVAL);
    assert_eq!(fs.look(R, &long), Err(E::ENAMETOOLONG));
    assert_eq!(fs.look(R, ""), Err(E::EINVAL));
    let max = "y".repeat(NAME_MAX);
    let m = fs.create(R, &max);
    assert_eq!(fs.look(R, &max), Ok(m));
    assert_eq!(fs.ls(R), format!("f {max}"));
}

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

#[test]
fn rename_files() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let f = fs.create(R, "f");
    fs.ok(mv(R, "f", R, "g"));
    assert_eq!((fs.look(R, "f"), fs.look(R, "g")), (Err(E::ENOENT), Ok(f)));
    assert_eq!(fs.attr(f).ctime, fs.now());
    fs.ok(mv(R, "g", d, "h"));
    assert_eq!((fs.ls(R), fs.ls(d)), ("d".into(), "h".into()));
    let (t, da) = (fs.now(), fs.attr(d));
    assert_eq!((fs.attr(R).mtime, da.mtime, da.ctime), (t, t, t));
    // Replacing a file frees the replaced inode.
    let victim = fs.create(d, "v");
    assert_eq!(fs.stats().0, 4);
    fs.ok(mv(d, "h", d, "v"));
    assert_eq!((fs.get(victim).ok(), fs.look(d, "v")), (None, Ok(f)));
    assert_eq!((fs.stats().0, fs.ls(d)), (3, "v".into()));
    fs.no(mv(d, "nope", R, "x"), E::ENOENT);
    fs.no(mv(Ino(999), "v", R, "x"), E::ENOENT);
    fs.no(mv(d, "v", Ino(999), "x"), E::ENOENT);
    fs.no(mv(d, "v", f, "x"), E::ENOTDIR);
    fs.no_as(&user(), mv(d, "v", R, "x"), E::EACCES);
    fs.ok(mv(d, "v", d, "v"));
    assert_eq!(fs.ls(d), "v");
}

#[test]
fn rename_directories() {
    let mut fs = Fs::new();
    let (a, bb) = (fs.mkdir(R, "a"), fs.mkdir(R, "b"));
    let sub = fs.mkdir(a, "sub");
    let deep = fs.mkdir(sub, "deep");
    fs.create(R, "f");
    fs.create(bb, "inside");
    let empty = fs.mkdir(R, "empty");
    fs.no(mv(R, "a", R, "b"), E::ENOTEMPTY);
    fs.no(mv(R, "a", R, "f"), E::ENOTDIR);
    fs.no(mv(R, "f", R, "a"), E::EISDIR);
    fs.no(mv(R, "a", deep, "x"), E::EINVAL);
    fs.no(mv(R, "a", a, "x"), E::EINVAL);
    assert_eq!(fs.nlink(R), 5);
    // Over an empty directory, from a subdirectory to the root.
    fs.ok(mv(a, "sub", R, "empty"));
    assert_eq!((fs.get(empty).ok(), fs.look(R, "empty")), (None, Ok(sub)));
    assert_eq!((fs.nlink(R), fs.nlink(a)), (5, 2));
    assert_eq!(fs.look(sub, ".."), Ok(R));
    fs.ok(mv(R, "empty", bb, "moved"));
    assert_eq!((fs.nlink(R), fs.nlink(bb)), (4, 3));
    assert_eq!((fs.look(sub, ".."), fs.look(deep, "..")), (Ok(bb), Ok(sub)));
    // The subtree check follows the moved directories.
    fs.no(mv(R, "b", deep, "x"), E::EINVAL);
    fs.ok(mv(sub, "deep", R, "deep"));
    fs.ok(mv(R, "b", deep, "b"));
    assert_eq!(fs.look(bb, ".."), Ok(deep));
    // A non-root caller moving a directory to another parent rewrites its "..".
    let (o1, o2) = (fs.dir_with("o1", 0o777), fs.dir_with("o2", 0o777));
    fs.ok(dir(o1, "rd"));
    fs.no_as(&user(), mv(o1, "rd", o2, "rd"), E::EACCES);
    fs.ok_as(&user(), mv(o1, "rd", o1, "rd2"));
    for (from, to) in [(".", "x"), ("..", "x"), ("f", "."), ("f", "..")] {
        fs.no(mv(if from == "f" { R } else { a }, from, a, to), E::EBUSY);
    }
}

#[test]
fn rename_flags_and_exchange() {
    let mut fs = Fs::new();
    let (a, bb) = (fs.mkdir(R, "a"), fs.mkdir(R, "b"));
    let (f, g) = (fs.create(R, "f"), fs.create(R, "g"));
    fs.no(rename(R, "f", R, "g", RENAME_NOREPLACE), E::EEXIST);
    let both = RENAME_NOREPLACE | RENAME_EXCHANGE;
    fs.no(rename(R, "f", R, "g", both), E::EINVAL);
    fs.no(rename(R, "f", R, "g", 4), E::EINVAL);
    fs.no(rename(R, "f", R, "nope", RENAME_EXCHANGE), E::ENOENT);
    fs.ok(rename(R, "f", R, "h", RENAME_NOREPLACE));
    assert_eq!(fs.ls(R), "a b g h");
    fs.ok(rename(R, "g", R, "h", RENAME_EXCHANGE));
    assert_eq!((fs.look(R, "g"), fs.look(R, "h")), (Ok(f), Ok(g)));
    assert_eq!((fs.attr(f).ctime, fs.attr(g).ctime), (fs.now(), fs.now()));
    // A non-empty directory and a file, across parents.
    let d = fs.mkdir(a, "d");
    fs.create(d, "x");
    fs.ok(mv(R, "g", bb, "file"));
    assert_eq!((fs.nlink(a), fs.nlink(bb)), (3, 2));
    fs.ok(rename(a, "d", bb, "file", RENAME_EXCHANGE));
    assert_eq!((fs.look(a, "d"), fs.look(bb, "file")), (Ok(f), Ok(d)));
    assert_eq!((fs.nlink(a), fs.nlink(bb)), (2, 3));
    assert_eq!((fs.look(d, ".."), fs.ls(d)), (Ok(bb), "x".into()));
    // Two directories across parents.
    let e = fs.mkdir(a, "e");
    fs.ok(rename(a, "e", bb, "file", RENAME_EXCHANGE));
    assert_eq!((fs.nlink(a), fs.nlink(bb)), (3, 3));
    assert_eq!((fs.look(e, ".."), fs.look(d, "..")), (Ok(bb), Ok(a)));
    // Neither side may end up inside itself.
    fs.no(rename(R, "a", a, "e", RENAME_EXCHANGE), E::EINVAL);
    fs.no(rename(a, "e", R, "a", RENAME_EXCHANGE), E::EINVAL);
}

#[test]
fn rename_noreplace_onto_an_existing_name_is_eexist_even_for_the_same_inode() {
    // Linux tests RENAME_NOREPLACE against the positive target dentry in
    // do_renameat2, before vfs_rename's "same inode: do nothing".
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(link(f, R, "g"));
    fs.no(rename(R, "f", R, "g", RENAME_NOREPLACE), E::EEXIST);
    fs.no(rename(R, "f", R, "f", RENAME_NOREPLACE), E::EEXIST);
}

#[test]
fn setattr_ownership_and_mode() {
    let mut fs = Fs::new();
    let (u, o) = (user(), other());
    let open = fs.dir_with("open", 0o777);
    let f = fs.make(&u, file(open, "f")).ino;
    fs.no_as(&o, chmod(f, 0o777), E::EPERM);
    let a = fs.make(&u, chmod(f, 0o600));
    assert_eq!((a.perm, a.ctime), (0o600, fs.now()));
    fs.no_as(&u, chown(f, 2000), E::EPERM);
    fs.no_as(&o, chown(f, 2000), E::EPERM);
    assert_eq!(fs.make(&u, chown(f, 1000)).uid, Uid(1000));
    let member = caller(1000, &[1000, 50]);
    assert_eq!(fs.make(&member, chgrp(f, 50)).gid, Gid(50));
    fs.no_as(&member, chgrp(f, 60), E::EPERM);
    fs.no_as(&o, chgrp(f, 2000), E::EPERM);
    let both = setattr(f, |c| (c.uid, c.gid) = (Some(Uid(7)), Some(Gid(8))));
    let a = fs.make(&root(), both);
    assert_eq!((a.uid, a.gid), (Uid(7), Gid(8)));
    // chown clears set-user-id, and set-group-id with group execute.
    let s = fs.make(&u, node(open, "s", REG, 0o6755)).ino;
    assert_eq!(fs.attr(s).perm, 0o6755);
    assert_eq!(fs.make(&u, chgrp(s, 1000)).perm, 0o755);
    fs.ok(chmod(s, 0o6755));
    assert_eq!(fs.make(&root(), chown(s, 3000)).perm, 0o755);
    // A non-member's chmod drops set-group-id silently.
    fs.ok(chown(s, 1000));
    fs.ok(chgrp(s, 4000));
    assert_eq!(fs.make(&u, chmod(s, 0o2755)).perm, 0o755);
    fs.no(chmod(Ino(999), 0o644), E::ENOENT);
}

#[test]
fn setattr_size() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let p = fs.make(&root(), node(R, "p", FileKind::Fifo, 0o666)).ino;
    let l = fs.make(&root(), sym(R, "l", "t")).ino;
    let (f, g) = (fs.create(R, "f"), fs.create(R, "g"));
    fs.no(truncate(d, 0), E::EISDIR);
    fs.no(truncate(p, 0), E::EINVAL);
    fs.no(truncate(l, 0), E::EINVAL);
    fs.no(truncate(f, SIZE_MAX + 1), E::EFBIG);
    fs.no(truncate(f, u64::MAX), E::EFBIG);
    fs.no_as(&user(), truncate(f, 1), E::EACCES);
    let a = fs.make(&root(), truncate(f, 1000));
    assert_eq!((a.size, a.mtime, a.ctime), (1000, fs.now(), fs.now()));
    fs.ok(truncate(g, SIZE_MAX));
    assert_eq!(fs.stats().1, 1000 + SIZE_MAX);
    fs.ok(truncate(g, 24));
    fs.ok(truncate(f, 10));
    assert_eq!(fs.stats().1, 34);
    fs.ok(unlink(R, "f"));
    assert_eq!(fs.stats().1, 24);
    fs.create(R, "h");
    fs.ok(mv(R, "h", R, "g"));
    assert_eq!(fs.stats().1, 0, "replaced by rename");
}

#[test]
fn setattr_times() {
    let mut fs = Fs::new();
    let u = user();
    let w = fs.make(&root(), node(R, "w", REG, 0o666)).ino;
    let ro = fs.make(&root(), node(R, "ro", REG, 0o644)).ino;
    let now = Some(TimeSet::Now);
    fs.no_as(&u, utimens(w, at(5), at(6)), E::EPERM);
    fs.no_as(&u, utimens(w, None, at(6)), E::EPERM);
    let a = fs.make(&u, utimens(w, now, now));
    let t = fs.now();
    assert_eq!((a.atime, a.mtime, a.ctime), (t, t, t));
    fs.no_as(&u, utimens(ro, now, now), E::EACCES);
    let a = fs.make(&root(), utimens(ro, at(-50), at(-49)));
    assert_eq!((a.atime, a.mtime), (Timestamp(-50), Timestamp(-49)));
    assert_eq!(a.ctime, fs.now());
}

#[test]
fn xattrs() {
    let mut fs = Fs::new();
    let (u, f) = (user(), fs.create(R, "f"));
    fs.ok(setx(f, "user.a", "1", 0));
    assert_eq!(fs.attr(f).ctime, fs.now());
    assert_eq!(fs.xget(&u, f, "user.a"), Ok(b("1")));
    fs.no(setx(f, "user.a", "2", XATTR_CREATE), E::EEXIST);
    fs.no(setx(f, "user.b", "2", XATTR_REPLACE), E::ENODATA);
    let both = XATTR_CREATE | XATTR_REPLACE;
    fs.no(setx(f, "user.c", "", both), E::EINVAL);
    fs.ok(setx(f, "user.a", "3", XATTR_REPLACE));
    fs.ok(setx(f, "user.b", "", XATTR_CREATE));
    assert_eq!(fs.xget(&u, f, "user.a"), Ok(b("3")));
    assert_eq!(fs.xget(&u, f, "user.b"), Ok(vec![]));
    assert_eq!(fs.xget(&root(), f, "user.zz"), Err(E::ENODATA));
    assert_eq!(fs.xlist(&root(), f), Ok("user.a user.b".into()));
    fs.ok(rmx(f, "user.a"));
    fs.no(rmx(f, "user.a"), E::ENODATA);
    assert_eq!(fs.xlist(&root(), f), Ok("user.b".into()));
    let max = vec![7; XATTR_VALUE_MAX];
    fs.ok(setx(f, "user.max", &max, 0));
    fs.no(setx(f, "user.big", [&max[..], b"!"].concat(), 0), E::E2BIG);
    let long = format!("user.{}", "n".repeat(XATTR_NAME_MAX));
    fs.no(setx(f, &long, "v", 0), E::ERANGE);
    fs.no(setx(f, "", "v", 0), E::ERANGE);
    fs.no(setx(f, "foo.bar", "v", 0), E::EOPNOTSUPP);
    assert_eq!(fs.xget(&root(), f, "foo.bar"), Err(E::EOPNOTSUPP));
    // trusted.* is root's alone, and invisible to everyone else.
    fs.ok(setx(f, "trusted.t", "secret", 0));
    assert_eq!(fs.xget(&u, f, "trusted.t"), Err(E::ENODATA));
    assert_eq!(fs.xlist(&u, f), Ok("user.b user.max".into()));
    assert!(fs.xlist(&root(), f).unwrap().starts_with("trusted.t "));
    fs.no_as(&u, setx(f, "trusted.u", "v", 0), E::EPERM);
    fs.no_as(&u, rmx(f, "trusted.t"), E::EPERM);
    // user.* follows the mode bits and exists only on files and directories.
    fs.no_as(&u, setx(f, "user.u", "v", 0), E::EACCES);
    fs.no_as(&u, rmx(f, "user.b"), E::EACCES);
    let l = fs.make(&root(), sym(R, "l", "t")).ino;
    fs.no(setx(l, "user.x", "v", 0), E::EPERM);
    // At most XATTR_TOTAL_MAX bytes of names and values per inode.
    let g = fs.create(R, "g");
    for name in ["user.1", "user.2", "user.3"] {
        fs.ok(setx(g, name, &max, 0));
    }
    fs.no(setx(g, "user.4", &max, 0), E::ENOSPC);
    assert_eq!(fs.xlist(&root(), g), Ok("user.1 user.2 user.3".into()));
}

#[test]
fn readdir_pages() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let f = fs.create(R, "f");
    for i in 0..10 {
        fs.create(d, &format!("n{i}"));
    }
    let pages = ["n0 n1 n2", "n3 n4 n5", "n6 n7 n8", "n9"];
    assert_eq!(fs.pages(d, 0, 3), pages);
    assert_eq!(fs.pages(d, 0, 10), ["n0 n1 n2 n3 n4 n5 n6 n7 n8 n9"]);
    assert_eq!(fs.pages(d, 0, 0).len(), 10, "a page holds at least one");
    let (entries, _) = fs.page(&root(), d, 0, 1).unwrap();
    let e = &entries[0];
    assert_eq!((fs.look(d, "n0"), e.kind, e.cookie), (Ok(e.ino), REG, 1));
    assert_eq!(fs.page(&root(), d, 10, 5), Ok((vec![], false)));
    assert_eq!(fs.page(&root(), f, 0, 10), Err(E::ENOTDIR));
    assert_eq!(fs.page(&root(), Ino(999), 0, 10), Err(E::ENOENT));
    let hidden = fs.dir_with("hidden", 0o711);
    assert_eq!(fs.page(&user(), hidden, 0, 10), Err(E::EACCES));
    assert_eq!(fs.look_as(&user(), hidden, "x"), Err(E::ENOENT));
    assert!(fs.page(&user(), R, 0, 10).is_ok());
}

#[test]
fn readdir_cookies_survive_changes_between_pages() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    for i in 0..8 {
        fs.create(d, &format!("e{i}"));
    }
    let (first, more) = fs.page(&root(), d, 0, 4).unwrap();
    let first: Vec<String> = first.iter().map(|e| text(&e.name)).collect();
    assert_eq!((first.join(" "), more), ("e0 e1 e2 e3".into(), true));
    for name in ["e0", "e3", "e5"] {
        fs.ok(unlink(d, name));
    }
    fs.create(d, "new1");
    fs.ok(mv(d, "e1", d, "e1b"));
    fs.create(d, "new2");
    // e4, e6 and e7 neither repeated nor skipped; newer entries after them.
    assert_eq!(fs.pages(d, 4, 2), ["e4 e6", "e7 new1", "e1b new2"]);
    assert_eq!(fs.ls(d), "e1b e2 e4 e6 e7 new1 new2");
}

#[test]
fn root_and_statfs_inode_counts() {
    let mut fs = Fs::new();
    let r = fs.attr(R);
    assert_eq!((r.kind, r.perm, r.uid, r.gid), (DIR, 0o755, Uid(0), Gid(0)));
    assert_eq!((r.nlink, r.size, fs.stats()), (2, DIR_SIZE, (1, 0)));
    assert_eq!((fs.look(R, "."), fs.look(R, "..")), (Ok(R), Ok(R)));
    fs.create(R, "a");
    let d = fs.mkdir(R, "d");
    fs.ok(sym(d, "l", "x"));
    assert_eq!(fs.stats(), (4, 0));
    fs.ok(unlink(R, "a"));
    assert_eq!(fs.stats(), (3, 0));
    fs.ok(unlink(d, "l"));
    fs.ok(rmdir(R, "d"));
    assert_eq!(fs.stats(), (1, 0));
}

fn workload(fs: &mut Fs) {
    let c = root;
    fs.batch(vec![(c(), dir(R, "a")), (c(), file(R, "f"))]);
    let (a, f) = (fs.look(R, "a").unwrap(), fs.look(R, "f").unwrap());
    fs.batch(vec![
        (c(), link(f, a, "g")),
        (c(), setx(f, "user.k", "v", 0)),
        (c(), truncate(f, 9)),
        (c(), dir(a, "sub")),
        (c(), unlink(R, "nope")),
    ]);
    fs.batch(vec![
        (c(), mv(a, "sub", R, "s")),
        (c(), rename(R, "f", R, "s", RENAME_EXCHANGE)),
    ]);
}

#[test]
fn apply_is_deterministic() {
    let (mut one, mut two) = (Fs::new(), Fs::new());
    workload(&mut one);
    workload(&mut two);
    let a = scan_all(&one.store, Tree::State).unwrap();
    assert!(a.len() > 10);
    assert_eq!(a, scan_all(&two.store, Tree::State).unwrap());
}

#[test]
fn an_errno_mid_batch_discards_only_that_command() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let out = fs.batch(vec![
        (root(), dir(R, "a")),
        (root(), dir(R, "a")),
        (user(), dir(R, "u")),
        (root(), setx(f, "user.x", "v", 0)),
        (root(), mv(R, "a", R, "f")),
        (root(), dir(R, "b")),
    ]);
    let errs: Vec<Option<Errno>> = out.iter().map(|o| o.as_ref().err().copied()).collect();
    let (eexist, eacces, enotdir) = (Some(E::EEXIST), Some(E::EACCES), Some(E::ENOTDIR));
    assert_eq!(errs, [None, eexist, eacces, None, enotdir, None]);
    assert_eq!(fs.ls(R), "a b f");
    let (a, bb) = (fs.look(R, "a").unwrap(), fs.look(R, "b").unwrap());
    assert_eq!(bb.0, a.0 + 1, "failed commands allocate no inode number");
    assert_eq!((fs.nlink(R), fs.stats().0), (4, 4));
    assert_eq!(fs.xlist(&root(), f), Ok("user.x".into()));
    let (entries, _) = fs.page(&root(), R, 0, 10).unwrap();
    let cookies: Vec<u64> = entries.iter().map(|e| e.cookie).collect();
    assert_eq!(cookies, [1, 2, 3]);
}

#[test]
fn unknown_inodes_give_enoent() {
    let mut fs = Fs::new();
    let x = Ino(4242);
    assert_eq!(fs.get(x), Err(E::ENOENT));
    assert_eq!(fs.get(Ino(0)), Err(E::ENOENT));
    assert_eq!(fs.look(x, "a"), Err(E::ENOENT));
    assert_eq!(fs.look(x, ".."), Err(E::ENOENT));
    assert_eq!(fs.link_target(x), Err(E::ENOENT));
    assert_eq!(fs.xget(&root(), x, "user.a"), Err(E::ENOENT));
    assert_eq!(fs.xlist(&root(), x), Err(E::ENOENT));
    fs.no(setx(x, "user.a", "v", 0), E::ENOENT);
    fs.no(rmx(x, "user.a"), E::ENOENT);
    fs.no(setattr(x, |_| {}), E::ENOENT);
    fs.no(rmdir(x, "a"), E::ENOENT);
    assert_eq!(fs.stats(), (1, 0));
}

#[test]
fn errno_precedence_and_set_id_bits_follow_linux() {
    let mut fs = Fs::new();
    // EEXIST wins over EACCES: `mkdir /usr` as a user.
    let d = fs.dir_with("ro", 0o755);
    fs.create(d, "f");
    fs.no_as(&user(), file(d, "f"), E::EEXIST);
    fs.no_as(&user(), dir(d, "f"), E::EEXIST);
    fs.no_as(&user(), file(d, "new"), E::EACCES);

    // In a sticky directory, "may I delete" comes before "is it empty".
    let t = fs.dir_with("tmp", 0o1777);
    let theirs = fs.make(&other(), dir(t, "theirs")).ino;
    fs.make(&other(), file(theirs, "x"));
    fs.no_as(&user(), rmdir(t, "theirs"), E::EPERM);

    // Any chown of a non-directory drops set-user-id, even root's to the same owner.
    let f = fs.create(R, "prog");
    fs.ok(chmod(f, 0o4755));
    fs.ok(chown(f, 0));
    assert_eq!(fs.attr(f).perm & S_ISUID, 0);

    // chmod by a non-member drops set-group-id on a directory too.
    let open = fs.dir_with("open", 0o777);
    let mine = fs.make(&user(), dir(open, "mine")).ino;
    fs.ok(chgrp(mine, 3000));
    fs.ok_as(&user(), chmod(mine, 0o2775));
    assert_eq!(fs.attr(mine).perm & S_ISGID, 0);
}
