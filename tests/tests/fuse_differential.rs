//! A seeded random differential test of the FUSE mount: one sequence of
//! file-system operations is applied both to the mount and to a directory on
//! local disk, and every result (the value, or the errno) must match; at the
//! end both trees must hold the same names, kinds, sizes, modes, mtimes set
//! by hand, contents, link counts and symlink targets.
//!
//! `NIMBUS_DIFF_SEED` picks the sequence (default `DEFAULT_SEED`),
//! `NIMBUS_DIFF_OPS` its length (default `DEFAULT_OPS`). On a mismatch the
//! test replays shorter and shorter sequences on emptied trees for up to
//! `NIMBUS_DIFF_SHRINK_SECS` seconds (default `DEFAULT_SHRINK_SECS`, 0 turns
//! it off) and prints the shortest one that still fails the same way, as a
//! script in the form `SCRIPTS` takes: one operation a line, `parse_op` reads
//! it back. Sequences found that way go into `SCRIPTS`, which a second test
//! runs.
//!
//! Paths come from a small pool (`a`, `b` as directories, `c`, `d` last, in
//! up to three levels, and paths made recently), so operations collide
//! often: ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY and EINVAL come up all
//! the time. Two descriptor slots stay open across operations. Tests run as
//! root, so permission errors are rare.

use anyhow::{bail, ensure, Context};
use nimbus_tests::mount::Mounted;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::CString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 20_240_611;
const DEFAULT_OPS: u64 = 1500;
const DEFAULT_SHRINK_SECS: u64 = 60;
/// How many operations before a mismatch its report shows.
const RECENT: usize = 20;
const MIB: u64 = 1 << 20;
/// The mount holds files in 4 MiB slots: writes and cuts near this offset
/// cross a slot boundary.
const SLOT: u64 = 4 * MIB;

/// Sequences run on emptied trees by `scripted_sequences_match_a_local_directory`:
/// edge cases named one by one, and what the random test found. (Name,
/// script: one operation a line, as `Op`'s `Display` writes it.)
const SCRIPTS: &[(&str, &str)] = &[
    (
        "rename, rmdir, mkdir, link, open, truncate, mode, time and xattr errors",
        "mkdir a 755
         mkdir a/b 755
         create a/b/c 644 10#1
         create b 644 5#2
         mkdir c 755
         // file onto directory, directory onto file
         rename b c
         rename c b
         // into its own subtree; onto its non-empty ancestor
         rename a a/b/c
         rename a a/b
         rename a/b a
         rename missing c
         // directory over an empty one, then over a non-empty one
         rename a c
         mkdir a 755
         mkdir a/x 755
         rename c a
         mkdir c 755
         rename c a/x
         rmdir a
         rmdir a/x
         mkdir a/b/c 755
         mkdir a 755
         link b c/b
         stat b
         link a c/x
         link missing c/y
         link b c/b
         // rename between two names of one file: nothing happens
         rename b c/b
         lstat b
         open missing rdonly
         open b excl
         create-excl b 644 1#1
         open a wronly
         open b dir
         symlink b s
         open s nofollow
         readlink s
         readlink b
         create s 600 3#3
         read b
         stat s
         lstat s
         symlink s2 s2
         stat s2
         open s2 rdonly
         symlink nowhere dangling
         create-excl dangling 644 1#1
         create dangling 644 1#1
         read nowhere
         unlink a
         rmdir b
         truncate a 10
         truncate b 100000
         read c/b
         ftruncate b 3
         read b
         pwrite b 4194300 9#4
         read b
         truncate b 4194302
         read b
         chmod b 4755
         lstat b
         chmod a 1777
         lstat a
         chmod c/b 0
         read c/b
         utimens b 1000000000 123456789
         lutimens s 1577934245 5
         utimens b -31536000 0
         utimens a 4102444800 0
         lstat a
         create a/new 644 0#1
         lstat a
         readdir .
         readdir a
         readdir b
         readdir missing
         setxattr b user.x 5#5 create
         setxattr b user.x 5#6 create
         setxattr b user.y 0#1 replace
         getxattr b user.x 0
         getxattr b user.x 1
         getxattr b user.x 65536
         getxattr b user.y 65536
         getxattr c/b user.x 65536
         listxattr b
         removexattr b user.x
         removexattr b user.x
         setxattr a user.d 3#7 0
         listxattr a
         setxattr s user.s 3#8 0
         listxattr s",
    ),
    (
        "descriptors kept open while their names change",
        "create f 644 100#1
         fdopen 0 f rw
         fdopen 1 f append
         fdwrite 0 50 20#2
         fdwrite 1 0 7#3
         read f
         rename f g
         fdwrite 0 200 5#4
         read g
         truncate g 30
         fdread 0
         fdstat 1
         create h 644 9#5
         rename h g
         fdread 0
         read g
         unlink g
         fdwrite 0 0 3#6
         fdread 0
         fdtruncate 0 2
         fdstat 0
         fsync 0
         readdir .
         close 0
         close 0
         fdopen 1 missing r
         fdread 1
         fdopen 0 . r
         fdread 0
         fdwrite 0 0 1#1
         readdir .",
    ),
    (
        // Found by the random test (seed 102), fixed: writes through an open
        // descriptor must move mtime at once (the mount shows the time of
        // its last buffered write), not only when the file is closed.
        "mtime of a file written through a descriptor still open",
        "create f 644 10#1
         utimens f 1577934245 0
         fdopen 0 f rw
         fdwrite 0 100 10#2
         fdstat 0
         stat f",
    ),
    (
        // Found by the random test (the first seed), fixed in the mount
        // (convert::setattr_nanos): fuser 0.18 turns a setattr time before
        // 1970 with nanoseconds into -(secs + nsec) instead of secs + nsec:
        // the mount answers -31536000.000000005 for -31535999.999999995.
        "utimens before 1970 with nanoseconds",
        "create f 644 0#1
         utimens f -31536000 5",
    ),
];

