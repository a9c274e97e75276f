//! File data in and out of the store: the only module that moves file bytes
//! through the client library, so that a change of the data path (e.g.
//! client-side encryption of blocks) is adapted here alone.
//!
//! Client calls made: `call` with `GetLayout`, `write_file_block`,
//! `sync_blocks`, `commit_file_as` (with `FileCommit`), `read_block` (= `locate` +
//! `read_located`), and for the temporary name of an upload `create`,
//! `rename`, `unlink`.
//!
//! A file is a sequence of 4 MiB slots, one block each; a file of at most
//! 64 KiB is kept inline by the meta cluster instead. An upload streams the
//! body into slot-sized buffers, writes each as a block (a few in flight,
//! so the network and the data servers overlap) and commits them in
//! batches, so at most a few slots of any upload are ever in memory.

use crate::error::ApiError;
use bytes::Bytes;
use nimbus_client::blocks::{FileCommit, WrittenBlock};
use nimbus_client::MetaClient;
use nimbus_common::encryption::Key;
use nimbus_common::{BlockId, Ino};
use nimbus_proto as pb;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};

/// Bytes per slot (one block); the cluster tells its own in every layout.
pub const SLOT: u64 = 4 << 20;
/// Largest file kept inline by the meta cluster.
pub const INLINE_MAX: usize = 64 << 10;
/// Blocks of one upload being written at once.
const UPLOADS_IN_FLIGHT: usize = 3;
/// Written blocks committed together (the mount commits at most 16 too).
const COMMIT_EVERY: usize = 16;
/// Slots of one download read ahead of the one being sent.
const READ_AHEAD: usize = 4;

/// Names of uploads in progress start with this; listings hide them.
pub const UPLOAD_PREFIX: &str = ".nimbus-upload-";

/// renameat2's RENAME_NOREPLACE.
pub const RENAME_NOREPLACE: u32 = 1;

/// Read permission, as GetLayout's `access` asks for it.
const ACCESS_READ: u32 = 4;

/// The caller sent with commits: ignored by the cluster, which acts as the
/// token's user unless an administrator asks otherwise (we never do).
fn token_caller() -> pb::Caller {
    pb::Caller { uid: 0, gids: vec![] }
}

/// A file's layout, checking that the user may read it.
pub async fn layout(client: &MetaClient, ino: Ino, what: &str) -> Result<pb::Layout, ApiError> {
    match client
        .call(Op::GetLayout(pb::GetLayout {
            ino: ino.0,
            access: ACCESS_READ,
        }))
        .await
    {
        Ok(R::Layout(l)) if l.slot_size == SLOT => Ok(l),
        Ok(R::Layout(l)) => Err(ApiError::Unavailable(format!(
            "the cluster uses {}-byte slots, this gateway {SLOT}",
            l.slot_size
        ))),
        Ok(other) => Err(ApiError::Unavailable(format!("GetLayout answered {other:?}"))),
        // Not allowed to read it: as if absent (see from_lookup).
        Err(e) => Err(ApiError::from_lookup(what, e)),
    }
}

/// Commits `written` (slots in order, the file's first `size` bytes) into
/// `ino`, with `inline` as slot 0 of a small file.
async fn commit(
    client: &MetaClient,
    ino: Ino,
    written: &[(u64, WrittenBlock)],
    size: u64,
    inline: Option<Vec<u8>>,
    what: &str,
) -> Result<(), ApiError> {
    let slots: Vec<(u64, &WrittenBlock)> = written.iter().map(|(s, b)| (*s, b)).collect();
    // Durable on every replica before the commit names them (one Sync per
    // server for the batch, rather than an fsync per block): a finished
    // upload survives any one server's crash.
    let blocks: Vec<&WrittenBlock> = slots.iter().map(|(_, b)| *b).collect();
    if !blocks.is_empty() {
        client
            .sync_blocks(&blocks)
            .await
            .map_err(|e| ApiError::from_client(what, e))?;
    }
    let c = FileCommit {
        slots: &slots,
        size,
        inline,
        attrs: None,
        create: None,
    };
    client
        .commit_file_as(token_caller(), ino, c)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::from_client(what, e))
}

