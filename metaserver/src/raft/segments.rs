//! The Raft log's own append-only segment files.
//!
//! sled makes a write durable only by flushing its whole page cache, which
//! cost a commit several fsyncs' worth of time; a log that is only ever
//! appended to, truncated at the tail and dropped from the head needs none of
//! that. Each segment file `<first index>.seg` holds consecutive records:
//!
//! ```text
//! magic u32 | payload length u32 | index u64 | crc32c u32 | payload
//! ```
//!
//! (little endian; the checksum covers the length, the index and the
//! payload). An append is one `pwrite` of every record of the batch and one
//! `fdatasync`.
//!
//! A new segment is preallocated (`fallocate`) to its full size: an
//! `fdatasync` after a write that grows a file must also write the file's
//! size through the journal, one after a write into allocated space only the
//! data (on this machine's ext4, p50 ~140 us against ~100 us). Zeros after
//! the last record are therefore the normal end of a segment.
//!
//! Recovery reads every segment. Only the last append can have been cut short
//! by a crash, so a bad record in the last segment with no valid record after
//! it is a torn tail and is zeroed; a bad record anywhere else, or followed
//! by a valid one, is corruption of data that was acknowledged, and opening
//! fails with the segment and offset instead of silently dropping entries.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: u32 = 0x4e4d_4c47; // "NMLG"
const HEADER: usize = 20;
/// A record bigger than this is a damaged length field, not an entry.
const MAX_RECORD: usize = 256 << 20;
/// A new segment is started once the active one reaches this size.
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "Raft log segment {path} is corrupt at byte {offset}: {detail}; valid records follow, so this is not \
         a torn final write. Refusing to start rather than drop acknowledged entries: restore this node's \
         data directory, or remove it and re-add the node to the cluster"
    )]
    Corrupt { path: PathBuf, offset: u64, detail: String },
    #[error("Raft log segments in {dir} are not contiguous: expected index {expected}, found {found} in {path}")]
    Gap {
        dir: PathBuf,
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("Raft log index {0} is not in the log")]
    Missing(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file and where each of its records starts.
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    offsets: Vec<u64>,
    end: u64,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// What recovery found at the end of the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn final write that were cut off.
    pub torn_bytes: u64,
}

/// The log's segment files: records by index, from `first_index()` to
/// `next_index() - 1`.
pub struct Segments {
    dir: PathBuf,
    /// Ordered by first index; never empty; the last one is appended to.
    segs: Vec<Segment>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&(payload.len() as u32).to_le_bytes());
    let c = crc32c::crc32c_append(c, &index.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Appends one record to `buf`.
fn encode_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The record at `at` of `data`: (index, payload range end), or why not.
fn parse_record(data: &[u8], at: usize) -> Result<(u64, usize), String> {
    let rest = data.len() - at;
    if rest < HEADER {
        return Err(format!("{rest} bytes where a {HEADER}-byte header belongs"));
    }
    if u32_at(data, at) != MAGIC {
        return Err("bad record marker".into());
    }
    let len = u32_at(data, at + 4) as usize;
    if len > MAX_RECORD {
        return Err(format!("record length {len} is impossible"));
    }
    if rest - HEADER < len {
        return Err(format!("record of {len} bytes cut short at {}", rest - HEADER));
    }
    let index = u64_at(data, at + 8);
    let payload = &data[at + HEADER..at + HEADER + len];
    if checksum(index, payload) != u32_at(data, at + 16) {
        return Err("checksum mismatch".into());
    }
    Ok((index, at + HEADER + len))
}

/// Whether any valid record starts after `from`: the difference between a
/// torn final write and damage in the middle of the log.
fn valid_record_after(data: &[u8], from: usize) -> bool {
    let magic = MAGIC.to_le_bytes();
    (from + 1..data.len().saturating_sub(HEADER - 1))
        .filter(|&at| data[at..at + 4] == magic)
        .any(|at| parse_record(data, at).is_ok())
}

/// Reserves `len` bytes of `file` on disk (reads as zeros), so that
/// appends within them do not change the file's size. Only a speed-up: a
/// file system without `fallocate` gets a file that grows as it is written.
fn preallocate(file: &File, len: u64) {
    let Ok(len) = libc::off_t::try_from(len) else {
        return;
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor
    // is open for writing and owned by `file` for the whole call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "no preallocation for a Raft log segment");
    }
}

/// fsyncs a directory, so that files created, renamed or removed in it stay so.
pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Replaces `path` with `bytes` (checksummed) durably: a crash leaves the old
/// or the new contents, never a mix.
pub fn write_small_file(path: &Path, bytes: &[u8]) -> Result<(), SegmentError> {
    let tmp = path.with_extension("tmp");
    let mut data = crc32c::crc32c(bytes).to_le_bytes().to_vec();
    data.extend_from_slice(bytes);
    {
        let f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all_at(&data, 0).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The contents of a file written by [`write_small_file`], if it exists.
pub fn read_small_file(path: &Path) -> Result<Option<Vec<u8>>, SegmentError> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut data).map_err(io(path))?,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    if data.len() < 4 || u32_at(&data, 0) != crc32c::crc32c(&data[4..]) {
        // Written by rename after an fsync: a bad checksum is damage.
        return Err(SegmentError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            detail: "checksum mismatch".into(),
        });
    }
    Ok(Some(data.split_off(4)))
}

