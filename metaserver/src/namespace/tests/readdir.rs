//! Reading directories in pages, and the inode counts statfs reports.

use super::*;

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
