//! Advisory locks: conflicts between owners and mounts, conversion and
//! splitting, tests (F_GETLK), session end and lease expiry.

use super::*;
use crate::namespace::sessions::{HeldLock, LockKind, LockOwner, LockRequest, LEASE_NS};
use LockKind::{Read, Unlock, Write};

const END: u64 = i64::MAX as u64;

fn who(session: u64, owner: u64) -> LockOwner {
    LockOwner { session, owner }
}

fn lock(ino: Ino, owner: LockOwner, kind: LockKind, start: u64, end: u64) -> Op {
    Op::Lock {
        ino,
        request: LockRequest {
            owner,
            kind,
            start,
            end,
            pid: 42,
            test: false,
        },
    }
}

impl Fs {
    /// F_GETLK: the lock that would stop `owner`, if any.
    fn test_lock(&mut self, ino: Ino, owner: LockOwner, kind: LockKind, start: u64, end: u64) -> Option<HeldLock> {
        let mut op = lock(ino, owner, kind, start, end);
        if let Op::Lock { request, .. } = &mut op {
            request.test = true;
        }
        match self.ok(op) {
            Reply::Conflict(c) => c,
            other => panic!("expected a lock test answer, got {other:?}"),
        }
    }
}

#[test]
fn readers_share_and_writers_exclude_across_mounts() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let (a, b) = (who(1, 7), who(2, 7));
    fs.ok(lock(f, a, Read, 0, END));
    fs.ok(lock(f, b, Read, 0, END));
    fs.no(lock(f, b, Write, 0, END), E::EAGAIN);
    fs.ok(lock(f, a, Unlock, 0, END));
    // b is now the only reader: it may upgrade.
    fs.ok(lock(f, b, Write, 0, END));
    fs.no(lock(f, a, Read, 10, 10), E::EAGAIN);
    let held = fs.test_lock(f, a, Read, 0, 0).expect("b's write lock");
    assert_eq!(
        (held.owner, held.write, held.start, held.end, held.pid),
        (b, true, 0, END, 42)
    );
    assert_eq!(
        fs.test_lock(f, b, Write, 0, END),
        None,
        "an owner never conflicts with itself"
    );
    fs.no(lock(f, a, Read, 5, 4), E::EINVAL);
    fs.no(lock(Ino(999), a, Read, 0, 1), E::ENOENT);
}

#[test]
fn unlocking_the_middle_splits_a_range() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let (a, b) = (who(1, 1), who(1, 2));
    fs.ok(lock(f, a, Write, 0, 99));
    fs.ok(lock(f, a, Unlock, 40, 59));
    fs.ok(lock(f, b, Write, 40, 59));
    fs.no(lock(f, b, Write, 39, 40), E::EAGAIN);
    fs.no(lock(f, b, Read, 60, 60), E::EAGAIN);
    // Converting part of a write lock to a read lock lets others read there.
    fs.ok(lock(f, a, Read, 0, 9));
    let c = who(1, 3);
    fs.ok(lock(f, c, Read, 0, 9));
    fs.no(lock(f, c, Read, 10, 10), E::EAGAIN);
}

#[test]
fn ending_a_session_releases_its_locks_only() {
    let mut fs = Fs::new();
    let (f, g) = (fs.create(R, "f"), fs.create(R, "g"));
    let (a, b) = (who(1, 1), who(2, 1));
    fs.ok(lock(f, a, Write, 0, END));
    fs.ok(lock(g, a, Write, 0, 10));
    fs.ok(lock(g, b, Write, 11, 20));
    fs.ok(Op::EndSession { session: 1 });
    fs.ok(lock(f, b, Write, 0, END));
    fs.ok(lock(g, b, Write, 0, 10));
    assert!(fs.test_lock(g, a, Read, 11, 11).is_some(), "b's own lock stays");
}

#[test]
fn a_session_that_stops_renewing_loses_its_locks() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let (a, b) = (who(1, 1), who(2, 1));
    fs.ok(lock(f, a, Write, 0, END));
    fs.advance(LEASE_NS / 2);
    fs.ok(Op::RenewSession { session: 1 });
    fs.advance(LEASE_NS / 2 + 1);
    fs.no(lock(f, b, Write, 0, END), E::EAGAIN);
    fs.advance(LEASE_NS);
    fs.ok(lock(f, b, Write, 0, END));
    assert!(fs.test_lock(f, a, Read, 0, 0).is_some_and(|l| l.owner == b));
}

#[test]
fn lock_and_session_end_in_one_batch() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let a = who(1, 1);
    let out = fs.batch(vec![
        (root(), lock(f, a, Write, 0, END)),
        (root(), Op::EndSession { session: 1 }),
    ]);
    assert!(out.iter().all(Result::is_ok));
    fs.ok(lock(f, who(2, 1), Write, 0, END));
}

fn unlink_kept(parent: Ino, name: &str, session: u64) -> Op {
    Op::Unlink {
        parent,
        name: b(name),
        keep_for: Some(session),
    }
}

#[test]
fn a_file_removed_while_open_stays_unnamed_until_forgotten() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    let f = fs.create(d, "f");
    fs.ok(unlink_kept(d, "f", 9));
    assert_eq!(fs.attr(f).nlink, 0, "fstat of the open file says it has no name");
    assert_eq!(fs.ls(d), "");
    fs.ok(rmdir(R, "d"));
    assert_eq!(fs.stats().0, 2, "root and the kept file");
    fs.ok(Op::Forget { ino: f, session: 7 });
    assert!(fs.get(f).is_ok(), "another session cannot free it");
    fs.ok(Op::Forget { ino: f, session: 9 });
    assert_eq!(fs.get(f), Err(E::ENOENT));
    assert_eq!(fs.stats().0, 1);
    // A file with another name left is not kept.
    let g = fs.create(R, "g");
    fs.ok(link(g, R, "h"));
    fs.ok(unlink_kept(R, "g", 9));
    fs.ok(Op::Forget { ino: g, session: 9 });
    assert_eq!(fs.attr(g).nlink, 1);
}

#[test]
fn a_replaced_rename_target_can_be_kept_too() {
    let mut fs = Fs::new();
    let (_, old) = (fs.create(R, "new"), fs.create(R, "old"));
    let mut op = mv(R, "new", R, "old");
    if let Op::Rename(Rename { keep_for, .. }) = &mut op {
        *keep_for = Some(3);
    }
    fs.ok(op);
    assert_eq!(fs.attr(old).nlink, 0);
    fs.ok(Op::EndSession { session: 3 });
    assert_eq!(fs.get(old), Err(E::ENOENT));
}

#[test]
fn the_leader_frees_what_a_vanished_mount_kept() {
    let mut fs = Fs::new();
    let (f, g) = (fs.create(R, "f"), fs.create(R, "g"));
    fs.ok(unlink_kept(R, "f", 1));
    fs.ok(unlink_kept(R, "g", 2));
    fs.advance(LEASE_NS / 2);
    fs.ok(Op::RenewSession { session: 2 });
    fs.advance(LEASE_NS / 2 + 1);
    fs.ok(Op::ExpireSessions);
    assert_eq!(fs.get(f), Err(E::ENOENT), "session 1 went silent");
    assert_eq!(fs.attr(g).nlink, 0, "session 2 renewed");
}
