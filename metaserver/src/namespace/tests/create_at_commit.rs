//! Files a mount creates with their first commit: inode numbers reserved
//! per session, the create and the contents in one command, and what the
//! cluster refuses (a number not reserved, used twice, a taken name).

use super::*;
use crate::namespace::sessions::RESERVE_MAX;

fn reserve(fs: &mut Fs, session: u64, count: u32) -> (Ino, u32) {
    match fs.ok(Op::ReserveInodes { session, count }) {
        Reply::Inodes { first, count } => (first, count),
        other => panic!("expected inode numbers, got {other:?}"),
    }
}

fn create_file(session: u64, ino: Ino, parent: Ino, name: &str, contents: &[u8]) -> Op {
    let Op::MakeNode(node) = file(parent, name) else {
        unreachable!()
    };
    Op::CreateFile(Box::new(CreateFile {
        node,
        session,
        commit: FileCommit {
            ino,
            slots: vec![],
            size: contents.len() as u64,
            inline: Some(contents.to_vec()),
            attrs: Some(AttrChanges {
                perm: Some(0o600),
                ..AttrChanges::default()
            }),
        },
        sealed: false,
        born: Timestamp(1),
    }))
}

#[test]
fn a_reserved_number_names_one_file_created_with_its_contents() {
    let mut fs = Fs::new();
    let before = fs.create(R, "before");
    let (first, count) = reserve(&mut fs, 7, 4);
    assert_eq!(count, 4);
    assert!(first.0 > before.0);
    // Numbers handed out later never fall in the reserved range.
    let after = fs.create(R, "after");
    assert!(after.0 >= first.0 + 4, "{after:?} inside {first:?}+4");

    let a = fs.make(&root(), create_file(7, Ino(first.0 + 2), R, "a", b"hello"));
    assert_eq!((a.ino, a.size, a.perm), (Ino(first.0 + 2), 5, 0o600));
    assert_eq!(fs.look(R, "a"), Ok(a.ino));
    assert_eq!(fs.nlink(a.ino), 1);

    // Used once: a second create under it is refused, as is one by another
    // session or under a number nobody reserved.
    fs.no(create_file(7, Ino(first.0 + 2), R, "b", b""), E::ESTALE);
    fs.no(create_file(8, Ino(first.0 + 3), R, "b", b""), E::ESTALE);
    fs.no(create_file(7, Ino(first.0 + 100), R, "b", b""), E::ESTALE);
    // A taken name fails the whole command: the number stays reserved.
    fs.no(create_file(7, Ino(first.0 + 3), R, "a", b"other"), E::EEXIST);
    fs.make(&root(), create_file(7, Ino(first.0 + 3), R, "b", b""));

    // The session's end gives back what it did not use.
    fs.ok(Op::EndSession { session: 7 });
    fs.no(create_file(7, Ino(first.0), R, "c", b""), E::ESTALE);
}

#[test]
fn reservations_are_bounded_and_counted_as_inodes_only_when_used() {
    let mut fs = Fs::new();
    let inodes = |fs: &Fs| Txn::new(&fs.store).superblock().unwrap().inodes;
    let start = inodes(&fs);
    let (first, count) = reserve(&mut fs, 1, u32::MAX);
    assert_eq!(count, RESERVE_MAX);
    assert_eq!(reserve(&mut fs, 1, 0).1, 1);
    assert_eq!(inodes(&fs), start);
    fs.make(&root(), create_file(1, first, R, "f", b"x"));
    assert_eq!(inodes(&fs), start + 1);
}

#[test]
fn a_create_with_contents_checks_rights_like_any_create() {
    let mut fs = Fs::new();
    let d = fs.dir_with("d", 0o755);
    let (first, _) = reserve(&mut fs, 3, 2);
    fs.no_as(&user(), create_file(3, first, d, "f", b""), E::EACCES);
    // Only regular files.
    let Op::CreateFile(mut c) = create_file(3, first, R, "dir", b"") else {
        unreachable!()
    };
    c.node.kind = DIR;
    fs.no(Op::CreateFile(c), E::EINVAL);
    // Neither refusal used the number.
    fs.make(&root(), create_file(3, first, R, "f", b""));
}

#[test]
fn a_file_keeps_the_birth_time_it_was_shown_and_its_creator_writes_it_whatever_its_mode() {
    let mut fs = Fs::new();
    let w = fs.dir_with("w", 0o777);
    fs.advance(1_000);
    let (first, _) = reserve(&mut fs, 5, 3);
    let born = Timestamp(fs.now().0 + 500);
    let with_birth = |ino: Ino, name: &str, perm: u16, contents: &[u8], born: Timestamp| {
        let Op::CreateFile(mut c) = create_file(5, ino, w, name, contents) else {
            unreachable!()
        };
        c.node.perm = perm;
        c.commit.attrs = None;
        if contents.is_empty() {
            c.commit.inline = None;
        }
        c.born = born;
        Op::CreateFile(c)
    };
    // Nothing written: every time is the birth the mount showed (the
    // command's time is later).
    fs.advance(1_000);
    let empty = fs.make(&user(), with_birth(first, "empty", 0o644, b"", born));
    assert_eq!((empty.mtime, empty.ctime, empty.atime), (born, born, born));
    // A birth after the commit, or too long before it, is not kept.
    let later = fs.make(
        &user(),
        with_birth(Ino(first.0 + 1), "later", 0o644, b"", Timestamp(i64::MAX)),
    );
    assert_eq!(later.ctime, fs.now());
    // Mode 0, written by its creator in the same command.
    let locked = fs.make(&user(), with_birth(Ino(first.0 + 2), "locked", 0, b"data", born));
    assert_eq!((locked.perm, locked.size), (0, 4));
}

#[test]
fn a_planned_create_answers_what_the_commit_will_and_changes_nothing() {
    let mut fs = Fs::new();
    let d = fs.dir_with("d", 0o755);
    let Op::MakeNode(m) = file(d, "f") else { unreachable!() };
    let planned = errno(plan_make_node(&fs.store, fs.now(), &root(), &m)).unwrap();
    assert_eq!(planned.perm, 0o644);
    assert_eq!(fs.look(d, "f"), Err(E::ENOENT));
    assert_eq!(errno(plan_make_node(&fs.store, fs.now(), &user(), &m)), Err(E::EACCES));
    fs.create(d, "f");
    assert_eq!(errno(plan_make_node(&fs.store, fs.now(), &root(), &m)), Err(E::EEXIST));
}
