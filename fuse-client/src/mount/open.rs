//! The table of regular files open on this mount: one shared [`OpenFile`]
//! per inode, the number of handles on it, and whether the cluster keeps it
//! for us because it was removed while open.

use super::files::{OpenFile, WriteBudget};
use nimbus_proto as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

struct Entry {
    file: Arc<OpenFile>,
    handles: usize,
    /// Removed while open: the cluster keeps it until the last close.
    kept: bool,
}

pub struct OpenTable {
    files: Mutex<HashMap<u64, Entry>>,
    /// The write buffers every open file shares.
    budget: Arc<WriteBudget>,
}

impl OpenTable {
    /// An empty table whose files share `budget`.
    pub fn new(budget: Arc<WriteBudget>) -> OpenTable {
        OpenTable {
            files: Mutex::default(),
            budget,
        }
    }

    fn files(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic in another request must not take the whole mount down.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open file of `ino`, if any handle is open on it.
    pub fn get(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.files().get(&ino).map(|e| e.file.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.files().is_empty()
    }

    /// Every open file, with its inode.
    pub fn all(&self) -> Vec<(u64, Arc<OpenFile>)> {
        self.files().iter().map(|(i, e)| (*i, e.file.clone())).collect()
    }

    /// One more handle on `ino`; the file's state is created by the first.
    pub fn acquire(&self, ino: u64, opener: &pb::Caller) -> Arc<OpenFile> {
        let mut files = self.files();
        let entry = files.entry(ino).or_insert_with(|| Entry {
            file: Arc::new(OpenFile::new(ino, opener.clone(), self.budget.clone())),
            handles: 0,
            kept: false,
        });
        entry.handles += 1;
        entry.file.clone()
    }

    /// One handle fewer on `ino`; true at the last one of a file the
    /// cluster keeps for us, which may now be freed.
    pub fn put_back(&self, ino: u64) -> bool {
        let mut files = self.files();
        let Some(entry) = files.get_mut(&ino) else {
            return false;
        };
        entry.handles -= 1;
        if entry.handles > 0 {
            return false;
        }
        files.remove(&ino).is_some_and(|e| e.kept)
    }

    /// Records that the cluster keeps `ino` for us; false if the file was
    /// closed meanwhile (then nothing needs it any more).
    pub fn mark_kept(&self, ino: u64) -> bool {
        match self.files().get_mut(&ino) {
            Some(e) => {
                e.kept = true;
                true
            }
            None => false,
        }
    }
}
