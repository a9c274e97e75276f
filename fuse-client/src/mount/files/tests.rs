//! The open file's logic against an in-memory cluster: what reaches the
//! cluster, in how many calls, for the ways `cp`, `tar`, `dd` and editors
//! write.

use super::*;
use nimbus_client::ClientError;
use std::collections::HashMap;
use std::sync::Mutex;

/// One commit as the fake cluster received it.
#[derive(Clone, Debug)]
struct Seen {
    /// Who committed.
    by: pb::Caller,
    slots: Vec<u64>,
    size: u64,
    inline: Option<Vec<u8>>,
    attrs: Option<pb::SetAttr>,
    /// The commit created the file.
    created: bool,
}

#[derive(Default)]
struct Cluster {
    blocks: HashMap<BlockId, Vec<u8>>,
    /// Committed slot blocks, inline slot 0, size.
    slots: BTreeMap<u64, BlockId>,
    inline: Vec<u8>,
    size: u64,
    attr: pb::Attr,
    commits: Vec<Seen>,
    writes: usize,
    syncs: Vec<usize>,
    refuse_attrs: bool,
    next: u8,
    /// The file was created here and not committed yet: blocks for it are
    /// refused, as the meta leader refuses to allocate them.
    unborn: bool,
}

/// An in-memory stand-in for the meta and data servers.
#[derive(Default)]
struct Fake(Mutex<Cluster>);

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// The file's bytes as the cluster has them.
    fn contents(&self) -> Vec<u8> {
        self.with(|c| {
            let mut out = vec![0u8; c.size as usize];
            let head = c.inline.len().min(out.len());
            out[..head].copy_from_slice(&c.inline[..head]);
            for (slot, id) in &c.slots {
                let data = &c.blocks[id];
                let at = (slot * SLOT) as usize;
                let n = data.len().min(out.len().saturating_sub(at));
                out[at..at + n].copy_from_slice(&data[..n]);
            }
            out
        })
    }
}

impl Backend for Fake {
    async fn layout(&self, _: pb::Caller, _: Ino, _: u32) -> Result<pb::Layout, ClientError> {
        Ok(self.with(|c| pb::Layout {
            size: c.size,
            slot_size: SLOT,
            slots: c
                .slots
                .iter()
                .map(|(s, id)| pb::SlotBlock {
                    slot: *s,
                    block_id: id.0.to_vec(),
                    length: c.blocks[id].len() as u64,
                    crc32c: 0,
                    key: key_of(*id).as_bytes().to_vec(),
                })
                .collect(),
            inline_data: c.inline.clone(),
            attr: Some(c.attr),
        }))
    }

    async fn write_block(&self, _: Ino, data: &[u8], _durable: bool) -> Result<WrittenBlock, ClientError> {
        // Let an early upload be overtaken, as a real one can be.
        tokio::task::yield_now().await;
        if self.with(|c| c.unborn) {
            return Err(ClientError::Errno(Errno::ENOENT));
        }
        Ok(self.with(|c| {
            c.next += 1;
            c.writes += 1;
            let id = BlockId([c.next; 16]);
            c.blocks.insert(id, data.to_vec());
            WrittenBlock {
                id,
                len: data.len() as u64,
                key: Some(key_of(id)),
                crc32c: 0,
                server_ids: vec![1, 2],
                replicas: vec!["a".into(), "b".into()],
                token: vec![],
            }
        }))
    }

    async fn locate(&self, _: BlockId) -> Result<pb::Location, ClientError> {
        Ok(pb::Location::default())
    }

    async fn read_located(
        &self,
        block: BlockId,
        key: Option<&Key>,
        _: &pb::Location,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        // The key travels with the block from the layout or the write.
        assert_eq!(key, Some(&key_of(block)), "block {block} read without its key");
        self.with(|c| {
            let data = c
                .blocks
                .get(&block)
                .ok_or_else(|| ClientError::DataUnavailable("no such block".into()))?;
            let from = (offset as usize).min(data.len());
            let to = if len == 0 {
                data.len()
            } else {
                (from + len as usize).min(data.len())
            };
            Ok(data[from..to].to_vec())
        })
    }

