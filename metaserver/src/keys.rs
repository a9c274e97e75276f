//! This meta server's keys: its master key (a 0600 file), the next one a
//! rotation stages beside it, and the cluster's data secret, unwrapped from
//! the replicated key ring. Block keys and the sealing of inline contents are
//! derived here; nothing below the service layer sees a key.
//!
//! The key ring is one record of the replicated state: the data secret
//! wrapped (AES-256-GCM) under the key-encryption key of the current master
//! key, and that master key's fingerprint. A rotation commits the same secret
//! wrapped under the next master key; data is never re-encrypted (see
//! docs/encryption.md).

use nimbus_common::encryption::{self, Key, SealError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The replicated key ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    /// Fingerprint of the master key the secret is wrapped under.
    pub master: [u8; 16],
    /// The data secret, sealed under that master key's KEK.
    pub wrapped_secret: Vec<u8>,
}

/// Associated data of the wrapped secret.
const SECRET_AAD: &[u8] = b"nimbus data secret v1";

/// Why keys are missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(
        "the master key in {path} (fingerprint {have}) is not the one this cluster's data is wrapped under \
         (fingerprint {want}); start with the cluster's current master key (after a rotation the old one is refused)"
    )]
    WrongMaster { path: String, have: String, want: String },
    #[error("the cluster's key ring is not set up yet; try again in a moment")]
    NoKeyring,
    #[error("no next master key is staged on this node")]
    NothingStaged,
}

struct State {
    master: Key,
    next: Option<Key>,
    /// The data secret, once a key ring was seen and unwrapped.
    secret: Option<Key>,
    /// The fingerprint of the key ring as last observed.
    ring: Option<[u8; 16]>,
}

/// This node's keys.
pub struct Keys {
    path: PathBuf,
    state: Mutex<State>,
}

fn next_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

