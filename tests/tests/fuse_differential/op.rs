//! The operations the test runs: what each is, how it reads and prints
//! as a script line.

use super::*;

/// File contents or an xattr value: `len` pseudo-random bytes from `seed`,
/// written `len#seed` (seed in hex).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    pub(crate) len: usize,
    pub(crate) seed: u32,
}

impl Fill {
    pub(crate) fn bytes(self) -> Vec<u8> {
        // xorshift32: any nonzero state.
        let mut x = self.seed | 1;
        (0..self.len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    pub(crate) fn parse(s: &str) -> anyhow::Result<Fill> {
        let (len, seed) = s.split_once('#').with_context(|| format!("`{s}` is not LEN#SEED"))?;
        Ok(Fill {
            len: len.parse()?,
            seed: u32::from_str_radix(seed, 16)?,
        })
    }
}

impl fmt::Display for Fill {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}#{:x}", self.len, self.seed)
    }
}

impl fmt::Debug for Fill {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Permission bits, shown in octal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode(pub(crate) u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:o}", self.0)
    }
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "0o{:o}", self.0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OpenHow {
    ReadOnly,
    WriteOnly,
    Directory,
    NoFollow,
    Exclusive,
}

impl OpenHow {
    pub(crate) const ALL: [OpenHow; 5] = [
        OpenHow::ReadOnly,
        OpenHow::WriteOnly,
        OpenHow::Directory,
        OpenHow::NoFollow,
        OpenHow::Exclusive,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            OpenHow::ReadOnly => "rdonly",
            OpenHow::WriteOnly => "wronly",
            OpenHow::Directory => "dir",
            OpenHow::NoFollow => "nofollow",
            OpenHow::Exclusive => "excl",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum XattrFlag {
    Either,
    Create,
    Replace,
}

impl XattrFlag {
    pub(crate) const ALL: [XattrFlag; 3] = [XattrFlag::Either, XattrFlag::Create, XattrFlag::Replace];

    pub(crate) fn name(self) -> &'static str {
        match self {
            XattrFlag::Either => "0",
            XattrFlag::Create => "create",
            XattrFlag::Replace => "replace",
        }
    }

    pub(crate) fn bits(self) -> libc::c_int {
        match self {
            XattrFlag::Either => 0,
            XattrFlag::Create => libc::XATTR_CREATE,
            XattrFlag::Replace => libc::XATTR_REPLACE,
        }
    }
}

/// How `fdopen` opens an existing file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FdMode {
    ReadOnly,
    ReadWrite,
    Append,
}

impl FdMode {
    pub(crate) const ALL: [FdMode; 3] = [FdMode::ReadOnly, FdMode::ReadWrite, FdMode::Append];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FdMode::ReadOnly => "r",
            FdMode::ReadWrite => "rw",
            FdMode::Append => "append",
        }
    }
}

/// Descriptors kept open between operations, per tree.
pub(crate) const SLOTS: usize = 2;
pub(crate) type Fds = [Option<fs::File>; SLOTS];