/// The data of one new, empty file, fed in pieces of any size: full slots
/// are written as blocks (a few at once, so the network and the data
/// servers overlap) and committed in batches; [`Upload::finish`] commits
/// the rest.
pub struct Upload {
    client: Arc<MetaClient>,
    ino: Ino,
    what: String,
    /// The slot being filled.
    buf: Vec<u8>,
    /// Its number.
    slot: u64,
    /// Slots below this are committed.
    committed_slots: u64,
    total: u64,
    /// Block writes under way, oldest first.
    writes: VecDeque<(u64, JoinHandle<Result<WrittenBlock, ApiError>>)>,
    /// Written blocks awaiting their commit, in slot order.
    written: Vec<(u64, WrittenBlock)>,
}

impl Upload {
    /// An upload into file `ino` (new and empty), named `what` in errors.
    pub fn new(client: Arc<MetaClient>, ino: Ino, what: String) -> Upload {
        Upload {
            client,
            ino,
            what,
            buf: Vec::new(),
            slot: 0,
            committed_slots: 0,
            total: 0,
            writes: VecDeque::new(),
            written: Vec::new(),
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Appends `data`; waits when too many slots are on their way.
    pub async fn push(&mut self, mut data: &[u8]) -> Result<(), ApiError> {
        self.total += data.len() as u64;
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                // Small uploads stay small; a big one gets whole slots.
                let want = if data.len() >= INLINE_MAX {
                    SLOT as usize
                } else {
                    data.len()
                };
                self.buf.reserve_exact(want);
            }
            let take = data.len().min(SLOT as usize - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() as u64 == SLOT {
                let full = std::mem::take(&mut self.buf);
                self.spawn_write(full);
                self.slot += 1;
            }
            // Keep the slots in memory bounded: wait for the oldest write
            // before taking more.
            while self.writes.len() >= UPLOADS_IN_FLIGHT {
                self.finish_oldest().await?;
            }
            if self.written.len() >= COMMIT_EVERY {
                // The written blocks are a run of whole slots: the commit
                // makes the file that long, and an over-quota upload fails
                // here, while it streams.
                let written = std::mem::take(&mut self.written);
                let end = written.last().map(|(s, _)| s + 1).unwrap_or(0);
                commit(&self.client, self.ino, &written, end * SLOT, None, &self.what).await?;
                self.committed_slots = end;
            }
        }
        Ok(())
    }

    /// Writes and commits what remains; returns the file's size.
    pub async fn finish(&mut self) -> Result<u64, ApiError> {
        let inline = if self.slot == 0 && self.buf.len() <= INLINE_MAX {
            Some(std::mem::take(&mut self.buf))
        } else {
            if !self.buf.is_empty() {
                let rest = std::mem::take(&mut self.buf);
                self.spawn_write(rest);
            }
            None
        };
        while !self.writes.is_empty() {
            self.finish_oldest().await?;
        }
        let written = std::mem::take(&mut self.written);
        if self.total > 0 || self.committed_slots > 0 {
            let inline = inline.filter(|d| !d.is_empty());
            commit(&self.client, self.ino, &written, self.total, inline, &self.what).await?;
        }
        Ok(self.total)
    }

    /// Waits for the oldest block write.
    async fn finish_oldest(&mut self) -> Result<(), ApiError> {
        if let Some((slot, handle)) = self.writes.pop_front() {
            let block = handle
                .await
                .map_err(|e| ApiError::Unavailable(format!("a block upload failed: {e}")))??;
            self.written.push((slot, block));
        }
        Ok(())
    }

    /// Starts writing `data` as the current slot.
    fn spawn_write(&mut self, data: Vec<u8>) {
        let (client, ino, what) = (self.client.clone(), self.ino, self.what.clone());
        let handle = tokio::spawn(async move {
            // Made durable in batches just before each commit.
            client
                .write_file_block(ino, &data, false)
                .await
                .map_err(|e| ApiError::from_client(&what, e))
        });
        self.writes.push_back((self.slot, handle));
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Blocks never committed are collected by the data servers.
        for (_, h) in self.writes.drain(..) {
            h.abort();
        }
    }
}

/// Writes everything `body` yields into the new, empty file `ino` and
/// commits it; returns the size. On error, blocks already committed stay
/// in the file (the caller removes it: it is a temporary name).
pub async fn upload<S, E>(client: Arc<MetaClient>, ino: Ino, mut body: S, what: String) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut up = Upload::new(client, ino, what);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::Interrupted(e.to_string()))?;
        up.push(&chunk).await?;
    }
    up.finish().await
}

/// An upload to `name` in folder `parent` made under a temporary name in
/// the same folder and renamed into place only once committed whole: an
/// upload that fails or is abandoned never shows under its name.
pub struct StagedUpload {
    client: Arc<MetaClient>,
    parent: Ino,
    temp: String,
    name: String,
    replace: bool,
    upload: Upload,
    /// Renamed into place, or removed: nothing left to clean up.
    settled: bool,
}

