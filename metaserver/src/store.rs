//! The small key-value interface everything durable in a meta server goes
//! through: the Raft log and vote, the namespace state, the last snapshot.
//!
//! sled is the engine today; STACK.md records why it sits behind a trait: its
//! crash-safety record is uneven, and redb or fjall must be able to replace it
//! without touching the state machine. [`tests::conformance`] is the contract.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The separate key spaces of a meta server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Raft log entries by index.
    Log,
    /// Vote, committed and purged log ids.
    Raft,
    /// The namespace state machine and its applied log id.
    State,
    /// Where nodes from before snapshot files kept their last snapshot
    /// (read once, to move it into a file).
    Snapshot,
}

impl Tree {
    const ALL: [Tree; 4] = [Tree::Log, Tree::Raft, Tree::State, Tree::Snapshot];

    fn name(self) -> &'static str {
        match self {
            Tree::Log => "log",
            Tree::Raft => "raft",
            Tree::State => "state",
            Tree::Snapshot => "snapshot",
        }
    }
}

/// A storage failure; the meta server treats it as fatal for the node.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt record under {key}: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("{0}")]
    Busy(&'static str),
}

/// One change of an atomic batch: a put, or a delete when the value is None.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Ordered key-value storage with atomic batches per tree.
pub trait Store: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies every write or none of them.
    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), StoreError>;
    /// Up to `limit` pairs with keys `>= start` that begin with `prefix`, in order.
    fn scan(&self, tree: Tree, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError>;
    /// The last pair whose key begins with `prefix`.
    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Pair>, StoreError>;
    /// Replaces the whole State tree atomically with `pairs`, taken one at
    /// a time (snapshot install): a crash midway leaves the old state.
    fn replace_state(&self, pairs: &mut dyn Iterator<Item = Result<Pair, StoreError>>) -> Result<(), StoreError>;
    /// The State tree as it is now, durable, to be read while writes go on
    /// (a snapshot): no other write shows in it.
    fn checkpoint(&self) -> Result<Checkpoint, StoreError>;
    /// Makes every write before it durable, except State writes made while
    /// a checkpoint is open: those wait for it to close (a restart applies
    /// them again from the log, which is never purged past a checkpoint).
    fn flush(&self) -> Result<(), StoreError>;
}

/// A consistent view of the State tree, read pair by pair in key order.
/// Writes made while it is open stay out of it.
pub struct Checkpoint {
    pairs: Box<dyn Iterator<Item = Result<Pair, StoreError>> + Send>,
    /// Ends the checkpoint when dropped.
    _open: Box<dyn Send>,
}

impl Iterator for Checkpoint {
    type Item = Result<Pair, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.pairs.next()
    }
}

/// Counts a checkpoint as open until dropped.
struct OpenCheckpoint(Arc<AtomicUsize>);

