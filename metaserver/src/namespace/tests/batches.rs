//! Applying batches: determinism, errors in mid-batch, unknown inodes.

use super::*;
use crate::store::scan_all;

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
fn a_retried_request_is_applied_once() {
    let store = MemStore::default();
    let id = [7u8; 16];
    let create = |name: &str, request| Command {
        caller: root(),
        op: file(R, name),
        request,
    };
    let run = |time: i64, cmds: &[Command]| {
        let mut txn = Txn::new(&store);
        let out = apply_batch(&mut txn, Timestamp(time), cmds).unwrap();
        store.apply(Tree::State, txn.into_writes()).unwrap();
        out
    };
    let first = run(1_000, &[create("f", Some(id))]);
    assert!(matches!(first[0], Ok(Reply::Attr(_))));
    // The retry (after a lost reply) gets the same answer, not EEXIST, and
    // nothing is created twice; the same name without the id is a new request.
    let again = run(2_000, &[create("f", Some(id)), create("f", None)]);
    assert_eq!(again[0], first[0]);
    assert_eq!(again[1], Err(E::EEXIST));
    assert_eq!(errno(statfs(&Txn::new(&store), &Caller::root())).unwrap().inodes, 2);
    // After the memory window the id is forgotten.
    let late = run(2_000 + REQUEST_MEMORY_NS + 1, &[create("f", Some(id))]);
    assert_eq!(late[0], Err(E::EEXIST));
}