impl StagedUpload {
    /// Creates the temporary file. With `replace`, a file already named
    /// `name` is replaced at the end; else the rename fails if one appeared.
    pub async fn begin(
        client: Arc<MetaClient>,
        parent: Ino,
        name: &str,
        replace: bool,
        what: String,
    ) -> Result<StagedUpload, ApiError> {
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        let temp = format!(
            "{UPLOAD_PREFIX}{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let created = client
            .create(parent, temp.as_bytes(), 0o644)
            .await
            .map_err(|e| ApiError::from_client(&what, e))?;
        Ok(StagedUpload {
            upload: Upload::new(client.clone(), Ino(created.ino), what),
            client,
            parent,
            temp,
            name: name.to_owned(),
            replace,
            settled: false,
        })
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.upload.len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.upload.is_empty()
    }

    /// Appends `data`.
    pub async fn push(&mut self, data: &[u8]) -> Result<(), ApiError> {
        self.upload.push(data).await
    }

    /// Commits the rest and renames the file into place; on failure the
    /// temporary file is removed. Returns the size.
    pub async fn finish(&mut self) -> Result<u64, ApiError> {
        let r = async {
            let size = self.upload.finish().await?;
            let flags = if self.replace { 0 } else { RENAME_NOREPLACE };
            self.client
                .rename(
                    self.parent,
                    self.temp.as_bytes(),
                    self.parent,
                    self.name.as_bytes(),
                    flags,
                )
                .await
                .map_err(|e| ApiError::from_client(&self.upload.what, e))?;
            Ok(size)
        }
        .await;
        match r {
            Ok(size) => {
                self.settled = true;
                Ok(size)
            }
            Err(e) => {
                self.discard().await;
                Err(e)
            }
        }
    }

    /// Removes the temporary file (an upload given up).
    pub async fn discard(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        if let Err(e) = self.client.unlink(self.parent, self.temp.as_bytes()).await {
            tracing::warn!("could not remove the unfinished upload {}: {e}", self.temp);
        }
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped mid-way (the client went away): remove the temporary
        // file in the background.
        let (client, parent, temp) = (self.client.clone(), self.parent, std::mem::take(&mut self.temp));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = client.unlink(parent, temp.as_bytes()).await {
                    tracing::warn!("could not remove the unfinished upload {temp}: {e}");
                }
            });
        }
    }
}

/// The bytes `[start, end)` of a file with `layout`, in memory: for readers
/// that ask for pieces (WebDAV), one slot at a time.
pub async fn read_at(client: &MetaClient, layout: &pb::Layout, start: u64, end: u64) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity((end.saturating_sub(start)) as usize);
    for p in pieces(layout, start, end)? {
        for chunk in fetch(client, p).await.map_err(ApiError::Unavailable)? {
            out.extend_from_slice(&chunk);
        }
    }
    Ok(Bytes::from(out))
}

/// One piece of a download: where it comes from.
enum Piece {
    /// Bytes the layout carries (a small file's inline slot 0).
    Inline(Bytes),
    /// `[from, to)` of a block whose committed length is `len`, padded with
    /// zeros up to `pad` bytes.
    Block {
        block: BlockId,
        /// The block's key; `None` for a block stored in the clear.
        key: Option<Key>,
        from: u64,
        to: u64,
        pad: usize,
    },
    /// A hole: zeros.
    Zeros(usize),
}

/// The pieces covering `[start, end)` of a file with `layout`.
fn pieces(layout: &pb::Layout, start: u64, end: u64) -> Result<Vec<Piece>, ApiError> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let slot = pos / SLOT;
        let in_slot = pos % SLOT;
        let n = (SLOT - in_slot).min(end - pos);
        if slot == 0 && !layout.inline_data.is_empty() {
            let data = &layout.inline_data;
            let from = (in_slot as usize).min(data.len());
            let to = ((in_slot + n) as usize).min(data.len());
            out.push(Piece::Inline(Bytes::copy_from_slice(&data[from..to])));
            if to - from < n as usize {
                out.push(Piece::Zeros(n as usize - (to - from)));
            }
        } else if let Some(s) = layout.slots.iter().find(|s| s.slot == slot) {
            let block = BlockId::from_bytes(&s.block_id)
                .ok_or_else(|| ApiError::Unavailable(format!("slot {slot} has a malformed block id")))?;
            let len = s.length.min(SLOT);
            let from = in_slot.min(len);
            let to = (in_slot + n).min(len);
            // Empty: a block written before encryption at rest.
            let key = match s.key.len() {
                0 => None,
                _ => Some(
                    Key::from_bytes(&s.key)
                        .ok_or_else(|| ApiError::Unavailable(format!("slot {slot} has a malformed block key")))?,
                ),
            };
            out.push(Piece::Block {
                block,
                key,
                from,
                to,
                pad: (n - (to - from)) as usize,
            });
        } else {
            out.push(Piece::Zeros(n as usize));
        }
        pos += n;
    }
    Ok(out)
}

