//! Random sequences of operations from a seed.

use super::*;

/// Directory names (any component), and names only ever last in a path:
/// the pool stays small enough for collisions, and leaves room for files.
pub(crate) const DIR_NAMES: [&str; 2] = ["a", "b"];
pub(crate) const LEAF_NAMES: [&str; 2] = ["c", "d"];
pub(crate) const XATTR_NAMES: [&str; 3] = ["user.a", "user.b", "user.colour"];
/// The longest xattr value: ext4 keeps all of a file's xattrs in one 4 KiB
/// block (ENOSPC past it), and the mount has no such limit, so the three
/// names together must fit.
pub(crate) const XATTR_MAX: usize = 1000;
pub(crate) const CREATE_MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o640, 0o444, 0o000];
pub(crate) const MKDIR_MODES: [u32; 4] = [0o755, 0o700, 0o777, 0o750];
pub(crate) const CHMOD_MODES: [u32; 12] = [
    0o644, 0o600, 0o755, 0o700, 0o777, 0o444, 0o000, 0o4755, 0o2755, 0o1777, 0o6711, 0o7777,
];
/// Before 1970, the epoch, 2001, 2020, 2038 on both sides of i32, 2100.
pub(crate) const MTIMES: [i64; 7] = [
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
pub(crate) enum Pick {
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

pub(crate) const WEIGHTS: [(Pick, u32); 28] = [
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

pub(crate) struct Gen {
    pub(crate) rng: StdRng,
    pub(crate) xattrs: bool,
    /// Paths recent operations created (or tried to): picked often, so that
    /// more operations find something there.
    pub(crate) made: VecDeque<String>,
    /// The same for symlinks.
    pub(crate) links: VecDeque<String>,
}

impl Gen {
    pub(crate) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.random_range(0..from.len())]
    }

    /// A recently made path (see `made`) or a pool path.
    pub(crate) fn path(&mut self) -> String {
        if !self.made.is_empty() && self.rng.random_bool(0.4) {
            return self.made[self.rng.random_range(0..self.made.len())].clone();
        }
        self.pool_path()
    }

    pub(crate) fn remember(list: &mut VecDeque<String>, path: &str) {
        if list.len() == 8 {
            list.pop_front();
        }
        list.push_back(path.to_owned());
    }

    /// `a`, `b/c`, `a/b/d` ...: mostly short, so that parents often exist.
    pub(crate) fn pool_path(&mut self) -> String {
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

    pub(crate) fn fill(&mut self, max: usize) -> Fill {
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
    pub(crate) fn offset(&mut self) -> u64 {
        match self.rng.random_range(0..20) {
            0..=9 => self.rng.random_range(0..16_384),
            10..=16 => self.rng.random_range(0..512 * 1024),
            17..=18 => self.rng.random_range(SLOT - 8192..SLOT + 8192),
            _ => self.rng.random_range(0..6 * MIB),
        }
    }

    /// A rename or link target: mostly any path, sometimes inside the source
    /// (EINVAL for directories), its parent, or the source itself.
    pub(crate) fn target(&mut self, from: &str) -> String {
        match self.rng.random_range(0..20) {
            0..=1 => format!("{from}/{}", self.pick(&LEAF_NAMES)),
            2 => from
                .rsplit_once('/')
                .map_or_else(|| self.path(), |(parent, _)| parent.to_owned()),
            3 => from.to_owned(),
            _ => self.path(),
        }
    }

    pub(crate) fn slot(&mut self) -> usize {
        self.rng.random_range(0..SLOTS)
    }

    pub(crate) fn op(&mut self) -> Op {
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

    pub(crate) fn new_op(&mut self) -> Op {
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
pub(crate) fn generate(seed: u64, count: u64, xattrs: bool) -> Vec<Op> {
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
