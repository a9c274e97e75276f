//! Validation of directory entry names by every command that takes one.

use super::*;

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
