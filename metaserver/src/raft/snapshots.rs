//! Snapshot files: the namespace written out pair by pair, in checksummed
//! frames, so that building, sending and installing a snapshot never holds
//! the namespace in memory.
//!
//! A file is `NIMBUSS1`, then frames `kind | length (u32) | crc32c (u32) |
//! payload`: first the snapshot's metadata, then pairs (postcard lists of
//! about 1 MiB), then an end frame with the number of pairs. A reader checks
//! every frame and insists on the end frame, so a file cut short or altered
//! in transit is an error, never a smaller namespace. openraft sends the file
//! as it is, in chunks; the receiver writes them into a file of its own.

use crate::store::{Pair, StoreError};
use openraft::{BasicNode, SnapshotMeta};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"NIMBUSS1";
const META: u8 = 0;
const PAIRS: u8 = 1;
const END: u8 = 2;
/// Payload bytes gathered before a pairs frame is written.
const FRAME_BYTES: usize = 1 << 20;
/// Largest frame a reader accepts (a single pair may exceed FRAME_BYTES).
const MAX_FRAME: u32 = 256 << 20;
/// The snapshot a node serves and restarts from.
const CURRENT: &str = "current.snap";

/// What a snapshot file holds besides its pairs.
pub type Meta = SnapshotMeta<u64, BasicNode>;

/// A snapshot file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("reading the state: {0}")]
    Store(#[from] StoreError),
}

/// The directory of a node's snapshot files.
#[derive(Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

/// What writing a snapshot file produced.
pub struct Written {
    /// The file, open, positioned at its start.
    pub file: File,
    pub bytes: u64,
    pub pairs: u64,
}

impl SnapshotDir {
    /// Opens (creating) `dir`, dropping files of builds and transfers that
    /// never finished.
    pub fn open(dir: &Path) -> Result<SnapshotDir, SnapshotFileError> {
        let io = |source| SnapshotFileError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path).map_err(io)?;
            }
        }
        Ok(SnapshotDir { dir: dir.to_path_buf() })
    }

    /// The current snapshot's path.
    pub fn current(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// A fresh temporary file for a snapshot arriving from the leader; any
    /// earlier unfinished arrival is dropped.
    pub fn incoming(&self) -> Result<File, SnapshotFileError> {
        self.remove_temporary("incoming-")?;
        let path = self.dir.join(format!("incoming-{}.tmp", std::process::id()));
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| SnapshotFileError::Io { path, source })
    }

    fn remove_temporary(&self, prefix: &str) -> Result<(), SnapshotFileError> {
        let io = |source| SnapshotFileError::Io {
            path: self.dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(prefix) && name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Writes a snapshot of `pairs` and makes it the current one, durably.
    pub fn build(
        &self,
        meta: &Meta,
        pairs: impl Iterator<Item = Result<Pair, StoreError>>,
    ) -> Result<Written, SnapshotFileError> {
        let tmp = self.dir.join("building.tmp");
        let io = |source| SnapshotFileError::Io {
            path: tmp.clone(),
            source,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        let mut out = BufWriter::with_capacity(FRAME_BYTES, file);
        out.write_all(MAGIC).map_err(io)?;
        write_frame(&mut out, META, &postcard_bytes(meta)).map_err(io)?;
        let mut frame: Vec<Pair> = Vec::new();
        let mut frame_bytes = 0;
        let mut count = 0u64;
        for pair in pairs {
            let pair = pair?;
            frame_bytes += pair.0.len() + pair.1.len() + 8;
            frame.push(pair);
            count += 1;
            if frame_bytes >= FRAME_BYTES {
                write_frame(&mut out, PAIRS, &postcard_bytes(&frame)).map_err(io)?;
                frame.clear();
                frame_bytes = 0;
            }
        }
        if !frame.is_empty() {
            write_frame(&mut out, PAIRS, &postcard_bytes(&frame)).map_err(io)?;
        }
        write_frame(&mut out, END, &postcard_bytes(&count)).map_err(io)?;
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let bytes = file.stream_position().map_err(io)?;
        self.make_current(&tmp)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok(Written {
            file,
            bytes,
            pairs: count,
        })
    }

    /// Makes an installed snapshot `file` the current one: an arrival is
    /// renamed (found by its inode), the current one stays, any other file
    /// is copied.
    pub fn keep_installed(&self, file: &File) -> Result<(), SnapshotFileError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| SnapshotFileError::Io {
            path: self.dir.clone(),
            source,
        };
        file.sync_all().map_err(io)?;
        let ino = file.metadata().map_err(io)?.ino();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.metadata().map_err(io)?.ino() != ino {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with("incoming-") {
                return self.make_current(&entry.path());
            }
            if entry.path() == self.current() {
                return Ok(());
            }
        }
        let tmp = self.dir.join("copy.tmp");
        let mut from = file.try_clone().map_err(io)?;
        from.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut to = File::create(&tmp).map_err(io)?;
        std::io::copy(&mut from, &mut to).map_err(io)?;
        to.sync_all().map_err(io)?;
        self.make_current(&tmp)
    }

    fn make_current(&self, from: &Path) -> Result<(), SnapshotFileError> {
        std::fs::rename(from, self.current()).map_err(|source| SnapshotFileError::Io {
            path: from.to_path_buf(),
            source,
        })?;
        super::segments::sync_dir(&self.dir).map_err(|e| SnapshotFileError::Corrupt {
            path: self.dir.clone(),
            detail: e.to_string(),
        })
    }

    /// The current snapshot's metadata and its file (at its start), if any.
    pub fn open_current(&self) -> Result<Option<(Meta, File, u64)>, SnapshotFileError> {
        let path = self.current();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotFileError::Io { path, source }),
        };
        let bytes = file
            .metadata()
            .map_err(|source| SnapshotFileError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        let meta = SnapshotReader::new(&mut file, &path)?.meta;
        file.seek(SeekFrom::Start(0))
            .map_err(|source| SnapshotFileError::Io { path, source })?;
        Ok(Some((meta, file, bytes)))
    }
}

