//! File data: committing blocks into slots, releasing them on overwrite,
//! truncate and unlink, replication, data servers, replicas and garbage.

use super::*;
use crate::namespace::blocks::{self as data, BlockInfo, ServerRecord, ServerState, SlotWrite, SLOT_SIZE};
use crate::store::scan_all;
use nimbus_common::{BlockId, ServerId};

const SLOT: u64 = SLOT_SIZE;

fn blk(n: u8) -> BlockId {
    BlockId([n; 16])
}

/// Block `n` written into `slot`, `len` bytes, with crc `n`, on `servers`.
fn sw(slot: u64, n: u8, len: u64, servers: &[u64]) -> SlotWrite {
    let servers = servers.iter().map(|&s| ServerId(s)).collect();
    SlotWrite {
        slot,
        block: blk(n),
        len,
        crc: u32::from(n),
        servers,
    }
}

fn commit(ino: Ino, slots: Vec<SlotWrite>, size: u64) -> Op {
    Op::CommitWrite { ino, slots, size }
}

fn register(id: u64) -> Op {
    let (id, addr, zone) = (ServerId(id), format!("10.0.0.{id}:7000"), "z1".to_owned());
    Op::RegisterServer { id, addr, zone }
}

fn set_state(id: u64, state: ServerState) -> Op {
    let id = ServerId(id);
    Op::SetServerState { id, state }
}

fn add_replica(n: u8, server: u64) -> Op {
    let (block, server) = (blk(n), ServerId(server));
    Op::AddReplica { block, server }
}

fn remove_replica(n: u8, server: u64, delete: bool) -> Op {
    let (block, server) = (blk(n), ServerId(server));
    Op::RemoveReplica { block, server, delete }
}

fn garbage_done(server: u64, blocks: &[u8]) -> Op {
    let (server, blocks) = (ServerId(server), blocks.iter().map(|&n| blk(n)).collect());
    Op::GarbageDone { server, blocks }
}

fn set_replication(ino: Ino, replication: u8) -> Op {
    Op::SetReplication { ino, replication }
}

impl Fs {
    /// A file's size and (slot, block number, len) of each slot.
    fn layout(&self, ino: Ino) -> (u64, Vec<(u64, u8, u64)>) {
        let layout = errno(data::layout(&Txn::new(&self.store), ino)).unwrap();
        (
            layout.size,
            layout
                .slots
                .into_iter()
                .map(|(s, r)| (s, r.block.0[0], r.len))
                .collect(),
        )
    }

    fn block(&self, n: u8) -> Option<BlockInfo> {
        Txn::new(&self.store).block(blk(n)).unwrap()
    }

    fn refs(&self, n: u8) -> Option<u32> {
        self.block(n).map(|i| i.refs)
    }

    fn replicas(&self, n: u8) -> Vec<u64> {
        self.block(n)
            .map_or(vec![], |i| i.replicas.iter().map(|s| s.0).collect())
    }

    fn owes(&self, server: u64, n: u8) -> bool {
        data::owes_deletion(&Txn::new(&self.store), ServerId(server), blk(n)).unwrap()
    }

    /// The block numbers `server` must delete, at most `limit`.
    fn garbage(&self, server: u64, limit: usize) -> Vec<u8> {
        let ids = errno(data::garbage(&Txn::new(&self.store), ServerId(server), limit)).unwrap();
        ids.iter().map(|b| b.0[0]).collect()
    }

    fn garbage_count(&self) -> u64 {
        errno(data::garbage_count(&Txn::new(&self.store))).unwrap()
    }

    fn servers(&self) -> Vec<ServerRecord> {
        errno(data::servers(&Txn::new(&self.store))).unwrap()
    }

    fn block_count(&self) -> usize {
        errno(data::all_blocks(&Txn::new(&self.store))).unwrap().len()
    }

    /// No server is told to delete a copy the cluster counts as a replica.
    #[track_caller]
    fn assert_no_live_replica_owes_deletion(&self) {
        for (id, info) in errno(data::all_blocks(&Txn::new(&self.store))).unwrap() {
            for s in info.replicas {
                let owes = data::owes_deletion(&Txn::new(&self.store), s, id).unwrap();
                assert!(!owes, "block {id} is recorded on {s:?} and queued for deletion there");
            }
        }
    }
}