/// One file-system call (two for `utimens`: it reads the mtime back). Paths
/// are relative to the tree's root; `.` is the root itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    /// open(O_WRONLY|O_CREAT|O_TRUNC, or O_CREAT|O_EXCL) and write.
    Create {
        path: String,
        mode: Mode,
        data: Fill,
        excl: bool,
    },
    Append {
        path: String,
        data: Fill,
    },
    /// pwrite at `offset` (past the end: a hole).
    Pwrite {
        path: String,
        offset: u64,
        data: Fill,
    },
    /// The whole file.
    Read {
        path: String,
    },
    /// truncate(2) on the path, or ftruncate(2) on a descriptor opened for writing.
    Truncate {
        path: String,
        len: u64,
        by_fd: bool,
    },
    Mkdir {
        path: String,
        mode: Mode,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Readlink {
        path: String,
    },
    Chmod {
        path: String,
        mode: Mode,
    },
    /// utimensat with atime omitted, then the mtime read back.
    SetMtime {
        path: String,
        secs: i64,
        nsec: i64,
        follow: bool,
    },
    Stat {
        path: String,
        follow: bool,
    },
    /// Sorted names.
    Readdir {
        path: String,
    },
    Open {
        path: String,
        how: OpenHow,
    },
    /// lsetxattr: a symlink's own xattrs.
    SetXattr {
        path: String,
        name: String,
        value: Fill,
        flag: XattrFlag,
    },
    /// lgetxattr into a buffer of `size` bytes (0: asks the length).
    GetXattr {
        path: String,
        name: String,
        size: usize,
    },
    ListXattr {
        path: String,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    /// Opens an existing file into descriptor slot `slot` (and then closes
    /// what was there): the `fd*` operations use it while paths change
    /// around it.
    FdOpen {
        slot: usize,
        path: String,
        mode: FdMode,
    },
    FdWrite {
        slot: usize,
        offset: u64,
        data: Fill,
    },
    /// The whole file, through the descriptor.
    FdRead {
        slot: usize,
    },
    FdTruncate {
        slot: usize,
        len: u64,
    },
    FdStat {
        slot: usize,
    },
    FdSync {
        slot: usize,
    },
    Close {
        slot: usize,
    },
}

impl Op {
    /// The script word: what the failure signature and the shrinker compare.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Op::Create { excl: false, .. } => "create",
            Op::Create { excl: true, .. } => "create-excl",
            Op::Append { .. } => "append",
            Op::Pwrite { .. } => "pwrite",
            Op::Read { .. } => "read",
            Op::Truncate { by_fd: false, .. } => "truncate",
            Op::Truncate { by_fd: true, .. } => "ftruncate",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Readlink { .. } => "readlink",
            Op::Chmod { .. } => "chmod",
            Op::SetMtime { follow: true, .. } => "utimens",
            Op::SetMtime { follow: false, .. } => "lutimens",
            Op::Stat { follow: true, .. } => "stat",
            Op::Stat { follow: false, .. } => "lstat",
            Op::Readdir { .. } => "readdir",
            Op::Open { .. } => "open",
            Op::SetXattr { .. } => "setxattr",
            Op::GetXattr { .. } => "getxattr",
            Op::ListXattr { .. } => "listxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::FdOpen { .. } => "fdopen",
            Op::FdWrite { .. } => "fdwrite",
            Op::FdRead { .. } => "fdread",
            Op::FdTruncate { .. } => "fdtruncate",
            Op::FdStat { .. } => "fdstat",
            Op::FdSync { .. } => "fsync",
            Op::Close { .. } => "close",
        }
    }

    pub(crate) fn is_xattr(&self) -> bool {
        matches!(
            self,
            Op::SetXattr { .. } | Op::GetXattr { .. } | Op::ListXattr { .. } | Op::RemoveXattr { .. }
        )
    }

    /// A copy with its data cut to `len` bytes, if it writes any.
    pub(crate) fn with_data_len(&self, len: usize) -> Option<Op> {
        let mut op = self.clone();
        let data = match &mut op {
            Op::Create { data, .. } | Op::Append { data, .. } | Op::Pwrite { data, .. } | Op::FdWrite { data, .. } => {
                data
            }
            Op::SetXattr { value, .. } => value,
            _ => return None,
        };
        if data.len <= len {
            return None;
        }
        data.len = len;
        Some(op)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let w = self.word();
        match self {
            Op::Create { path, mode, data, .. } => write!(f, "{w} {path} {mode} {data}"),
            Op::Append { path, data } => write!(f, "{w} {path} {data}"),
            Op::Pwrite { path, offset, data } => write!(f, "{w} {path} {offset} {data}"),
            Op::Truncate { path, len, .. } => write!(f, "{w} {path} {len}"),
            Op::Mkdir { path, mode } | Op::Chmod { path, mode } => write!(f, "{w} {path} {mode}"),
            Op::Read { path }
            | Op::Rmdir { path }
            | Op::Unlink { path }
            | Op::Readlink { path }
            | Op::Stat { path, .. }
            | Op::Readdir { path }
            | Op::ListXattr { path } => write!(f, "{w} {path}"),
            Op::Rename { from, to } | Op::Link { from, to } => write!(f, "{w} {from} {to}"),
            Op::Symlink { target, path } => write!(f, "{w} {target} {path}"),
            Op::SetMtime { path, secs, nsec, .. } => write!(f, "{w} {path} {secs} {nsec}"),
            Op::Open { path, how } => write!(f, "{w} {path} {}", how.name()),
            Op::SetXattr {
                path,
                name,
                value,
                flag,
            } => write!(f, "{w} {path} {name} {value} {}", flag.name()),
            Op::GetXattr { path, name, size } => write!(f, "{w} {path} {name} {size}"),
            Op::RemoveXattr { path, name } => write!(f, "{w} {path} {name}"),
            Op::FdOpen { slot, path, mode } => write!(f, "{w} {slot} {path} {}", mode.name()),
            Op::FdWrite { slot, offset, data } => write!(f, "{w} {slot} {offset} {data}"),
            Op::FdTruncate { slot, len } => write!(f, "{w} {slot} {len}"),
            Op::FdRead { slot } | Op::FdStat { slot } | Op::FdSync { slot } | Op::Close { slot } => {
                write!(f, "{w} {slot}")
            }
        }
    }
}

