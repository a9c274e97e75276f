//! Running one operation on a tree (the mount or local disk) and what
//! it answers.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

pub(crate) fn kind(t: fs::FileType) -> Kind {
    if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

/// What stat shows that both trees must agree on: not inode numbers, not
/// atime or ctime, not a directory's size (ext4 counts blocks of entries,
/// the mount does not), and of mtime only whether it is recent (each tree
/// ran the call at its own moment) or else its exact value (set by
/// `utimens`, to times far from now).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Stat {
    pub(crate) kind: Kind,
    pub(crate) size: Option<u64>,
    pub(crate) perm: Mode,
    pub(crate) nlink: u64,
    pub(crate) mtime: Mtime,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mtime {
    /// Within `RECENT_SECS` of now.
    Recent,
    At(i64, i64),
}

/// Far more than a test run, far less than the distance from now to any of
/// `MTIMES`.
pub(crate) const RECENT_SECS: i64 = 6 * 3600;

pub(crate) fn stat_of(m: &fs::Metadata) -> Stat {
    let kind = kind(m.file_type());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Stat {
        kind,
        size: (kind != Kind::Dir).then_some(m.len()),
        perm: Mode(m.mode() & 0o7777),
        nlink: m.nlink(),
        mtime: if (m.mtime() - now).abs() < RECENT_SECS {
            Mtime::Recent
        } else {
            Mtime::At(m.mtime(), m.mtime_nsec())
        },
    }
}

/// Bytes, shown as their length and a hash.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Data(pub(crate) Vec<u8>);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.len() <= 16 {
            write!(f, "{:?}", self.0)
        } else {
            write!(f, "{} bytes, hash {:016x}", self.0.len(), hash(&self.0))
        }
    }
}

pub(crate) fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Val {
    Done,
    Data(Data),
    Len(usize),
    Stat(Stat),
    Names(Vec<String>),
    Target(String),
    Mtime(i64, i64),
}

/// An errno, shown by name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EIO => "EIO",
            libc::EBADF => "EBADF",
            libc::EACCES => "EACCES",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::EMLINK => "EMLINK",
            libc::ERANGE => "ERANGE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::ELOOP => "ELOOP",
            libc::ENODATA => "ENODATA",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::E2BIG => "E2BIG",
            -1 => "not an OS error",
            _ => return write!(f, "errno {}", self.0),
        };
        f.write_str(name)
    }
}