#[test]
fn commit_write_sets_slots_size_and_block_records() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let writes = vec![sw(0, 1, SLOT, &[1, 2]), sw(1, 2, 100, &[3])];
    let a = fs.make(&root(), commit(f, writes, SLOT + 100));
    assert_eq!((a.size, a.mtime, a.ctime), (SLOT + 100, fs.now(), fs.now()));
    assert_eq!(fs.layout(f), (SLOT + 100, vec![(0, 1, SLOT), (1, 2, 100)]));
    let slots = errno(data::layout(&Txn::new(&fs.store), f)).unwrap().slots;
    assert!(slots.iter().all(|(_, r)| r.crc == u32::from(r.block.0[0])));
    let info = fs.block(1).unwrap();
    assert_eq!((info.len, info.crc, info.refs, info.replication), (SLOT, 1, 1, 0));
    assert_eq!((fs.replicas(1), fs.replicas(2)), (vec![1, 2], vec![3]));
    assert_eq!((fs.block_count(), fs.garbage_count()), (2, 0));
    assert_eq!(fs.stats().1, SLOT + 100);
    fs.ok(commit(f, vec![], 10));
    assert_eq!(fs.stats().1, 10);
    assert_eq!(fs.layout(f), (10, vec![(0, 1, 10)]), "shrinking commit releases slot 1");
    assert_eq!((fs.refs(2), fs.garbage(3, 10)), (None, vec![2]));
}

#[test]
fn commit_write_errors() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let d = fs.mkdir(R, "d");
    let p = fs.make(&root(), node(R, "p", FileKind::Fifo, 0o666)).ino;
    let l = fs.make(&root(), sym(R, "l", "t")).ino;
    let one = || vec![sw(0, 1, 10, &[1])];
    fs.no(commit(d, one(), 10), E::EISDIR);
    fs.no(commit(p, one(), 10), E::EINVAL);
    fs.no(commit(l, one(), 10), E::EINVAL);
    fs.no(commit(Ino(999), one(), 10), E::ENOENT);
    fs.no_as(&user(), commit(f, one(), 10), E::EACCES);
    fs.no(commit(f, vec![sw(0, 1, SLOT + 1, &[1])], 10), E::EINVAL);
    fs.no(commit(f, vec![sw(0, 1, 10, &[])], 10), E::EINVAL);
    fs.no(commit(f, one(), SIZE_MAX + 1), E::EFBIG);
    let many = |n: u64| (0..n).map(|i| sw(i, i as u8 + 1, SLOT, &[1])).collect::<Vec<_>>();
    let max = data::MAX_SLOTS_PER_COMMIT as u64;
    fs.no(commit(f, many(max + 1), (max + 1) * SLOT), E::EFBIG);
    assert_eq!((fs.layout(f), fs.block_count()), ((0, vec![]), 0));
    assert_eq!(fs.stats().1, 0, "failed commits leave no trace");
    fs.ok(commit(f, many(max), max * SLOT));
    assert_eq!(fs.block_count(), data::MAX_SLOTS_PER_COMMIT);
    // A writable file takes a commit from anyone who may write it.
    let w = fs.make(&root(), node(R, "w", REG, 0o666)).ino;
    fs.ok_as(&user(), commit(w, vec![sw(0, 200, 5, &[1])], 5));
    assert_eq!(fs.layout(w), (5, vec![(0, 200, 5)]));
}

#[test]
fn replacing_a_slot_releases_the_old_block() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(commit(f, vec![sw(0, 1, SLOT, &[1, 2])], SLOT));
    // A retried commit of the same block into the same slot changes nothing.
    fs.ok(commit(f, vec![sw(0, 1, SLOT, &[1, 2])], SLOT));
    assert_eq!((fs.refs(1), fs.garbage_count()), (Some(1), 0));
    fs.ok(commit(f, vec![sw(0, 2, SLOT, &[3])], SLOT));
    assert_eq!(fs.layout(f), (SLOT, vec![(0, 2, SLOT)]));
    assert_eq!((fs.refs(1), fs.refs(2)), (None, Some(1)));
    assert!(fs.owes(1, 1) && fs.owes(2, 1) && !fs.owes(3, 1));
    assert_eq!(fs.garbage_count(), 2);
}

