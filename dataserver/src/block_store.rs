//! Blocks as files on one or more local data directories: written atomically,
//! checksummed per 64 KiB, verified on every read.
//!
//! Each data directory `<root>` holds `<root>/blocks/<h0h1>/<h2h3>/<id>.blk`
//! (two levels of 256 subdirectories from the first two bytes of the id, so no
//! directory grows large at millions of blocks) and `<root>/tmp/`, where
//! writes happen before a rename puts them in place: a crash leaves only temp
//! files, which [`BlockStore::open`] deletes, never half a block.
//!
//! A block file is (integers little-endian): magic `NMBK`, version `u16`,
//! flags `u16`, data length `u64`, chunk size `u32`, one crc32c `u32` per
//! chunk, then the data. With flag bit 1 (every block written now), each
//! stored crc is XORed with the crc32c of the block id, so that a block file
//! copied over another's (same size, consistent in itself) fails its checks
//! under the other id instead of being served as that block.

use nimbus_common::BlockId;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

const MAGIC: &[u8; 4] = b"NMBK";
const VERSION: u16 = 1;
/// Flag bit 0, reserved for "data sealed with an AEAD". Nothing writes it yet,
/// and a reader that cannot unseal must not hand out ciphertext as data.
const FLAG_SEALED: u16 = 1;
/// Flag bit 1: the chunk crcs are bound to the block id (see the module doc).
const FLAG_ID_BOUND: u16 = 2;

/// What the crcs of block `id` are XORed with when bound to it.
fn id_tag(id: BlockId) -> u32 {
    crc32c::crc32c(&id.0)
}
/// Bytes covered by one crc: small enough that a ranged read verifies little
/// more than it returns.
const CHUNK: u64 = 64 * 1024;
/// magic + version + flags + length + chunk size.
const HEADER_LEN: u64 = 4 + 2 + 2 + 8 + 4;
/// `verify` reads this much at a time, so a scrub does not allocate a whole block.
const VERIFY_WINDOW: u64 = 16 * CHUNK;

/// Why a block operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockStoreError {
    #[error("block {0} not found")]
    NotFound(BlockId),
    /// The file does not hold what was written; its bytes are never returned.
    #[error("block {block} is corrupt: {detail}")]
    Corrupt { block: BlockId, detail: String },
    /// A format version or flag this build does not read: not corruption, so
    /// a scrubber must not delete the block for it.
    #[error("block {block} has a format this build cannot read: {detail}")]
    Unsupported { block: BlockId, detail: String },
    #[error("no space for a block: {needed} bytes needed, {free} free")]
    NoSpace { needed: u64, free: u64 },
    #[error("block of {len} bytes is over the maximum of {max}")]
    TooLarge { len: u64, max: u64 },
    /// The id is taken by a block with other contents; blocks are immutable.
    #[error("block {0} already exists with different contents")]
    Exists(BlockId),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, BlockStoreError>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlockStoreError + '_ {
    move |source| {
        let path = path.to_path_buf();
        BlockStoreError::Io { path, source }
    }
}

fn corrupt(block: BlockId, detail: String) -> BlockStoreError {
    BlockStoreError::Corrupt { block, detail }
}

/// Like [`io_at`] for reads of a block, where a short file means a truncated,
/// so corrupt, block rather than an I/O failure.
fn read_err(path: &Path, block: BlockId) -> impl FnOnce(io::Error) -> BlockStoreError + '_ {
    move |e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(block, "file is truncated".into()),
        _ => io_at(path)(e),
    }
}

/// What [`BlockStore::usage`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of block data (headers and checksums not counted).
    pub used: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// `used` plus what still fits: the free space of the file systems, capped by the configured limit.
    pub capacity: u64,
}

/// One data directory.
struct DataDir {
    root: PathBuf,
    /// The file system it lives on: directories sharing one share its free space.
    dev: u64,
}

impl DataDir {
    fn block_path(&self, id: BlockId) -> PathBuf {
        self.root
            .join("blocks")
            .join(format!("{:02x}", id.0[0]))
            .join(format!("{:02x}", id.0[1]))
            .join(format!("{id}.blk"))
    }
}

/// Counters, all changed under one lock so that they always match the files.
#[derive(Default)]
struct State {
    used: u64,
    blocks: u64,
    /// Data bytes of puts between their space check and their rename.
    reserved: u64,
    /// Per data directory: data bytes stored, and file bytes reserved.
    dir_used: Vec<u64>,
    dir_reserved: Vec<u64>,
}

