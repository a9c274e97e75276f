//! Encryption at rest: the cipher, the key hierarchy and the sealed formats.
//!
//! Keys, from the top (docs/encryption.md says why this shape):
//! - the **master key** (32 random bytes, a 0600 file on each meta server);
//! - the **key-encryption key** (KEK), derived from it with HKDF;
//! - the cluster's **data secret** (32 random bytes), kept in the replicated
//!   meta state only wrapped (AES-256-GCM) by the KEK;
//! - a **block key** per block, derived from the data secret and the block
//!   id with HKDF; the meta servers hand one to a client only with the layout
//!   of a file it may read or write, or with a fresh allocation.
//!
//! A sealed block is a sequence of chunks of [`SEAL_CHUNK`] plaintext bytes
//! (the last may be shorter), each stored as a random 96-bit nonce, the
//! ciphertext and a 16-byte tag, so that a ranged read fetches and opens only
//! the chunks it needs. The associated data of a chunk is the block id and the
//! chunk's index: bytes moved between blocks or between places of a block,
//! or cut short, fail to open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Plaintext bytes per sealed chunk.
pub const SEAL_CHUNK: u64 = 64 << 10;
/// Bytes a sealed chunk adds: its nonce and its tag.
pub const CHUNK_OVERHEAD: u64 = (NONCE_LEN + 16) as u64;
/// Length of every key here.
pub const KEY_LEN: usize = 32;

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The bytes are not what was sealed under this key at this place.
    #[error("sealed data of {0} fails authentication (wrong key, moved, altered or cut short)")]
    Forged(String),
    #[error("sealed data of {what} is {got} bytes, at least {want} expected")]
    Short { what: String, got: usize, want: usize },
    #[error("a key is {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
    #[error("the system's random number generator failed")]
    Random,
    #[error("master key {path}: {detail}")]
    MasterKey { path: String, detail: String },
}

/// A 256-bit key; its bytes never appear in Debug output or logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Length-only `hkdf::KeyType` for 32 output bytes.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

impl Key {
    /// A key from its wire form; None unless exactly 32 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Key> {
        Some(Key(b.try_into().ok()?))
    }

    /// The key's bytes (for the wire, over TLS).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// 32 bytes from the system's CSPRNG.
    pub fn random() -> Result<Key, SealError> {
        let mut k = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut k).map_err(|_| SealError::Random)?;
        Ok(Key(k))
    }

    /// HKDF-SHA256 of this key under `label`, for `context` (a block id, an
    /// inode number): a key of its own for every label and context.
    pub fn derive(&self, label: &[u8], context: &[u8]) -> Key {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"nimbus").extract(&self.0);
        let mut out = [0u8; KEY_LEN];
        // The output length is fixed at 32, far below HKDF-SHA256's limit of
        // 255 * 32 bytes: neither call can fail.
        if let Ok(okm) = prk.expand(&[label, context], Len32) {
            let _ = okm.fill(&mut out);
        }
        Key(out)
    }

    /// The key-encryption key of a master key.
    pub fn kek(&self) -> Key {
        self.derive(b"nimbus kek v1", b"")
    }

    /// A short public name of this key: equal for equal keys, revealing
    /// nothing of it (an HKDF output under a label of its own).
    pub fn fingerprint(&self) -> [u8; 16] {
        let d = self.derive(b"nimbus key fingerprint v1", b"");
        let mut f = [0u8; 16];
        f.copy_from_slice(&d.0[..16]);
        f
    }

    /// The key of block `block_id`, from the data secret.
    pub fn block_key(&self, block_id: &[u8]) -> Key {
        self.derive(b"nimbus block key v1", block_id)
    }

    /// The key of the contents an inode keeps in the meta state, from the
    /// data secret.
    pub fn inline_key(&self, ino: u64) -> Key {
        self.derive(b"nimbus inline key v1", &ino.to_be_bytes())
    }

    fn aead(&self) -> LessSafeKey {
        // AES-256-GCM takes any 32-byte key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).unwrap_or_else(|_| unreachable!()))
    }
}

fn random_nonce() -> Result<[u8; NONCE_LEN], SealError> {
    let mut n = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut n).map_err(|_| SealError::Random)?;
    Ok(n)
}

/// Seals `plain` as nonce || ciphertext || tag under `key` with `aad`.
fn seal_one(key: &LessSafeKey, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
    let nonce = random_nonce()?;
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[start..])
        .map_err(|_| SealError::Random)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Opens what [`seal_one`] made.
