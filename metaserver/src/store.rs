//! The small key-value interface everything durable in a meta server goes
//! through: the Raft log and vote, the namespace state, the last snapshot.
//!
//! sled is the engine today; STACK.md records why it sits behind a trait: its
//! crash-safety record is uneven, and redb or fjall must be able to replace it
//! without touching the state machine. [`tests::conformance`] is the contract.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
    /// The last built or installed snapshot.
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
    /// Replaces a whole tree atomically (snapshot install).
    fn replace(&self, tree: Tree, pairs: Vec<Pair>) -> Result<(), StoreError>;
    /// Makes every write before it durable. Nothing is acknowledged before.
    fn flush(&self) -> Result<(), StoreError>;
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
pub struct SledStore {
    db: sled::Db,
    trees: BTreeMap<Tree, sled::Tree>,
    /// State-tree writes not yet handed to sled; None is a delete. Readers
    /// hold the read lock across their sled read, so a key never vanishes
    /// between the buffer and sled while a drain runs.
    pending: RwLock<Pending>,
}

#[derive(Default)]
struct Pending {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    since: Option<Instant>,
}

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
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 << 20)
            .open()
            .map_err(engine)?;
        let mut trees = BTreeMap::new();
        for t in Tree::ALL {
            trees.insert(t, db.open_tree(t.name()).map_err(engine)?);
        }
        Ok(SledStore {
            db,
            trees,
            pending: RwLock::default(),
        })
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        // Every variant is inserted in `open`.
        &self.trees[&t]
    }

    fn read_pending(&self) -> RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pending(&self) -> RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the buffered State writes to sled as one atomic batch.
    fn drain(&self, pending: &mut Pending) -> Result<(), StoreError> {
        if pending.writes.is_empty() {
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
        self.tree(Tree::State).apply_batch(batch).map_err(engine)
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
        let pending = (tree == Tree::State).then(|| self.read_pending());
        if let Some(v) = pending.as_ref().and_then(|p| p.writes.get(key)) {
            return Ok(v.clone());
        }
        Ok(self.tree(tree).get(key).map_err(engine)?.map(|v| v.to_vec()))
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
        let pending = (tree == Tree::State).then(|| self.read_pending());
        let mut buffered = pending.as_ref().map(|p| pending_range(p, prefix, from).peekable());
        let mut stored = self.tree(tree).range(from..).peekable();
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
        let pending = (tree == Tree::State).then(|| self.read_pending());
        let mut buffered = pending
            .as_ref()
            .map(|p| pending_range(p, prefix, prefix).rev().peekable());
        let mut stored = self.tree(tree).scan_prefix(prefix).rev().peekable();
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

    fn replace(&self, tree: Tree, pairs: Vec<Pair>) -> Result<(), StoreError> {
        // The replacement supersedes whatever was buffered for the tree; the
        // lock is held so that no apply lands between the two.
        let mut pending = self.write_pending();
        if tree == Tree::State {
            *pending = Pending::default();
        } else {
            self.drain(&mut pending)?;
        }
        let t = self.tree(tree);
        let mut batch = sled::Batch::default();
        for k in t.iter().keys() {
            batch.remove(k.map_err(engine)?);
        }
        for (k, v) in pairs {
            batch.insert(k, v);
        }
        t.apply_batch(batch).map_err(engine)
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

    fn replace(&self, tree: Tree, pairs: Vec<Pair>) -> Result<(), StoreError> {
        self.with(tree, |t| *t = pairs.into_iter().collect());
        Ok(())
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

        s.replace(Tree::State, vec![(b"n".to_vec(), b"1".to_vec())]).unwrap();
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
        let s = SledStore::open(dir.path()).unwrap();
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
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            pairs(s.scan(Tree::State, b"", b"", 10).unwrap()),
            ["a1=s", "a2=m", "b=s"]
        );
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
            let s = SledStore::open(dir.path()).unwrap();
            conformance(&s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(Tree::State, b"n").unwrap(), Some(b"1".to_vec()));
    }
}