impl Segments {
    /// Opens the log in `dir` (created if missing), cutting off a torn final
    /// write. Records at or before `purged` are dropped with their segments;
    /// an empty log starts at `purged + 1`, or 0.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<(Segments, Recovery), SegmentError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let name = e.map_err(io(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segs: Vec<Segment> = Vec::new();
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let last = n + 1 == count;
            let seg = Self::load(dir, first, last, &mut recovery)?;
            if let Some(prev) = segs.last() {
                if prev.next_index() != first {
                    return Err(SegmentError::Gap {
                        dir: dir.to_path_buf(),
                        path: seg.path,
                        expected: prev.next_index(),
                        found: first,
                    });
                }
            }
            segs.push(seg);
        }
        let mut log = Segments {
            dir: dir.to_path_buf(),
            segs,
        };
        // A crash between recording a purge and deleting its segments
        // leaves them behind; they are purged all the same.
        if let Some(p) = purged {
            log.drop_segments_upto(p)?;
        }
        if log.segs.is_empty() {
            let start = purged.map_or(0, |p| p + 1);
            log.start_segment(start)?;
        }
        Ok((log, recovery))
    }

    fn load(dir: &Path, first: u64, last: bool, recovery: &mut Recovery) -> Result<Segment, SegmentError> {
        let path = segment_path(dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut data = Vec::new();
        (&file).read_to_end(&mut data).map_err(io(&path))?;
        let mut offsets = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let expected = first + offsets.len() as u64;
            let parsed = parse_record(&data, at).and_then(|(index, end)| {
                if index == expected {
                    Ok(end)
                } else {
                    Err(format!("record holds index {index}, expected {expected}"))
                }
            });
            match parsed {
                Ok(end) => {
                    offsets.push(at as u64);
                    at = end;
                }
                // The preallocated, never written rest of the segment.
                Err(_) if data[at..].iter().all(|&b| b == 0) => break,
                Err(detail) if last && !valid_record_after(&data, at) => {
                    // Zeroed rather than cut off, so that the segment keeps
                    // its preallocated space.
                    let torn = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1 - at);
                    tracing::warn!(
                        path = %path.display(),
                        offset = at,
                        bytes = torn,
                        "zeroing a torn final write of the Raft log ({detail})"
                    );
                    recovery.torn_bytes += torn as u64;
                    file.write_all_at(&vec![0u8; torn], at as u64).map_err(io(&path))?;
                    file.sync_data().map_err(io(&path))?;
                    break;
                }
                Err(detail) => {
                    return Err(SegmentError::Corrupt {
                        path,
                        offset: at as u64,
                        detail,
                    })
                }
            }
        }
        Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            offsets,
            end: at as u64,
        })
    }

    fn start_segment(&mut self, first: u64) -> Result<(), SegmentError> {
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        preallocate(&file, SEGMENT_BYTES);
        sync_dir(&self.dir)?;
        self.segs.push(Segment {
            first,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            end: 0,
        });
        Ok(())
    }

    fn active(&self) -> &Segment {
        // `open` and every change leave at least one segment.
        &self.segs[self.segs.len() - 1]
    }

    /// The first index held (purged records may still be held).
    pub fn first_index(&self) -> u64 {
        self.segs[0].first
    }

    /// The index the next append must carry.
    pub fn next_index(&self) -> u64 {
        self.active().next_index()
    }

    /// Writes `records` (consecutive indexes from `next_index()`) without
    /// syncing; returns the file to sync before they count as durable.
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<Arc<File>, SegmentError> {
        let mut records = records.into_iter().peekable();
        let Some(&(first, _)) = records.peek() else {
            return Ok(self.active().file.clone());
        };
        if self.segs.len() == 1 && self.active().offsets.is_empty() && first != self.active().first {
            // An empty log may begin anywhere (openraft starts at 0 or 1,
            // a follower after a snapshot further on).
            if let Some(seg) = self.segs.pop() {
                std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            }
            self.start_segment(first)?;
        } else if self.active().end >= SEGMENT_BYTES {
            // A sync covers the active segment only: the full one is made
            // durable before appends move on.
            let full = self.active();
            full.file.sync_data().map_err(io(&full.path))?;
            let next = self.next_index();
            self.start_segment(next)?;
        }
        let len = self.segs.len();
        let seg = &mut self.segs[len - 1];
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for (index, payload) in records {
            let expected = seg.first + (seg.offsets.len() + offsets.len()) as u64;
            if index != expected {
                return Err(SegmentError::Gap {
                    dir: self.dir.clone(),
                    path: seg.path.clone(),
                    expected,
                    found: index,
                });
            }
            offsets.push(seg.end + buf.len() as u64);
            encode_record(&mut buf, index, payload);
        }
        seg.file.write_all_at(&buf, seg.end).map_err(io(&seg.path))?;
        seg.end += buf.len() as u64;
        seg.offsets.extend(offsets);
        Ok(seg.file.clone())
    }

    /// The file the next sync must cover (earlier segments were synced
    /// when they filled).
    pub fn active_file(&self) -> Arc<File> {
        self.active().file.clone()
    }

    /// Makes every append so far durable.
    pub fn sync(&self) -> Result<(), SegmentError> {
        let seg = self.active();
        seg.file.sync_data().map_err(io(&seg.path))
    }

    /// The payload of the record at `index`.
    pub fn read(&self, index: u64) -> Result<Vec<u8>, SegmentError> {
        let n = self.segs.partition_point(|s| s.first <= index);
        let seg = n
            .checked_sub(1)
            .map(|n| &self.segs[n])
            .ok_or(SegmentError::Missing(index))?;
        let i = (index - seg.first) as usize;
        let start = *seg.offsets.get(i).ok_or(SegmentError::Missing(index))?;
        let end = seg.offsets.get(i + 1).copied().unwrap_or(seg.end);
        let mut data = vec![0u8; (end - start) as usize];
        seg.file.read_exact_at(&mut data, start).map_err(io(&seg.path))?;
        // Records were checked when the log was opened or written; check
        // again anyway: the disk may have changed under us.
        match parse_record(&data, 0) {
            Ok((got, _)) if got == index => Ok(data.split_off(HEADER)),
            Ok((got, _)) => Err(SegmentError::Corrupt {
                path: seg.path.clone(),
                offset: start,
                detail: format!("record holds index {got}, expected {index}"),
            }),
            Err(detail) => Err(SegmentError::Corrupt {
                path: seg.path.clone(),
                offset: start,
                detail,
            }),
        }
    }

    /// Removes every record from `index` on, durably.
    pub fn truncate_from(&mut self, index: u64) -> Result<(), SegmentError> {
        let mut removed_files = false;
        while self.segs.len() > 1 && self.active().first >= index {
            if let Some(seg) = self.segs.pop() {
                std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
                removed_files = true;
            }
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        let len = self.segs.len();
        let seg = &mut self.segs[len - 1];
        if index < seg.first {
            // Everything held is after `index`: the log restarts there.
            let path = seg.path.clone();
            self.segs.clear();
            std::fs::remove_file(&path).map_err(io(&path))?;
            return self.start_segment(index);
        }
        let keep = (index - seg.first) as usize;
        if keep < seg.offsets.len() {
            seg.end = seg.offsets[keep];
            seg.offsets.truncate(keep);
            seg.file.set_len(seg.end).map_err(io(&seg.path))?;
            preallocate(&seg.file, SEGMENT_BYTES);
            seg.file.sync_data().map_err(io(&seg.path))?;
        }
        Ok(())
    }

    /// Deletes every segment whose records all lie at or before `index`; if
    /// that is all of them, the log continues at `max(next, index + 1)`.
    pub fn drop_segments_upto(&mut self, index: u64) -> Result<(), SegmentError> {
        let next = self.next_index().max(index.saturating_add(1));
        let mut removed = false;
        while let Some(seg) = self.segs.first() {
            if seg.next_index() > index.saturating_add(1) {
                break;
            }
            let seg = self.segs.remove(0);
            std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if self.segs.is_empty() {
            self.start_segment(next)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        format!("entry number {i} ").repeat((i % 7 + 1) as usize).into_bytes()
    }

    fn append(log: &mut Segments, range: std::ops::Range<u64>) {
        let payloads: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
        log.append(payloads.iter().map(|(i, p)| (*i, p.as_slice()))).unwrap();
        log.sync().unwrap();
    }

    /// Where the records of the last segment end (its file is longer).
    fn records_end(dir: &Path) -> u64 {
        let (log, _) = Segments::open(dir, None).unwrap();
        log.active().end
    }

    fn seg_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn appends_survive_reopen_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, r) = Segments::open(dir.path(), None).unwrap();
            assert_eq!(r, Recovery::default());
            append(&mut log, 0..50);
            append(&mut log, 50..51);
        }
        let (log, r) = Segments::open(dir.path(), None).unwrap();
        assert_eq!(r.torn_bytes, 0);
        assert_eq!((log.first_index(), log.next_index()), (0, 51));
        for i in 0..51 {
            assert_eq!(log.read(i).unwrap(), payload(i));
        }
        assert!(matches!(log.read(51), Err(SegmentError::Missing(51))));
    }

    #[test]
    fn a_torn_final_write_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Segments::open(dir.path(), None).unwrap();
            append(&mut log, 0..10);
        }
        let path = seg_files(dir.path()).pop().unwrap();
        let good_len = records_end(dir.path());
        // A final append cut short: a whole record and half of another ...
        let mut tail = Vec::new();
        encode_record(&mut tail, 10, &payload(10));
        encode_record(&mut tail, 11, &payload(11));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&tail[..tail.len() - 5], good_len).unwrap();
        let (mut log, r) = Segments::open(dir.path(), None).unwrap();
        assert_eq!(log.next_index(), 11, "the complete record of the torn write is kept");
        assert!(r.torn_bytes > 0);
        assert_eq!(log.read(10).unwrap(), payload(10));
        // ... and the log appends after it again.
        append(&mut log, 11..12);
        drop(log);
        // Zeros after the last record (preallocated space, or a file
        // extended with zeros that never got their data) are its end.
        f.set_len(records_end(dir.path())).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        f.write_all_at(&[0u8; 4096], len).unwrap();
        let (log, r) = Segments::open(dir.path(), None).unwrap();
        assert_eq!((log.next_index(), r.torn_bytes), (12, 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len + 4096);
        drop(log);
        // Within preallocated space, a torn write is zeroed and the space kept.
        let (mut log, _) = Segments::open(dir.path(), None).unwrap();
        preallocate(&log.active().file, SEGMENT_BYTES);
        append(&mut log, 12..13);
        let end = log.active().end;
        drop(log);
        let mut tail = Vec::new();
        encode_record(&mut tail, 13, &payload(13));
        f.write_all_at(&tail[..tail.len() - 1], end).unwrap();
        let (log, r) = Segments::open(dir.path(), None).unwrap();
        assert_eq!((log.next_index(), r.torn_bytes), (13, tail.len() as u64 - 1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SEGMENT_BYTES);
        drop(log);
        let (_, r) = Segments::open(dir.path(), None).unwrap();
        assert_eq!(r.torn_bytes, 0, "zeroed once, a clean end afterwards");
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Segments::open(dir.path(), None).unwrap();
            append(&mut log, 0..20);
        }
        let path = seg_files(dir.path()).pop().unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        // Flip a payload byte of record 5: records 6..19 are valid after it.
        let (log, _) = Segments::open(dir.path(), None).unwrap();
        let at = log.segs[0].offsets[5] + HEADER as u64 + 2;
        drop(log);
        f.write_all_at(b"X", at).unwrap();
        let err = Segments::open(dir.path(), None).err().expect("must refuse to open");
        assert!(matches!(err, SegmentError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("corrupt") && msg.contains(".seg"), "{msg}");
        // The file is untouched: nothing was cut off.
        assert!(Segments::open(dir.path(), None).is_err());
    }

    #[test]
    fn damage_in_a_full_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Segments::open(dir.path(), None).unwrap();
            append(&mut log, 0..5);
            log.start_segment(5).unwrap();
            append(&mut log, 5..10);
        }
        let first = seg_files(dir.path()).remove(0);
        let (log, _) = Segments::open(dir.path(), None).unwrap();
        let len = log.segs[0].end;
        drop(log);
        OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert!(matches!(
            Segments::open(dir.path(), None),
            Err(SegmentError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncate_and_purge_span_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Segments::open(dir.path(), None).unwrap();
        for start in [0u64, 10, 20, 30] {
            if start > 0 {
                log.start_segment(start).unwrap();
            }
            append(&mut log, start..start + 10);
        }
        assert_eq!(seg_files(dir.path()).len(), 4);
        log.truncate_from(25).unwrap();
        assert_eq!((log.next_index(), seg_files(dir.path()).len()), (25, 3));
        append(&mut log, 25..27);
        log.drop_segments_upto(14).unwrap();
        assert_eq!(log.first_index(), 10, "a segment partly kept stays whole");
        log.drop_segments_upto(19).unwrap();
        assert_eq!(log.first_index(), 20);
        drop(log);
        let (mut log, _) = Segments::open(dir.path(), Some(19)).unwrap();
        assert_eq!((log.first_index(), log.next_index()), (20, 27));
        assert_eq!(log.read(26).unwrap(), payload(26));
        // Purged past the end: the log continues after the purge point.
        log.drop_segments_upto(40).unwrap();
        assert_eq!((log.first_index(), log.next_index()), (41, 41));
        append(&mut log, 41..43);
        // Truncated before everything held.
        log.truncate_from(30).unwrap();
        assert_eq!((log.first_index(), log.next_index()), (30, 30));
        drop(log);
        let (log, _) = Segments::open(dir.path(), Some(29)).unwrap();
        assert_eq!((log.first_index(), log.next_index()), (30, 30));
    }

    #[test]
    fn small_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vote");
        assert_eq!(read_small_file(&path).unwrap(), None);
        write_small_file(&path, b"hello").unwrap();
        assert_eq!(read_small_file(&path).unwrap(), Some(b"hello".to_vec()));
        std::fs::write(&path, b"junkjunk").unwrap();
        assert!(read_small_file(&path).is_err());
    }
}
