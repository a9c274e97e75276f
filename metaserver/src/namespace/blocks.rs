//! File data in the namespace: which blocks make up a file, where their
//! replicas are, how many files reference each, and which replicas data
//! servers must delete.
//!
//! A file is a sequence of slots of [`SLOT_SIZE`] bytes; each slot points to
//! an immutable block. Committing a write swaps slot pointers and the size in
//! one command; a block no slot references any more is dropped and each of
//! its replicas queued for deletion on its server.

use super::caller::{Caller, W};
use super::perm;
use super::tables::{block_prefix, decode, garbage_prefix, sealed_block_prefix, server_prefix, Inline};
// The records live with the tables that store them; named here too, where
// the rest of the code looks for them.
pub use super::tables::{BlockInfo, ServerRecord, ServerState};
use super::*;
use crate::store::Tree;
use nimbus_common::{BlockId, ServerId};

/// Bytes per slot of a file, and the largest block.
pub const SLOT_SIZE: u64 = 4 << 20;
/// Replicas per block unless a directory says otherwise.
pub const DEFAULT_REPLICATION: u8 = 2;
/// Most replicas a directory may ask for.
pub const MAX_REPLICATION: u8 = 5;
/// Most slots one commit may write (256 MiB of data).
pub const MAX_SLOTS_PER_COMMIT: usize = 64;
/// Largest slot 0 a file may keep in the namespace instead of a block (see
/// docs/mount.md for why this size).
pub const INLINE_MAX: usize = 64 << 10;

/// A slot's block, as the file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRef {
    pub block: BlockId,
    pub len: u64,
    pub crc: u32,
}

/// A written block to commit into slot `slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotWrite {
    pub slot: u64,
    pub block: BlockId,
    pub len: u64,
    pub crc: u32,
    pub servers: Vec<ServerId>,
}

/// Drops one reference to `block`; the last one queues every replica for
/// deletion.
pub(super) fn release(txn: &mut Txn, block: BlockId) -> Result<(), NsError> {
    let Some(mut info) = txn.block(block)? else {
        return Ok(());
    };
    info.refs = info.refs.saturating_sub(1);
    if info.refs > 0 {
        txn.put_block(block, Some(&info));
        return Ok(());
    }
    txn.put_block(block, None);
    txn.set_block_sealed(block, false);
    for s in info.replicas {
        txn.set_garbage(s, block, true);
    }
    Ok(())
}

/// Releases every slot that lies wholly at or past `size`, and shortens the
/// slot `size` cuts through, so that a file truncated and grown again reads
/// zeros there, never the old bytes still in the block.
pub(super) fn release_beyond(txn: &mut Txn, inode: &mut Inode, size: u64) -> Result<(), NsError> {
    if size < INLINE_MAX as u64 && !inode.slots.contains_key(&0) {
        if let Some(data) = txn.inline_data(inode.ino)? {
            if data.len() > size {
                txn.put_inline_data(inode.ino, Some(data.truncated(size)));
            }
        }
    }
    let first_dropped = size.div_ceil(SLOT_SIZE);
    let dropped: Vec<u64> = inode.slots.range(first_dropped..).map(|(k, _)| *k).collect();
    for slot in dropped {
        if let Some(r) = inode.slots.remove(&slot) {
            release(txn, r.block)?;
        }
    }
    if !size.is_multiple_of(SLOT_SIZE) {
        if let Some(r) = inode.slots.get_mut(&(size / SLOT_SIZE)) {
            r.len = r.len.min(size % SLOT_SIZE);
        }
    }
    Ok(())
}

/// What one commit writes into a file.
pub(super) struct Written<'a> {
    pub ino: Ino,
    pub writes: &'a [SlotWrite],
    pub size: u64,
    /// Slot 0 kept in the namespace.
    pub inline: Option<Inline>,
    /// The blocks were sealed by their writer.
    pub sealed: bool,
    /// The file was created by the same command: its creator may write it,
    /// whatever mode it was created with (as open with O_CREAT allows).
    pub created: bool,
}