    async fn commit(&self, by: pb::Caller, _: Ino, commit: FileCommit<'_>) -> Result<pb::Attr, ClientError> {
        self.with(|c| {
            if c.refuse_attrs && commit.attrs.is_some() {
                return Err(ClientError::Errno(Errno::EPERM));
            }
            if c.unborn != commit.create.is_some() {
                return Err(ClientError::Errno(if c.unborn { Errno::ENOENT } else { Errno::EEXIST }));
            }
            c.unborn = false;
            c.commits.push(Seen {
                by,
                slots: commit.slots.iter().map(|(s, _)| *s).collect(),
                size: commit.size,
                inline: commit.inline.clone(),
                attrs: commit.attrs,
                created: commit.create.is_some(),
            });
            for (slot, b) in commit.slots {
                c.slots.insert(*slot, b.id);
                if *slot == 0 {
                    c.inline.clear();
                }
            }
            if let Some(data) = commit.inline {
                c.slots.remove(&0);
                c.inline = data;
            }
            c.size = commit.size;
            c.attr.size = commit.size;
            if let Some(a) = commit.attrs {
                c.attr.perm = a.perm.unwrap_or(c.attr.perm);
                c.attr.uid = a.uid.unwrap_or(c.attr.uid);
            }
            Ok(c.attr)
        })
    }

    async fn sync_blocks(&self, blocks: &[&WrittenBlock]) -> Result<(), ClientError> {
        self.with(|c| c.syncs.push(blocks.len()));
        Ok(())
    }
}

fn caller(uid: u32) -> pb::Caller {
    pb::Caller { uid, gids: vec![uid] }
}

fn owner() -> Who {
    Who {
        uid: 1000,
        nimbus_uid: 1000,
        superuser: false,
    }
}

/// A file just created by uid 1000 and open for writing.
fn created() -> (Arc<Fake>, OpenFile) {
    let fake = Arc::new(Fake::default());
    let attr = pb::Attr {
        ino: 7,
        kind: pb::FileKind::Regular as i32,
        perm: 0o600,
        uid: 1000,
        gid: 1000,
        nlink: 1,
        ..pb::Attr::default()
    };
    fake.with(|c| c.attr = attr);
    let file = OpenFile::new(7, caller(1000), WriteBudget::new(1 << 30));
    file.known(&attr);
    file.writer(true);
    (fake, file)
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn at_ns(ns: i64) -> Option<pb::TimeSpec> {
    Some(pb::TimeSpec {
        value: Some(pb::time_spec::Value::AtNs(ns)),
    })
}

/// The changes `set_attr` would send if it did not fold them: never, here.
async fn unreachable_set() -> FsResult<pb::Attr> {
    panic!("this change should have been folded")
}

#[tokio::test]
async fn tar_writes_a_small_file_with_one_commit_and_no_block() {
    let (fake, file) = created();
    let data = bytes(3000, 1);
    file.write(&fake, Some(caller(1000)), 0, &data).await.unwrap();
    // What tar does before close: utimens, fchown to itself, fchmod.
    let changes = [
        pb::SetAttr {
            ino: 7,
            mtime: at_ns(1_600_000_000_000_000_000),
            ..Default::default()
        },
        pb::SetAttr {
            ino: 7,
            uid: Some(1000),
            gid: Some(1000),
            ..Default::default()
        },
        pb::SetAttr {
            ino: 7,
            perm: Some(0o644),
            ..Default::default()
        },
    ];
    for change in &changes {
        let out = file.set_attr(&fake, change, owner(), unreachable_set()).await.unwrap();
        assert!(matches!(out, SetOutcome::Folded(_)));
    }
    assert_eq!(
        file.folded().map(|a| (a.perm, a.mtime_ns)),
        Some((0o644, 1_600_000_000_000_000_000))
    );
    file.flush(&fake).await.unwrap();
    let commits = fake.with(|c| c.commits.clone());
    assert_eq!(commits.len(), 1, "{commits:?}");
    let c = &commits[0];
    assert_eq!((c.slots.len(), c.size, c.inline.as_deref()), (0, 3000, Some(&data[..])));
    // The chown changed nothing and was dropped; mode and time went along.
    let attrs = c.attrs.unwrap();
    assert_eq!(
        (attrs.perm, attrs.uid, attrs.mtime),
        (Some(0o644), None, at_ns(1_600_000_000_000_000_000))
    );
    assert_eq!(fake.with(|c| c.writes), 0);
    assert_eq!(file.folded(), None);
    // Read back from what the cluster keeps.
    assert_eq!(fake.contents(), data);
    assert_eq!(file.read(&fake, 0, 4096).await.unwrap(), data);
}

#[tokio::test]
async fn changes_the_cluster_might_refuse_are_not_folded() {
    let (fake, file) = created();
    file.write(&fake, Some(caller(1000)), 0, b"x").await.unwrap();
    let applied = pb::Attr {
        perm: 0o755,
        ..pb::Attr::default()
    };
    // Giving the file away, set-id bits, or someone who is not the owner.
    let give = pb::SetAttr {
        ino: 7,
        uid: Some(2000),
        ..Default::default()
    };
    let setid = pb::SetAttr {
        ino: 7,
        perm: Some(0o4755),
        ..Default::default()
    };
    let stranger = Who {
        uid: 1000,
        nimbus_uid: 3000,
        superuser: false,
    };
    let plain = pb::SetAttr {
        ino: 7,
        perm: Some(0o644),
        ..Default::default()
    };
    for (change, who) in [(give, owner()), (setid, owner()), (plain, stranger)] {
        let out = file.set_attr(&fake, &change, who, async { Ok(applied) }).await.unwrap();
        assert!(matches!(out, SetOutcome::Applied(_)));
    }
    // The superuser may give files away: folded.
    let root = Who {
        uid: 0,
        nimbus_uid: 0,
        superuser: true,
    };
    let file = OpenFile::new(8, caller(0), WriteBudget::new(1 << 30));
    file.known(&fake.with(|c| c.attr));
    file.writer(true);
    let out = file.set_attr(&fake, &give, root, unreachable_set()).await.unwrap();
    assert!(matches!(out, SetOutcome::Folded(a) if a.uid == 2000));
    // A file not open for writing folds nothing.
    file.writer(false);
    let out = file.set_attr(&fake, &plain, root, async { Ok(applied) }).await.unwrap();
    assert!(matches!(out, SetOutcome::Applied(_)));
}

#[tokio::test]
async fn refused_attributes_leave_the_data_committed_and_the_error_at_close() {
    let (fake, file) = created();
    fake.with(|c| c.refuse_attrs = true);
    file.write(&fake, Some(caller(1000)), 0, b"keep me").await.unwrap();
    let change = pb::SetAttr {
        ino: 7,
        perm: Some(0o640),
        ..Default::default()
    };
    file.set_attr(&fake, &change, owner(), unreachable_set()).await.unwrap();
    let e = file.flush(&fake).await.unwrap_err();
    assert_eq!(e, FsError(Errno::EPERM));
    assert_eq!(fake.contents(), b"keep me");
    // Nothing is left to commit (or to report again).
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.with(|c| c.commits.len()), 1);
}