impl Drop for OpenCheckpoint {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every pair of a tree.
pub fn scan_all(store: &dyn Store, tree: Tree) -> Result<Vec<Pair>, StoreError> {
    store.scan(tree, &[], &[], usize::MAX)
}

/// The sled engine, with State-tree writes gathered in memory and handed to
/// sled several batches at a time.
///
/// Why: every `sled::Tree::apply_batch` seals sled's IO buffer and writes it
/// out on sled's thread pool with a `pwrite` and a waiting
/// `sync_file_range`, so one sled batch per Raft entry cost each node a disk
/// write and several thread wake-ups per commit. The state machine's writes
/// need no durability of their own (the Raft log is the durable record and
/// a restarted node applies again from the applied id that reached the
/// disk), only atomicity and order: the buffered batches go to sled in
/// order, merged into one atomic sled batch, so sled's state on disk is
/// still a prefix of the batches applied here. `flush` hands everything
/// over before sled's flush, so a snapshot (and so a log purge) never gets
/// ahead of the state on disk. Reads merge the buffer over sled.
///
/// The State tree is a sled tree named in a catalog record: a snapshot
/// install fills a fresh tree and then switches the record, so that a
/// crash midway leaves the old state whole. A checkpoint (a snapshot being
/// written) keeps the State tree unchanged while it is read: writes made
/// meanwhile stay in the buffer, which reads merge as always.
pub struct SledStore {
    db: sled::Db,
    trees: BTreeMap<Tree, sled::Tree>,
    /// State-tree writes not yet handed to sled, and the tree. Readers hold
    /// the read lock across their sled read, so a key never vanishes between
    /// the buffer and sled while a drain runs.
    pending: RwLock<Pending>,
    /// Checkpoints open: while any is, nothing is handed to sled's State tree.
    checkpoints: Arc<AtomicUsize>,
}

struct Pending {
    /// The State tree.
    tree: sled::Tree,
    /// None is a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    since: Option<Instant>,
}

/// The key of the default sled tree that names the State tree.
const STATE_TREE_RECORD: &[u8] = b"nimbus.state-tree";
/// Pairs per sled batch while a snapshot is installed.
const INSTALL_BATCH: usize = 8192;

/// Distinct keys buffered before they go to sled: a drain inserts them on
/// the state machine's task, about a microsecond each.
const PENDING_KEYS: usize = 2048;
/// Bytes buffered before they go to sled.
const PENDING_BYTES: usize = 8 << 20;
/// Oldest buffered write before the next apply hands the buffer to sled:
/// bounds the work a restart re-applies from the log.
const PENDING_AGE: Duration = Duration::from_millis(50);

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the database in `dir`, with sled's page cache
    /// bounded to `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(engine)?;
        let mut trees = BTreeMap::new();
        for t in Tree::ALL {
            if t != Tree::State {
                trees.insert(t, db.open_tree(t.name()).map_err(engine)?);
            }
        }
        let state_name = match db.get(STATE_TREE_RECORD).map_err(engine)? {
            Some(name) => name.to_vec(),
            None => Tree::State.name().as_bytes().to_vec(),
        };
        // Trees of installs that did not finish, or that a checkpoint kept.
        for name in db.tree_names() {
            if name.starts_with(b"state") && name.as_ref() != state_name.as_slice() {
                db.drop_tree(&name).map_err(engine)?;
            }
        }
        let tree = db.open_tree(&state_name).map_err(engine)?;
        Ok(SledStore {
            db,
            trees,
            pending: RwLock::new(Pending {
                tree,
                writes: BTreeMap::new(),
                bytes: 0,
                since: None,
            }),
            checkpoints: Arc::default(),
        })
    }

    /// Bytes sled's files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// A tree other than State (whose handle lives with its buffer).
    fn tree(&self, t: Tree) -> &sled::Tree {
        // Every other variant is inserted in `open`.
        &self.trees[&t]
    }

    fn read_pending(&self) -> RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pending(&self) -> RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the buffered State writes to sled as one atomic batch, unless
    /// a checkpoint is reading the State tree.
    fn drain(&self, pending: &mut Pending) -> Result<(), StoreError> {
        if pending.writes.is_empty() || self.checkpoints.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (k, v) in std::mem::take(&mut pending.writes) {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        pending.bytes = 0;
        pending.since = None;
        pending.tree.apply_batch(batch).map_err(engine)
    }

    /// The name of the next State tree: "state.N".
    fn next_state_name(current: &[u8]) -> Vec<u8> {
        let n = std::str::from_utf8(current)
            .ok()
            .and_then(|s| s.strip_prefix("state."))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        format!("state.{}", n + 1).into_bytes()
    }

    /// Buffered writes go first, then anything written to another tree
    /// (the snapshot record): sled sees every write in the order it was made.
    fn drain_now(&self) -> Result<(), StoreError> {
        let mut pending = self.write_pending();
        self.drain(&mut pending)
    }
}