#[test]
fn a_shared_block_is_released_with_its_last_reference() {
    let mut fs = Fs::new();
    let (f, g) = (fs.create(R, "f"), fs.create(R, "g"));
    fs.ok(commit(f, vec![sw(0, 1, SLOT, &[1])], SLOT));
    fs.ok(commit(g, vec![sw(0, 1, SLOT, &[1])], SLOT));
    assert_eq!(fs.refs(1), Some(2));
    fs.ok(unlink(R, "f"));
    assert_eq!((fs.refs(1), fs.garbage_count()), (Some(1), 0));
    fs.ok(commit(g, vec![sw(0, 2, SLOT, &[1])], SLOT));
    assert_eq!((fs.refs(1), fs.garbage(1, 10)), (None, vec![1]));
    // Two slots of one file.
    fs.ok(commit(g, vec![sw(1, 3, SLOT, &[2]), sw(2, 3, SLOT, &[2])], 3 * SLOT));
    assert_eq!(fs.refs(3), Some(2));
    fs.ok(truncate(g, 2 * SLOT));
    assert_eq!((fs.refs(3), fs.owes(2, 3)), (Some(1), false));
    fs.ok(truncate(g, SLOT));
    assert_eq!((fs.refs(3), fs.owes(2, 3)), (None, true));
}

#[test]
fn truncate_releases_whole_slots_and_clamps_the_cut_one() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let full = vec![sw(0, 1, SLOT, &[1]), sw(1, 2, SLOT, &[1]), sw(2, 3, SLOT, &[2])];
    fs.ok(commit(f, full, 3 * SLOT));
    let a = fs.make(&root(), truncate(f, SLOT + 10));
    assert_eq!((a.size, a.mtime), (SLOT + 10, fs.now()));
    assert_eq!(fs.layout(f).1, vec![(0, 1, SLOT), (1, 2, 10)]);
    assert_eq!((fs.refs(3), fs.garbage(2, 10)), (None, vec![3]));
    assert_eq!(fs.refs(2), Some(1), "the cut slot keeps its block");
    // Growing again must not expose the old bytes past the cut.
    fs.ok(truncate(f, 3 * SLOT));
    assert_eq!(fs.layout(f), (3 * SLOT, vec![(0, 1, SLOT), (1, 2, 10)]));
    assert_eq!(fs.stats().1, 3 * SLOT);
    // A cut on a slot boundary releases the slot that starts there.
    fs.ok(truncate(f, SLOT));
    assert_eq!(fs.layout(f), (SLOT, vec![(0, 1, SLOT)]));
    assert_eq!((fs.refs(2), fs.garbage(1, 10)), (None, vec![2]));
    fs.ok(truncate(f, 0));
    assert_eq!((fs.layout(f), fs.block_count()), ((0, vec![]), 0));
    assert_eq!((fs.garbage(1, 10), fs.stats().1), (vec![1, 2], 0));
}

#[test]
fn unlink_releases_blocks_only_with_the_last_link() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(commit(f, vec![sw(0, 1, SLOT, &[1, 2]), sw(1, 2, 7, &[2, 3])], SLOT + 7));
    fs.ok(link(f, R, "g"));
    fs.ok(unlink(R, "f"));
    assert_eq!((fs.block_count(), fs.garbage_count()), (2, 0));
    assert_eq!(fs.layout(f).1.len(), 2);
    fs.ok(unlink(R, "g"));
    assert_eq!((fs.block_count(), fs.garbage_count()), (0, 4));
    assert_eq!(
        (fs.garbage(1, 9), fs.garbage(2, 9), fs.garbage(3, 9)),
        (vec![1], vec![1, 2], vec![2])
    );
    // A file replaced by rename goes the same way.
    let h = fs.create(R, "h");
    fs.ok(commit(h, vec![sw(0, 5, 1, &[4])], 1));
    fs.create(R, "i");
    fs.ok(mv(R, "i", R, "h"));
    assert_eq!((fs.refs(5), fs.garbage(4, 9)), (None, vec![5]));
}