impl State {
    fn release(&mut self, dir: usize, len: u64) {
        self.reserved = self.reserved.saturating_sub(len);
        self.dir_reserved[dir] = self.dir_reserved[dir].saturating_sub(file_len(len));
    }
}

/// Removes its file when dropped, unless the file was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Best effort: whatever is left is cleared by the next open.
            let _ = fs::remove_file(p);
        }
    }
}

/// Immutable, checksummed blocks on local data directories. All methods are
/// blocking; callers run them in `spawn_blocking`. One store per directory at
/// a time: `open` deletes whatever is in tmp/.
pub struct BlockStore {
    dirs: Vec<DataDir>,
    capacity_limit: Option<u64>,
    max_block: u64,
    state: Mutex<State>,
    /// Makes temp names unique among concurrent puts, even of the same id.
    tmp_seq: AtomicU64,
}

/// Size of the file holding `len` bytes of data.
fn file_len(len: u64) -> u64 {
    HEADER_LEN + 4 * len.div_ceil(CHUNK) + len
}

/// The inverse of [`file_len`]. Usage counts come from file sizes, which need
/// no read of the file and do not change when a header is corrupted.
fn data_len_of_file(size: u64) -> u64 {
    let body = size.saturating_sub(HEADER_LEN);
    body.saturating_sub(4 * body.div_ceil(CHUNK + 4))
}

/// Parses lowercase hex, as `BlockId`'s Display writes it; None for anything
/// else (a name lookups would not produce).
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Makes the directory entries of a block file durable: the leaf subdirectory
/// holds the entry, its parents the subdirectories, which a put may have just
/// created (possibly a concurrent one that has not synced them yet).
fn sync_dirs(block_path: &Path) -> Result<()> {
    for dir in block_path.ancestors().skip(1).take(3) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
    }
    Ok(())
}

/// Calls `f` for every `<32 hex>.blk` file under `root/blocks` that sits in
/// the subdirectories its id names (elsewhere, lookups would not find it).
fn walk(root: &Path, mut f: impl FnMut(BlockId, &fs::DirEntry) -> Result<()>) -> Result<()> {
    let entries = |dir: &Path| -> Result<Vec<fs::DirEntry>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).map_err(io_at(dir))? {
            out.push(e.map_err(io_at(dir))?);
        }
        Ok(out)
    };
    // The byte a subdirectory stands for; None for anything else.
    let subdir = |e: &fs::DirEntry| {
        let [b] = e.file_name().to_str().and_then(parse_hex::<1>)?;
        e.file_type().ok()?.is_dir().then_some(b)
    };
    for l1 in entries(&root.join("blocks"))? {
        let Some(b0) = subdir(&l1) else { continue };
        for l2 in entries(&l1.path())? {
            let Some(b1) = subdir(&l2) else { continue };
            for e in entries(&l2.path())? {
                let name = e.file_name();
                let id = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".blk"))
                    .and_then(parse_hex::<16>);
                match id {
                    Some(id) if id[..2] == [b0, b1] && e.file_type().is_ok_and(|t| t.is_file()) => f(BlockId(id), &e)?,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// An open block file whose header has been checked.
struct Block {
    file: File,
    path: PathBuf,
    id: BlockId,
    len: u64,
    /// XORed into the computed crcs before comparing (0: not id-bound).
    tag: u32,
}

impl Block {
    /// Opens `path` and checks the header against the file's size.
    fn open(path: PathBuf, id: BlockId) -> Result<Block> {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlockStoreError::NotFound(id)),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let corrupt = |detail: String| corrupt(id, detail);
        let unsupported = |detail: String| BlockStoreError::Unsupported { block: id, detail };
        let size = file.metadata().map_err(io_at(&path))?.len();
        if size < HEADER_LEN {
            return Err(corrupt(format!("file of {size} bytes is shorter than the header")));
        }
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0).map_err(read_err(&path, id))?;
        if &h[0..4] != MAGIC {
            return Err(corrupt(format!("bad magic {:02x?}", &h[0..4])));
        }
        let version = u16::from_le_bytes([h[4], h[5]]);
        if version != VERSION {
            return Err(unsupported(format!(
                "format version {version}, this build reads {VERSION}"
            )));
        }
        let flags = u16::from_le_bytes([h[6], h[7]]);
        if flags & FLAG_SEALED != 0 {
            return Err(unsupported("sealed with an AEAD, which this build cannot open".into()));
        }
        if flags & !FLAG_ID_BOUND != 0 {
            return Err(unsupported(format!("unknown flags {flags:#06x}")));
        }
        let tag = if flags & FLAG_ID_BOUND != 0 { id_tag(id) } else { 0 };
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&h[8..16]);
        let len = u64::from_le_bytes(len8);
        let chunk = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        if u64::from(chunk) != CHUNK {
            return Err(corrupt(format!("chunk size {chunk}, version 1 uses {CHUNK}")));
        }
        // Catches truncation, and a corrupted length, before any data is read.
        let want = len.checked_add(HEADER_LEN + 4 * len.div_ceil(CHUNK));
        if want != Some(size) {
            return Err(corrupt(format!(
                "file is {size} bytes, a block of {len} bytes needs {want:?}"
            )));
        }
        Ok(Block {
            file,
            path,
            id,
            len,
            tag,
        })
    }

    /// Reads `[offset, offset + len)` (len 0 = to the end), clipped to the
    /// data, after checking the crc of every chunk it touches.
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let end = offset
            .saturating_add(if len == 0 { u64::MAX } else { len })
            .min(self.len);
        let first = offset / CHUNK;
        let last = (end - 1) / CHUNK;
        let mut crcs = vec![0u8; 4 * (last - first + 1) as usize];
        self.file
            .read_exact_at(&mut crcs, HEADER_LEN + 4 * first)
            .map_err(read_err(&self.path, self.id))?;
        let start = first * CHUNK;
        let stop = ((last + 1) * CHUNK).min(self.len);
        let mut buf = vec![0u8; (stop - start) as usize];
        let data_at = HEADER_LEN + 4 * self.len.div_ceil(CHUNK);
        self.file
            .read_exact_at(&mut buf, data_at + start)
            .map_err(read_err(&self.path, self.id))?;
        for (i, (chunk, crc)) in buf.chunks(CHUNK as usize).zip(crcs.chunks(4)).enumerate() {
            let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
            let got = crc32c::crc32c(chunk) ^ self.tag;
            if got != want {
                let chunk = first + i as u64;
                return Err(corrupt(
                    self.id,
                    format!("chunk {chunk} crc {got:08x}, stored {want:08x}"),
                ));
            }
        }
        buf.truncate((end - start) as usize);
        buf.drain(..(offset - start) as usize);
        Ok(buf)
    }
}