/// The first key after every key that starts with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The buffered writes with keys in `[from, end of prefix)`.
fn pending_range<'a>(
    pending: &'a Pending,
    prefix: &[u8],
    from: &[u8],
) -> std::collections::btree_map::Range<'a, Vec<u8>, Option<Vec<u8>>> {
    let end = match prefix_end(prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    pending.writes.range((Bound::Included(from.to_vec()), end))
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if tree != Tree::State {
            return Ok(self.tree(tree).get(key).map_err(engine)?.map(|v| v.to_vec()));
        }
        let pending = self.read_pending();
        if let Some(v) = pending.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(pending.tree.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), StoreError> {
        if tree == Tree::State {
            let mut pending = self.write_pending();
            for (k, v) in writes {
                pending.bytes += k.len() + v.as_ref().map_or(0, Vec::len);
                pending.writes.insert(k, v);
            }
            let since = *pending.since.get_or_insert_with(Instant::now);
            if pending.writes.len() >= PENDING_KEYS || pending.bytes >= PENDING_BYTES || since.elapsed() >= PENDING_AGE
            {
                self.drain(&mut pending)?;
            }
            return Ok(());
        }
        self.drain_now()?;
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree(tree).apply_batch(batch).map_err(engine)
    }

    fn scan(&self, tree: Tree, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        let from = if start > prefix { start } else { prefix };
        let pending = self.read_pending();
        let state = tree == Tree::State;
        let mut buffered = state.then(|| pending_range(&pending, prefix, from).peekable());
        let sled_tree = if state { &pending.tree } else { self.tree(tree) };
        let mut stored = sled_tree.range(from..).peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            // The smaller key of the two sources; the buffer wins a tie.
            let next_stored = match stored.peek() {
                Some(Ok((k, _))) if k.starts_with(prefix) => Some(k.clone()),
                Some(Ok(_)) | None => None,
                Some(Err(_)) => match stored.next() {
                    Some(Err(e)) => return Err(engine(e)),
                    _ => None,
                },
            };
            let next_buffered = buffered.as_mut().and_then(|b| b.peek().map(|(k, _)| (*k).clone()));
            match (next_buffered, next_stored) {
                (None, None) => break,
                (Some(b), s) if s.as_ref().is_none_or(|s| b.as_slice() <= s.as_ref()) => {
                    if s.is_some_and(|s| s.as_ref() == b.as_slice()) {
                        stored.next();
                    }
                    if let Some((k, Some(v))) = buffered.as_mut().and_then(|b| b.next()) {
                        out.push((k.clone(), v.clone()));
                    }
                }
                _ => {
                    if let Some(Ok((k, v))) = stored.next() {
                        out.push((k.to_vec(), v.to_vec()));
                    }
                }
            }
        }
        Ok(out)
    }

    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        let pending = self.read_pending();
        let state = tree == Tree::State;
        let mut buffered = state.then(|| pending_range(&pending, prefix, prefix).rev().peekable());
        let sled_tree = if state { &pending.tree } else { self.tree(tree) };
        let mut stored = sled_tree.scan_prefix(prefix).rev().peekable();
        loop {
            let next_stored = match stored.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                None => None,
                Some(Err(_)) => match stored.next() {
                    Some(Err(e)) => return Err(engine(e)),
                    _ => None,
                },
            };
            let next_buffered = buffered.as_mut().and_then(|b| b.peek().map(|(k, _)| (*k).clone()));
            match (next_buffered, next_stored) {
                (None, None) => return Ok(None),
                // The larger key of the two; the buffer wins a tie, and a
                // buffered delete hides the stored value.
                (Some(b), s) if s.as_ref().is_none_or(|s| b.as_slice() >= s.as_ref()) => {
                    if s.is_some_and(|s| s.as_ref() == b.as_slice()) {
                        stored.next();
                    }
                    if let Some((k, Some(v))) = buffered.as_mut().and_then(|b| b.next()) {
                        return Ok(Some((k.clone(), v.clone())));
                    }
                }
                _ => {
                    if let Some(Ok((k, v))) = stored.next() {
                        return Ok(Some((k.to_vec(), v.to_vec())));
                    }
                }
            }
        }
    }

    fn replace_state(&self, pairs: &mut dyn Iterator<Item = Result<Pair, StoreError>>) -> Result<(), StoreError> {
        // Filled without any lock: only the state machine's task writes, and
        // it is the one installing; readers go on reading the old state.
        let old_name = self.read_pending().tree.name().to_vec();
        let name = Self::next_state_name(&old_name);
        if self.db.tree_names().iter().any(|n| n.as_ref() == name.as_slice()) {
            self.db.drop_tree(&name).map_err(engine)?;
        }
        let fresh = self.db.open_tree(&name).map_err(engine)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for pair in pairs {
            let (k, v) = pair?;
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == INSTALL_BATCH {
                fresh.apply_batch(std::mem::take(&mut batch)).map_err(engine)?;
                in_batch = 0;
            }
        }
        fresh.apply_batch(batch).map_err(engine)?;
        // The new tree is durable before the record names it, and the switch
        // is one durable write.
        self.db.flush().map_err(engine)?;
        self.db.insert(STATE_TREE_RECORD, name.as_slice()).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        {
            // The replacement supersedes whatever was buffered.
            let mut pending = self.write_pending();
            pending.tree = fresh;
            pending.writes.clear();
            pending.bytes = 0;
            pending.since = None;
        }
        // A checkpoint still reading the old tree keeps it; the next start
        // drops it then.
        if self.checkpoints.load(Ordering::SeqCst) == 0 {
            self.db.drop_tree(&old_name).map_err(engine)?;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let pending = self.write_pending();
        if self.checkpoints.load(Ordering::SeqCst) > 0 {
            return Err(StoreError::Busy("a checkpoint of the state is already open"));
        }
        let mut pending = pending;
        self.drain(&mut pending)?;
        self.db.flush().map_err(engine)?;
        // Counted before the lock is released: no drain can slip in between.
        self.checkpoints.fetch_add(1, Ordering::SeqCst);
        let open = OpenCheckpoint(self.checkpoints.clone());
        let pairs = pending.tree.iter().map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine)
        });
        Ok(Checkpoint {
            pairs: Box::new(pairs),
            _open: Box::new(open),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.drain_now()?;
        self.db.flush().map(|_| ()).map_err(engine)
    }
}

