//! The table of regular files open on this mount: one shared [`OpenFile`]
//! per inode, the number of handles on it, and the hidden name it was
//! renamed to if it was removed while open.

use super::files::OpenFile;
use nimbus_proto as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A file removed while open, kept under a hidden name in its directory
/// until its last close (the cluster would otherwise delete the inode under
/// the open descriptors, as NFS clients also avoid with a "silly rename").
pub struct Hidden {
    pub parent: u64,
    pub name: Vec<u8>,
    /// Who removed it, and so removes the hidden name at the last close.
    pub caller: pb::Caller,
}

struct Entry {
    file: Arc<OpenFile>,
    handles: usize,
    hidden: Option<Hidden>,
}

#[derive(Default)]
pub struct OpenTable {
    files: Mutex<HashMap<u64, Entry>>,
}

impl OpenTable {
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
            file: Arc::new(OpenFile::new(ino, opener.clone())),
            handles: 0,
            hidden: None,
        });
        entry.handles += 1;
        entry.file.clone()
    }

    /// One handle fewer on `ino`. At the last one the state goes, and the
    /// hidden name to remove, if the file was removed while open, comes back.
    pub fn put_back(&self, ino: u64) -> Option<Hidden> {
        let mut files = self.files();
        let entry = files.get_mut(&ino)?;
        entry.handles -= 1;
        if entry.handles > 0 {
            return None;
        }
        files.remove(&ino).and_then(|e| e.hidden)
    }

    /// Records that `ino` now lives under a hidden name; gives it back if
    /// the file was closed meanwhile, for the caller to remove at once.
    pub fn hide(&self, ino: u64, hidden: Hidden) -> Option<Hidden> {
        match self.files().get_mut(&ino) {
            Some(e) => {
                e.hidden = Some(hidden);
                None
            }
            None => Some(hidden),
        }
    }
}