impl BlockStore {
    /// Opens (creating) the layout in every dir; counts existing blocks and
    /// bytes; clears tmp/. A directory listed twice is used once.
    pub fn open(dirs: &[PathBuf], capacity_limit: Option<u64>, max_block: u64) -> Result<BlockStore> {
        let (mut opened, mut canonicals) = (Vec::new(), Vec::new());
        for root in dirs {
            let tmp = root.join("tmp");
            for d in [root.join("blocks"), tmp.clone()] {
                fs::create_dir_all(&d).map_err(io_at(&d))?;
            }
            let canonical = fs::canonicalize(root).map_err(io_at(root))?;
            if canonicals.contains(&canonical) {
                continue;
            }
            canonicals.push(canonical);
            for e in fs::read_dir(&tmp).map_err(io_at(&tmp))? {
                let path = e.map_err(io_at(&tmp))?.path();
                if path.is_file() {
                    fs::remove_file(&path).map_err(io_at(&path))?;
                }
            }
            let dev = fs::metadata(root).map_err(io_at(root))?.dev();
            let root = root.clone();
            opened.push(DataDir { root, dev });
        }
        if opened.is_empty() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "no data directory given");
            return Err(io_at(Path::new(""))(e));
        }
        let dirs = opened;
        let mut st = State {
            dir_used: vec![0; dirs.len()],
            dir_reserved: vec![0; dirs.len()],
            ..State::default()
        };
        for (i, d) in dirs.iter().enumerate() {
            walk(&d.root, |_, e| {
                let size = match e.metadata() {
                    Ok(m) => m.len(),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(err) => return Err(io_at(&e.path())(err)),
                };
                let len = data_len_of_file(size);
                st.used += len;
                st.blocks += 1;
                st.dir_used[i] += len;
                Ok(())
            })?;
        }
        Ok(BlockStore {
            dirs,
            capacity_limit,
            max_block,
            state: Mutex::new(st),
            tmp_seq: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it, and the counters have no invariant a panic could break halfway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Free bytes of each data directory's file system, one statvfs per file system.
    fn fs_free(&self) -> Result<Vec<u64>> {
        let mut seen: Vec<(u64, u64)> = Vec::new();
        let mut out = Vec::with_capacity(self.dirs.len());
        for d in &self.dirs {
            let free = match seen.iter().find(|(dev, _)| *dev == d.dev) {
                Some(&(_, free)) => free,
                None => {
                    let s = rustix::fs::statvfs(&d.root).map_err(|e| io_at(&d.root)(e.into()))?;
                    let free = s.f_bavail.saturating_mul(s.f_frsize);
                    seen.push((d.dev, free));
                    free
                }
            };
            out.push(free);
        }
        Ok(out)
    }

    /// Checks the space for `len` bytes of data, picks the directory with the
    /// most free space (the least used on a tie) and reserves the space there,
    /// so that concurrent puts cannot together overshoot.
    fn reserve(&self, len: u64) -> Result<usize> {
        let free = self.fs_free()?;
        let mut st = self.state();
        if let Some(limit) = self.capacity_limit {
            let left = limit.saturating_sub(st.used + st.reserved);
            if len > left {
                let (needed, free) = (len, left);
                return Err(BlockStoreError::NoSpace { needed, free });
            }
        }
        let avail = |i: usize| {
            let pending: u64 = (0..self.dirs.len())
                .filter(|&j| self.dirs[j].dev == self.dirs[i].dev)
                .map(|j| st.dir_reserved[j])
                .sum();
            free[i].saturating_sub(pending)
        };
        let mut best = 0;
        for i in 1..self.dirs.len() {
            if (avail(i), std::cmp::Reverse(st.dir_used[i])) > (avail(best), std::cmp::Reverse(st.dir_used[best])) {
                best = i;
            }
        }
        let (needed, free) = (file_len(len), avail(best));
        if needed > free {
            return Err(BlockStoreError::NoSpace { needed, free });
        }
        st.reserved += len;
        st.dir_reserved[best] += needed;
        Ok(best)
    }

    /// Writes the whole block file into `dir`'s tmp/, synced when `durable`.
    fn write_temp(&self, dir: usize, id: BlockId, crcs: &[u32], data: &[u8], durable: bool) -> Result<TempFile> {
        let tmp_dir = self.dirs[dir].root.join("tmp");
        let (path, mut file) = loop {
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let path = tmp_dir.join(format!("{id}.{}.{seq}.tmp", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                // Another store in this process, or a leftover, holds the name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_at(&path)(e)),
            }
        };
        let guard = TempFile(Some(path.clone()));
        let mut head = Vec::with_capacity(HEADER_LEN as usize + 4 * crcs.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&FLAG_ID_BOUND.to_le_bytes());
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        head.extend_from_slice(&(CHUNK as u32).to_le_bytes());
        let tag = id_tag(id);
        for c in crcs {
            head.extend_from_slice(&(c ^ tag).to_le_bytes());
        }
        let written = file
            .write_all(&head)
            .and_then(|()| file.write_all(data))
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) });
        match written {
            Ok(()) => Ok(guard),
            Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                let (needed, free) = (file_len(data.len() as u64), self.fs_free().map_or(0, |f| f[dir]));
                Err(BlockStoreError::NoSpace { needed, free })
            }
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Ok if the stored block `id` at `path` holds exactly `data`.
    fn same_as_existing(&self, path: PathBuf, id: BlockId, data: &[u8], durable: bool) -> Result<()> {
        let block = Block::open(path.clone(), id)?;
        if block.len != data.len() as u64 || block.read(0, 0)? != data {
            return Err(BlockStoreError::Exists(id));
        }
        if durable {
            // The first put may not have been durable.
            File::open(&path).and_then(|f| f.sync_all()).map_err(io_at(&path))?;
            sync_dirs(&path)?;
        }
        Ok(())
    }

    /// Stores a block atomically: temp file in tmp/, header, crcs and data,
    /// fsync of the file when `durable`, rename into place, fsync of the
    /// directories when `durable`. Refuses with NoSpace past the capacity limit
    /// or the file system's free space; never leaves a partial block. Storing
    /// the same bytes again is Ok; other bytes under a stored id are Exists (a
    /// corrupt stored copy is Corrupt: delete it first). Returns the crc32c of
    /// the whole data.
    pub fn put(&self, id: BlockId, data: &[u8], durable: bool) -> Result<u32> {
        let len = data.len() as u64;
        let max = self.max_block;
        if len > max {
            return Err(BlockStoreError::TooLarge { len, max });
        }
        let crcs: Vec<u32> = data.chunks(CHUNK as usize).map(crc32c::crc32c).collect();
        // A second pass, not the chunks' crcs combined: crc32c_combine of 64
        // chunks cost 2.5x a pass over 4 MiB (perf, sequential writes).
        let crc = crc32c::crc32c(data);
        if let Some(path) = self.path_of(id) {
            return self.same_as_existing(path, id, data, durable).map(|()| crc);
        }
        let dir = self.reserve(len)?;
        let dest = self.dirs[dir].block_path(id);
        let tmp = dest
            .parent()
            .map_or(Ok(()), |p| fs::create_dir_all(p).map_err(io_at(p)))
            .and_then(|()| self.write_temp(dir, id, &crcs, data, durable));
        let mut st = self.state();
        st.release(dir, len);
        let mut tmp = tmp?;
        // Checked again under the lock: a concurrent put of the same id may
        // have won, and must not be counted twice or land in a second dir.
        if let Some(path) = self.path_of(id) {
            return self.same_as_existing(path, id, data, durable).map(|()| crc);
        }
        let Some(tmp_path) = tmp.0.take() else {
            return Err(io_at(&dest)(io::Error::other("temp file vanished")));
        };
        if let Err(e) = fs::rename(&tmp_path, &dest) {
            tmp.0 = Some(tmp_path);
            return Err(io_at(&dest)(e));
        }
        st.used += len;
        st.blocks += 1;
        st.dir_used[dir] += len;
        drop(st);
        if durable {
            sync_dirs(&dest)?;
        }
        Ok(crc)
    }

    /// Makes a stored block durable: its file, then the directories that
    /// name it (a put without `durable` synced neither).
    pub fn sync(&self, id: BlockId) -> Result<()> {
        let path = self.path_of(id).ok_or(BlockStoreError::NotFound(id))?;
        File::open(&path).and_then(|f| f.sync_all()).map_err(io_at(&path))?;
        sync_dirs(&path)
    }

    fn open_block(&self, id: BlockId) -> Result<Block> {
        for d in &self.dirs {
            match Block::open(d.block_path(id), id) {
                Err(BlockStoreError::NotFound(_)) => continue,
                other => return other,
            }
        }
        Err(BlockStoreError::NotFound(id))
    }

    /// Reads [offset, offset+len) (len 0 = to the end; clipped at the end),
    /// verifying the crc of every chunk it touches; a mismatch is Corrupt
    /// (never returns wrong bytes). Offset past the end -> empty.
    pub fn read(&self, id: BlockId, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.open_block(id)?.read(offset, len)
    }

    /// Verifies every chunk of the block (the scrubber calls it).
    pub fn verify(&self, id: BlockId) -> Result<()> {
        let block = self.open_block(id)?;
        let mut off = 0;
        while off < block.len {
            block.read(off, VERIFY_WINDOW)?;
            off += VERIFY_WINDOW;
        }
        Ok(())
    }

    /// Length of the block's data.
    pub fn len(&self, id: BlockId) -> Result<u64> {
        Ok(self.open_block(id)?.len)
    }

    /// Whether a file for the block exists (its contents are not checked).
    pub fn contains(&self, id: BlockId) -> bool {
        self.path_of(id).is_some()
    }

    /// Deletes the block; Ok(false) if it was not there. Keeps usage counters
    /// right. Not synced: a block that comes back after a crash is garbage the
    /// meta server collects again.
    pub fn delete(&self, id: BlockId) -> Result<bool> {
        let mut st = self.state();
        let mut found = false;
        for (i, d) in self.dirs.iter().enumerate() {
            let path = d.block_path(id);
            let size = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path)(e)),
            };
            fs::remove_file(&path).map_err(io_at(&path))?;
            let len = data_len_of_file(size);
            st.used = st.used.saturating_sub(len);
            st.blocks = st.blocks.saturating_sub(1);
            st.dir_used[i] = st.dir_used[i].saturating_sub(len);
            found = true;
        }
        Ok(found)
    }

    /// Every block id stored (walks the directories; ignores files that are not `<32 hex>.blk`).
    pub fn list(&self) -> Result<Vec<BlockId>> {
        let mut ids = Vec::new();
        for d in &self.dirs {
            walk(&d.root, |id, _| {
                ids.push(id);
                Ok(())
            })?;
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Bytes used by block data, block count, and capacity = min(limit, used +
    /// free space of the file systems). A file system whose free space cannot
    /// be read counts as full.
    pub fn usage(&self) -> Usage {
        let mut free = 0u64;
        if let Ok(f) = self.fs_free() {
            for (i, d) in self.dirs.iter().enumerate() {
                if self.dirs[..i].iter().all(|e| e.dev != d.dev) {
                    free = free.saturating_add(f[i]);
                }
            }
        }
        let st = self.state();
        let capacity = (st.used.saturating_add(free)).min(self.capacity_limit.unwrap_or(u64::MAX));
        Usage {
            used: st.used,
            blocks: st.blocks,
            capacity,
        }
    }

    /// Where the block's file is (tests corrupt it on purpose).
    pub fn path_of(&self, id: BlockId) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.block_path(id)).find(|p| p.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn data(n: usize, seed: u32) -> Vec<u8> {
        let byte = |i: u32| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8;
        (0..n as u32).map(byte).collect()
    }

    fn id(n: u16) -> BlockId {
        let mut b = [0x5a; 16];
        b[..2].copy_from_slice(&n.to_be_bytes());
        BlockId(b)
    }

    fn store(dir: &tempfile::TempDir) -> BlockStore {
        BlockStore::open(&[dir.path().to_path_buf()], None, 8 << 20).unwrap()
    }

    /// The error's variant name, or "Ok".
    fn kind<T>(r: Result<T>) -> String {
        r.map_or_else(
            |e| format!("{e:?}").split([' ', '(']).next().unwrap().to_string(),
            |_| "Ok".into(),
        )
    }

    /// Sets the byte at `at` of the block's file (or flips it when `value` is None).
    fn poke(s: &BlockStore, b: BlockId, at: u64, value: Option<u8>) {
        let path = s.path_of(b).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[at as usize] = value.unwrap_or(bytes[at as usize] ^ 0x40);
        fs::write(&path, bytes).unwrap();
    }

    fn files_under(dir: &Path) -> usize {
        let count = |e: fs::DirEntry| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        };
        fs::read_dir(dir).unwrap().map(|e| count(e.unwrap())).sum()
    }

    #[test]
    fn a_block_put_without_durable_is_synced_later() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let d = data(100_000, 3);
        s.put(id(1), &d, false).unwrap();
        s.sync(id(1)).unwrap();
        assert_eq!(s.read(id(1), 0, 0).unwrap(), d);
        assert_eq!(kind(s.sync(id(2))), "NotFound");
    }

    #[test]
    fn round_trip_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for (i, n) in [0, 1, 65536, 65537, 4 << 20].into_iter().enumerate() {
            let (d, b) = (data(n, i as u32), id(i as u16));
            assert_eq!(s.put(b, &d, true).unwrap(), crc32c::crc32c(&d));
            assert!(s.contains(b));
            assert_eq!(s.len(b).unwrap(), n as u64);
            assert_eq!(s.read(b, 0, 0).unwrap(), d);
            s.verify(b).unwrap();
            let size = fs::metadata(s.path_of(b).unwrap()).unwrap().len();
            assert_eq!((size, data_len_of_file(size)), (file_len(n as u64), n as u64));
        }
        assert!(!s.contains(id(99)));
        assert_eq!(kind(s.read(id(99), 0, 0)), "NotFound");
    }

    #[test]
    fn ranged_reads_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let d = data(3 * 65536 + 100, 7);
        s.put(id(1), &d, false).unwrap();
        let (c, n) = (65536u64, d.len() as u64);
        let ranges = [
            (0, 1),
            (c - 1, 2),
            (c - 10, c + 20),
            (1, 3 * c),
            (2 * c, c),
            (n - 1, 1),
            (5, 0),
            (n - 3, u64::MAX),
        ];
        for (off, len) in ranges {
            let end = if len == 0 { n } else { off.saturating_add(len).min(n) };
            assert_eq!(
                s.read(id(1), off, len).unwrap(),
                &d[off as usize..end as usize],
                "{off}+{len}"
            );
        }
        assert!(s.read(id(1), n, 10).unwrap().is_empty());
        assert!(s.read(id(1), 1 << 40, 0).unwrap().is_empty());
    }

    #[test]
    fn flipped_data_byte_is_corrupt_only_in_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let d = data(3 * 65536, 1);
        s.put(id(1), &d, false).unwrap();
        poke(&s, id(1), HEADER_LEN + 4 * 3 + 65536 + 123, None);
        assert_eq!(kind(s.read(id(1), 65536 + 100, 50)), "Corrupt");
        assert_eq!(kind(s.read(id(1), 65000, 1000)), "Corrupt");
        assert_eq!(kind(s.read(id(1), 0, 0)), "Corrupt");
        assert_eq!(kind(s.verify(id(1))), "Corrupt");
        assert_eq!(s.read(id(1), 0, 65536).unwrap(), &d[..65536]);
        assert_eq!(s.read(id(1), 2 * 65536, 0).unwrap(), &d[2 * 65536..]);
        // A second put neither accepts nor silently replaces the corrupt copy.
        assert_eq!(kind(s.put(id(1), &d, false)), "Corrupt");
    }

    #[test]
    fn flipped_crc_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        s.put(id(1), &data(100_000, 2), false).unwrap();
        poke(&s, id(1), HEADER_LEN + 4 + 2, None);
        assert_eq!(kind(s.verify(id(1))), "Corrupt");
        assert_eq!(kind(s.read(id(1), 70_000, 10)), "Corrupt");
        s.read(id(1), 0, 10).unwrap();
    }

    #[test]
    fn truncated_file_or_bad_header_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for (i, keep) in [0u64, 5, HEADER_LEN, HEADER_LEN + 4, 1000].into_iter().enumerate() {
            let b = id(i as u16);
            s.put(b, &data(100_000, 3), false).unwrap();
            let file = OpenOptions::new().write(true).open(s.path_of(b).unwrap()).unwrap();
            file.set_len(keep).unwrap();
            let kinds = [kind(s.read(b, 0, 10)), kind(s.verify(b)), kind(s.len(b))];
            assert_eq!(kinds, ["Corrupt", "Corrupt", "Corrupt"], "{keep}");
        }
        // Magic, length, chunk size.
        for (i, at) in [0, 9, 17].into_iter().enumerate() {
            let b = id(10 + i as u16);
            s.put(b, &data(10, 3), false).unwrap();
            poke(&s, b, at, None);
            assert_eq!(kind(s.read(b, 0, 0)), "Corrupt", "{at}");
        }
    }

    #[test]
    fn a_block_file_copied_over_another_fails_its_checks() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let (a, b) = (id(1), id(2));
        s.put(a, &data(200_000, 1), false).unwrap();
        s.put(b, &data(200_000, 2), false).unwrap();
        fs::copy(s.path_of(b).unwrap(), s.path_of(a).unwrap()).unwrap();
        assert_eq!(kind(s.read(a, 0, 0)), "Corrupt");
        assert_eq!(kind(s.verify(a)), "Corrupt");
        assert_eq!(s.read(b, 0, 0).unwrap(), data(200_000, 2));
    }

    #[test]
    fn unknown_version_and_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let cases = [
            (4, 2, "version 2"),
            (6, 1, "sealed"),
            (6, 4, "flags 0x0004"),
            (7, 0x80, "flags 0x8002"),
        ];
        for (i, (at, value, want)) in cases.into_iter().enumerate() {
            let b = id(i as u16);
            s.put(b, &data(10, 4), false).unwrap();
            poke(&s, b, at, Some(value));
            let msg = s.read(b, 0, 0).unwrap_err().to_string();
            assert!(msg.contains("cannot read") && msg.contains(want), "{msg}");
            assert_eq!(kind(s.verify(b)), "Unsupported");
        }
    }

    #[test]
    fn capacity_limit_and_max_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(&[dir.path().to_path_buf()], Some(150_000), 120_000).unwrap();
        s.put(id(1), &data(100_000, 5), true).unwrap();
        let err = s.put(id(2), &data(60_000, 5), true).unwrap_err();
        assert_eq!(err.to_string(), "no space for a block: 60000 bytes needed, 50000 free");
        let err = s.put(id(3), &data(120_001, 5), true).unwrap_err();
        assert_eq!(err.to_string(), "block of 120001 bytes is over the maximum of 120000");
        assert_eq!(files_under(&dir.path().join("tmp")), 0);
        assert_eq!(files_under(&dir.path().join("blocks")), 1);
        assert!(!s.contains(id(2)));
        s.put(id(2), &data(50_000, 5), true).unwrap();
        let u = s.usage();
        assert_eq!((u.used, u.blocks, u.capacity), (150_000, 2, 150_000));
    }

    #[test]
    fn leftover_tmp_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(&dir));
        let leftover = dir.path().join("tmp").join("0123.1.0.tmp");
        fs::write(&leftover, b"half a block").unwrap();
        let s = store(&dir);
        assert!(!leftover.exists());
        assert_eq!(s.usage().blocks, 0);
    }

    #[test]
    fn usage_after_put_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for (n, len) in [(1, 1000), (2, 200_000), (3, 0)] {
            s.put(id(n), &data(len, 6), false).unwrap();
        }
        let u = s.usage();
        assert_eq!((u.used, u.blocks), (201_000, 3));
        assert!(u.capacity > u.used);
        assert!(s.delete(id(2)).unwrap());
        assert_eq!((s.usage().used, s.usage().blocks), (1000, 2));
        drop(s);
        let s = store(&dir);
        assert_eq!((s.usage().used, s.usage().blocks), (1000, 2));
        assert!(s.delete(id(3)).unwrap());
        assert_eq!((s.usage().used, s.usage().blocks), (1000, 1));
    }

    #[test]
    fn list_ignores_stray_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let mut ids: Vec<BlockId> = (0..20).map(|n| id(n * 3001)).collect();
        for b in &ids {
            s.put(*b, &data(10, 7), false).unwrap();
        }
        let leaf = s.path_of(ids[0]).unwrap().parent().unwrap().to_path_buf();
        // Not hex, uppercase hex, and a valid name in the wrong subdirectory.
        for name in [
            "notes.txt".to_string(),
            format!("{}.blk", "AB".repeat(16)),
            format!("{}.blk", "ff".repeat(16)),
        ] {
            fs::write(leaf.join(name), b"x").unwrap();
        }
        fs::write(dir.path().join("blocks").join("zz"), b"x").unwrap();
        ids.sort();
        assert_eq!(s.list().unwrap(), ids);
        assert_eq!(store(&dir).usage().blocks, 20);
    }

    #[test]
    fn delete_missing_is_false() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert!(!s.delete(id(1)).unwrap());
        s.put(id(1), b"x", false).unwrap();
        assert!(s.delete(id(1)).unwrap());
        assert!(!s.delete(id(1)).unwrap());
        assert!(!s.contains(id(1)));
        assert_eq!(s.usage().blocks, 0);
    }

    #[test]
    fn put_is_idempotent_and_refuses_other_contents() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let d = data(70_000, 8);
        let crc = s.put(id(1), &d, false).unwrap();
        assert_eq!(s.put(id(1), &d, true).unwrap(), crc);
        assert_eq!(kind(s.put(id(1), &d[1..], false)), "Exists");
        let mut other = d.clone();
        other[69_999] ^= 1;
        assert_eq!(kind(s.put(id(1), &other, false)), "Exists");
        assert_eq!(s.read(id(1), 0, 0).unwrap(), d);
        assert_eq!((s.usage().used, s.usage().blocks), (70_000, 1));
        assert_eq!(files_under(&dir.path().join("tmp")), 0);
    }

    #[test]
    fn two_data_dirs_both_used() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // A directory given twice is used once.
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf(), a.path().to_path_buf()];
        let s = BlockStore::open(&dirs, None, 8 << 20).unwrap();
        for n in 0..10 {
            s.put(id(n), &data(1000, n.into()), false).unwrap();
        }
        let in_a = files_under(&a.path().join("blocks"));
        let in_b = files_under(&b.path().join("blocks"));
        assert!(in_a > 0 && in_b > 0 && in_a + in_b == 10, "{in_a} {in_b}");
        for n in 0..10 {
            assert_eq!(s.read(id(n), 0, 0).unwrap(), data(1000, n.into()));
        }
        assert_eq!(s.list().unwrap().len(), 10);
        assert!(s.delete(id(0)).unwrap() && s.delete(id(1)).unwrap());
        drop(s);
        let s = BlockStore::open(&dirs, None, 8 << 20).unwrap();
        assert_eq!((s.usage().used, s.usage().blocks), (8000, 8));
    }

    #[test]
    fn concurrent_puts_from_8_threads() {
        let dir = tempfile::tempdir().unwrap();
        // Sharing it through an Arc across threads also checks Send + Sync.
        let s = Arc::new(store(&dir));
        let threads: Vec<_> = (0..8u16)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for n in 0..20u16 {
                        // Ids 0..10 are written by every thread at once, the others by one each.
                        let (b, seed) = if n < 10 {
                            (id(n), n.into())
                        } else {
                            (id(100 + t * 20 + n), 1)
                        };
                        s.put(b, &data(70_000, seed), n % 2 == 0).unwrap();
                        assert_eq!(s.read(b, 0, 0).unwrap(), data(70_000, seed));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let blocks = 10 + 8 * 10;
        assert_eq!((s.usage().used, s.usage().blocks), (blocks * 70_000, blocks));
        assert_eq!(s.list().unwrap().len(), blocks as usize);
        assert_eq!(files_under(&dir.path().join("tmp")), 0);
        for b in s.list().unwrap() {
            s.verify(b).unwrap();
        }
    }
}
