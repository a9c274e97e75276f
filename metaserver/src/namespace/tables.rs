//! How the namespace is laid out in the State tree, and the transaction
//! overlay commands run in.
//!
//! | key                                 | value          |
//! |-------------------------------------|----------------|
//! | `i` ino                             | [`Inode`]      |
//! | `d` parent name                     | [`Dentry`]     |
//! | `c` parent cookie                   | [`IndexEntry`] (readdir) |
//! | `s`                                 | [`Super`]      |
//! | `b` block id                        | [`BlockInfo`]  |
//! | `v` server id                       | [`ServerRecord`] |
//! | `g` server id, block id             | () — a replica to delete |
//! | `f` ino                             | a small file's contents (slot 0 kept inline), in the clear (before encryption at rest) |
//! | `F` ino                             | [`SealedInline`]: a small file's contents, sealed |
//! | `e` block id                        | () — the block is sealed (encrypted by its writer) |
//! | `y`                                 | the [`Keyring`] |
//! | `l`, `k`, `K` ...                   | advisory locks and mount sessions ([`super::sessions`]) |
//! | `r` ...                             | Raft's applied log id and membership |
//!
//! Integers are big-endian so that keys sort numerically.

use super::{Dentry, FileKind, Inode, NsError, Reply, Super};
pub use crate::keys::Keyring;
use crate::store::{Pair, Store, StoreError, Tree, Write};
use nimbus_common::{BlockId, Errno, Ino, ServerId, Timestamp};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the cluster knows of a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub len: u64,
    pub crc: u32,
    /// Servers holding a copy.
    pub replicas: Vec<ServerId>,
    /// Slots referencing it.
    pub refs: u32,
    /// Copies wanted.
    pub replication: u8,
}

/// An operator's intent for a data server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerState {
    /// Takes new blocks.
    Active,
    /// Being emptied: takes nothing new; its blocks move elsewhere.
    Draining,
    /// Gone for good; its id is never reused.
    Removed,
}

/// A registered data server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub id: ServerId,
    pub addr: String,
    pub zone: String,
    pub state: ServerState,
}

/// Prefix of inode records.
pub const INODE: u8 = b'i';
const DENTRY: u8 = b'd';
const COOKIE: u8 = b'c';
const SUPER: &[u8] = b"s";
const BLOCK: u8 = b'b';
const REQUEST: u8 = b'q';
const REQUEST_BY_TIME: u8 = b'Q';
const INLINE: u8 = b'f';
const SEALED_INLINE: u8 = b'F';
const SEALED_BLOCK: u8 = b'e';
const KEYRING: &[u8] = b"y";

/// A small file's contents kept in the namespace, sealed by the leader
/// before the command that stores them (so the Raft log never holds them in
/// the clear). Truncation shortens `len` without re-sealing: apply runs on
/// every node and must not draw random nonces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedInline {
    /// Plaintext bytes that count (at most what was sealed).
    pub len: u64,
    pub sealed: Vec<u8>,
}

/// A small file's contents as the namespace keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inline {
    /// Written before encryption at rest.
    Clear(Vec<u8>),
    Sealed(SealedInline),
}

