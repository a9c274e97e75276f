//! Extended attributes: setting, getting, listing and removing them.

use super::*;

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