/// Streams `[start, end)` of a file with `layout`: a channel of chunks fed
/// by a task that reads a few slots ahead and stops when the receiver (the
/// HTTP response) goes away.
pub fn read_range(
    client: Arc<MetaClient>,
    layout: &pb::Layout,
    start: u64,
    end: u64,
) -> Result<mpsc::Receiver<Result<Bytes, std::io::Error>>, ApiError> {
    let pieces = pieces(layout, start, end)?;
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let mut ahead: VecDeque<JoinHandle<Result<Vec<Bytes>, String>>> = VecDeque::new();
        let mut pieces = pieces.into_iter();
        loop {
            while ahead.len() <= READ_AHEAD {
                let Some(p) = pieces.next() else { break };
                let client = client.clone();
                ahead.push_back(tokio::spawn(async move { fetch(&client, p).await }));
            }
            let Some(next) = ahead.pop_front() else { break };
            let chunks = match next.await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!("download failed: {e}");
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            };
            for c in chunks {
                if tx.send(Ok(c)).await.is_err() {
                    // The client went away.
                    for h in ahead.drain(..) {
                        h.abort();
                    }
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The bytes of one piece.
async fn fetch(client: &MetaClient, piece: Piece) -> Result<Vec<Bytes>, String> {
    match piece {
        Piece::Inline(b) => Ok(vec![b]),
        Piece::Zeros(n) => Ok(vec![Bytes::from(vec![0u8; n])]),
        Piece::Block {
            block,
            key,
            from,
            to,
            pad,
        } => {
            let mut out = Vec::with_capacity(2);
            if to > from {
                let data = client
                    .read_block(block, key.as_ref(), from, to - from)
                    .await
                    .map_err(|e| e.to_string())?;
                if data.len() as u64 != to - from {
                    return Err(format!(
                        "block {block} returned {} bytes where {} were expected",
                        data.len(),
                        to - from
                    ));
                }
                out.push(Bytes::from(data));
            }
            if pad > 0 {
                out.push(Bytes::from(vec![0u8; pad]));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: u64, slots: &[(u64, u64)], inline: &[u8]) -> pb::Layout {
        pb::Layout {
            size,
            slot_size: SLOT,
            slots: slots
                .iter()
                .map(|(slot, length)| pb::SlotBlock {
                    slot: *slot,
                    block_id: vec![7; 16],
                    length: *length,
                    crc32c: 0,
                    key: Vec::new(),
                })
                .collect(),
            inline_data: inline.to_vec(),
            attr: None,
        }
    }

    fn total(p: &[Piece]) -> u64 {
        p.iter()
            .map(|p| match p {
                Piece::Inline(b) => b.len() as u64,
                Piece::Zeros(n) => *n as u64,
                Piece::Block { from, to, pad, .. } => to - from + *pad as u64,
            })
            .sum()
    }

    #[test]
    fn pieces_cover_exactly_the_range() {
        let l = layout(2 * SLOT + 10, &[(0, SLOT), (2, 10)], b"");
        for (start, end) in [(0, 2 * SLOT + 10), (5, 6), (SLOT - 1, SLOT + 1), (SLOT, 2 * SLOT + 3)] {
            let p = pieces(&l, start, end).unwrap_or_default();
            assert_eq!(total(&p), end - start, "{start}..{end}");
        }
        // Slot 1 is a hole.
        let p = pieces(&l, SLOT, 2 * SLOT).unwrap_or_default();
        assert!(matches!(p.as_slice(), [Piece::Zeros(n)] if *n as u64 == SLOT));
    }

    #[test]
    fn inline_files_are_served_from_the_layout() {
        let l = layout(5, &[], b"hello");
        let p = pieces(&l, 1, 4).unwrap_or_default();
        assert!(matches!(p.as_slice(), [Piece::Inline(b)] if b.as_ref() == b"ell"));
    }
}