/// Sequences too long to write out: names of 255 and 256 bytes, symlink
/// targets of 4095 and 4096, a directory of 300 names (readdir in pages).
fn generated_scripts() -> Vec<(&'static str, Vec<Op>)> {
    let long = |n: usize| "n".repeat(n);
    let create = |path: String| Op::Create {
        path,
        mode: Mode(0o644),
        data: Fill { len: 3, seed: 1 },
        excl: false,
    };
    let names = vec![
        create(long(255)),
        Op::Stat {
            path: long(255),
            follow: false,
        },
        create(long(256)),
        Op::Mkdir {
            path: long(256),
            mode: Mode(0o755),
        },
        Op::Rename {
            from: long(255),
            to: long(256),
        },
        Op::Symlink {
            target: long(4095),
            path: "l4095".to_owned(),
        },
        Op::Readlink {
            path: "l4095".to_owned(),
        },
        Op::Symlink {
            target: long(4096),
            path: "l4096".to_owned(),
        },
        Op::SetXattr {
            path: long(255),
            name: format!("user.{}", long(250)),
            value: Fill { len: 3, seed: 2 },
            flag: XattrFlag::Either,
        },
        Op::SetXattr {
            path: long(255),
            name: format!("user.{}", long(251)),
            value: Fill { len: 3, seed: 2 },
            flag: XattrFlag::Either,
        },
        Op::ListXattr { path: long(255) },
        Op::Readdir { path: ".".to_owned() },
    ];
    let mut many = vec![Op::Mkdir {
        path: "d".to_owned(),
        mode: Mode(0o755),
    }];
    many.extend((0..300).map(|i| create(format!("d/{i:03}-{}", long(i % 40)))));
    many.push(Op::Readdir { path: "d".to_owned() });
    many.extend((0..300).step_by(3).map(|i| Op::Unlink {
        path: format!("d/{i:03}-{}", long(i % 40)),
    }));
    many.extend((1..300).step_by(7).map(|i| Op::Rename {
        from: format!("d/{i:03}-{}", long(i % 40)),
        to: format!("d/r{i}"),
    }));
    many.push(Op::Readdir { path: "d".to_owned() });
    many.push(Op::Rename {
        from: "d".to_owned(),
        to: "e".to_owned(),
    });
    many.push(Op::Readdir { path: "e".to_owned() });
    vec![
        ("names and symlink targets at the length limits", names),
        ("a directory of 300 names", many),
    ]
}

/// Cluster tests of this file run one at a time (two clusters on two cores
/// measure nothing but contention).
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The same random operations on the mount and on local disk give the same
/// results, and leave the same trees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_a_local_directory() -> anyhow::Result<()> {
    let _one = ONE_CLUSTER.lock().await;
    let seed = env_number("NIMBUS_DIFF_SEED")?.unwrap_or(DEFAULT_SEED);
    let count = env_number("NIMBUS_DIFF_OPS")?.unwrap_or(DEFAULT_OPS);
    let shrink = Duration::from_secs(env_number("NIMBUS_DIFF_SHRINK_SECS")?.unwrap_or(DEFAULT_SHRINK_SECS));
    println!("fuse_differential: seed {seed}, {count} ops (NIMBUS_DIFF_SEED={seed} NIMBUS_DIFF_OPS={count})");

    let mut m = Mounted::start().await?;
    let pair = Pair::new(m.mnt.clone(), m.scratch.path().join("local"))?;
    let ops = generate(seed, count, pair.xattrs);
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
        let started = Instant::now();
        let replayed = pair.replay(&ops)?;
        println!(
            "fuse_differential: seed {seed}, {count} ops in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let Some(failure) = replayed else {
            return Ok(None);
        };
        let mut report = format!("seed {seed}: {failure}");
        println!("fuse_differential: {report}");
        if !shrink.is_zero() {
            let (script, last) = pair.shrink(&ops, &failure, shrink)?;
            report += &format!(
                "\n\nshortest sequence found that fails the same way ({} ops on empty trees):\n{}\n\nit ends in: {last}",
                script.len(),
                script.iter().map(|op| format!("    {op}")).collect::<Vec<_>>().join("\n"),
            );
        }
        Ok(Some(report))
    })
    .await??;
    m.stop()?;
    match found {
        None => Ok(()),
        Some(report) => bail!("the mount and local disk differ\n{report}"),
    }
}