#[test]
fn replication_is_inherited_from_the_directory() {
    let mut fs = Fs::new();
    let d = fs.mkdir(R, "d");
    fs.no_as(&user(), set_replication(d, 3), E::EPERM);
    fs.no(set_replication(d, 0), E::EINVAL);
    fs.no(set_replication(d, data::MAX_REPLICATION + 1), E::EINVAL);
    fs.no(set_replication(Ino(999), 3), E::ENOENT);
    let before = fs.create(d, "before");
    fs.ok(set_replication(d, 3));
    let (f, sub) = (fs.create(d, "f"), fs.mkdir(d, "sub"));
    let g = fs.create(sub, "g");
    let top = fs.create(R, "top");
    for (ino, n) in [(f, 1), (g, 2), (top, 3), (before, 4)] {
        fs.ok(commit(ino, vec![sw(0, n, 1, &[1])], 1));
    }
    let rep = |n| fs.block(n).unwrap().replication;
    assert_eq!([rep(1), rep(2), rep(3), rep(4)], [3, 3, 0, 0]);
    // The owner may set it, and the highest value is allowed.
    let open = fs.dir_with("open", 0o777);
    let mine = fs.make(&user(), dir(open, "mine")).ino;
    fs.ok_as(&user(), set_replication(mine, data::MAX_REPLICATION));
    let h = fs.make(&user(), file(mine, "h")).ino;
    fs.ok_as(&user(), commit(h, vec![sw(0, 9, 1, &[1])], 1));
    assert_eq!(fs.block(9).unwrap().replication, data::MAX_REPLICATION);
}

#[test]
fn server_lifecycle() {
    let mut fs = Fs::new();
    fs.ok(register(1));
    fs.ok(register(2));
    fs.ok(set_state(2, ServerState::Draining));
    // Re-registering updates the address but keeps the operator's state.
    let moved = Op::RegisterServer {
        id: ServerId(2),
        addr: "10.9.9.9:7000".into(),
        zone: "z2".into(),
    };
    fs.ok(moved);
    fs.ok(set_state(1, ServerState::Removed));
    fs.no(register(1), E::EPERM);
    fs.no(set_state(1, ServerState::Active), E::EPERM);
    fs.no(set_state(99, ServerState::Draining), E::ENOENT);
    let ids: Vec<_> = fs.servers().iter().map(|s| (s.id.0, s.state)).collect();
    assert_eq!(ids, [(1, ServerState::Removed), (2, ServerState::Draining)]);
    let two = &fs.servers()[1];
    assert_eq!((two.addr.as_str(), two.zone.as_str()), ("10.9.9.9:7000", "z2"));
    fs.ok(set_state(2, ServerState::Active));
    fs.ok(register(3));
    let states: Vec<_> = fs.servers().iter().map(|s| s.state).collect();
    assert_eq!(states, [ServerState::Removed, ServerState::Active, ServerState::Active]);
}

#[test]
fn replicas_and_garbage() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(commit(f, vec![sw(0, 1, SLOT, &[1])], SLOT));
    fs.ok(add_replica(1, 2));
    fs.ok(add_replica(1, 2));
    assert_eq!(fs.replicas(1), [1, 2], "added once");
    fs.ok(remove_replica(1, 1, false));
    assert_eq!((fs.replicas(1), fs.owes(1, 1)), (vec![2], false));
    fs.ok(remove_replica(1, 2, true));
    assert_eq!((fs.replicas(1), fs.owes(2, 1)), (vec![], true));
    // A new copy where an old one was queued for deletion stays.
    fs.ok(add_replica(1, 2));
    assert_eq!((fs.replicas(1), fs.owes(2, 1)), (vec![2], false));
    assert_eq!(fs.refs(1), Some(1), "replica changes keep the references");
    // A copy of a block no file references any more is deleted.
    fs.ok(add_replica(7, 3));
    assert_eq!((fs.block(7), fs.owes(3, 7)), (None, true));
    fs.ok(garbage_done(3, &[7]));
    assert!(!fs.owes(3, 7));
    for n in 10..15 {
        fs.ok(remove_replica(n, 5, true));
    }
    fs.ok(remove_replica(20, 6, true));
    assert_eq!(fs.block(10), None, "removing from an unknown block records nothing");
    assert_eq!(fs.garbage(5, 3), [10, 11, 12]);
    assert_eq!(fs.garbage(5, 100), [10, 11, 12, 13, 14]);
    assert_eq!(fs.garbage(6, 100), [20]);
    assert_eq!(fs.garbage(4, 100), Vec::<u8>::new());
    assert_eq!(fs.garbage_count(), 6);
    fs.ok(garbage_done(5, &[10, 12, 99]));
    assert_eq!((fs.garbage(5, 100), fs.garbage_count()), (vec![11, 13, 14], 4));
    fs.ok(garbage_done(6, &[11]));
    assert_eq!(fs.garbage_count(), 4, "done on another server clears nothing");
}

