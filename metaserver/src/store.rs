//! The small key-value interface everything durable in a meta server goes
//! through: the Raft log and vote, the namespace state, the last snapshot.
//!
//! sled is the engine today; STACK.md records why it sits behind a trait: its
//! crash-safety record is uneven, and redb or fjall must be able to replace it
//! without touching the state machine. [`tests::conformance`] is the contract.

use std::collections::BTreeMap;
use std::path::Path;
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

/// The sled engine.
pub struct SledStore {
    db: sled::Db,
    trees: BTreeMap<Tree, sled::Tree>,
}

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
        Ok(SledStore { db, trees })
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        // Every variant is inserted in `open`.
        &self.trees[&t]
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(tree).get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), StoreError> {
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
        let mut out = Vec::new();
        for item in self.tree(tree).range(from..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        let item = self.tree(tree).scan_prefix(prefix).next_back();
        match item {
            None => Ok(None),
            Some(r) => {
                let (k, v) = r.map_err(engine)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
        }
    }

    fn replace(&self, tree: Tree, pairs: Vec<Pair>) -> Result<(), StoreError> {
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