#[tokio::test]
async fn full_slots_go_early_and_are_sent_once() {
    let (fake, file) = created();
    let data = bytes((2 * SLOT + 12345) as usize, 2);
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        file.write(&fake, Some(caller(1000)), (i as u64) << 20, chunk)
            .await
            .unwrap();
    }
    // Slots 0 and 1 filled up: on their way before any close.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.with(|c| c.writes), 2);
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.with(|c| c.writes), 3);
    let commits = fake.with(|c| c.commits.clone());
    assert_eq!((commits.len(), commits[0].slots.len()), (1, 3));
    assert_eq!(fake.contents(), data);
    assert_eq!(
        file.read(&fake, SLOT - 5, 10).await.unwrap(),
        data[SLOT as usize - 5..][..10]
    );
}

#[tokio::test]
async fn a_slot_changed_after_it_was_sent_is_sent_again() {
    let (fake, file) = created();
    let mut data = bytes(SLOT as usize, 3);
    file.write(&fake, Some(caller(1000)), 0, &data).await.unwrap();
    file.write(&fake, Some(caller(1000)), 100, b"changed").await.unwrap();
    data[100..107].copy_from_slice(b"changed");
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.contents(), data);
}

#[tokio::test]
async fn a_small_file_grows_out_of_the_namespace_and_back() {
    let (fake, file) = created();
    let small = bytes(INLINE_MAX, 4);
    file.write(&fake, Some(caller(1000)), 0, &small).await.unwrap();
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.with(|c| (c.inline.len(), c.slots.len())), (INLINE_MAX, 0));
    // One byte more: slot 0 becomes a block holding the old bytes too.
    file.write(&fake, Some(caller(1000)), INLINE_MAX as u64, b"!")
        .await
        .unwrap();
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.with(|c| (c.inline.len(), c.slots.len())), (0, 1));
    let mut want = small.clone();
    want.push(b'!');
    assert_eq!(fake.contents(), want);
    // Truncated (by another descriptor), then rewritten small: inline again.
    let cut = pb::SetAttr {
        ino: 7,
        size: Some(10),
        ..Default::default()
    };
    let applied = pb::Attr {
        size: 10,
        ..fake.with(|c| c.attr)
    };
    file.set_attr(&fake, &cut, owner(), async { Ok(applied) })
        .await
        .unwrap();
    fake.with(|c| c.size = 10);
    file.write(&fake, Some(caller(1000)), 0, b"0123456789").await.unwrap();
    file.flush(&fake).await.unwrap();
    assert_eq!(
        fake.with(|c| (c.inline.clone(), c.slots.len())),
        (b"0123456789".to_vec(), 0)
    );
}

