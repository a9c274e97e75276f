//! Renaming files and directories, with and without flags.

use super::*;

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
