//! Read-ahead for an open file's committed blocks. A reader going through a
//! file sequentially gets whole blocks (a slot, 4 MiB), loaded once and
//! shared by concurrent reads, with the next two slots fetched in the
//! background while it reads the current one, and a third from its middle
//! on; a random reader gets
//! exactly the bytes it asked for. Every fetch costs a block location from
//! the meta leader and a transfer from a data server, so the kernel's
//! 128 KiB requests must not each pay for one.

use super::backend::Backend;
use super::convert::FsResult;
use nimbus_common::encryption::Key;
use nimbus_common::BlockId;
use nimbus_proto as pb;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Whole blocks kept per open file (up to 4 MiB each): the one being read,
/// the three prefetched, and one more for readers slightly out of step.
const CACHED_BLOCKS: usize = 5;
/// How far a read may start from where the last one ended and still count
/// as sequential: the kernel sends read-ahead requests concurrently, so they
/// arrive slightly out of order.
const SEQUENTIAL_SLACK: u64 = 2 << 20;

/// A block's bytes, loaded at most once.
type Loaded = Arc<OnceCell<Arc<Held>>>;

/// Bytes of whole blocks the read-ahead of all open files may hold at once:
/// past it, a sequential reader fetches only what it asks for, as a random
/// one does, and nothing ahead (at five blocks per file, 64 files read at
/// once would otherwise hold 1.3 GB). Soft by the blocks being fetched.
const READ_AHEAD_BUDGET: u64 = 256 << 20;

/// Bytes held against a limit.
struct ReadBudget {
    held: AtomicU64,
    limit: u64,
}

/// The mount's read-ahead budget.
static READ_AHEAD: ReadBudget = ReadBudget::new(READ_AHEAD_BUDGET);

impl ReadBudget {
    const fn new(limit: u64) -> ReadBudget {
        ReadBudget {
            held: AtomicU64::new(0),
            limit,
        }
    }

    /// Whether `len` more bytes fit.
    fn room_for(&self, len: u64) -> bool {
        self.held.load(Ordering::Relaxed).saturating_add(len) <= self.limit
    }

    /// `data`, counted until it is dropped.
    fn hold(&'static self, data: Vec<u8>) -> Held {
        self.held.fetch_add(data.len() as u64, Ordering::Relaxed);
        Held { data, budget: self }
    }
}

/// A whole block's bytes, counted against a budget while they exist.
struct Held {
    data: Vec<u8>,
    budget: &'static ReadBudget,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.data.len() as u64, Ordering::Relaxed);
    }
}

/// How long a block's location (replicas and read token, which the leader
/// signs for 10 minutes) is used before it is asked for again.
const LOCATION_TTL: Duration = Duration::from_secs(60);
/// Locations one open file keeps (a 4 GiB file has 1,024 blocks).
const CACHED_LOCATIONS: usize = 1024;

/// The read-ahead state of one open file.
#[derive(Default)]
pub struct BlockCache {
    blocks: Mutex<VecDeque<(BlockId, Loaded)>>,
    /// Where blocks are: a random reader would otherwise ask the leader
    /// before every read.
    locations: Mutex<HashMap<BlockId, (pb::Location, Instant)>>,
    /// End of the last read, to tell sequential from random access.
    last_end: AtomicU64,
}

impl BlockCache {
    /// Whether a read at `offset` continues the previous ones.
    pub fn sequential(&self, offset: u64) -> bool {
        let last = self.last_end.load(Ordering::Relaxed);
        last > 0 && offset.abs_diff(last) <= SEQUENTIAL_SLACK
    }

    /// Records where a read ended.
    pub fn read_to(&self, end: u64) {
        self.last_end.store(end, Ordering::Relaxed);
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, VecDeque<(BlockId, Loaded)>> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, block: BlockId) -> Option<Loaded> {
        self.blocks().iter().find(|(b, _)| *b == block).map(|(_, c)| c.clone())
    }

    /// The cell of `block`, new (evicting the oldest) if not cached.
    fn cell(&self, block: BlockId) -> Loaded {
        let mut blocks = self.blocks();
        if let Some((_, c)) = blocks.iter().find(|(b, _)| *b == block) {
            return c.clone();
        }
        if blocks.len() >= CACHED_BLOCKS {
            blocks.pop_front();
        }
        let cell = Loaded::default();
        blocks.push_back((block, cell.clone()));
        cell
    }

