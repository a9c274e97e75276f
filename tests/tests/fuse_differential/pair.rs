//! The mount and local disk side by side: replaying a sequence on both,
//! and shrinking a failing one.

use super::*;

/// Where the mount and local disk first disagreed.
pub(crate) enum Failure {
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
    pub(crate) fn signature(&self) -> String {
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
pub(crate) fn removed_dir_fstat(op: &Op, got: &Outcome, want: &Outcome) -> bool {
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
pub(crate) struct Pair {
    pub(crate) mnt: PathBuf,
    pub(crate) local: PathBuf,
    /// Whether local disk keeps user.* xattrs (the comparison needs it).
    pub(crate) xattrs: bool,
}

impl Pair {
    pub(crate) fn new(mnt: PathBuf, local: PathBuf) -> anyhow::Result<Pair> {
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
    pub(crate) fn replay(&self, ops: &[Op]) -> anyhow::Result<Option<Failure>> {
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
            let want = run(&self.local, &mut local_fds, op);
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

    /// A shorter sequence than `ops` that fails like `failure`, found by
    /// trying its last 4, 8, 16 ... operations alone, then dropping runs of
    /// operations (halving the run length when none can go), then shortening
    /// written data, within `budget`; and how it fails.
    pub(crate) fn shrink(&self, ops: &[Op], failure: &Failure, budget: Duration) -> anyhow::Result<(Vec<Op>, String)> {
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
pub(crate) fn scripts_round_trip() -> anyhow::Result<()> {
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
