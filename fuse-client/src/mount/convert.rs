//! Translations between Nimbus's wire types and the kernel's view through
//! fuser: attributes, file kinds, times, permission bits, and the one place
//! where a failure becomes the errno the kernel sees.

use fuser::{FileAttr, FileType, INodeNo};
use nimbus_client::ClientError;
use nimbus_common::Errno;
use nimbus_proto as pb;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `st_blksize` reported for every file: tools such as `cp` size their
/// buffers from it, and 1 MiB matches the largest write the kernel sends.
const BLKSIZE: u32 = 1 << 20;

/// Why an operation failed, as the kernel will be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub Errno);

/// The result of a file-system operation.
pub type FsResult<T> = Result<T, FsError>;

impl From<Errno> for FsError {
    fn from(e: Errno) -> FsError {
        FsError(e)
    }
}

impl From<ClientError> for FsError {
    fn from(e: ClientError) -> FsError {
        // A POSIX answer is the caller's business; anything else (cluster
        // unreachable, data lost) deserves a line in the mount's log, since
        // the application only sees EIO.
        if !matches!(e, ClientError::Errno(_)) {
            tracing::warn!("{e}");
        }
        FsError(e.errno())
    }
}

impl FsError {
    /// The errno in fuser's type: every reply error goes through here.
    pub fn to_fuser(self) -> fuser::Errno {
        fuser::Errno::from_i32(self.0 .0)
    }
}

/// Shorthand for a failure with `e`.
pub fn fail<T>(e: Errno) -> FsResult<T> {
    Err(FsError(e))
}

/// A reply of an unexpected shape: the server and this client disagree.
pub fn unexpected<T>(what: &str, r: &pb::ns_reply::Result) -> FsResult<T> {
    tracing::warn!("unexpected reply to {what}: {r:?}");
    fail(Errno::EIO)
}

/// Nanoseconds since the epoch as a `SystemTime` (clamped, never panics).
pub fn system_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    let t = if ns >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// A `SystemTime` as nanoseconds since the epoch (saturating).
pub fn nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map(|n| -n).unwrap_or(i64::MIN),
    }
}

/// Nanoseconds since the epoch of a time the kernel sent in setattr.
/// fuser 0.18 reads a pre-1970 (secs < 0, nsec) as `epoch - (-secs + nsec)`
/// instead of `secs + nsec` (its time.rs says TODO): undo that here, so
/// that `touch -d 1969-...` with a fraction lands where it should.
pub fn setattr_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => nanos(t),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            secs.saturating_mul(-1_000_000_000)
                .saturating_add(i64::from(d.subsec_nanos()))
        }
    }
}

/// The kernel's file type for a wire `FileKind`.
pub fn file_type(kind: i32) -> FileType {
    match pb::FileKind::try_from(kind) {
        Ok(pb::FileKind::Directory) => FileType::Directory,
        Ok(pb::FileKind::Symlink) => FileType::Symlink,
        Ok(pb::FileKind::Fifo) => FileType::NamedPipe,
        Ok(pb::FileKind::Socket) => FileType::Socket,
        Ok(pb::FileKind::CharDevice) => FileType::CharDevice,
        Ok(pb::FileKind::BlockDevice) => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// File-type bits of a mode (`S_IFMT`) and the types mknod may create.
const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;

/// The kind mknod's `mode` asks for; a plain 0 type means a regular file.
pub fn mknod_kind(mode: u32) -> FsResult<pb::FileKind> {
    Ok(match mode & S_IFMT {
        0 | S_IFREG => pb::FileKind::Regular,
        S_IFIFO => pb::FileKind::Fifo,
        S_IFCHR => pb::FileKind::CharDevice,
        S_IFBLK => pb::FileKind::BlockDevice,
        S_IFSOCK => pb::FileKind::Socket,
        _ => return fail(Errno::EINVAL),
    })
}

/// Permission bits of a mode: the namespace stores 07777 only.
pub fn perm(mode: u32) -> u32 {
    mode & 0o7777
}

/// The kernel's attributes for `a`, with `size` as this mount sees it
/// (buffered writes not yet committed included).
pub fn file_attr(a: &pb::Attr, size: u64) -> FileAttr {
    let ctime = system_time(a.ctime_ns);
    FileAttr {
        ino: INodeNo(a.ino),
        size,
        blocks: size.div_ceil(512),
        atime: system_time(a.atime_ns),
        mtime: system_time(a.mtime_ns),
        ctime,
        crtime: ctime,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Read, write and execute in the `rwx` bit order of a mode.
pub const R: u32 = 4;
pub const W: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_epoch_setattr_times_are_read_as_the_kernel_meant() {
        use std::time::Duration;
        // What fuser 0.18 hands over for the kernel's (secs -31536000, nsec 5).
        let misread = UNIX_EPOCH - Duration::new(31_536_000, 5);
        assert_eq!(setattr_nanos(misread), -31_536_000 * 1_000_000_000 + 5);
        let after = UNIX_EPOCH + Duration::new(7, 9);
        assert_eq!(setattr_nanos(after), 7_000_000_009);
    }

    #[test]
    fn times_round_trip_on_both_sides_of_the_epoch() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -5_000_000_001] {
            assert_eq!(nanos(system_time(ns)), ns);
        }
    }

    #[test]
    fn mknod_kinds() {
        assert_eq!(mknod_kind(0o010_644), Ok(pb::FileKind::Fifo));
        assert_eq!(mknod_kind(0o644), Ok(pb::FileKind::Regular));
        assert_eq!(mknod_kind(0o020_600), Ok(pb::FileKind::CharDevice));
        assert!(mknod_kind(0o040_755).is_err());
    }
}