/// Each script of `SCRIPTS` on emptied trees: same results, same trees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_sequences_match_a_local_directory() -> anyhow::Result<()> {
    let _one = ONE_CLUSTER.lock().await;
    let mut scripts = SCRIPTS
        .iter()
        .map(|(name, script)| Ok((*name, parse_script(script)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    scripts.extend(generated_scripts());
    let mut m = Mounted::start().await?;
    let pair = Pair::new(m.mnt.clone(), m.scratch.path().join("local"))?;
    let failures = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut failures = Vec::new();
        for (name, ops) in scripts {
            if let Some(failure) = pair.replay(&ops)? {
                failures.push(format!("script `{name}`: {failure}"));
            }
        }
        Ok(failures)
    })
    .await??;
    m.stop()?;
    ensure!(
        failures.is_empty(),
        "the mount and local disk differ:\n\n{}",
        failures.join("\n\n")
    );
    Ok(())
}

fn env_number(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(
            v.trim()
                .parse()
                .with_context(|| format!("{name}={v} is not a number"))?,
        )),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(e).context(name.to_owned()),
    }
}

// ---- operations ------------------------------------------------------------

/// File contents or an xattr value: `len` pseudo-random bytes from `seed`,
/// written `len#seed` (seed in hex).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fill {
    len: usize,
    seed: u32,
}

impl Fill {
    fn bytes(self) -> Vec<u8> {
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

    fn parse(s: &str) -> anyhow::Result<Fill> {
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
struct Mode(u32);

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
enum OpenHow {
    ReadOnly,
    WriteOnly,
    Directory,
    NoFollow,
    Exclusive,
}

impl OpenHow {
    const ALL: [OpenHow; 5] = [
        OpenHow::ReadOnly,
        OpenHow::WriteOnly,
        OpenHow::Directory,
        OpenHow::NoFollow,
        OpenHow::Exclusive,
    ];

    fn name(self) -> &'static str {
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
enum XattrFlag {
    Either,
    Create,
    Replace,
}

impl XattrFlag {
    const ALL: [XattrFlag; 3] = [XattrFlag::Either, XattrFlag::Create, XattrFlag::Replace];

    fn name(self) -> &'static str {
        match self {
            XattrFlag::Either => "0",
            XattrFlag::Create => "create",
            XattrFlag::Replace => "replace",
        }
    }

    fn bits(self) -> libc::c_int {
        match self {
            XattrFlag::Either => 0,
            XattrFlag::Create => libc::XATTR_CREATE,
            XattrFlag::Replace => libc::XATTR_REPLACE,
        }
    }
}

/// How `fdopen` opens an existing file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FdMode {
    ReadOnly,
    ReadWrite,
    Append,
}

impl FdMode {
    const ALL: [FdMode; 3] = [FdMode::ReadOnly, FdMode::ReadWrite, FdMode::Append];

    fn name(self) -> &'static str {
        match self {
            FdMode::ReadOnly => "r",
            FdMode::ReadWrite => "rw",
            FdMode::Append => "append",
        }
    }
}

/// Descriptors kept open between operations, per tree.
const SLOTS: usize = 2;
type Fds = [Option<fs::File>; SLOTS];

/// One file-system call (two for `utimens`: it reads the mtime back). Paths
/// are relative to the tree's root; `.` is the root itself.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Op {
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
    fn word(&self) -> &'static str {
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

    fn is_xattr(&self) -> bool {
        matches!(
            self,
            Op::SetXattr { .. } | Op::GetXattr { .. } | Op::ListXattr { .. } | Op::RemoveXattr { .. }
        )
    }