pub(super) fn commit_write(txn: &mut Txn, time: Timestamp, caller: &Caller, w: Written) -> Result<Reply, NsError> {
    let Written {
        ino,
        writes,
        size,
        inline,
        sealed,
        created,
    } = w;
    let mut inode = txn.existing(ino)?;
    match inode.kind {
        FileKind::Regular => {}
        FileKind::Directory => return Err(Errno::EISDIR.into()),
        _ => return Err(Errno::EINVAL.into()),
    }
    if !created {
        perm::access(txn, &inode, caller, W)?;
    }
    if writes.len() > MAX_SLOTS_PER_COMMIT || size > SIZE_MAX {
        return Err(Errno::EFBIG.into());
    }
    for w in writes {
        if w.len > SLOT_SIZE || w.servers.is_empty() || w.slot > SIZE_MAX / SLOT_SIZE {
            return Err(Errno::EINVAL.into());
        }
    }
    let wrote_inline = inline.is_some();
    if let Some(data) = inline {
        // Slot 0 is either a block or inline, never both.
        if data.len() > INLINE_MAX as u64 || data.len() > size || writes.iter().any(|w| w.slot == 0) {
            return Err(Errno::EINVAL.into());
        }
        if let Some(old) = inode.slots.remove(&0) {
            release(txn, old.block)?;
        }
        txn.put_inline_data(ino, Some(data));
    } else if writes.iter().any(|w| w.slot == 0) {
        txn.put_inline_data(ino, None);
    }
    // Every new reference is added before any old one is dropped: a block
    // that moves between slots in one commit never reaches zero references.
    let replication = inode.replication;
    let mut replaced = Vec::new();
    for w in writes {
        let info = match txn.block(w.block)? {
            // The same block committed twice (a retried commit) is one more reference.
            Some(mut info) => {
                info.refs += 1;
                info
            }
            None => {
                // Recorded anew (perhaps after an earlier release): deletions
                // still queued for its replicas must not destroy it.
                for s in &w.servers {
                    txn.set_garbage(*s, w.block, false);
                }
                BlockInfo {
                    len: w.len,
                    crc: w.crc,
                    replicas: w.servers.clone(),
                    refs: 1,
                    replication,
                }
            }
        };
        txn.put_block(w.block, Some(&info));
        if sealed {
            txn.set_block_sealed(w.block, true);
        }
        let new = SlotRef {
            block: w.block,
            len: w.len,
            crc: w.crc,
        };
        if let Some(old) = inode.slots.insert(w.slot, new) {
            replaced.push(old.block);
        }
    }
    for block in replaced {
        release(txn, block)?;
    }
    super::quota::resize(txn, &inode, inode.size, size)?;
    // Nothing past the committed size survives, whatever the writes said.
    release_beyond(txn, &mut inode, size)?;
    let mut sb = txn.superblock()?;
    sb.bytes = sb.bytes.saturating_sub(inode.size).saturating_add(size);
    txn.put_superblock(&sb);
    inode.size = size;
    inode.mtime = time;
    inode.ctime = time;
    // A write by anyone but the owner drops set-user-ID, and set-group-ID
    // of a group-executable file, as Linux does (FUSE_WRITE_KILL_SUIDGID):
    // a program must not keep its privileges after someone else changed it.
    let wrote = !writes.is_empty() || wrote_inline;
    if wrote && !caller.is_root() && !caller.owns(&inode) {
        inode.perm &= !S_ISUID;
        if inode.perm & 0o010 != 0 {
            inode.perm &= !S_ISGID;
        }
    }
    txn.put_inode(&inode);
    Ok(Reply::Attr(inode.attr()))
}

pub(super) fn set_replication(txn: &mut Txn, caller: &Caller, ino: Ino, replication: u8) -> Result<Reply, NsError> {
    let mut inode = txn.existing(ino)?;
    perm::owner_or_root(&inode, caller)?;
    if replication == 0 || replication > MAX_REPLICATION {
        return Err(Errno::EINVAL.into());
    }
    inode.replication = replication;
    txn.put_inode(&inode);
    Ok(Reply::Done)
}

pub(super) fn register_server(txn: &mut Txn, id: ServerId, addr: &str, zone: &str) -> Result<Reply, NsError> {
    let state = match txn.server(id)? {
        Some(r) if r.state == ServerState::Removed => return Err(Errno::EPERM.into()),
        Some(r) => r.state,
        None => ServerState::Active,
    };
    txn.put_server(&ServerRecord {
        id,
        addr: addr.to_owned(),
        zone: zone.to_owned(),
        state,
    });
    Ok(Reply::Done)
}

pub(super) fn set_server_state(txn: &mut Txn, id: ServerId, state: ServerState) -> Result<Reply, NsError> {
    let mut r = txn.server(id)?.ok_or(Errno::ENOENT)?;
    if r.state == ServerState::Removed {
        return Err(Errno::EPERM.into());
    }
    r.state = state;
    txn.put_server(&r);
    Ok(Reply::Done)
}

pub(super) fn add_replica(txn: &mut Txn, block: BlockId, server: ServerId) -> Result<Reply, NsError> {
    // A copy made again where an older one was queued for deletion stays.
    txn.set_garbage(server, block, false);
    match txn.block(block)? {
        Some(mut info) => {
            if !info.replicas.contains(&server) {
                info.replicas.push(server);
                txn.put_block(block, Some(&info));
            }
        }
        // The block was released while the copy was made: delete the copy.
        None => txn.set_garbage(server, block, true),
    }
    Ok(Reply::Done)
}