impl Keys {
    /// Loads the master key at `path` (and a staged next one beside it).
    pub fn load(path: &Path) -> Result<Keys, KeyError> {
        let master = encryption::load_master_key(path)?;
        let next_file = next_path(path);
        let next = match next_file.exists() {
            true => Some(encryption::load_master_key(&next_file)?),
            false => None,
        };
        Ok(Keys {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                master,
                next,
                secret: None,
                ring: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the key ring the state holds (None: not set up yet): unwraps the
    /// data secret with the master key it names. If that is the staged next
    /// key (a rotation committed), the next key becomes this node's master
    /// key file. Any other key is an error: this node cannot serve data.
    pub fn observe(&self, ring: Option<&Keyring>) -> Result<(), KeyError> {
        let Some(ring) = ring else {
            return Ok(());
        };
        let mut st = self.lock();
        if st.ring == Some(ring.master) && st.secret.is_some() {
            return Ok(());
        }
        if st.master.fingerprint() != ring.master {
            match st.next {
                Some(next) if next.fingerprint() == ring.master => {
                    self.promote(&next)?;
                    st.master = next;
                }
                _ => {
                    return Err(KeyError::WrongMaster {
                        path: self.path.display().to_string(),
                        have: encryption::hex(&st.master.fingerprint()),
                        want: encryption::hex(&ring.master),
                    });
                }
            }
        }
        let secret = encryption::open_small(&st.master.kek(), SECRET_AAD, &ring.wrapped_secret, "the key ring")?;
        st.secret = Some(Key::from_bytes(&secret).ok_or(SealError::KeyLength(secret.len()))?);
        st.ring = Some(ring.master);
        if st.next.as_ref().is_some_and(|n| n.fingerprint() == ring.master) {
            st.next = None;
        }
        Ok(())
    }

    /// Replaces the master key file with the staged one (atomically; several
    /// nodes of a test cluster may share one file, so a file already holding
    /// the new key is fine).
    fn promote(&self, next: &Key) -> Result<(), KeyError> {
        let on_disk = encryption::load_master_key(&self.path).ok();
        if on_disk.as_ref() != Some(next) {
            encryption::write_master_key(&self.path, next, true)?;
        }
        let staged = next_path(&self.path);
        if encryption::load_master_key(&staged).ok().as_ref() == Some(next) {
            let _ = std::fs::remove_file(&staged);
        }
        tracing::info!(
            fingerprint = %encryption::hex(&next.fingerprint()),
            "the key ring moved to the next master key; it is now this node's master key"
        );
        Ok(())
    }

    /// A new key ring: a fresh data secret wrapped under this node's master key.
    pub fn new_keyring(&self) -> Result<Keyring, KeyError> {
        let master = self.lock().master;
        let secret = Key::random()?;
        Ok(Keyring {
            master: master.fingerprint(),
            wrapped_secret: encryption::seal_small(&master.kek(), SECRET_AAD, secret.as_bytes())?,
        })
    }

    /// The key ring re-wrapped under the staged next master key.
    pub fn rewrapped_for_next(&self) -> Result<Keyring, KeyError> {
        let st = self.lock();
        let next = st.next.as_ref().ok_or(KeyError::NothingStaged)?;
        let secret = st.secret.as_ref().ok_or(KeyError::NoKeyring)?;
        Ok(Keyring {
            master: next.fingerprint(),
            wrapped_secret: encryption::seal_small(&next.kek(), SECRET_AAD, secret.as_bytes())?,
        })
    }

    /// Keeps `key` as the next master key (0600, beside the current one).
    pub fn stage(&self, key: Key) -> Result<(), KeyError> {
        let path = next_path(&self.path);
        if encryption::load_master_key(&path).ok().as_ref() != Some(&key) {
            encryption::write_master_key(&path, &key, true)?;
        }
        self.lock().next = Some(key);
        Ok(())
    }

    /// Fingerprints of the master key, the staged next one and the key ring
    /// as observed.
    pub fn fingerprints(&self) -> ([u8; 16], Option<[u8; 16]>, Option<[u8; 16]>) {
        let st = self.lock();
        (st.master.fingerprint(), st.next.as_ref().map(Key::fingerprint), st.ring)
    }

    fn secret(&self) -> Result<Key, KeyError> {
        self.lock().secret.ok_or(KeyError::NoKeyring)
    }

    /// Whether the key ring is known and unwrapped here.
    pub fn ready(&self) -> bool {
        self.lock().secret.is_some()
    }

    /// The key of block `id`.
    pub fn block_key(&self, id: &[u8]) -> Result<Key, KeyError> {
        Ok(self.secret()?.block_key(id))
    }

    /// Seals the contents inode `ino` keeps in the namespace.
    pub fn seal_inline(&self, ino: u64, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.secret()?.inline_key(ino);
        Ok(encryption::seal_small(&key, &inline_aad(ino), plain)?)
    }

    /// Opens what [`Keys::seal_inline`] made.
    pub fn open_inline(&self, ino: u64, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.secret()?.inline_key(ino);
        Ok(encryption::open_small(
            &key,
            &inline_aad(ino),
            sealed,
            &format!("inode {ino}'s inline contents"),
        )?)
    }
}

fn inline_aad(ino: u64) -> Vec<u8> {
    let mut aad = b"nimbus inline v1".to_vec();
    aad.extend_from_slice(&ino.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_moves_the_ring_and_refuses_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        encryption::create_master_key(&path).unwrap();
        let keys = Keys::load(&path).unwrap();
        let ring = keys.new_keyring().unwrap();
        keys.observe(Some(&ring)).unwrap();
        let sealed = keys.seal_inline(5, b"secret").unwrap();
        let block_key = keys.block_key(b"0123456789abcdef").unwrap();

        keys.stage(Key::random().unwrap()).unwrap();
        let rotated = keys.rewrapped_for_next().unwrap();
        keys.observe(Some(&rotated)).unwrap();
        assert_eq!(keys.open_inline(5, &sealed).unwrap(), b"secret");
        assert_eq!(keys.block_key(b"0123456789abcdef").unwrap(), block_key);
        assert!(!next_path(&path).exists());

        // The file now holds the new key; a node restarted with it reads the ring.
        let again = Keys::load(&path).unwrap();
        again.observe(Some(&rotated)).unwrap();
        // The old ring (old master key) is refused by it, and vice versa.
        assert!(matches!(again.observe(Some(&ring)), Err(KeyError::WrongMaster { .. })));
    }
}