fn postcard_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn write_frame(out: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.write_all(&[kind])?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(payload)
}

/// Reads a snapshot file frame by frame: its metadata, then its pairs.
pub struct SnapshotReader<R> {
    input: BufReader<R>,
    path: PathBuf,
    /// The metadata the file was written with.
    pub meta: Meta,
    frame: std::vec::IntoIter<Pair>,
    seen: u64,
    ended: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header of the file behind `input` (named `path` in errors).
    pub fn new(input: R, path: &Path) -> Result<SnapshotReader<R>, SnapshotFileError> {
        let mut input = BufReader::with_capacity(FRAME_BYTES, input);
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic, path)?;
        if &magic != MAGIC {
            return Err(corrupt(path, "not a Nimbus snapshot file"));
        }
        let (kind, payload) = read_frame(&mut input, path)?;
        if kind != META {
            return Err(corrupt(path, "the metadata frame is missing"));
        }
        let meta = postcard::from_bytes(&payload).map_err(|e| corrupt(path, &format!("metadata: {e}")))?;
        Ok(SnapshotReader {
            input,
            path: path.to_path_buf(),
            meta,
            frame: Vec::new().into_iter(),
            seen: 0,
            ended: false,
        })
    }

    fn next_pair(&mut self) -> Result<Option<Pair>, SnapshotFileError> {
        loop {
            if let Some(pair) = self.frame.next() {
                self.seen += 1;
                return Ok(Some(pair));
            }
            if self.ended {
                return Ok(None);
            }
            let (kind, payload) = read_frame(&mut self.input, &self.path)?;
            match kind {
                PAIRS => {
                    let pairs: Vec<Pair> =
                        postcard::from_bytes(&payload).map_err(|e| corrupt(&self.path, &format!("pairs: {e}")))?;
                    self.frame = pairs.into_iter();
                }
                END => {
                    let count: u64 =
                        postcard::from_bytes(&payload).map_err(|e| corrupt(&self.path, &format!("end: {e}")))?;
                    if count != self.seen {
                        return Err(corrupt(
                            &self.path,
                            &format!("holds {} pairs, its end says {count}", self.seen),
                        ));
                    }
                    self.ended = true;
                }
                other => return Err(corrupt(&self.path, &format!("unknown frame kind {other}"))),
            }
        }
    }
}

impl<R: Read> Iterator for SnapshotReader<R> {
    type Item = Result<Pair, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_pair()
            .map_err(|e| StoreError::Corrupt {
                key: "snapshot".into(),
                detail: e.to_string(),
            })
            .transpose()
    }
}

fn corrupt(path: &Path, detail: &str) -> SnapshotFileError {
    SnapshotFileError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<(), SnapshotFileError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(path, "ends early (cut short?)")
        } else {
            SnapshotFileError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

fn read_frame(input: &mut impl Read, path: &Path) -> Result<(u8, Vec<u8>), SnapshotFileError> {
    let mut head = [0u8; 9];
    read_exact(input, &mut head, path)?;
    let kind = head[0];
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let crc = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
    if len > MAX_FRAME {
        return Err(corrupt(path, &format!("a frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len as usize];
    read_exact(input, &mut payload, path)?;
    if crc32c::crc32c_append(crc32c::crc32c(&[kind]), &payload) != crc {
        return Err(corrupt(path, "a frame fails its checksum"));
    }
    Ok((kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, StoredMembership};

    fn meta() -> Meta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 77)),
            last_membership: StoredMembership::default(),
            snapshot_id: "2-77-1".into(),
        }
    }

    fn pairs(n: usize) -> Vec<Pair> {
        (0..n)
            .map(|i| (format!("key{i:07}").into_bytes(), vec![(i % 251) as u8; 100]))
            .collect()
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let want = pairs(30_000);
        let written = snaps.build(&meta(), want.clone().into_iter().map(Ok)).unwrap();
        assert_eq!(written.pairs, 30_000);
        assert!(written.bytes > 3_000_000, "several frames");
        let (m, file, bytes) = snaps.open_current().unwrap().unwrap();
        assert_eq!(m, meta());
        assert_eq!(bytes, written.bytes);
        let reader = SnapshotReader::new(file, &snaps.current()).unwrap();
        let got: Vec<Pair> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn a_cut_or_altered_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        snaps.build(&meta(), pairs(30_000).into_iter().map(Ok)).unwrap();
        let whole = std::fs::read(snaps.current()).unwrap();
        let read_all = |bytes: &[u8]| -> Result<usize, String> {
            let reader = SnapshotReader::new(bytes, Path::new("x")).map_err(|e| e.to_string())?;
            let mut n = 0;
            for p in reader {
                p.map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(read_all(&whole), Ok(30_000));
        // Cut at a frame boundary (the end frame missing) and mid-frame.
        for cut in [whole.len() - 10, whole.len() / 2, 20] {
            let e = read_all(&whole[..cut]).unwrap_err();
            assert!(e.contains("ends early"), "{e}");
        }
        let mut altered = whole.clone();
        altered[whole.len() / 2] ^= 1;
        assert!(read_all(&altered).unwrap_err().contains("checksum"));
    }

    #[test]
    fn unfinished_files_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let _arriving = snaps.incoming().unwrap();
        std::fs::write(dir.path().join("building.tmp"), b"half").unwrap();
        SnapshotDir::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