pub(super) fn remove_replica(txn: &mut Txn, block: BlockId, server: ServerId, delete: bool) -> Result<Reply, NsError> {
    if let Some(mut info) = txn.block(block)? {
        info.replicas.retain(|s| *s != server);
        txn.put_block(block, Some(&info));
    }
    if delete {
        txn.set_garbage(server, block, true);
    }
    Ok(Reply::Done)
}

pub(super) fn garbage_done(txn: &mut Txn, server: ServerId, blocks: &[BlockId]) -> Result<Reply, NsError> {
    for b in blocks {
        txn.set_garbage(server, *b, false);
    }
    Ok(Reply::Done)
}

/// A file's contents as a reader finds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileLayout {
    pub size: u64,
    pub slots: Vec<(u64, SlotRef)>,
    /// Slot 0 kept in the namespace, if it is.
    pub inline: Option<Inline>,
    /// Which of the slots' blocks are sealed (the others are in the clear).
    pub sealed: std::collections::BTreeSet<BlockId>,
}

/// A file's size, slots and inline contents.
pub fn layout(txn: &Txn, ino: Ino) -> Result<FileLayout, NsError> {
    let inode = txn.existing(ino)?;
    if inode.kind != FileKind::Regular {
        return Err(if inode.is_dir() { Errno::EISDIR } else { Errno::EINVAL }.into());
    }
    let inline = match inode.size > 0 && !inode.slots.contains_key(&0) {
        true => txn.inline_data(ino)?,
        false => None,
    };
    let mut sealed = std::collections::BTreeSet::new();
    for r in inode.slots.values() {
        if txn.block_sealed(r.block)? {
            sealed.insert(r.block);
        }
    }
    Ok(FileLayout {
        size: inode.size,
        slots: inode.slots.into_iter().collect(),
        inline,
        sealed,
    })
}

/// Every block record.
pub fn all_blocks(txn: &Txn) -> Result<Vec<(BlockId, BlockInfo)>, NsError> {
    let mut out = Vec::new();
    for (k, v) in txn.store().scan(Tree::State, &block_prefix(), &[], usize::MAX)? {
        let Some(id) = k.get(1..).and_then(BlockId::from_bytes) else {
            continue;
        };
        out.push((id, decode(&k, &v)?));
    }
    Ok(out)
}

/// How many blocks are sealed.
pub fn sealed_blocks(txn: &Txn) -> Result<u64, NsError> {
    Ok(txn
        .store()
        .scan(Tree::State, &sealed_block_prefix(), &[], usize::MAX)?
        .len() as u64)
}

/// Every data server record.
pub fn servers(txn: &Txn) -> Result<Vec<ServerRecord>, NsError> {
    let rows = txn.store().scan(Tree::State, &server_prefix(), &[], usize::MAX)?;
    rows.iter().map(|(k, v)| decode(k, v).map_err(NsError::from)).collect()
}

/// Up to `limit` blocks `server` must delete.
pub fn garbage(txn: &Txn, server: ServerId, limit: usize) -> Result<Vec<BlockId>, NsError> {
    let prefix = garbage_prefix(server);
    let rows = txn.store().scan(Tree::State, &prefix, &[], limit)?;
    Ok(rows
        .iter()
        .filter_map(|(k, _)| k.get(prefix.len()..).and_then(BlockId::from_bytes))
        .collect())
}

/// Whether `server` still has to delete its copy of `block`.
pub fn owes_deletion(txn: &Txn, server: ServerId, block: BlockId) -> Result<bool, NsError> {
    Ok(txn
        .store()
        .get(Tree::State, &super::tables::garbage_key(server, block))?
        .is_some())
}

/// How many replicas are queued for deletion, on every server.
pub fn garbage_count(txn: &Txn) -> Result<u64, NsError> {
    Ok(txn.store().scan(Tree::State, b"g", &[], usize::MAX)?.len() as u64)
}

/// Deletes an inode no name points to, releasing its blocks.
pub(super) fn free_inode(txn: &mut Txn, mut inode: Inode) -> Result<(), NsError> {
    for slot in std::mem::take(&mut inode.slots).into_values() {
        release(txn, slot.block)?;
    }
    if inode.kind == FileKind::Regular && inode.size > 0 {
        txn.put_inline_data(inode.ino, None);
    }
    txn.remove_inode(inode.ino);
    super::quota::charge(txn, inode.uid, -i128::from(super::quota::bytes_of(&inode)), -1)?;
    let mut sb = txn.superblock()?;
    sb.inodes = sb.inodes.saturating_sub(1);
    sb.bytes = sb
        .bytes
        .saturating_sub(if inode.kind == FileKind::Regular { inode.size } else { 0 });
    txn.put_superblock(&sb);
    Ok(())
}
