//! File data in and out of the store: the only module that moves file bytes
//! through the client library, so that a change of the data path (e.g.
//! client-side encryption of blocks) is adapted here alone.
//!
//! Client calls made: `call` with `GetLayout`, `write_file_block`,
//! `commit_file_as` (with `FileCommit`), `read_block` (= `locate` +
//! `read_located`).
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
const READ_AHEAD: usize = 2;

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

/// Blocks written and awaiting their commit, in slot order.
struct Pending {
    writes: VecDeque<(u64, JoinHandle<Result<WrittenBlock, ApiError>>)>,
    written: Vec<(u64, WrittenBlock)>,
}

impl Pending {
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

    fn abort(&mut self) {
        for (_, h) in self.writes.drain(..) {
            h.abort();
        }
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
    let c = FileCommit {
        slots: &slots,
        size,
        inline,
        attrs: None,
    };
    client
        .commit_file_as(token_caller(), ino, c)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::from_client(what, e))
}

/// Writes everything `body` yields into the new, empty file `ino` and
/// commits it; returns the size. On error, blocks already committed stay
/// in the file (the caller removes it: it is a temporary name).
pub async fn upload<S, E>(client: Arc<MetaClient>, ino: Ino, body: S, what: String) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut pending = Pending {
        writes: VecDeque::new(),
        written: Vec::new(),
    };
    let r = upload_into(&client, ino, body, &what, &mut pending).await;
    pending.abort();
    r
}

async fn upload_into<S, E>(
    client: &Arc<MetaClient>,
    ino: Ino,
    mut body: S,
    what: &str,
    pending: &mut Pending,
) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut slot = 0u64;
    let mut committed_slots = 0u64;
    let mut total = 0u64;
    loop {
        let chunk = match body.next().await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return Err(ApiError::Interrupted(e.to_string())),
            None => None,
        };
        let ended = chunk.is_none();
        let mut rest: &[u8] = chunk.as_deref().unwrap_or_default();
        total += rest.len() as u64;
        while !rest.is_empty() {
            if buf.capacity() == 0 {
                // Small uploads stay small; a big one gets whole slots.
                buf.reserve_exact(if rest.len() >= INLINE_MAX { SLOT as usize } else { rest.len() });
            }
            let take = rest.len().min(SLOT as usize - buf.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() as u64 == SLOT {
                let data = std::mem::take(&mut buf);
                spawn_write(client, ino, slot, data, what, pending);
                slot += 1;
            }
            // Keep the number of slots in memory bounded: wait for the
            // oldest write before reading on.
            while pending.writes.len() >= UPLOADS_IN_FLIGHT {
                pending.finish_oldest().await?;
            }
            if pending.written.len() >= COMMIT_EVERY {
                // Every slot below `slot` minus those in flight is written:
                // the commit makes the temporary file that long, and an
                // over-quota upload fails here, while it streams.
                let written = std::mem::take(&mut pending.written);
                let end = written.last().map(|(s, _)| s + 1).unwrap_or(0);
                commit(client, ino, &written, end * SLOT, None, what).await?;
                committed_slots = end;
            }
        }
        if ended {
            break;
        }
    }
    let small = slot == 0 && buf.len() <= INLINE_MAX;
    let inline = if small {
        Some(std::mem::take(&mut buf))
    } else {
        if !buf.is_empty() {
            spawn_write(client, ino, slot, std::mem::take(&mut buf), what, pending);
        }
        None
    };
    while !pending.writes.is_empty() {
        pending.finish_oldest().await?;
    }
    let written = std::mem::take(&mut pending.written);
    if total > 0 || committed_slots > 0 {
        commit(client, ino, &written, total, inline.filter(|d| !d.is_empty()), what).await?;
    }
    Ok(total)
}

/// Starts writing `data` as slot `slot` of `ino`.
fn spawn_write(client: &Arc<MetaClient>, ino: Ino, slot: u64, data: Vec<u8>, what: &str, pending: &mut Pending) {
    let client = client.clone();
    let what = what.to_owned();
    let handle = tokio::spawn(async move {
        // Durable on every replica before the commit names it: a finished
        // upload survives any one server's crash.
        client
            .write_file_block(ino, &data, true)
            .await
            .map_err(|e| ApiError::from_client(&what, e))
    });
    pending.writes.push_back((slot, handle));
}

/// One piece of a download: where it comes from.
enum Piece {
    /// Bytes the layout carries (a small file's inline slot 0).
    Inline(Bytes),
    /// `[from, to)` of a block whose committed length is `len`, padded with
    /// zeros up to `pad` bytes.
    Block {
        block: BlockId,
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
            out.push(Piece::Block {
                block,
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
        Piece::Block { block, from, to, pad } => {
            let mut out = Vec::with_capacity(2);
            if to > from {
                let data = client
                    .read_block(block, from, to - from)
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
