//! Unit tests of the namespace state machine over an in-memory store.
//!
//! This module holds the harness: shorthands that build [`Op`]s and [`Fs`], a
//! namespace over a fresh store. The tests live in one child module per topic.

mod accounts;
mod attributes;
mod batches;
mod blocks;
mod create_at_commit;
mod entries;
mod names;
mod readdir;
mod rename;
mod sessions;
mod sharing;
mod xattrs;

use super::read::READDIR_MAX;
use super::*;
use crate::store::{MemStore, Store, Tree};
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
    Caller {
        uid,
        gids,
        superuser: uid.0 == 0,
    }
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
    Op::MakeNode(MakeNode {
        parent,
        name,
        kind,
        perm,
        rdev,
        target,
        umask: None,
    })
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
    if let Op::MakeNode(MakeNode { target: t, .. }) = &mut op {
        *t = b(target);
    }
    op
}

fn unlink(parent: Ino, name: impl AsRef<[u8]>) -> Op {
    let name = b(name);
    Op::Unlink {
        parent,
        name,
        keep_for: None,
    }
}

fn rmdir(parent: Ino, name: impl AsRef<[u8]>) -> Op {
    let name = b(name);
    Op::Rmdir { parent, name }
}

fn rename(parent: Ino, name: &str, new_parent: Ino, new_name: &str, flags: u32) -> Op {
    let (name, new_name) = (b(name), b(new_name));
    Op::Rename(Rename {
        parent,
        name,
        new_parent,
        new_name,
        flags,
        keep_for: None,
    })
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
    Op::SetXattr(SetXattr {
        ino,
        name,
        value,
        flags,
    })
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
        let cmds: Vec<Command> = cmds
            .into_iter()
            .map(|(caller, op)| Command {
                caller,
                op,
                request: None,
            })
            .collect();
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
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    /// Moves the clock `ns` forward (lease expiry).
    fn advance(&mut self, ns: i64) {
        self.clock += ns;
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
        let s = errno(statfs(&Txn::new(&self.store), &Caller::root())).unwrap();
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

/// A command keeps its encoding when a variant's fields move into a struct
/// of their own (`Op::MakeNode { .. }` became `Op::MakeNode(MakeNode)`):
/// logs and snapshots written before still decode.
#[test]
fn struct_variants_encode_as_before() {
    #[derive(Serialize)]
    enum Before {
        MakeNode {
            parent: Ino,
            name: Vec<u8>,
            kind: FileKind,
            perm: u16,
            rdev: u32,
            target: Vec<u8>,
            umask: Option<u16>,
        },
    }
    let before = Before::MakeNode {
        parent: Ino(7),
        name: b"file".to_vec(),
        kind: FileKind::Regular,
        perm: 0o644,
        rdev: 0,
        target: Vec::new(),
        umask: Some(0o022),
    };
    let mut now = mknod(Ino(7), "file", FileKind::Regular, 0o644, 0);
    if let Op::MakeNode(MakeNode { umask, .. }) = &mut now {
        *umask = Some(0o022);
    }
    let (a, b) = (
        postcard::to_allocvec(&before).unwrap(),
        postcard::to_allocvec(&now).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(postcard::from_bytes::<Op>(&a).unwrap(), now);
}