    /// Bytes `[from, to)` of `block`, whose first `len` bytes belong to the
    /// file; whole-block when `whole` or already cached. Bytes past what the
    /// block holds read as zeros.
    pub async fn read<C: Backend>(
        &self,
        client: &C,
        block: BlockId,
        key: Option<Key>,
        len: u64,
        (from, to): (u64, u64),
        whole: bool,
    ) -> FsResult<Vec<u8>> {
        let want = (to - from) as usize;
        let cell = match self.find(block) {
            Some(c) => Some(c),
            None if whole && READ_AHEAD.room_for(len) => Some(self.cell(block)),
            None => None,
        };
        let mut out = match cell {
            Some(cell) => {
                let held = load(client, &cell, block, key, len).await?;
                let data = &held.data;
                let a = (from as usize).min(data.len());
                let b = (to as usize).min(data.len());
                data[a..b].to_vec()
            }
            None => self.read_range(client, block, key, from, to - from).await?,
        };
        out.resize(want, 0);
        Ok(out)
    }

    /// `len` bytes of `block` at `from`, through its remembered location;
    /// a failure there asks the leader again (a replica moved or died).
    async fn read_range<C: Backend>(
        &self,
        client: &C,
        block: BlockId,
        key: Option<Key>,
        from: u64,
        len: u64,
    ) -> FsResult<Vec<u8>> {
        let known = {
            let locations = self.locations.lock().unwrap_or_else(|p| p.into_inner());
            locations
                .get(&block)
                .filter(|(_, at)| at.elapsed() < LOCATION_TTL)
                .map(|(l, _)| l.clone())
        };
        if let Some(loc) = known {
            match client.read_located(block, key.as_ref(), &loc, from, len).await {
                Ok(data) => return Ok(data),
                Err(e) => tracing::debug!("block {block} at its remembered location: {e}; locating again"),
            }
        }
        let loc = client.locate(block).await?;
        let data = client.read_located(block, key.as_ref(), &loc, from, len).await?;
        let mut locations = self.locations.lock().unwrap_or_else(|p| p.into_inner());
        if locations.len() >= CACHED_LOCATIONS {
            locations.retain(|_, (_, at)| at.elapsed() < LOCATION_TTL);
            if locations.len() >= CACHED_LOCATIONS {
                locations.clear();
            }
        }
        locations.insert(block, (loc, Instant::now()));
        Ok(data)
    }

    /// Starts loading `block` in the background unless it is cached.
    pub fn prefetch<C: Backend>(&self, client: &Arc<C>, block: BlockId, key: Option<Key>, len: u64) {
        if self.find(block).is_some() || !READ_AHEAD.room_for(len) {
            return;
        }
        let cell = self.cell(block);
        let client = client.clone();
        tokio::spawn(async move {
            // A failure leaves the cell empty: the reader fetches it again
            // and sees the error itself.
            if let Err(e) = load(client.as_ref(), &cell, block, key, len).await {
                tracing::debug!("prefetch of block {block} failed: {}", e.0);
            }
        });
    }
}

/// The bytes of `cell`, fetching the block once however many wait for it.
async fn load<C: Backend>(
    client: &C,
    cell: &Loaded,
    block: BlockId,
    key: Option<Key>,
    len: u64,
) -> FsResult<Arc<Held>> {
    let data = cell
        .get_or_try_init(|| async {
            let data = client.read_block(block, key.as_ref(), 0, len).await?;
            FsResult::Ok(Arc::new(READ_AHEAD.hold(data)))
        })
        .await?;
    Ok(data.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_count_against_the_budget_until_dropped() {
        static BUDGET: ReadBudget = ReadBudget::new(10);
        assert!(BUDGET.room_for(10));
        let a = BUDGET.hold(vec![0; 6]);
        assert!(BUDGET.room_for(4));
        assert!(!BUDGET.room_for(5));
        let b = BUDGET.hold(vec![0; 4]);
        assert!(!BUDGET.room_for(1));
        drop(a);
        assert!(BUDGET.room_for(6));
        drop(b);
        assert!(BUDGET.room_for(10));
    }
}