/// One operation from its script line (what `Display` writes).
pub(crate) fn parse_op(line: &str) -> anyhow::Result<Op> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| -> anyhow::Result<String> {
        w.get(i)
            .map(|s| s.to_string())
            .with_context(|| format!("`{line}`: argument {i} missing"))
    };
    let mode = |i: usize| -> anyhow::Result<Mode> { Ok(Mode(u32::from_str_radix(&arg(i)?, 8)?)) };
    let fill = |i: usize| -> anyhow::Result<Fill> { Fill::parse(&arg(i)?) };
    let path = arg(1)?;
    let op = match w[0] {
        "create" | "create-excl" => Op::Create {
            path,
            mode: mode(2)?,
            data: fill(3)?,
            excl: w[0] == "create-excl",
        },
        "append" => Op::Append { path, data: fill(2)? },
        "pwrite" => Op::Pwrite {
            path,
            offset: arg(2)?.parse()?,
            data: fill(3)?,
        },
        "read" => Op::Read { path },
        "truncate" | "ftruncate" => Op::Truncate {
            path,
            len: arg(2)?.parse()?,
            by_fd: w[0] == "ftruncate",
        },
        "mkdir" => Op::Mkdir { path, mode: mode(2)? },
        "rmdir" => Op::Rmdir { path },
        "unlink" => Op::Unlink { path },
        "rename" => Op::Rename {
            from: path,
            to: arg(2)?,
        },
        "link" => Op::Link {
            from: path,
            to: arg(2)?,
        },
        "symlink" => Op::Symlink {
            target: path,
            path: arg(2)?,
        },
        "readlink" => Op::Readlink { path },
        "chmod" => Op::Chmod { path, mode: mode(2)? },
        "utimens" | "lutimens" => Op::SetMtime {
            path,
            secs: arg(2)?.parse()?,
            nsec: arg(3)?.parse()?,
            follow: w[0] == "utimens",
        },
        "stat" | "lstat" => Op::Stat {
            path,
            follow: w[0] == "stat",
        },
        "readdir" => Op::Readdir { path },
        "open" => {
            let how = arg(2)?;
            let how = OpenHow::ALL
                .iter()
                .find(|h| h.name() == how)
                .with_context(|| format!("`{line}`: no open mode `{how}`"))?;
            Op::Open { path, how: *how }
        }
        "setxattr" => {
            let flag = arg(4)?;
            let flag = XattrFlag::ALL
                .iter()
                .find(|f| f.name() == flag)
                .with_context(|| format!("`{line}`: no xattr flag `{flag}`"))?;
            Op::SetXattr {
                path,
                name: arg(2)?,
                value: fill(3)?,
                flag: *flag,
            }
        }
        "getxattr" => Op::GetXattr {
            path,
            name: arg(2)?,
            size: arg(3)?.parse()?,
        },
        "listxattr" => Op::ListXattr { path },
        "removexattr" => Op::RemoveXattr { path, name: arg(2)? },
        "fdopen" | "fdwrite" | "fdread" | "fdtruncate" | "fdstat" | "fsync" | "close" => {
            let slot: usize = path.parse()?;
            ensure!(slot < SLOTS, "`{line}`: slots are 0 to {}", SLOTS - 1);
            match w[0] {
                "fdopen" => {
                    let mode = arg(3)?;
                    let mode = FdMode::ALL
                        .iter()
                        .find(|m| m.name() == mode)
                        .with_context(|| format!("`{line}`: no fdopen mode `{mode}`"))?;
                    Op::FdOpen {
                        slot,
                        path: arg(2)?,
                        mode: *mode,
                    }
                }
                "fdwrite" => Op::FdWrite {
                    slot,
                    offset: arg(2)?.parse()?,
                    data: fill(3)?,
                },
                "fdread" => Op::FdRead { slot },
                "fdtruncate" => Op::FdTruncate {
                    slot,
                    len: arg(2)?.parse()?,
                },
                "fdstat" => Op::FdStat { slot },
                "fsync" => Op::FdSync { slot },
                _ => Op::Close { slot },
            }
        }
        other => bail!("`{line}`: no operation `{other}`"),
    };
    // Round trip: catches extra words and odd spellings.
    ensure!(op.to_string() == w.join(" "), "`{line}` reads as `{op}`");
    Ok(op)
}

pub(crate) fn parse_script(script: &str) -> anyhow::Result<Vec<Op>> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(parse_op)
        .collect()
}