#[test]
fn a_block_moved_to_another_slot_in_one_commit_is_not_deleted() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(commit(f, vec![sw(0, 1, SLOT, &[1])], SLOT));
    // Slot 0 gets a new block, and its old block moves to slot 1.
    fs.ok(commit(f, vec![sw(0, 2, SLOT, &[2]), sw(1, 1, SLOT, &[1])], 2 * SLOT));
    assert_eq!(fs.layout(f).1, vec![(0, 2, SLOT), (1, 1, SLOT)]);
    assert_eq!(fs.refs(1), Some(1));
    fs.assert_no_live_replica_owes_deletion();
}

#[test]
fn a_released_block_committed_again_is_not_deleted() {
    let mut fs = Fs::new();
    let g = fs.create(R, "g");
    // A block released, then committed again (a commit retried after a
    // newer one): either refused, or recorded and not deleted.
    fs.ok(commit(g, vec![sw(0, 3, SLOT, &[3])], SLOT));
    fs.ok(commit(g, vec![sw(0, 4, SLOT, &[3])], SLOT));
    assert!(fs.owes(3, 3));
    let _ = fs.run(&root(), commit(g, vec![sw(0, 3, SLOT, &[3])], SLOT));
    fs.assert_no_live_replica_owes_deletion();
}

fn workload(fs: &mut Fs) {
    let c = root;
    fs.batch(vec![(c(), dir(R, "d")), (c(), file(R, "f"))]);
    fs.batch(vec![(c(), register(1)), (c(), register(2))]);
    let (d, f) = (fs.look(R, "d").unwrap(), fs.look(R, "f").unwrap());
    let two = vec![sw(0, 1, SLOT, &[1, 2]), sw(1, 2, 9, &[1])];
    fs.batch(vec![
        (c(), set_replication(d, 3)),
        (c(), file(d, "g")),
        (c(), commit(f, two, SLOT + 9)),
        (c(), commit(f, vec![sw(0, 3, SLOT, &[2])], SLOT + 9)),
        (c(), add_replica(2, 2)),
        (c(), set_state(2, ServerState::Draining)),
        (c(), commit(d, vec![], 0)),
    ]);
    let g = fs.look(d, "g").unwrap();
    fs.batch(vec![
        (c(), commit(g, vec![sw(0, 4, 100, &[2])], 100)),
        (c(), remove_replica(2, 1, true)),
        (c(), truncate(f, 5)),
        (c(), garbage_done(1, &[1])),
        (c(), link(g, R, "g2")),
        (c(), unlink(d, "g")),
        (c(), set_state(9, ServerState::Removed)),
    ]);
}

#[test]
fn block_ops_apply_deterministically() {
    let (mut one, mut two) = (Fs::new(), Fs::new());
    workload(&mut one);
    workload(&mut two);
    let a = scan_all(&one.store, Tree::State).unwrap();
    assert!(one.block_count() > 0 && one.garbage_count() > 0);
    assert_eq!(a, scan_all(&two.store, Tree::State).unwrap());
}

fn commit_file(ino: Ino, slots: Vec<SlotWrite>, size: u64, inline: Option<&[u8]>, attrs: Option<AttrChanges>) -> Op {
    Op::CommitFile(Box::new(FileCommit {
        ino,
        slots,
        size,
        inline: inline.map(<[u8]>::to_vec),
        attrs,
    }))
}

impl Fs {
    fn inline(&self, ino: Ino) -> Vec<u8> {
        match errno(data::layout(&Txn::new(&self.store), ino)).unwrap().inline {
            None => Vec::new(),
            Some(crate::namespace::tables::Inline::Clear(d)) => d,
            Some(other) => panic!("sealed inline contents in a test of clear ones: {other:?}"),
        }
    }
}