/// One tree of the in-memory engine.
type MemTree = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory engine for unit tests of the state machine.
#[derive(Default)]
pub struct MemStore {
    trees: Mutex<BTreeMap<Tree, MemTree>>,
}

impl MemStore {
    fn with<R>(&self, tree: Tree, f: impl FnOnce(&mut MemTree) -> R) -> R {
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        f(trees.entry(tree).or_default())
    }
}

impl Store for MemStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(tree, |t| t.get(key).cloned()))
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), StoreError> {
        self.with(tree, |t| {
            for (k, v) in writes {
                match v {
                    Some(v) => t.insert(k, v),
                    None => t.remove(&k),
                };
            }
        });
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        let from = if start > prefix { start } else { prefix }.to_vec();
        Ok(self.with(tree, |t| {
            t.range(from..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        Ok(self.with(tree, |t| {
            t.range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .last()
                .map(|(k, v)| (k.clone(), v.clone()))
        }))
    }

    fn replace_state(&self, pairs: &mut dyn Iterator<Item = Result<Pair, StoreError>>) -> Result<(), StoreError> {
        let fresh = pairs.collect::<Result<MemTree, StoreError>>()?;
        self.with(Tree::State, |t| *t = fresh);
        Ok(())
    }

    fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let pairs: Vec<Pair> = self.with(Tree::State, |t| t.clone().into_iter().collect());
        Ok(Checkpoint {
            pairs: Box::new(pairs.into_iter().map(Ok)),
            _open: Box::new(()),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every engine meets.
    pub(crate) fn conformance(s: &dyn Store) {
        let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
        s.apply(
            Tree::State,
            vec![kv("a1", "x"), kv("a2", "y"), kv("a3", "z"), kv("b1", "w")],
        )
        .unwrap();
        assert_eq!(s.get(Tree::State, b"a2").unwrap(), Some(b"y".to_vec()));
        assert_eq!(s.get(Tree::Log, b"a2").unwrap(), None, "trees are separate");

        let keys = |v: Vec<Pair>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(s.scan(Tree::State, b"a", b"", 10).unwrap()),
            vec![b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()]
        );
        assert_eq!(keys(s.scan(Tree::State, b"a", b"a2", 1).unwrap()), vec![b"a2".to_vec()]);
        assert_eq!(s.last(Tree::State, b"a").unwrap().unwrap().0, b"a3".to_vec());
        assert_eq!(s.last(Tree::State, b"c").unwrap(), None);

        // A batch deletes and inserts together.
        s.apply(Tree::State, vec![(b"a1".to_vec(), None), kv("a4", "q")])
            .unwrap();
        assert_eq!(s.get(Tree::State, b"a1").unwrap(), None);
        assert_eq!(scan_all(s, Tree::State).unwrap().len(), 4);

        // A checkpoint shows the state when it was taken, not later writes.
        let checkpoint = s.checkpoint().unwrap();
        s.apply(Tree::State, vec![kv("a2", "changed"), kv("c1", "new"), (b"a3".to_vec(), None)])
            .unwrap();
        let seen: Vec<Pair> = checkpoint.collect::<Result<_, _>>().unwrap();
        let text = |v: &[Pair]| {
            v.iter()
                .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        };
        assert_eq!(text(&seen), ["a2=y", "a3=z", "a4=q", "b1=w"]);
        assert_eq!(
            text(&scan_all(s, Tree::State).unwrap()),
            ["a2=changed", "a4=q", "b1=w", "c1=new"],
            "writes made during a checkpoint are read back"
        );
        s.flush().unwrap();

        let mut fresh = vec![Ok((b"n".to_vec(), b"1".to_vec()))].into_iter();
        s.replace_state(&mut fresh).unwrap();
        assert_eq!(scan_all(s, Tree::State).unwrap(), vec![(b"n".to_vec(), b"1".to_vec())]);
        // A failing source leaves the state as it was.
        let mut failing = vec![
            Ok((b"m".to_vec(), b"2".to_vec())),
            Err(StoreError::Busy("source failed")),
        ]
        .into_iter();
        assert!(s.replace_state(&mut failing).is_err());
        assert_eq!(scan_all(s, Tree::State).unwrap(), vec![(b"n".to_vec(), b"1".to_vec())]);
        s.flush().unwrap();
    }

    #[test]
    fn mem_store_conforms() {
        conformance(&MemStore::default());
    }

    /// Reads see buffered writes over what sled holds: puts, overwrites and
    /// deletes, in scans from any start, in `last`, and after a flush.
    #[test]
    fn sled_store_merges_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 16 << 20).unwrap();
        let put = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
        let del = |k: &str| (k.as_bytes().to_vec(), None);
        s.apply(
            Tree::State,
            vec![put("a1", "s"), put("a3", "s"), put("a5", "s"), put("b", "s")],
        )
        .unwrap();
        s.flush().unwrap();
        s.apply(
            Tree::State,
            vec![put("a2", "m"), del("a3"), put("a5", "m"), put("a6", "m")],
        )
        .unwrap();
        let pairs = |v: Vec<Pair>| {
            v.into_iter()
                .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v)))
                .collect::<Vec<_>>()
        };
        let all = ["a1=s", "a2=m", "a5=m", "a6=m"];
        assert_eq!(pairs(s.scan(Tree::State, b"a", b"", 10).unwrap()), all);
        assert_eq!(pairs(s.scan(Tree::State, b"a", b"a3", 2).unwrap()), ["a5=m", "a6=m"]);
        assert_eq!(pairs(s.scan(Tree::State, b"a", b"a2", 1).unwrap()), ["a2=m"]);
        assert_eq!(s.get(Tree::State, b"a3").unwrap(), None);
        assert_eq!(s.get(Tree::State, b"a1").unwrap(), Some(b"s".to_vec()));
        assert_eq!(
            pairs(s.last(Tree::State, b"a").unwrap().into_iter().collect()),
            ["a6=m"]
        );
        s.apply(Tree::State, vec![del("a6"), del("a5")]).unwrap();
        assert_eq!(
            pairs(s.last(Tree::State, b"a").unwrap().into_iter().collect()),
            ["a2=m"]
        );
        assert_eq!(s.last(Tree::State, b"c").unwrap(), None);
        s.flush().unwrap();
        assert_eq!(
            pairs(s.scan(Tree::State, b"", b"", 10).unwrap()),
            ["a1=s", "a2=m", "b=s"]
        );
        drop(s);
        let s = SledStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(
            pairs(s.scan(Tree::State, b"", b"", 10).unwrap()),
            ["a1=s", "a2=m", "b=s"]
        );
    }

    /// While a checkpoint is open, sled's State tree does not change (the
    /// writes stay buffered, well past the buffer's usual limits) and a second
    /// checkpoint is refused; closing it lets the buffer go to sled again.
    #[test]
    fn sled_checkpoint_holds_the_tree_still() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 16 << 20).unwrap();
        let put = |i: usize| (format!("k{i:06}").into_bytes(), Some(vec![1u8; 8]));
        s.apply(Tree::State, (0..100).map(put).collect()).unwrap();
        let checkpoint = s.checkpoint().unwrap();
        assert!(matches!(s.checkpoint(), Err(StoreError::Busy(_))));
        for chunk in (100..(3 * PENDING_KEYS + 100)).collect::<Vec<_>>().chunks(500) {
            s.apply(Tree::State, chunk.iter().copied().map(put).collect()).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(checkpoint.count(), 100);
        assert_eq!(scan_all(&s, Tree::State).unwrap().len(), 3 * PENDING_KEYS + 100);
        assert_eq!(s.read_pending().tree.len(), 100, "nothing reached sled meanwhile");
        s.flush().unwrap();
        assert_eq!(s.read_pending().tree.len(), 3 * PENDING_KEYS + 100);
    }

    /// An install that fails midway leaves the old state, after a restart too;
    /// one that finishes survives a restart, in a tree of its own.
    #[test]
    fn sled_install_switches_trees_atomically() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 16 << 20).unwrap();
            s.apply(Tree::State, vec![(b"old".to_vec(), Some(b"1".to_vec()))]).unwrap();
            s.flush().unwrap();
            let mut failing = (0..20_000)
                .map(|i| Ok((format!("new{i}").into_bytes(), b"2".to_vec())))
                .chain(std::iter::once(Err(StoreError::Busy("cut short"))));
            assert!(s.replace_state(&mut failing).is_err());
        }
        let s = SledStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(scan_all(&s, Tree::State).unwrap(), vec![(b"old".to_vec(), b"1".to_vec())]);
        let mut good = (0..20_000).map(|i| Ok((format!("new{i:05}").into_bytes(), b"2".to_vec())));
        s.replace_state(&mut good).unwrap();
        drop(s);
        let s = SledStore::open(dir.path(), 16 << 20).unwrap();
        let all = scan_all(&s, Tree::State).unwrap();
        assert_eq!(all.len(), 20_000);
        assert_eq!(all[0].0, b"new00000".to_vec());
        let names: Vec<_> = s.db.tree_names().into_iter().filter(|n| n.starts_with(b"state")).collect();
        assert_eq!(names.len(), 1, "old and unfinished trees are dropped");
    }

    #[test]
    fn prefix_end_skips_max_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn sled_store_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 16 << 20).unwrap();
            conformance(&s);
        }
        let s = SledStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(s.get(Tree::State, b"n").unwrap(), Some(b"1".to_vec()));
    }
}
