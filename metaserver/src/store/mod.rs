//! The small key-value interface everything durable in a meta server goes
//! through: the Raft log and vote, the namespace state, the last snapshot.
//!
//! redb is the engine ([`DiskStore`]); it replaced sled, whose memory grew
//! with the namespace whatever its cache was told (docs/metaserver.md). The
//! trait kept the state machine unchanged through that; [`tests::conformance`]
//! is the contract.

mod disk;

pub use disk::DiskStore;

use std::collections::BTreeMap;
use std::sync::Mutex;

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
    Failed(&'static str),
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
    /// Makes every write before it durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// A consistent view of the State tree, read pair by pair in key order.
/// Writes made while it is open stay out of it.
pub struct Checkpoint {
    pairs: Box<dyn Iterator<Item = Result<Pair, StoreError>> + Send>,
}

impl Checkpoint {
    /// A checkpoint that reads `pairs`.
    pub fn new(pairs: Box<dyn Iterator<Item = Result<Pair, StoreError>> + Send>) -> Checkpoint {
        Checkpoint { pairs }
    }
}

impl Iterator for Checkpoint {
    type Item = Result<Pair, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.pairs.next()
    }
}

/// Every pair of a tree.
pub fn scan_all(store: &dyn Store, tree: Tree) -> Result<Vec<Pair>, StoreError> {
    store.scan(tree, &[], &[], usize::MAX)
}

/// The first key after every key that starts with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
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
        Ok(Checkpoint::new(Box::new(pairs.into_iter().map(Ok))))
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
        s.apply(
            Tree::State,
            vec![kv("a2", "changed"), kv("c1", "new"), (b"a3".to_vec(), None)],
        )
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
            Err(StoreError::Failed("source failed")),
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

    #[test]
    fn prefix_end_skips_max_bytes() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
