//! The on-disk engine: redb, with State-tree writes gathered in memory and
//! handed to it several batches at a time.
//!
//! Why a buffer: the state machine's writes need no durability of their own
//! (the Raft log is the durable record and a restarted node applies again
//! from the applied id that reached the disk), only atomicity and order. One
//! redb transaction per Raft entry would copy the touched B-tree pages once
//! per entry; the buffered batches go to redb in order, merged into one
//! transaction, so the state on disk is still a prefix of the batches applied
//! here. Those transactions are not fsynced (`Durability::None`); one every
//! few seconds, and `flush`, are. Reads merge the buffer over redb.
//!
//! Why redb: its cache is bounded (`--cache-mib`) whatever the namespace's
//! size, a read transaction is a consistent view that writers do not wait for
//! (a snapshot is built from one while the state machine applies), and a
//! table can be renamed inside a transaction (a snapshot install fills a
//! fresh table and swaps it in atomically). sled, the engine before, kept
//! about 2.4 GB resident to load a million pairs with a 256 MiB cache.

use super::{prefix_end, Checkpoint, Pair, Store, StoreError, Tree, Write};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
/// A key or value read from a table.
type Guard<'a> = redb::AccessGuard<'a, &'static [u8]>;

const LOG: Table = TableDefinition::new("log");
const RAFT: Table = TableDefinition::new("raft");
const STATE: Table = TableDefinition::new("state");
const SNAPSHOT: Table = TableDefinition::new("snapshot");
/// A snapshot being installed, renamed to `state` once complete.
const INCOMING: Table = TableDefinition::new("state.incoming");

fn table(t: Tree) -> Table {
    match t {
        Tree::Log => LOG,
        Tree::Raft => RAFT,
        Tree::State => STATE,
        Tree::Snapshot => SNAPSHOT,
    }
}

/// Distinct keys buffered before they go to redb.
const PENDING_KEYS: usize = 4096;
/// Bytes buffered before they go to redb.
const PENDING_BYTES: usize = 8 << 20;
/// Oldest buffered write before the next apply hands the buffer over:
/// bounds the work a restart re-applies from the log.
const PENDING_AGE: Duration = Duration::from_millis(50);
/// Longest time between durable commits: a non-durable commit's freed pages
/// are reused only after a durable one, and a restart re-applies the log
/// from the last durable state.
const DURABLE_EVERY: Duration = Duration::from_secs(5);
/// Pairs per transaction while a snapshot is installed.
const INSTALL_BATCH: usize = 16_384;
/// Pairs a checkpoint reads per page.
const CHECKPOINT_PAGE: usize = 4096;

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// redb under a write buffer; see the module documentation.
pub struct DiskStore {
    db: Database,
    /// State writes not yet handed to redb; None is a delete. Readers hold
    /// the read lock across their redb read, so a key never vanishes between
    /// the buffer and redb while a drain runs.
    pending: RwLock<Pending>,
    /// When the last durable commit was made.
    durable_at: Mutex<Instant>,
}

#[derive(Default)]
struct Pending {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    since: Option<Instant>,
}