#[tokio::test]
async fn fsync_syncs_earlier_blocks_instead_of_sending_them_again() {
    let (fake, file) = created();
    let data = bytes((2 * SLOT) as usize, 5);
    file.write(&fake, Some(caller(1000)), 0, &data).await.unwrap();
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.with(|c| c.writes), 2);
    file.fsync(&fake).await.unwrap();
    assert_eq!(fake.with(|c| (c.writes, c.syncs.clone())), (2, vec![2]));
    // Nothing left unsynced: a second fsync asks nothing.
    file.fsync(&fake).await.unwrap();
    assert_eq!(fake.with(|c| c.syncs.len()), 1);
}

#[tokio::test]
async fn a_write_after_utimens_moves_mtime_to_the_write() {
    let (fake, file) = created();
    let future = pb::SetAttr {
        ino: 7,
        mtime: at_ns(4_000_000_000_000_000_000),
        ..Default::default()
    };
    file.set_attr(&fake, &future, owner(), unreachable_set()).await.unwrap();
    file.write(&fake, Some(caller(1000)), 0, b"later").await.unwrap();
    assert_ne!(file.written_at(), 0);
    file.flush(&fake).await.unwrap();
    // The commit stamps its own time: no explicit mtime went with it.
    let c = fake.with(|c| c.commits[0].clone());
    assert_eq!(c.attrs.and_then(|a| a.mtime), None);
}

fn committed(len: u64) -> Committed {
    let block = BlockId([7; 16]);
    Committed {
        block,
        len,
        key: Some(key_of(block)),
    }
}

/// The fake's key of a block (it stores plaintext, but checks that readers
/// bring the key a real block would need).
fn key_of(block: BlockId) -> Key {
    Key::from_bytes(&[block.0.as_slice(), block.0.as_slice()].concat()).unwrap_or_else(|| unreachable!())
}