pub(crate) type Outcome = Result<Val, Errno>;

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A libc call's result: negative is errno.
pub(crate) fn sys(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn sys_len(r: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

pub(crate) fn run(root: &Path, fds: &mut Fds, op: &Op) -> Outcome {
    apply(root, fds, op).map_err(|e| Errno(e.raw_os_error().unwrap_or(-1)))
}

pub(crate) fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// close(2) with its result (dropping a `File` ignores it).
pub(crate) fn close(file: Option<fs::File>) -> io::Result<()> {
    let fd = file.ok_or_else(ebadf)?.into_raw_fd();
    // SAFETY: a descriptor this test owns, closed once.
    sys(unsafe { libc::close(fd) })
}

pub(crate) fn apply(root: &Path, fds: &mut Fds, op: &Op) -> io::Result<Val> {
    let at = |p: &str| root.join(p);
    if let Op::FdOpen { slot, path, mode } = op {
        let mut o = OpenOptions::new();
        match mode {
            FdMode::ReadOnly => o.read(true),
            FdMode::ReadWrite => o.read(true).write(true),
            FdMode::Append => o.append(true),
        };
        let file = o.open(at(path))?;
        if let Some(old) = fds[*slot].replace(file) {
            close(Some(old))?;
        }
        return Ok(Val::Done);
    }
    if let Op::Close { slot } = op {
        close(fds[*slot].take())?;
        return Ok(Val::Done);
    }
    match op {
        Op::FdOpen { .. } | Op::Close { .. } => {}
        Op::FdWrite { slot, offset, data } => fds[*slot]
            .as_ref()
            .ok_or_else(ebadf)?
            .write_all_at(&data.bytes(), *offset)?,
        Op::FdRead { slot } => {
            let f = fds[*slot].as_ref().ok_or_else(ebadf)?;
            let (mut out, mut buf) = (Vec::new(), vec![0u8; 1 << 20]);
            loop {
                let n = f.read_at(&mut buf, out.len() as u64)?;
                if n == 0 {
                    return Ok(Val::Data(Data(out)));
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        Op::FdTruncate { slot, len } => fds[*slot].as_ref().ok_or_else(ebadf)?.set_len(*len)?,
        Op::FdStat { slot } => {
            return Ok(Val::Stat(stat_of(&fds[*slot].as_ref().ok_or_else(ebadf)?.metadata()?)));
        }
        Op::FdSync { slot } => fds[*slot].as_ref().ok_or_else(ebadf)?.sync_all()?,
        Op::Create { path, mode, data, excl } => {
            let mut o = OpenOptions::new();
            o.write(true).mode(mode.0);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true).truncate(true);
            }
            o.open(at(path))?.write_all(&data.bytes())?;
        }
        Op::Append { path, data } => OpenOptions::new()
            .append(true)
            .open(at(path))?
            .write_all(&data.bytes())?,
        Op::Pwrite { path, offset, data } => OpenOptions::new()
            .write(true)
            .open(at(path))?
            .write_all_at(&data.bytes(), *offset)?,
        Op::Read { path } => return Ok(Val::Data(Data(fs::read(at(path))?))),
        Op::Truncate { path, len, by_fd: true } => OpenOptions::new().write(true).open(at(path))?.set_len(*len)?,
        Op::Truncate {
            path,
            len,
            by_fd: false,
        } => {
            let p = cpath(&at(path))?;
            let len = libc::off_t::try_from(*len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
            // SAFETY: a NUL-terminated path.
            sys(unsafe { libc::truncate(p.as_ptr(), len) })?;
        }
        Op::Mkdir { path, mode } => fs::DirBuilder::new().mode(mode.0).create(at(path))?,
        Op::Rmdir { path } => fs::remove_dir(at(path))?,
        Op::Unlink { path } => fs::remove_file(at(path))?,
        Op::Rename { from, to } => fs::rename(at(from), at(to))?,
        Op::Link { from, to } => fs::hard_link(at(from), at(to))?,
        Op::Symlink { target, path } => std::os::unix::fs::symlink(target, at(path))?,
        Op::Readlink { path } => {
            return Ok(Val::Target(fs::read_link(at(path))?.to_string_lossy().into_owned()));
        }
        Op::Chmod { path, mode } => fs::set_permissions(at(path), fs::Permissions::from_mode(mode.0))?,
        Op::SetMtime {
            path,
            secs,
            nsec,
            follow,
        } => {
            let p = cpath(&at(path))?;
            let times = [
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                libc::timespec {
                    tv_sec: *secs as libc::time_t,
                    tv_nsec: *nsec as libc::c_long,
                },
            ];
            let flags = if *follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
            // SAFETY: a NUL-terminated path and two timespecs.
            sys(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), flags) })?;
            let m = if *follow {
                fs::metadata(at(path))?
            } else {
                fs::symlink_metadata(at(path))?
            };
            return Ok(Val::Mtime(m.mtime(), m.mtime_nsec()));
        }
        Op::Stat { path, follow } => {
            let m = if *follow {
                fs::metadata(at(path))?
            } else {
                fs::symlink_metadata(at(path))?
            };
            return Ok(Val::Stat(stat_of(&m)));
        }
        Op::Readdir { path } => {
            let mut names = fs::read_dir(at(path))?
                .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<_>>>()?;
            names.sort();
            return Ok(Val::Names(names));
        }
        Op::Open { path, how } => {
            let mut o = OpenOptions::new();
            match how {
                OpenHow::ReadOnly => o.read(true),
                OpenHow::WriteOnly => o.write(true),
                OpenHow::Directory => o.read(true).custom_flags(libc::O_DIRECTORY),
                OpenHow::NoFollow => o.read(true).custom_flags(libc::O_NOFOLLOW),
                OpenHow::Exclusive => o.write(true).create_new(true),
            };
            o.open(at(path))?;
        }
        Op::SetXattr {
            path,
            name,
            value,
            flag,
        } => {
            let (p, n, v) = (cpath(&at(path))?, cstr(name)?, value.bytes());
            let flags = flag.bits();
            // SAFETY: NUL-terminated path and name, `v.len()` bytes at `v`.
            sys(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), flags) })?;
        }
        Op::GetXattr { path, name, size } => {
            let (p, n) = (cpath(&at(path))?, cstr(name)?);
            let mut buf = vec![0u8; *size];
            // SAFETY: NUL-terminated path and name, a buffer of `size` bytes.
            let len = sys_len(unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), *size) })?;
            if *size == 0 {
                return Ok(Val::Len(len));
            }
            buf.truncate(len);
            return Ok(Val::Data(Data(buf)));
        }
        Op::ListXattr { path } => {
            let p = cpath(&at(path))?;
            let mut buf = vec![0u8; 65536];
            // SAFETY: a NUL-terminated path and a buffer of `buf.len()` bytes.
            let len = sys_len(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
            // Only the user namespace: local disk may list security.* or
            // system.* names of its own.
            let mut names: Vec<String> = buf[..len]
                .split(|&b| b == 0)
                .filter(|n| n.starts_with(b"user."))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            names.sort();
            return Ok(Val::Names(names));
        }
        Op::RemoveXattr { path, name } => {
            let (p, n) = (cpath(&at(path))?, cstr(name)?);
            // SAFETY: NUL-terminated path and name.
            sys(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })?;
        }
    }
    Ok(Val::Done)
}