impl Inline {
    /// Plaintext length.
    pub fn len(&self) -> u64 {
        match self {
            Inline::Clear(d) => d.len() as u64,
            Inline::Sealed(s) => s.len,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These contents cut to `size` bytes.
    pub fn truncated(self, size: u64) -> Inline {
        match self {
            Inline::Clear(mut d) => {
                d.truncate(size.min(d.len() as u64) as usize);
                Inline::Clear(d)
            }
            Inline::Sealed(s) => Inline::Sealed(SealedInline {
                len: s.len.min(size),
                sealed: s.sealed,
            }),
        }
    }
}

fn request_key(id: &[u8; 16]) -> Vec<u8> {
    let mut k = vec![REQUEST];
    k.extend_from_slice(id);
    k
}

fn request_time_key(time: Timestamp, id: &[u8; 16]) -> Vec<u8> {
    let mut k = vec![REQUEST_BY_TIME];
    k.extend_from_slice(&(time.0.max(0) as u64).to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// Forgets the outcomes of requests applied before `cutoff`, oldest first,
/// at most [`FORGET_PER_BATCH`] per batch so that apply stays cheap. Usually
/// the oldest entry is still young, and one small read is all this costs.
pub fn forget_requests_before(txn: &mut Txn, cutoff: Timestamp) -> Result<(), StoreError> {
    // Nearly always the oldest outcome is young: one row says so.
    let oldest = txn
        .store()
        .scan(Tree::State, &[REQUEST_BY_TIME], &[REQUEST_BY_TIME], 1)?;
    let young = |k: &[u8]| {
        k.get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .is_some_and(|t| u64::from_be_bytes(t) as i64 >= cutoff.0)
    };
    if oldest.first().is_none_or(|(k, _)| young(k)) {
        return Ok(());
    }
    let mut start = vec![REQUEST_BY_TIME];
    let mut forgotten = 0;
    while forgotten < FORGET_PER_BATCH {
        let rows = txn.store().scan(Tree::State, &[REQUEST_BY_TIME], &start, 16)?;
        if rows.is_empty() {
            return Ok(());
        }
        for (k, _) in rows {
            let Some(t) = k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                continue;
            };
            if u64::from_be_bytes(t) as i64 >= cutoff.0 || forgotten >= FORGET_PER_BATCH {
                return Ok(());
            }
            if let Some(id) = k.get(9..25) {
                txn.put_raw([&[REQUEST][..], id].concat(), None);
            }
            start = [k.as_slice(), &[0]].concat();
            txn.put_raw(k, None);
            forgotten += 1;
        }
    }
    Ok(())
}

/// Most request outcomes one batch forgets.
const FORGET_PER_BATCH: usize = 256;
const SERVER: u8 = b'v';
const GARBAGE: u8 = b'g';

/// The key of a block record.
pub fn block_key(id: BlockId) -> Vec<u8> {
    let mut k = vec![BLOCK];
    k.extend_from_slice(&id.0);
    k
}

/// The prefix of every block record.
pub fn block_prefix() -> Vec<u8> {
    vec![BLOCK]
}

/// The key of a data server record.
pub fn server_key(id: ServerId) -> Vec<u8> {
    let mut k = vec![SERVER];
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// The prefix of every data server record.
pub fn server_prefix() -> Vec<u8> {
    vec![SERVER]
}

/// The prefix of the replicas to delete from `server`.
pub fn garbage_prefix(server: ServerId) -> Vec<u8> {
    let mut k = vec![GARBAGE];
    k.extend_from_slice(&server.0.to_be_bytes());
    k
}

/// The key recording that `server` must delete its copy of `block`.
pub fn garbage_key(server: ServerId, block: BlockId) -> Vec<u8> {
    let mut k = garbage_prefix(server);
    k.extend_from_slice(&block.0);
    k
}

/// Prefix of the keys Raft keeps in the State tree, outside the namespace.
pub const RAFT_PREFIX: u8 = b'r';

fn inline_key(ino: Ino) -> Vec<u8> {
    let mut k = vec![INLINE];
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

fn sealed_inline_key(ino: Ino) -> Vec<u8> {
    let mut k = vec![SEALED_INLINE];
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

fn sealed_block_key(id: BlockId) -> Vec<u8> {
    let mut k = vec![SEALED_BLOCK];
    k.extend_from_slice(&id.0);
    k
}

/// The prefix of every sealed-block marker.
pub fn sealed_block_prefix() -> Vec<u8> {
    vec![SEALED_BLOCK]
}

fn inode_key(ino: Ino) -> Vec<u8> {
    let mut k = vec![INODE];
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

/// The key prefix of every dentry in `parent`.
pub fn dentry_prefix(parent: Ino) -> Vec<u8> {
    let mut k = vec![DENTRY];
    k.extend_from_slice(&parent.0.to_be_bytes());
    k
}

fn dentry_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = dentry_prefix(parent);
    k.extend_from_slice(name);
    k
}

/// The key prefix of `parent`'s readdir index.
pub fn cookie_prefix(parent: Ino) -> Vec<u8> {
    let mut k = vec![COOKIE];
    k.extend_from_slice(&parent.0.to_be_bytes());
    k
}

/// The readdir index key of the entry with `cookie` in `parent`.
pub fn cookie_key(parent: Ino, cookie: u64) -> Vec<u8> {
    let mut k = cookie_prefix(parent);
    k.extend_from_slice(&cookie.to_be_bytes());
    k
}

/// The cookie encoded in a readdir index key.
pub fn cookie_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(9..17)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// A readdir index entry: everything a listing shows, so that a page is one
/// scan, consistent entry by entry even while other commands apply.
#[derive(Serialize, serde::Deserialize)]
pub struct IndexEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: FileKind,
}

/// Decodes a stored record; a failure means the store is corrupt.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

/// Encodes a record for the store.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// A read view or write transaction over the State tree.
///
/// Writes collect in two layers: `pending` holds the command being applied,
/// `staged` the commands of the batch already applied. A command that fails
/// discards `pending`, so an errno never leaves half an operation behind; the
/// whole batch reaches the store in one atomic write.
pub struct Txn<'a> {
    store: &'a dyn Store,
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    /// A transaction over `store`; used read-only it is a consistent view
    /// for as long as no one else writes.
    pub fn new(store: &'a dyn Store) -> Txn<'a> {
        Txn {
            store,
            staged: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// The raw value at `key`, as this transaction sees it.
    pub(crate) fn raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.staged.get(key) {
            return Ok(v.clone());
        }
        self.store.get(Tree::State, key)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.raw(key)?.map(|b| decode(key, &b)).transpose()
    }

    /// Every key under `prefix` with its value, as this transaction sees
    /// it (the store overlaid with the batch's writes so far).
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Pair>, StoreError> {
        let mut rows: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .scan(Tree::State, prefix, &[], usize::MAX)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for layer in [&self.staged, &self.pending] {
            for (k, v) in layer
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
            {
                rows.insert(k.clone(), v.clone());
            }
        }
        Ok(rows.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    /// Stages a raw write for the current command.
    pub fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.pending.insert(key, value);
    }

    /// Keeps the current command's writes.
    pub fn commit_command(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.staged.extend(pending);
    }

    /// Drops the current command's writes.
    pub fn abort_command(&mut self) {
        self.pending.clear();
    }

    /// Every staged write, for one atomic store batch.
    pub fn into_writes(mut self) -> Vec<Write> {
        self.commit_command();
        self.staged.into_iter().collect()
    }

    /// The inode, if it exists.
    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>, StoreError> {
        self.get(&inode_key(ino))
    }

    /// The inode, or ENOENT.
    pub fn existing(&self, ino: Ino) -> Result<Inode, NsError> {
        self.inode(ino)?.ok_or(NsError::Errno(nimbus_common::Errno::ENOENT))
    }

    /// Stores an inode.
    pub fn put_inode(&mut self, inode: &Inode) {
        self.put_raw(inode_key(inode.ino), Some(encode(inode)));
    }

    /// Removes an inode.
    pub fn remove_inode(&mut self, ino: Ino) {
        self.put_raw(inode_key(ino), None);
    }

    /// A small file's contents kept in the namespace (its slot 0), if any.
    pub fn inline_data(&self, ino: Ino) -> Result<Option<Inline>, StoreError> {
        if let Some(s) = self.get::<SealedInline>(&sealed_inline_key(ino))? {
            return Ok(Some(Inline::Sealed(s)));
        }
        Ok(self.raw(&inline_key(ino))?.map(Inline::Clear))
    }

    /// Stores (or, with None or nothing, drops) a file's inline contents.
    pub fn put_inline_data(&mut self, ino: Ino, data: Option<Inline>) {
        let (clear, sealed) = match data.filter(|d| !d.is_empty()) {
            None => (None, None),
            Some(Inline::Clear(d)) => (Some(d), None),
            Some(Inline::Sealed(s)) => (None, Some(encode(&s))),
        };
        self.put_raw(inline_key(ino), clear);
        self.put_raw(sealed_inline_key(ino), sealed);
    }

    /// Whether `block` was written sealed.
    pub fn block_sealed(&self, block: BlockId) -> Result<bool, StoreError> {
        Ok(self.raw(&sealed_block_key(block))?.is_some())
    }

    /// Marks `block` sealed, or forgets it.
    pub fn set_block_sealed(&mut self, block: BlockId, sealed: bool) {
        self.put_raw(sealed_block_key(block), sealed.then(Vec::new));
    }

    /// The key ring, once the cluster has one.
    pub fn keyring(&self) -> Result<Option<Keyring>, StoreError> {
        self.get(KEYRING)
    }

    /// Stores the key ring.
    pub fn put_keyring(&mut self, ring: &Keyring) {
        self.put_raw(KEYRING.to_vec(), Some(encode(ring)));
    }

    /// The entry `name` in `parent`, if any.
    pub fn dentry(&self, parent: Ino, name: &[u8]) -> Result<Option<Dentry>, StoreError> {
        self.get(&dentry_key(parent, name))
    }

    /// Adds or replaces the entry `name` in `parent`, with its readdir index.
    pub fn put_dentry(&mut self, parent: Ino, name: &[u8], d: &Dentry) {
        self.put_raw(dentry_key(parent, name), Some(encode(d)));
        let entry = IndexEntry {
            name: name.to_vec(),
            ino: d.ino,
            kind: d.kind,
        };
        self.put_raw(cookie_key(parent, d.cookie), Some(encode(&entry)));
    }

    /// Removes the entry `name` (whose dentry is `d`) from `parent`.
    pub fn remove_dentry(&mut self, parent: Ino, name: &[u8], d: &Dentry) {
        self.put_raw(dentry_key(parent, name), None);
        self.put_raw(cookie_key(parent, d.cookie), None);
    }

    /// A block record.
    pub fn block(&self, id: BlockId) -> Result<Option<BlockInfo>, StoreError> {
        self.get(&block_key(id))
    }

    /// Stores or, with None, removes a block record.
    pub fn put_block(&mut self, id: BlockId, info: Option<&BlockInfo>) {
        self.put_raw(block_key(id), info.map(encode));
    }

    /// A data server record.
    pub fn server(&self, id: ServerId) -> Result<Option<ServerRecord>, StoreError> {
        self.get(&server_key(id))
    }

    /// Stores a data server record.
    pub fn put_server(&mut self, r: &ServerRecord) {
        self.put_raw(server_key(r.id), Some(encode(r)));
    }

    /// Records that `server` must delete its copy of `block`, or, with
    /// `pending` false, that it has.
    pub fn set_garbage(&mut self, server: ServerId, block: BlockId, pending: bool) {
        self.put_raw(garbage_key(server, block), pending.then(Vec::new));
    }

    /// The recorded outcome of request `id`, if it was applied recently.
    pub fn request_outcome(&self, id: &[u8; 16]) -> Result<Option<Result<Reply, Errno>>, StoreError> {
        self.get(&request_key(id))
    }

    /// Records the outcome of request `id`, applied at `time`.
    pub fn remember_request(&mut self, id: &[u8; 16], time: Timestamp, outcome: &Result<Reply, Errno>) {
        self.put_raw(request_key(id), Some(encode(outcome)));
        self.put_raw(request_time_key(time, id), Some(Vec::new()));
    }

    /// The file-system-wide counters.
    pub fn superblock(&self) -> Result<Super, StoreError> {
        Ok(self.get(SUPER)?.unwrap_or_default())
    }

    /// Stores the counters.
    pub fn put_superblock(&mut self, s: &Super) {
        self.put_raw(SUPER.to_vec(), Some(encode(s)));
    }
}