#[test]
fn a_small_file_is_kept_inline_and_moves_to_a_block_when_slot_0_is_written() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    let a = fs.make(&root(), commit_file(f, vec![], 5, Some(b"hello"), None));
    assert_eq!(a.size, 5);
    assert_eq!(fs.inline(f), b"hello");
    assert_eq!((fs.layout(f), fs.block_count()), ((5, vec![]), 0));
    assert_eq!(fs.stats().1, 5);
    // Truncation cuts it; growing reads zeros past it (a hole).
    fs.ok(setattr(f, |c| c.size = Some(2)));
    assert_eq!(fs.inline(f), b"he");
    fs.ok(setattr(f, |c| c.size = Some(10)));
    assert_eq!((fs.inline(f), fs.attr(f).size), (b"he".to_vec(), 10));
    // A block for slot 1 leaves slot 0 inline; a block for slot 0 replaces it.
    fs.ok(commit_file(f, vec![sw(1, 1, 100, &[1, 2])], SLOT + 100, None, None));
    assert_eq!(fs.inline(f), b"he");
    fs.ok(commit_file(f, vec![sw(0, 2, SLOT, &[1, 2])], SLOT + 100, None, None));
    assert!(fs.inline(f).is_empty());
    assert_eq!(fs.layout(f), (SLOT + 100, vec![(0, 2, SLOT), (1, 1, 100)]));
    // Back to small: inline again, slot 0's block released.
    fs.ok(commit_file(f, vec![], 3, Some(b"abc"), None));
    assert_eq!((fs.inline(f), fs.layout(f)), (b"abc".to_vec(), (3, vec![])));
    assert_eq!(fs.refs(2), None);
    // Too big, longer than the size, or beside a block for slot 0: refused.
    let big = vec![7u8; data::INLINE_MAX + 1];
    fs.no(commit_file(f, vec![], big.len() as u64, Some(&big), None), E::EINVAL);
    fs.no(commit_file(f, vec![], 2, Some(b"abc"), None), E::EINVAL);
    fs.no(
        commit_file(f, vec![sw(0, 3, 10, &[1])], 10, Some(b"abc"), None),
        E::EINVAL,
    );
    // Removal drops it with the inode.
    fs.ok(unlink(R, "f"));
    assert!(scan_all(&fs.store, Tree::State)
        .unwrap()
        .iter()
        .all(|(k, _)| k[0] != b'f'));
}

#[test]
fn a_commit_applies_attributes_set_while_open_after_its_data() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(setattr(f, |c| c.uid = Some(Uid(1000))));
    let at = Timestamp(1_000_000_000);
    let attrs = AttrChanges {
        perm: Some(0o640),
        mtime: Some(TimeSet::At(at)),
        ..AttrChanges::default()
    };
    let a = fs.make(&user(), commit_file(f, vec![], 4, Some(b"data"), Some(attrs.clone())));
    assert_eq!((a.perm, a.mtime, a.size), (0o640, at, 4));
    // Refused attributes refuse the whole command: nothing committed.
    let give_away = AttrChanges {
        uid: Some(Uid(2000)),
        ..AttrChanges::default()
    };
    fs.no_as(
        &user(),
        commit_file(f, vec![], 2, Some(b"xy"), Some(give_away)),
        E::EPERM,
    );
    assert_eq!((fs.inline(f), fs.attr(f).size), (b"data".to_vec(), 4));
}

#[test]
fn a_write_by_anyone_but_the_owner_drops_set_id_bits() {
    let mut fs = Fs::new();
    let f = fs.create(R, "f");
    fs.ok(setattr(f, |c| c.perm = Some(0o6777)));
    // The owner (root here) keeps them.
    fs.ok(commit_file(f, vec![], 1, Some(b"a"), None));
    assert_eq!(fs.attr(f).perm, 0o6777);
    fs.ok(setattr(f, |c| c.uid = Some(Uid(1000))));
    fs.ok(setattr(f, |c| c.perm = Some(0o6777)));
    fs.ok_as(&other(), commit_file(f, vec![], 1, Some(b"b"), None));
    assert_eq!(fs.attr(f).perm, 0o0777);
    // Without group execute, set-group-ID means mandatory locking: kept.
    fs.ok(setattr(f, |c| c.perm = Some(0o6766)));
    fs.ok_as(&other(), commit_file(f, vec![], 1, Some(b"c"), None));
    assert_eq!(fs.attr(f).perm, 0o2766);
}
