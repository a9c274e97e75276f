//! Changing attributes (ownership, mode, size, times), and the permission and
//! set-id rules that go with them.

use super::*;

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

/// A chown, chgrp or chmod that would leave the inode as it is needs no
/// commit; one that changes anything, or would be refused, does.
#[test]
fn setattr_that_changes_nothing_is_recognised() {
    let mut fs = Fs::new();
    let (u, o) = (user(), other());
    let open = fs.dir_with("open", 0o777);
    let f = fs.make(&u, node(open, "f", REG, 0o644)).ino;
    let d = fs.make(&u, node(open, "d", DIR, 0o755)).ino;
    let unchanged = |fs: &Fs, c: &Caller, op: Op| -> Option<Attr> {
        let Op::SetAttr { ino, changes } = op else {
            panic!("not a setattr")
        };
        setattr_changes_nothing(&fs.store, c, ino, &changes).unwrap()
    };
    let before = fs.attr(d);
    assert_eq!(unchanged(&fs, &u, chmod(d, 0o755)), Some(before.clone()));
    assert_eq!(unchanged(&fs, &u, chown(d, 1000)), Some(before.clone()));
    assert_eq!(unchanged(&fs, &root(), chgrp(d, before.gid.0)), Some(before.clone()));
    let both = setattr(d, |c| (c.uid, c.gid) = (Some(before.uid), Some(before.gid)));
    assert_eq!(unchanged(&fs, &root(), both), Some(before.clone()));
    // A change, a refusal (the same mode, but not the owner), a time.
    assert_eq!(unchanged(&fs, &u, chmod(d, 0o700)), None);
    assert_eq!(unchanged(&fs, &o, chmod(d, 0o755)), None);
    assert_eq!(unchanged(&fs, &o, chown(d, 1000)), None);
    assert_eq!(unchanged(&fs, &u, utimens(d, at(5), None)), None);
    assert_eq!(unchanged(&fs, &u, truncate(f, 0)), None);
    assert_eq!(unchanged(&fs, &u, chmod(Ino(999), 0o644)), None);
    // A chown of a set-id file drops its set-id bits: a change.
    fs.ok_as(&u, chmod(f, 0o4755));
    assert_eq!(unchanged(&fs, &root(), chown(f, 1000)), None);
    assert_eq!(unchanged(&fs, &u, chmod(f, 0o4755)), Some(fs.attr(f)));
}
