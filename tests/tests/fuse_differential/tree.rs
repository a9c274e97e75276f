//! Whole trees: walking one, and comparing the mount's with local disk's.

use super::*;

#[derive(PartialEq, Eq, Debug)]
pub(crate) enum Node {
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
pub(crate) fn tree(root: &Path) -> io::Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(root.join(&dir))? {
            let name = e?.file_name();
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
pub(crate) fn compare_trees(mnt: &Path, local: &Path) -> io::Result<Vec<String>> {
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
/// again for a while: a close just before may still be committing.
pub(crate) fn empty(root: &Path) -> io::Result<()> {
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