impl DiskStore {
    /// Opens (or creates) the database file `path` with a cache of
    /// `cache_bytes`. A sled database at `legacy` (what nodes kept before)
    /// is copied in first, once, and then renamed aside.
    pub fn open(path: &Path, cache_bytes: u64, legacy: Option<&Path>) -> Result<DiskStore, StoreError> {
        let legacy = legacy.filter(|l| l.is_dir());
        if let Some(old) = legacy {
            if !path.exists() {
                import_sled(old, path, cache_bytes)?;
            }
            let aside = set_aside_name(old);
            std::fs::rename(old, &aside).map_err(|e| engine(format!("renaming {}: {e}", old.display())))?;
            tracing::info!(
                "the namespace moved from sled ({}) to redb ({}); {} can be deleted",
                old.display(),
                path.display(),
                aside.display()
            );
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes.try_into().unwrap_or(usize::MAX))
            .create(path)
            .map_err(engine)?;
        let store = DiskStore {
            db,
            pending: RwLock::default(),
            durable_at: Mutex::new(Instant::now()),
        };
        // Every table exists from the start (reads need not tell "no table"
        // from "no key"); an install cut short by a crash is dropped.
        store.write(Durability::Immediate, |txn| {
            for t in Tree::ALL {
                txn.open_table(table(t)).map_err(engine)?;
            }
            txn.delete_table(INCOMING).map_err(engine)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn read_pending(&self) -> RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_pending(&self) -> RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one write transaction and commits it with `durability`.
    fn write<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        let durable = matches!(durability, Durability::Immediate);
        txn.set_durability(durability).map_err(engine)?;
        // A crash then recovers without walking the whole file.
        txn.set_quick_repair(durable);
        let out = f(&txn)?;
        txn.commit().map_err(engine)?;
        if durable {
            *self.durable_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
        Ok(out)
    }

    /// Durable if the last durable commit is older than [`DURABLE_EVERY`].
    fn due_durability(&self) -> Durability {
        let last = *self.durable_at.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= DURABLE_EVERY {
            Durability::Immediate
        } else {
            Durability::None
        }
    }

    /// Hands the buffered State writes to redb as one transaction.
    fn drain(&self, pending: &mut Pending, durability: Durability) -> Result<(), StoreError> {
        if pending.writes.is_empty() {
            if matches!(durability, Durability::Immediate) {
                self.write(durability, |_| Ok(()))?;
            }
            return Ok(());
        }
        let writes = std::mem::take(&mut pending.writes);
        pending.bytes = 0;
        pending.since = None;
        self.write(durability, |txn| write_all(txn, STATE, &writes))
    }

    /// Up to `limit` pairs of `tree` from redb in `[from, to)`, in order, or
    /// in reverse.
    fn stored(
        &self,
        tree: Tree,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
        rev: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let t = txn.open_table(table(tree)).map_err(engine)?;
        let range = t.range::<&[u8]>((from, to)).map_err(engine)?;
        let owned = |r: Result<(Guard<'_>, Guard<'_>), redb::StorageError>| {
            r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(engine)
        };
        if rev {
            range.rev().take(limit).map(owned).collect()
        } else {
            range.take(limit).map(owned).collect()
        }
    }
}

/// Puts (or, for None, deletes) every pair of `writes` into table `t`.
fn write_all<'a>(
    txn: &redb::WriteTransaction,
    t: Table,
    writes: impl IntoIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(t).map_err(engine)?;
    for (k, v) in writes {
        match v {
            Some(v) => t.insert(k.as_slice(), v.as_slice()).map(|_| ()),
            None => t.remove(k.as_slice()).map(|_| ()),
        }
        .map_err(engine)?;
    }
    Ok(())
}

/// `db` → `db.sled-before-redb` (numbered if taken).
fn set_aside_name(old: &Path) -> PathBuf {
    let mut n = 0;
    loop {
        let suffix = if n == 0 { String::new() } else { format!(".{n}") };
        let candidate = PathBuf::from(format!("{}.sled-before-redb{suffix}", old.display()));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Copies every tree of the sled database at `old` into a new redb file at
/// `path`, atomically: into a temporary file renamed when complete.
fn import_sled(old: &Path, path: &Path, cache_bytes: u64) -> Result<(), StoreError> {
    let tmp = PathBuf::from(format!("{}.importing", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let sled = sled::Config::new()
        .path(old)
        .open()
        .map_err(|e| engine(format!("opening the old sled database {}: {e}", old.display())))?;
    let db = Database::builder()
        .set_cache_size(cache_bytes.try_into().unwrap_or(usize::MAX))
        .create(&tmp)
        .map_err(engine)?;
    let mut pairs = 0u64;
    for t in Tree::ALL {
        let tree = sled.open_tree(t.name()).map_err(engine)?;
        let mut iter = tree.iter().peekable();
        while iter.peek().is_some() {
            let txn = db.begin_write().map_err(engine)?;
            {
                let mut out = txn.open_table(table(t)).map_err(engine)?;
                for r in iter.by_ref().take(INSTALL_BATCH) {
                    let (k, v) = r.map_err(engine)?;
                    out.insert(k.as_ref(), v.as_ref()).map_err(engine)?;
                    pairs += 1;
                }
            }
            txn.commit().map_err(engine)?;
        }
    }
    drop(db);
    std::fs::rename(&tmp, path).map_err(|e| engine(format!("renaming {}: {e}", tmp.display())))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| engine(format!("syncing {}: {e}", dir.display())))?;
    }
    tracing::info!(pairs, "copied the namespace from sled into redb");
    Ok(())
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

/// Pages through the State table of one read transaction: a consistent view
/// that writers do not wait for.
struct Pages {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    after: Option<Vec<u8>>,
    page: VecDeque<Pair>,
    done: bool,
}

impl Pages {
    fn fill(&mut self) -> Result<(), StoreError> {
        let from = match &self.after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let range = self.table.range::<&[u8]>((from, Bound::Unbounded)).map_err(engine)?;
        for r in range.take(CHECKPOINT_PAGE) {
            let (k, v) = r.map_err(engine)?;
            self.page.push_back((k.value().to_vec(), v.value().to_vec()));
        }
        self.done = self.page.len() < CHECKPOINT_PAGE;
        self.after = self.page.back().map(|(k, _)| k.clone());
        Ok(())
    }
}

impl Iterator for Pages {
    type Item = Result<Pair, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

impl Store for DiskStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let pending = (tree == Tree::State).then(|| self.read_pending());
        if let Some(v) = pending.as_ref().and_then(|p| p.writes.get(key)) {
            return Ok(v.clone());
        }
        let txn = self.db.begin_read().map_err(engine)?;
        let t = txn.open_table(table(tree)).map_err(engine)?;
        Ok(t.get(key).map_err(engine)?.map(|v| v.value().to_vec()))
    }

    fn apply(&self, tree: Tree, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut pending = self.write_pending();
        if tree == Tree::State {
            for (k, v) in writes {
                pending.bytes += k.len() + v.as_ref().map_or(0, Vec::len);
                pending.writes.insert(k, v);
            }
            let since = *pending.since.get_or_insert_with(Instant::now);
            if pending.writes.len() >= PENDING_KEYS || pending.bytes >= PENDING_BYTES || since.elapsed() >= PENDING_AGE
            {
                let durability = self.due_durability();
                self.drain(&mut pending, durability)?;
            }
            return Ok(());
        }
        // Buffered State writes go first: redb sees every write in the order
        // it was made.
        self.drain(&mut pending, Durability::None)?;
        self.write(Durability::Immediate, |txn| {
            write_all(txn, table(tree), writes.iter().map(|(k, v)| (k, v)))
        })
    }

    fn scan(&self, tree: Tree, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        let from = if start > prefix { start } else { prefix };
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let pending = (tree == Tree::State).then(|| self.read_pending());
        // Enough stored pairs to fill `limit` even if every buffered key in
        // range hides one (a delete or an overwrite).
        let buffered: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = match &pending {
            Some(p) => pending_range(p, prefix, from).collect(),
            None => Vec::new(),
        };
        let stored = self.stored(
            tree,
            Bound::Included(from),
            to,
            limit.saturating_add(buffered.len()),
            false,
        )?;
        let mut stored = stored.into_iter().peekable();
        let mut buffered = buffered.into_iter().peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let take_buffered = match (buffered.peek(), stored.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((b, _)), Some((s, _))) => b.as_slice() <= s.as_slice(),
            };
            if take_buffered {
                let Some((k, v)) = buffered.next() else { break };
                if stored.peek().is_some_and(|(s, _)| s == k) {
                    stored.next();
                }
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
                }
            } else if let Some(pair) = stored.next() {
                out.push(pair);
            }
        }
        Ok(out)
    }

    fn last(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Pair>, StoreError> {
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let pending = (tree == Tree::State).then(|| self.read_pending());
        let buffered: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = match &pending {
            Some(p) => pending_range(p, prefix, prefix).rev().collect(),
            None => Vec::new(),
        };
        let stored = self.stored(tree, Bound::Included(prefix), to, buffered.len() + 1, true)?;
        let mut stored = stored.into_iter().peekable();
        let mut buffered = buffered.into_iter().peekable();
        loop {
            let take_buffered = match (buffered.peek(), stored.peek()) {
                (None, None) => return Ok(None),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((b, _)), Some((s, _))) => b.as_slice() >= s.as_slice(),
            };
            if take_buffered {
                let Some((k, v)) = buffered.next() else { return Ok(None) };
                if stored.peek().is_some_and(|(s, _)| s == k) {
                    stored.next();
                }
                // A buffered delete hides the stored value.
                if let Some(v) = v {
                    return Ok(Some((k.clone(), v.clone())));
                }
            } else {
                return Ok(stored.next());
            }
        }
    }

    fn replace_state(&self, pairs: &mut dyn Iterator<Item = Result<Pair, StoreError>>) -> Result<(), StoreError> {
        // Filled in bounded transactions without any lock: only the state
        // machine's task writes, and it is the one installing; readers go on
        // reading the old state.
        self.write(Durability::None, |txn| {
            txn.delete_table(INCOMING).map(|_| ()).map_err(engine)
        })?;
        let mut pairs = pairs.peekable();
        let filled = (|| {
            while pairs.peek().is_some() {
                self.write(Durability::None, |txn| {
                    let mut t = txn.open_table(INCOMING).map_err(engine)?;
                    for pair in pairs.by_ref().take(INSTALL_BATCH) {
                        let (k, v) = pair?;
                        t.insert(k.as_slice(), v.as_slice()).map_err(engine)?;
                    }
                    Ok(())
                })?;
            }
            Ok::<_, StoreError>(())
        })();
        if let Err(e) = filled {
            // Best effort: the next start drops it anyway.
            let _ = self.write(Durability::None, |txn| {
                txn.delete_table(INCOMING).map(|_| ()).map_err(engine)
            });
            return Err(e);
        }
        // The switch is one durable transaction; the replacement supersedes
        // whatever was buffered.
        let mut pending = self.write_pending();
        self.write(Durability::Immediate, |txn| {
            txn.delete_table(STATE).map_err(engine)?;
            txn.rename_table(INCOMING, STATE).map_err(engine)
        })?;
        *pending = Pending::default();
        Ok(())
    }

    fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let txn = {
            let mut pending = self.write_pending();
            self.drain(&mut pending, Durability::Immediate)?;
            // Begun before the lock is released: no drain slips in between.
            self.db.begin_read().map_err(engine)?
        };
        let table = txn.open_table(STATE).map_err(engine)?;
        Ok(Checkpoint::new(Box::new(Pages {
            table,
            after: None,
            page: VecDeque::new(),
            done: false,
        })))
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut pending = self.write_pending();
        self.drain(&mut pending, Durability::Immediate)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::conformance;
    use super::super::{scan_all, Pair};
    use super::*;

    fn open(dir: &Path) -> DiskStore {
        DiskStore::open(&dir.join("ns.redb"), 16 << 20, None).unwrap()
    }

    #[test]
    fn disk_store_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            conformance(&s);
        }
        let s = open(dir.path());
        assert_eq!(s.get(Tree::State, b"n").unwrap(), Some(b"1".to_vec()));
    }

    /// Reads see buffered writes over what redb holds: puts, overwrites and
    /// deletes, in scans from any start, in `last`, and after a flush.
    #[test]
    fn disk_store_merges_its_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
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
        assert_eq!(pairs(s.scan(Tree::State, b"a", b"", 2).unwrap()), ["a1=s", "a2=m"]);
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
        let s = open(dir.path());
        assert_eq!(
            pairs(s.scan(Tree::State, b"", b"", 10).unwrap()),
            ["a1=s", "a2=m", "b=s"]
        );
    }

    /// A checkpoint reads the state as it was when taken, over many pages,
    /// while writes go on and are read back.
    #[test]
    fn a_checkpoint_is_a_consistent_view() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let put = |i: usize| (format!("k{i:06}").into_bytes(), Some(vec![1u8; 8]));
        s.apply(Tree::State, (0..10_000).map(put).collect()).unwrap();
        let checkpoint = s.checkpoint().unwrap();
        for chunk in (10_000..30_000).collect::<Vec<_>>().chunks(1000) {
            s.apply(Tree::State, chunk.iter().copied().map(put).collect()).unwrap();
        }
        s.apply(Tree::State, vec![(b"k000005".to_vec(), None)]).unwrap();
        s.flush().unwrap();
        let seen: Vec<Pair> = checkpoint.collect::<Result<_, _>>().unwrap();
        assert_eq!(seen.len(), 10_000);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(scan_all(&s, Tree::State).unwrap().len(), 29_999);
    }

    /// An install that fails midway leaves the old state, after a restart
    /// too; one that finishes survives a restart.
    #[test]
    fn an_install_switches_atomically() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.apply(Tree::State, vec![(b"old".to_vec(), Some(b"1".to_vec()))])
                .unwrap();
            let mut failing = (0..40_000)
                .map(|i| Ok((format!("new{i}").into_bytes(), b"2".to_vec())))
                .chain(std::iter::once(Err(StoreError::Failed("cut short"))));
            assert!(s.replace_state(&mut failing).is_err());
            assert_eq!(
                scan_all(&s, Tree::State).unwrap(),
                vec![(b"old".to_vec(), b"1".to_vec())]
            );
            s.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(
            scan_all(&s, Tree::State).unwrap(),
            vec![(b"old".to_vec(), b"1".to_vec())]
        );
        s.apply(Tree::State, vec![(b"buffered".to_vec(), Some(b"3".to_vec()))])
            .unwrap();
        let mut good = (0..40_000).map(|i| Ok((format!("new{i:05}").into_bytes(), b"2".to_vec())));
        s.replace_state(&mut good).unwrap();
        assert_eq!(
            s.get(Tree::State, b"buffered").unwrap(),
            None,
            "the buffer is superseded"
        );
        drop(s);
        let s = open(dir.path());
        let all = scan_all(&s, Tree::State).unwrap();
        assert_eq!(all.len(), 40_000);
        assert_eq!(all[0].0, b"new00000".to_vec());
    }

    /// A node from before keeps its namespace: the sled database is copied in
    /// once and set aside.
    #[test]
    fn a_sled_database_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("db");
        {
            let sled = sled::open(&old).unwrap();
            sled.open_tree("state").unwrap().insert(b"i1", b"root").unwrap();
            sled.open_tree("raft").unwrap().insert(b"vote", b"v").unwrap();
            sled.flush().unwrap();
        }
        let path = dir.path().join("ns.redb");
        let s = DiskStore::open(&path, 16 << 20, Some(&old)).unwrap();
        assert_eq!(s.get(Tree::State, b"i1").unwrap(), Some(b"root".to_vec()));
        assert_eq!(s.get(Tree::Raft, b"vote").unwrap(), Some(b"v".to_vec()));
        assert!(!old.exists());
        assert!(dir.path().join("db.sled-before-redb").is_dir());
        drop(s);
        let s = DiskStore::open(&path, 16 << 20, Some(&old)).unwrap();
        assert_eq!(s.get(Tree::State, b"i1").unwrap(), Some(b"root".to_vec()));
    }
}