    /// A copy with its data cut to `len` bytes, if it writes any.
    fn with_data_len(&self, len: usize) -> Option<Op> {
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
fn parse_op(line: &str) -> anyhow::Result<Op> {
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

fn parse_script(script: &str) -> anyhow::Result<Vec<Op>> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(parse_op)
        .collect()
}

// ---- random sequences -------------------------------------------------------

/// Directory names (any component), and names only ever last in a path:
/// the pool stays small enough for collisions, and leaves room for files.
const DIR_NAMES: [&str; 2] = ["a", "b"];
const LEAF_NAMES: [&str; 2] = ["c", "d"];
const XATTR_NAMES: [&str; 3] = ["user.a", "user.b", "user.colour"];
/// The longest xattr value: ext4 keeps all of a file's xattrs in one 4 KiB
/// block (ENOSPC past it), and the mount has no such limit, so the three
/// names together must fit.
const XATTR_MAX: usize = 1000;
const CREATE_MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o640, 0o444, 0o000];
const MKDIR_MODES: [u32; 4] = [0o755, 0o700, 0o777, 0o750];
const CHMOD_MODES: [u32; 12] = [
    0o644, 0o600, 0o755, 0o700, 0o777, 0o444, 0o000, 0o4755, 0o2755, 0o1777, 0o6711, 0o7777,
];
/// Before 1970, the epoch, 2001, 2020, 2038 on both sides of i32, 2100.
const MTIMES: [i64; 7] = [
    -31_536_000,
    0,
    1_000_000_000,
    1_577_934_245,
    2_147_483_647,
    2_147_483_653,
    4_102_444_800,
];

/// Which operation, and how often (out of the sum).
#[derive(Clone, Copy)]
enum Pick {
    Create,
    Append,
    Pwrite,
    Read,
    Truncate,
    Mkdir,
    Rmdir,
    Unlink,
    Rename,
    Link,
    Symlink,
    Readlink,
    Chmod,
    SetMtime,
    Stat,
    Readdir,
    Open,
    SetXattr,
    GetXattr,
    ListXattr,
    RemoveXattr,
    FdOpen,
    FdWrite,
    FdRead,
    FdTruncate,
    FdStat,
    FdSync,
    Close,
}

const WEIGHTS: [(Pick, u32); 28] = [
    (Pick::Create, 12),
    (Pick::Append, 5),
    (Pick::Pwrite, 7),
    (Pick::Read, 7),
    (Pick::Truncate, 5),
    (Pick::Mkdir, 6),
    (Pick::Rmdir, 5),
    (Pick::Unlink, 7),
    (Pick::Rename, 10),
    (Pick::Link, 5),
    (Pick::Symlink, 4),
    (Pick::Readlink, 2),
    (Pick::Chmod, 4),
    (Pick::SetMtime, 3),
    (Pick::Stat, 7),
    (Pick::Readdir, 4),
    (Pick::Open, 4),
    (Pick::SetXattr, 4),
    (Pick::GetXattr, 3),
    (Pick::ListXattr, 2),
    (Pick::RemoveXattr, 2),
    (Pick::FdOpen, 7),
    (Pick::FdWrite, 5),
    (Pick::FdRead, 4),
    (Pick::FdTruncate, 2),
    (Pick::FdStat, 2),
    (Pick::FdSync, 1),
    (Pick::Close, 1),
];

struct Gen {
    rng: StdRng,
    xattrs: bool,
    /// Paths recent operations created (or tried to): picked often, so that
    /// more operations find something there.
    made: VecDeque<String>,
    /// The same for symlinks.
    links: VecDeque<String>,
}

impl Gen {
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.random_range(0..from.len())]
    }

    /// A recently made path (see `made`) or a pool path.
    fn path(&mut self) -> String {
        if !self.made.is_empty() && self.rng.random_bool(0.4) {
            return self.made[self.rng.random_range(0..self.made.len())].clone();
        }
        self.pool_path()
    }

    fn remember(list: &mut VecDeque<String>, path: &str) {
        if list.len() == 8 {
            list.pop_front();
        }
        list.push_back(path.to_owned());
    }

    /// `a`, `b/c`, `a/b/d` ...: mostly short, so that parents often exist.
    fn pool_path(&mut self) -> String {
        let depth = match self.rng.random_range(0..10) {
            0..=3 => 1,
            4..=7 => 2,
            _ => 3,
        };
        let mut parts: Vec<&str> = (1..depth).map(|_| self.pick(&DIR_NAMES)).collect();
        let last = if self.rng.random_bool(0.5) {
            self.pick(&DIR_NAMES)
        } else {
            self.pick(&LEAF_NAMES)
        };
        parts.push(last);
        parts.join("/")
    }

    fn fill(&mut self, max: usize) -> Fill {
        let len = match self.rng.random_range(0..10) {
            0 => 0,
            1..=3 => self.rng.random_range(1..100),
            4..=8 => self.rng.random_range(100..10_000),
            _ => self.rng.random_range(10_000..300_000),
        };
        Fill {
            len: len.min(max),
            seed: self.rng.random(),
        }
    }

    /// Offsets and lengths: mostly small, some across the first slot
    /// boundary, a few further out.
    fn offset(&mut self) -> u64 {
        match self.rng.random_range(0..20) {
            0..=9 => self.rng.random_range(0..16_384),
            10..=16 => self.rng.random_range(0..512 * 1024),
            17..=18 => self.rng.random_range(SLOT - 8192..SLOT + 8192),
            _ => self.rng.random_range(0..6 * MIB),
        }
    }

    /// A rename or link target: mostly any path, sometimes inside the source
    /// (EINVAL for directories), its parent, or the source itself.
    fn target(&mut self, from: &str) -> String {
        match self.rng.random_range(0..20) {
            0..=1 => format!("{from}/{}", self.pick(&LEAF_NAMES)),
            2 => from
                .rsplit_once('/')
                .map_or_else(|| self.path(), |(parent, _)| parent.to_owned()),
            3 => from.to_owned(),
            _ => self.path(),
        }
    }

    fn slot(&mut self) -> usize {
        self.rng.random_range(0..SLOTS)
    }

    fn op(&mut self) -> Op {
        let op = self.new_op();
        match &op {
            Op::Create { path, .. } | Op::Mkdir { path, .. } | Op::Symlink { path, .. } => {
                Self::remember(&mut self.made, path)
            }
            Op::Rename { to, .. } | Op::Link { to, .. } => Self::remember(&mut self.made, to),
            _ => {}
        }
        op
    }

    fn new_op(&mut self) -> Op {
        let total: u32 = WEIGHTS.iter().map(|w| w.1).sum();
        let mut r = self.rng.random_range(0..total);
        let mut pick = Pick::Stat;
        for (p, w) in WEIGHTS {
            if r < w {
                pick = p;
                break;
            }
            r -= w;
        }
        let path = self.path();
        match pick {
            Pick::Create => Op::Create {
                path,
                mode: Mode(self.pick(&CREATE_MODES)),
                data: self.fill(usize::MAX),
                excl: self.rng.random_bool(0.2),
            },
            Pick::Append => Op::Append {
                path,
                data: self.fill(usize::MAX),
            },
            Pick::Pwrite => Op::Pwrite {
                offset: self.offset(),
                data: self.fill(usize::MAX),
                path,
            },
            Pick::Read => Op::Read { path },
            Pick::Truncate => Op::Truncate {
                path,
                len: self.offset(),
                by_fd: self.rng.random_bool(0.5),
            },
            Pick::Mkdir => Op::Mkdir {
                path,
                mode: Mode(self.pick(&MKDIR_MODES)),
            },
            Pick::Rmdir => Op::Rmdir { path },
            Pick::Unlink => Op::Unlink { path },
            Pick::Rename => Op::Rename {
                to: self.target(&path),
                from: path,
            },
            Pick::Link => Op::Link {
                to: self.target(&path),
                from: path,
            },
            Pick::Symlink => {
                // Relative targets that stay inside the tree: a pool path
                // (from the link's directory), a missing name, or the link
                // itself (ELOOP).
                let target = match self.rng.random_range(0..10) {
                    0 => "nowhere".to_owned(),
                    1 => path.rsplit('/').next().unwrap_or(&path).to_owned(),
                    _ => self.pool_path(),
                };
                Self::remember(&mut self.links, &path);
                Op::Symlink { target, path }
            }
            Pick::Readlink => match self.links.len() {
                0 => Op::Readlink { path },
                n => Op::Readlink {
                    path: self.links[self.rng.random_range(0..n)].clone(),
                },
            },
            Pick::Chmod => Op::Chmod {
                path,
                mode: Mode(self.pick(&CHMOD_MODES)),
            },
            Pick::SetMtime => Op::SetMtime {
                path,
                secs: self.pick(&MTIMES),
                nsec: match self.rng.random_range(0..4) {
                    0 => 0,
                    1 => 999_999_999,
                    _ => self.rng.random_range(0..1_000_000_000),
                },
                follow: self.rng.random_bool(0.7),
            },
            Pick::Stat => Op::Stat {
                path,
                follow: self.rng.random_bool(0.5),
            },
            Pick::Readdir => Op::Readdir {
                path: if self.rng.random_bool(0.2) {
                    ".".to_owned()
                } else {
                    path
                },
            },
            Pick::Open => Op::Open {
                path,
                how: self.pick(&OpenHow::ALL),
            },
            Pick::SetXattr => Op::SetXattr {
                path,
                name: self.pick(&XATTR_NAMES).to_owned(),
                value: self.fill(XATTR_MAX),
                flag: self.pick(&XattrFlag::ALL),
            },
            Pick::GetXattr => Op::GetXattr {
                path,
                name: self.pick(&XATTR_NAMES).to_owned(),
                size: self.pick(&[0, 1, 65536]),
            },
            Pick::ListXattr => Op::ListXattr { path },
            Pick::RemoveXattr => Op::RemoveXattr {
                path,
                name: self.pick(&XATTR_NAMES).to_owned(),
            },
            Pick::FdOpen => Op::FdOpen {
                slot: self.slot(),
                path,
                mode: self.pick(&FdMode::ALL),
            },
            Pick::FdWrite => Op::FdWrite {
                slot: self.slot(),
                offset: self.offset(),
                data: self.fill(usize::MAX),
            },
            Pick::FdRead => Op::FdRead { slot: self.slot() },
            Pick::FdTruncate => Op::FdTruncate {
                slot: self.slot(),
                len: self.offset(),
            },
            Pick::FdStat => Op::FdStat { slot: self.slot() },
            Pick::FdSync => Op::FdSync { slot: self.slot() },
            Pick::Close => Op::Close { slot: self.slot() },
        }
    }
}