#[test]
fn clip_drops_and_shortens_like_the_cluster() {
    let mut slots: BTreeMap<u64, Committed> = (0..4).map(|s| (s, committed(SLOT))).collect();
    clip(&mut slots, SLOT + 10);
    assert_eq!(slots.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(slots[&1].len, 10);
    clip(&mut slots, SLOT);
    assert_eq!(slots.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(slots[&0].len, SLOT);
    clip(&mut slots, 0);
    assert!(slots.is_empty());
}

#[tokio::test]
async fn the_mount_wide_write_budget_makes_a_writer_commit_early() {
    let fake = Arc::new(Fake::default());
    let budget = WriteBudget::new(2 * SLOT);
    let (a, b) = (
        OpenFile::new(1, caller(1000), budget.clone()),
        OpenFile::new(2, caller(1000), budget.clone()),
    );
    // File a holds two slots: the mount's whole budget.
    a.write(&fake, Some(caller(1000)), 0, &bytes(SLOT as usize + 10, 6))
        .await
        .unwrap();
    assert!(budget.exhausted());
    assert!(fake.with(|c| c.commits.is_empty()));
    // File b may take one slot (it holds none), but not a second one
    // without committing its first.
    b.write(&fake, Some(caller(1000)), 0, b"b0").await.unwrap();
    assert!(fake.with(|c| c.commits.is_empty()));
    b.write(&fake, Some(caller(1000)), SLOT, b"b1").await.unwrap();
    assert_eq!(fake.with(|c| c.commits.len()), 1);
    // Committing gives the room back.
    a.flush(&fake).await.unwrap();
    b.flush(&fake).await.unwrap();
    assert_eq!(budget.used.load(Ordering::Acquire), 0);
    drop((a, b));
    assert_eq!(budget.used.load(Ordering::Acquire), 0);
}

/// A write by the user the file commits as keeps the recorded caller (and
/// its supplementary groups, read once); another user's write replaces it;
/// the kernel's writeback (uid -1) never does.
#[tokio::test]
async fn writes_commit_as_the_recorded_writer() {
    let fake = Arc::new(Fake::default());
    let mut opener = caller(1000);
    opener.gids.push(77);
    let file = OpenFile::new(1, opener.clone(), WriteBudget::new(1 << 30));
    file.writer(true);
    assert!(file.writes_as(1000, opener.gids[0]));
    assert!(file.writes_as(u32::MAX, 0), "writeback of mapped pages");
    assert!(!file.writes_as(2000, opener.gids[0]));
    file.write(&fake, None, 0, b"by the opener").await.unwrap();
    file.flush(&fake).await.unwrap();
    let other = caller(2000);
    assert!(!file.writes_as(2000, other.gids[0]));
    file.write(&fake, Some(other.clone()), 0, b"by another").await.unwrap();
    assert!(file.writes_as(2000, other.gids[0]));
    file.flush(&fake).await.unwrap();
    let committers = fake.with(|c| c.commits.iter().map(|s| s.by.clone()).collect::<Vec<_>>());
    assert_eq!(committers, vec![opener, other]);
}

/// A file created by uid 1000 that the cluster gets at its first commit.
async fn created_at_commit() -> (Arc<Fake>, OpenFile) {
    let (fake, file) = created();
    fake.with(|c| c.unborn = true);
    let node = pb::MakeNode {
        parent: 1,
        name: b"new".to_vec(),
        kind: pb::FileKind::Regular as i32,
        perm: 0o600,
        ino: 7,
        session: 99,
        ..Default::default()
    };
    file.create_with_first_commit(node).await;
    (fake, file)
}

#[tokio::test]
async fn a_new_small_file_is_created_with_its_data_and_attributes_in_one_commit() {
    let (fake, file) = created_at_commit().await;
    assert!(file.is_unborn());
    let data = bytes(3000, 2);
    file.write(&fake, Some(caller(1000)), 0, &data).await.unwrap();
    let chmod = pb::SetAttr {
        ino: 7,
        perm: Some(0o644),
        ..Default::default()
    };
    file.set_attr(&fake, &chmod, owner(), unreachable_set()).await.unwrap();
    file.flush(&fake).await.unwrap();
    let commits = fake.with(|c| c.commits.clone());
    assert_eq!(commits.len(), 1, "{commits:?}");
    let c = &commits[0];
    assert!(c.created);
    assert_eq!((c.size, c.inline.as_deref()), (3000, Some(&data[..])));
    assert_eq!(c.attrs.and_then(|a| a.perm), Some(0o644));
    assert!(!file.is_unborn());
    // Later commits are plain ones.
    file.write(&fake, Some(caller(1000)), 3000, b"more").await.unwrap();
    file.flush(&fake).await.unwrap();
    assert!(!fake.with(|c| c.commits[1].created));
}

#[tokio::test]
async fn a_new_big_file_is_created_before_its_first_block_goes_out() {
    let (fake, file) = created_at_commit().await;
    let data = bytes(SLOT as usize + 1000, 3);
    file.write(&fake, Some(caller(1000)), 0, &data).await.unwrap();
    file.flush(&fake).await.unwrap();
    let commits = fake.with(|c| c.commits.clone());
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert!(commits[0].created && commits[0].size == 0 && commits[0].inline.is_none());
    assert!(!commits[1].created);
    assert_eq!(fake.contents(), data);
}

#[tokio::test]
async fn a_new_file_never_written_is_still_created_at_close() {
    let (fake, file) = created_at_commit().await;
    file.flush(&fake).await.unwrap();
    let commits = fake.with(|c| c.commits.clone());
    assert_eq!(commits.len(), 1);
    assert!(commits[0].created && commits[0].size == 0);
    // A close with nothing new commits nothing.
    file.flush(&fake).await.unwrap();
    assert_eq!(fake.with(|c| c.commits.len()), 1);
}