fn open_one(key: &LessSafeKey, aad: &[u8], sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>, SealError> {
    if sealed.len() < CHUNK_OVERHEAD as usize {
        return Err(SealError::Short {
            what: what(),
            got: sealed.len(),
            want: CHUNK_OVERHEAD as usize,
        });
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Forged(what()))?;
    let mut buf = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| SealError::Forged(what()))?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

fn chunk_aad(block_id: &[u8], index: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(40);
    aad.extend_from_slice(b"nimbus block v1");
    aad.extend_from_slice(block_id);
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// Stored bytes of a block of `plain_len` plaintext bytes.
pub fn sealed_len(plain_len: u64) -> u64 {
    plain_len + plain_len.div_ceil(SEAL_CHUNK) * CHUNK_OVERHEAD
}

/// Seals a whole block.
pub fn seal_block(key: &Key, block_id: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let aead = key.aead();
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    for (i, chunk) in plain.chunks(SEAL_CHUNK as usize).enumerate() {
        seal_one(&aead, &chunk_aad(block_id, i as u64), chunk, &mut out)?;
    }
    Ok(out)
}

/// The stored range to fetch for plaintext `[offset, offset+len)` of a
/// block: (stored offset, stored length). `len` 0 means to the end.
pub fn stored_range(offset: u64, len: u64) -> (u64, u64) {
    let first = offset / SEAL_CHUNK;
    let at = first * (SEAL_CHUNK + CHUNK_OVERHEAD);
    if len == 0 {
        return (at, 0);
    }
    let last = (offset + len - 1) / SEAL_CHUNK;
    (at, (last - first + 1) * (SEAL_CHUNK + CHUNK_OVERHEAD))
}

/// Opens the chunks a ranged read fetched (`stored`, from
/// [`stored_range`]`(offset, len)`) and returns plaintext
/// `[offset, offset+len)`, shorter only where the block ends (`len` 0: all
/// of it from `offset`).
pub fn open_range(key: &Key, block_id: &[u8], offset: u64, len: u64, stored: &[u8]) -> Result<Vec<u8>, SealError> {
    open_range_owned(key, block_id, offset, len, stored.to_vec())
}

/// [`open_range`] of bytes the caller owns: each chunk is opened where it
/// lies and its plaintext moved down in the same pass, so a whole block costs
/// no second buffer and no extra copy.
pub fn open_range_owned(
    key: &Key,
    block_id: &[u8],
    offset: u64,
    len: u64,
    mut stored: Vec<u8>,
) -> Result<Vec<u8>, SealError> {
    let aead = key.aead();
    let first = offset / SEAL_CHUNK;
    let step = (SEAL_CHUNK + CHUNK_OVERHEAD) as usize;
    let mut written = 0;
    let mut at = 0;
    let mut index = first;
    while at < stored.len() {
        let end = (at + step).min(stored.len());
        let what = || format!("block {}, chunk {index}", hex(block_id));
        if end - at < CHUNK_OVERHEAD as usize {
            return Err(SealError::Short {
                what: what(),
                got: end - at,
                want: CHUNK_OVERHEAD as usize,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&stored[at..at + NONCE_LEN]);
        let nonce = Nonce::assume_unique_for_key(nonce);
        // The plaintext lands at `written` (never after `at`).
        let opened = aead
            .open_within(
                nonce,
                Aad::from(&chunk_aad(block_id, index)),
                &mut stored[written..end],
                (at + NONCE_LEN - written)..,
            )
            .map_err(|_| SealError::Forged(what()))?
            .len();
        written += opened;
        at = end;
        index += 1;
        if opened as u64 != SEAL_CHUNK {
            break;
        }
    }
    stored.truncate(written);
    let skip = (offset - first * SEAL_CHUNK) as usize;
    if skip > stored.len() {
        return Ok(Vec::new());
    }
    stored.drain(..skip);
    if len > 0 {
        stored.truncate(len as usize);
    }
    Ok(stored)
}

/// Seals a small value (a data secret under a KEK, an inode's inline
/// contents) with `aad` saying what and whose it is.
pub fn seal_small(key: &Key, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(plain.len() + CHUNK_OVERHEAD as usize);
    seal_one(&key.aead(), aad, plain, &mut out)?;
    Ok(out)
}

/// Opens what [`seal_small`] made.
pub fn open_small(key: &Key, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, SealError> {
    open_one(&key.aead(), aad, sealed, &|| what.to_owned())
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn key_error(path: &Path, detail: impl std::fmt::Display) -> SealError {
    SealError::MasterKey {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Reads a master key file: 64 hex digits on one line, mode 0600 (a key
/// others can read is refused, as ssh refuses such a private key).
pub fn load_master_key(path: &Path) -> Result<Key, SealError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| key_error(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(
            path,
            format!("is readable by others (mode {mode:04o}); chmod 600 it"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| key_error(path, e))?;
    unhex(text.trim())
        .and_then(|b| Key::from_bytes(&b))
        .ok_or_else(|| key_error(path, "is not a master key (64 hex digits)"))
}

/// Writes `key` to a new file at `path`, mode 0600, synced; refuses to
/// overwrite unless `replace` (then it writes a temporary file and renames
/// it over, so that a crash leaves the old key or the new one, whole).
pub fn write_master_key(path: &Path, key: &Key, replace: bool) -> Result<(), SealError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A temporary name of this process's own: test clusters share one key
    // file between several meta servers.
    let tmp = match replace {
        true => path.with_extension(format!("tmp.{}", std::process::id())),
        false => path.to_path_buf(),
    };
    if replace {
        let _ = std::fs::remove_file(&tmp);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| key_error(&tmp, e))?;
    f.write_all(format!("{}\n", hex(&key.0)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| key_error(&tmp, e))?;
    if replace {
        std::fs::rename(&tmp, path).map_err(|e| key_error(path, e))?;
    }
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Creates a new random master key at `path` unless one is there.
pub fn create_master_key(path: &Path) -> Result<(), SealError> {
    if path.exists() {
        return Ok(());
    }
    write_master_key(path, &Key::random()?, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::random().unwrap()
    }

    #[test]
    fn blocks_round_trip_whole_and_by_range() {
        let k = key();
        let id = [7u8; 16];
        for len in [0usize, 1, 65535, 65536, 65537, 3 * 65536 + 5, 4 << 20] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal_block(&k, &id, &plain).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64));
            assert_eq!(open_range(&k, &id, 0, 0, &sealed).unwrap(), plain);
            for (off, n) in [
                (0u64, 10u64),
                (65530, 20),
                (65536, 65536),
                (100, 200_000),
                (len as u64, 5),
            ] {
                let (at, want) = stored_range(off, n);
                let end = (at + want).min(sealed.len() as u64);
                let part = if at >= sealed.len() as u64 {
                    &[][..]
                } else {
                    &sealed[at as usize..end as usize]
                };
                let got = open_range(&k, &id, off, n, part).unwrap();
                let lo = (off as usize).min(len);
                let hi = ((off + n) as usize).min(len);
                assert_eq!(got, plain[lo..hi], "len {len} off {off} n {n}");
            }
        }
    }

    #[test]
    fn moved_altered_or_cut_blocks_fail() {
        let k = key();
        let plain = vec![42u8; 200_000];
        let sealed = seal_block(&k, &[1; 16], &plain).unwrap();
        // Another block's key or id.
        assert!(open_range(&key(), &[1; 16], 0, 0, &sealed).is_err());
        assert!(open_range(&k, &[2; 16], 0, 0, &sealed).is_err());
        // A flipped bit.
        let mut bad = sealed.clone();
        bad[1000] ^= 1;
        assert!(open_range(&k, &[1; 16], 0, 0, &bad).is_err());
        // Chunks swapped.
        let c = (SEAL_CHUNK + CHUNK_OVERHEAD) as usize;
        let mut swapped = sealed.clone();
        swapped[..c].copy_from_slice(&sealed[c..2 * c]);
        swapped[c..2 * c].copy_from_slice(&sealed[..c]);
        assert!(open_range(&k, &[1; 16], 0, 0, &swapped).is_err());
        // Cut in the middle of a chunk.
        assert!(open_range(&k, &[1; 16], 0, 0, &sealed[..c + 100]).is_err());
    }

    #[test]
    fn small_values_and_derivations() {
        let k = key();
        let s = seal_small(&k, b"ctx", b"hello").unwrap();
        assert_eq!(open_small(&k, b"ctx", &s, "x").unwrap(), b"hello");
        assert!(open_small(&k, b"other", &s, "x").is_err());
        assert_eq!(k.block_key(b"a"), k.block_key(b"a"));
        assert_ne!(k.block_key(b"a"), k.block_key(b"b"));
        assert_ne!(k.kek(), k);
        assert_ne!(k.fingerprint(), key().fingerprint());
    }

    #[test]
    fn master_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        create_master_key(&p).unwrap();
        let k = load_master_key(&p).unwrap();
        create_master_key(&p).unwrap();
        assert_eq!(load_master_key(&p).unwrap(), k);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_master_key(&p).is_err());
        std::fs::write(dir.path().join("bad"), "zz\n").unwrap();
        std::fs::set_permissions(dir.path().join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_master_key(&dir.path().join("bad")).is_err());
        let k2 = key();
        write_master_key(&p, &k2, true).unwrap();
        assert_eq!(load_master_key(&p).unwrap(), k2);
    }
}