/// `count` operations from `seed` (without xattr ones if local disk cannot
/// keep them).
fn generate(seed: u64, count: u64, xattrs: bool) -> Vec<Op> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        xattrs,
        made: VecDeque::new(),
        links: VecDeque::new(),
    };
    let mut ops = Vec::new();
    while ops.len() < count as usize {
        let op = g.op();
        if g.xattrs || !op.is_xattr() {
            ops.push(op);
        }
    }
    ops
}

// ---- running an operation ----------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

fn kind(t: fs::FileType) -> Kind {
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
struct Stat {
    kind: Kind,
    size: Option<u64>,
    perm: Mode,
    nlink: u64,
    mtime: Mtime,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mtime {
    /// Within `RECENT_SECS` of now.
    Recent,
    At(i64, i64),
}

/// Far more than a test run, far less than the distance from now to any of
/// `MTIMES`.
const RECENT_SECS: i64 = 6 * 3600;

fn stat_of(m: &fs::Metadata) -> Stat {
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
struct Data(Vec<u8>);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.len() <= 16 {
            write!(f, "{:?}", self.0)
        } else {
            write!(f, "{} bytes, hash {:016x}", self.0.len(), hash(&self.0))
        }
    }
}

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Val {
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
struct Errno(i32);

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

type Outcome = Result<Val, Errno>;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A libc call's result: negative is errno.
fn sys(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sys_len(r: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

fn run(root: &Path, fds: &mut Fds, op: &Op) -> Outcome {
    apply(root, fds, op).map_err(|e| Errno(e.raw_os_error().unwrap_or(-1)))
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// close(2) with its result (dropping a `File` ignores it).
fn close(file: Option<fs::File>) -> io::Result<()> {
    let fd = file.ok_or_else(ebadf)?.into_raw_fd();
    // SAFETY: a descriptor this test owns, closed once.
    sys(unsafe { libc::close(fd) })
}

fn apply(root: &Path, fds: &mut Fds, op: &Op) -> io::Result<Val> {
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
            let mut st = stat_of(&fds[*slot].as_ref().ok_or_else(ebadf)?.metadata()?);
            // Where the mount keeps a file removed while open under a hidden
            // name (see HIDDEN), it has one link, not none: not compared.
            st.nlink = 0;
            return Ok(Val::Stat(st));
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
                .filter(|n| !n.as_ref().is_ok_and(|n: &String| n.starts_with(HIDDEN)))
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

// ---- whole trees -------------------------------------------------------------

/// Mounts up to commit e261e2e keep a file removed (unlinked, or renamed
/// over) while open under a hidden name in its directory until its last
/// close, as NFS clients do ("silly rename", fuse-client/src/mount/open.rs),
/// so that the cluster does not delete the inode under the open descriptors.
/// That is by design, and these names are left out of every comparison; a
/// directory holding nothing else is not empty to rmdir and rename on such a
/// mount, which `Pair::replay` allows for. (Removing the hidden name at the
/// close also moves the directory's mtime, which is not allowed for: rare,
/// but it can fail a seed on those builds.) Mounts whose cluster keeps open
/// files itself (`keep_for_session`) show none of this.
const HIDDEN: &str = ".nimbus-removed-";

#[derive(PartialEq, Eq, Debug)]
enum Node {
    File {
        perm: Mode,
        nlink: u64,
        size: u64,
        hash: u64,
    },
    Dir {
        perm: Mode,
        nlink: u64,
    },
    Symlink {
        target: String,
    },
    Other,
}

/// Every name under `root` (relative paths) and what it is.
fn tree(root: &Path) -> io::Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(root.join(&dir))? {
            let name = e?.file_name();
            if name.as_bytes().starts_with(HIDDEN.as_bytes()) {
                continue;
            }
            let rel = dir.join(name);
            let path = root.join(&rel);
            let m = fs::symlink_metadata(&path)?;
            let perm = Mode(m.mode() & 0o7777);
            let node = match kind(m.file_type()) {
                Kind::File => Node::File {
                    perm,
                    nlink: m.nlink(),
                    size: m.len(),
                    hash: hash(&fs::read(&path)?),
                },
                Kind::Dir => {
                    dirs.push(rel.clone());
                    Node::Dir { perm, nlink: m.nlink() }
                }
                Kind::Symlink => Node::Symlink {
                    target: fs::read_link(&path)?.to_string_lossy().into_owned(),
                },
                Kind::Other => Node::Other,
            };
            out.insert(rel.to_string_lossy().into_owned(), node);
        }
    }
    Ok(out)
}

/// How the trees under `mnt` and `local` differ, one line each.
fn compare_trees(mnt: &Path, local: &Path) -> io::Result<Vec<String>> {
    let (got, want) = (tree(mnt)?, tree(local)?);
    let mut diffs = Vec::new();
    for (name, w) in &want {
        match got.get(name) {
            None => diffs.push(format!("{name}: missing from the mount (local: {w:?})")),
            Some(g) if g != w => diffs.push(format!("{name}: mount {g:?}, local {w:?}")),
            Some(_) => {}
        }
    }
    for (name, g) in &got {
        if !want.contains_key(name) {
            diffs.push(format!("{name}: only on the mount ({g:?})"));
        }
    }
    Ok(diffs)
}

/// Removes everything under `root` (as root: modes do not stop it). Tries
/// again for a while: the mount removes the hidden names of files closed
/// just before in the background, and can race with this.
fn empty(root: &Path) -> io::Result<()> {
    let once = || -> io::Result<()> {
        for e in fs::read_dir(root)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                fs::remove_dir_all(e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
        Ok(())
    };
    let mut tries = 0;
    loop {
        match once() {
            Err(e) if tries < 50 => {
                tries += 1;
                if tries == 1 {
                    println!("fuse_differential: emptying {}: {e}; trying again", root.display());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

/// Whether `dir` on the mount holds nothing but hidden names of files
/// removed while open.
fn only_hidden(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let names: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    !names.is_empty() && names.iter().all(|n| n.as_bytes().starts_with(HIDDEN.as_bytes()))
}

// ---- the two trees -----------------------------------------------------------

/// Where the mount and local disk first disagreed.
enum Failure {
    Op {
        index: usize,
        op: Op,
        got: Outcome,
        want: Outcome,
        /// The operations before it, with the outcome both gave.
        recent: Vec<String>,
    },
    Tree {
        diffs: Vec<String>,
    },
}

impl Failure {
    /// What the shrinker keeps: the same operation giving the same two
    /// different kinds of outcome (for two stats, differing in the same
    /// fields the same way), or a tree difference.
    fn signature(&self) -> String {
        fn short(o: &Outcome) -> String {
            match o {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{e:?}"),
            }
        }
        match self {
            Failure::Op { op, got, want, .. } => {
                let mut sig = format!("{} {} {}", op.word(), short(got), short(want));
                if let (Ok(Val::Stat(g)), Ok(Val::Stat(w))) = (got, want) {
                    let differ = |a: &dyn fmt::Debug, b: &dyn fmt::Debug| format!("{a:?}") != format!("{b:?}");
                    let kind = |m: &Mtime| matches!(m, Mtime::Recent);
                    for (field, differs) in [
                        ("kind", g.kind != w.kind),
                        ("size", differ(&g.size, &w.size)),
                        ("perm", g.perm != w.perm),
                        ("nlink", g.nlink != w.nlink),
                    ] {
                        if differs {
                            sig += &format!(" {field}");
                        }
                    }
                    if g.mtime != w.mtime {
                        sig += &format!(" mtime recent:{}/{}", kind(&g.mtime), kind(&w.mtime));
                    }
                }
                sig
            }
            Failure::Tree { .. } => "tree".to_owned(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Failure::Op {
                index,
                op,
                got,
                want,
                recent,
            } => {
                writeln!(f, "mismatch at op #{index}: {op}")?;
                writeln!(f, "  mount: {got:?}")?;
                writeln!(f, "  local: {want:?}")?;
                if let (Ok(Val::Data(g)), Ok(Val::Data(w))) = (got, want) {
                    let at = g.0.iter().zip(&w.0).position(|(a, b)| a != b);
                    let at = at.unwrap_or(g.0.len().min(w.0.len()));
                    writeln!(f, "  first difference at byte {at}")?;
                }
                writeln!(f, "before it (op, outcome on both):")?;
                for r in recent {
                    writeln!(f, "  {r}")?;
                }
                Ok(())
            }
            Failure::Tree { diffs } => {
                writeln!(f, "every operation agreed, but the trees differ:")?;
                for d in diffs {
                    writeln!(f, "  {d}")?;
                }
                Ok(())
            }
        }
    }
}

/// A known difference (docs/mount.md, "Not yet"): fstat through the
/// descriptor of a directory removed since it was opened answers ENOENT on
/// the mount (the kernel sends no handle with a directory's getattr, so the
/// mount cannot tell it is open); Linux answers the old attributes, nlink 0.
fn removed_dir_fstat(op: &Op, got: &Outcome, want: &Outcome) -> bool {
    matches!(
        (op, got, want),
        (
            Op::FdStat { .. },
            Err(Errno(libc::ENOENT)),
            Ok(Val::Stat(Stat {
                kind: Kind::Dir,
                nlink: 0,
                ..
            }))
        )
    )
}

/// The mount and a directory on local disk, side by side.
struct Pair {
    mnt: PathBuf,
    local: PathBuf,
    /// Whether local disk keeps user.* xattrs (the comparison needs it).
    xattrs: bool,
}

impl Pair {
    fn new(mnt: PathBuf, local: PathBuf) -> anyhow::Result<Pair> {
        fs::create_dir_all(&local)?;
        let probe = local.join("xattr-probe");
        fs::write(&probe, b"")?;
        let set = apply(
            &local,
            &mut Fds::default(),
            &Op::SetXattr {
                path: "xattr-probe".to_owned(),
                name: "user.probe".to_owned(),
                value: Fill { len: 1, seed: 1 },
                flag: XattrFlag::Either,
            },
        );
        fs::remove_file(&probe)?;
        let xattrs = match set {
            Ok(_) => true,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                println!(
                    "fuse_differential: {} does not keep user.* xattrs: xattr operations skipped",
                    local.display()
                );
                false
            }
            Err(e) => return Err(e).context("probing user xattrs on local disk"),
        };
        Ok(Pair { mnt, local, xattrs })
    }

    /// Empties both trees and runs `ops` on each, then closes every
    /// descriptor left open; the first disagreement.
    fn replay(&self, ops: &[Op]) -> anyhow::Result<Option<Failure>> {
        empty(&self.mnt).context("emptying the mount")?;
        empty(&self.local).context("emptying the local tree")?;
        let (mut mnt_fds, mut local_fds): (Fds, Fds) = Default::default();
        let given = ops.len();
        let mut ops = ops.to_vec();
        ops.extend((0..SLOTS).map(|slot| Op::Close { slot }));
        let mut recent = VecDeque::with_capacity(RECENT);
        for (index, op) in ops.iter().enumerate() {
            if op.is_xattr() && !self.xattrs {
                continue;
            }
            if let (true, Op::Close { slot }) = (index >= given, op) {
                if mnt_fds[*slot].is_none() && local_fds[*slot].is_none() {
                    continue;
                }
            }
            let got = run(&self.mnt, &mut mnt_fds, op);
            let want = if got == Err(Errno(libc::ENOTEMPTY)) && self.hidden_only_in(op) {
                // See HIDDEN: not empty on the mount by design. Local disk
                // does not run it either, and both trees keep the directory.
                got.clone()
            } else {
                run(&self.local, &mut local_fds, op)
            };
            if got != want && !removed_dir_fstat(op, &got, &want) {
                return Ok(Some(Failure::Op {
                    index,
                    op: op.clone(),
                    got,
                    want,
                    recent: recent.into(),
                }));
            }
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(format!("#{index} {op} => {want:?}"));
        }
        let diffs = compare_trees(&self.mnt, &self.local).context("walking the trees")?;
        Ok((!diffs.is_empty()).then_some(Failure::Tree { diffs }))
    }

    /// Whether `op` removes or replaces a directory on the mount that holds
    /// nothing but hidden names (see HIDDEN).
    fn hidden_only_in(&self, op: &Op) -> bool {
        match op {
            Op::Rmdir { path } | Op::Rename { to: path, .. } => only_hidden(&self.mnt.join(path)),
            _ => false,
        }
    }

    /// A shorter sequence than `ops` that fails like `failure`, found by
    /// trying its last 4, 8, 16 ... operations alone, then dropping runs of
    /// operations (halving the run length when none can go), then shortening
    /// written data, within `budget`; and how it fails.
    fn shrink(&self, ops: &[Op], failure: &Failure, budget: Duration) -> anyhow::Result<(Vec<Op>, String)> {
        let deadline = Instant::now() + budget;
        let want = failure.signature();
        let upto = |ops: &[Op], f: &Failure| match f {
            // (An index past the end: a close after the last operation.)
            Failure::Op { index, .. } => ops[..=(*index).min(ops.len() - 1)].to_vec(),
            Failure::Tree { .. } => ops.to_vec(),
        };
        let mut best = upto(ops, failure);
        let mut last = failure.to_string();
        let fails = |cand: &[Op]| -> anyhow::Result<Option<Failure>> {
            Ok(self.replay(cand)?.filter(|f| f.signature() == want))
        };
        // Cheap first: the last few operations alone often fail the same way.
        let mut tail = 4;
        while tail < best.len() && Instant::now() < deadline {
            let cand = best[best.len() - tail..].to_vec();
            if let Some(f) = fails(&cand)? {
                best = upto(&cand, &f);
                last = f.to_string();
                break;
            }
            tail *= 2;
        }
        let mut run = best.len().div_ceil(2);
        'runs: while run > 0 {
            let mut dropped = false;
            let mut i = 0;
            while i < best.len() {
                if Instant::now() > deadline {
                    break 'runs;
                }
                let mut cand = best.clone();
                cand.drain(i..(i + run).min(best.len()));
                match fails(&cand)? {
                    Some(f) => {
                        best = upto(&cand, &f);
                        last = f.to_string();
                        dropped = true;
                    }
                    None => i += run,
                }
            }
            if !dropped {
                run /= 2;
            }
            run = run.min(best.len().div_ceil(2));
        }
        for i in 0..best.len() {
            for len in [0, 1, 16] {
                if Instant::now() > deadline {
                    break;
                }
                let Some(op) = best[i].with_data_len(len) else {
                    continue;
                };
                let mut cand = best.clone();
                cand[i] = op;
                if let Some(f) = fails(&cand)? {
                    best = cand;
                    last = f.to_string();
                    break;
                }
            }
        }
        Ok((best, last))
    }
}

#[test]
fn scripts_round_trip() -> anyhow::Result<()> {
    for (_, script) in SCRIPTS {
        for op in parse_script(script)? {
            assert_eq!(parse_op(&op.to_string())?, op);
        }
    }
    for op in generate(1, 2000, true) {
        assert_eq!(parse_op(&op.to_string())?, op);
    }
    Ok(())
}
