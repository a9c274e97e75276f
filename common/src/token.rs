//! Signed tokens. Block tokens: short-lived permissions, signed by the meta
//! leader, to read or write one block; data servers check them before serving
//! anything. Session tokens: a signed-in user, checked by the meta servers.
//!
//! Ed25519: meta servers hold the private key (`token.key`), data servers only
//! the public one (`token.pub`), so a data server cannot mint tokens.

use crate::types::BlockId;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
}

/// The signed content of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub block: BlockId,
    pub access: Access,
    /// Milliseconds since the Unix epoch after which the token is void.
    pub expires_ms: u64,
}

/// The signed content of a session token: who signed in, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Names the sign-in in the meta state, so that it can be revoked.
    pub id: [u8; 16],
    pub uid: u32,
    /// Milliseconds since the Unix epoch after which the token is void.
    pub expires_ms: u64,
}

/// What a link sent by mail lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailPurpose {
    /// Verify the address of a pending sign-up.
    Verify,
    /// Set a new password.
    Reset,
    /// Confirm a signed-in user's new address.
    Address,
}

/// The signed content of a link sent by mail. What makes it single-use is
/// the nonce the meta state records for its subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailClaims {
    pub purpose: MailPurpose,
    /// The pending sign-up's name, or the user's uid in decimal.
    pub subject: String,
    pub nonce: [u8; 16],
    /// Milliseconds since the Unix epoch after which the link is void.
    pub expires_ms: u64,
}

const SIGNATURE_LEN: usize = 64;

// Every signed body starts with its kind, so that no token of one kind can
// ever be read as the other.
const BLOCK_DOMAIN: &[u8] = b"nimbus-block-1:";
const SESSION_DOMAIN: &[u8] = b"nimbus-session-1:";
/// How session tokens start in their text form.
const SESSION_PREFIX: &str = "nimbus1.";
const MAIL_DOMAIN: &[u8] = b"nimbus-mail-1:";
const MAIL_PREFIX: &str = "nm1.";

fn to_hex(prefix: &str, bytes: &[u8]) -> String {
    let mut out = String::with_capacity(prefix.len() + 2 * bytes.len());
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn from_hex(prefix: &str, text: &str) -> Result<Vec<u8>, TokenError> {
    let hex = text.trim().strip_prefix(prefix).ok_or(TokenError::Malformed)?;
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(TokenError::Malformed);
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| TokenError::Malformed)
}

/// Why a token was refused, or keys could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no block token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signature is not valid (altered, or from another cluster)")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("block token is for another block")]
    WrongBlock,
    #[error("block token does not allow this access")]
    WrongAccess,
    #[error("token key {0}: {1}")]
    Key(String, String),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Mints tokens (meta servers).
pub struct Signer {
    key: Ed25519KeyPair,
}

/// Checks tokens (data servers).
#[derive(Clone)]
pub struct Verifier {
    public: Vec<u8>,
}

fn key_error(path: &Path, e: impl std::fmt::Display) -> TokenError {
    TokenError::Key(path.display().to_string(), e.to_string())
}

/// Creates `token.key` (0600) and `token.pub` in `dir`, unless they exist.
pub fn create_keys(dir: &Path) -> Result<(), TokenError> {
    let key_path = dir.join("token.key");
    if key_path.exists() {
        return Ok(());
    }
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| key_error(&key_path, e))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| key_error(&key_path, e))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| key_error(&key_path, e))?;
    f.write_all(pkcs8.as_ref()).map_err(|e| key_error(&key_path, e))?;
    f.sync_all().map_err(|e| key_error(&key_path, e))?;
    let pub_path = dir.join("token.pub");
    std::fs::write(&pub_path, pair.public_key().as_ref()).map_err(|e| key_error(&pub_path, e))
}

impl Signer {
    /// Loads `token.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Signer, TokenError> {
        let path = dir.join("token.key");
        let bytes = std::fs::read(&path).map_err(|e| key_error(&path, e))?;
        let key = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| key_error(&path, e))?;
        Ok(Signer { key })
    }

    /// A token for `access` to `block`, valid for `ttl_ms`.
    pub fn sign(&self, block: BlockId, access: Access, ttl_ms: u64) -> Vec<u8> {
        let claims = Claims {
            block,
            access,
            expires_ms: now_ms().saturating_add(ttl_ms),
        };
        self.sign_claims(&claims)
    }

    /// A token carrying exactly `claims` (tests forge expired ones with it).
    pub fn sign_claims(&self, claims: &Claims) -> Vec<u8> {
        self.sign_body(BLOCK_DOMAIN, claims)
    }

    /// A session token carrying `claims`, as text.
    pub fn sign_session(&self, claims: &SessionClaims) -> String {
        let bytes = self.sign_body(SESSION_DOMAIN, claims);
        let mut out = String::with_capacity(SESSION_PREFIX.len() + 2 * bytes.len());
        out.push_str(SESSION_PREFIX);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// A link token carrying `claims`, as text (URL-safe).
    pub fn sign_mail(&self, claims: &MailClaims) -> String {
        to_hex(MAIL_PREFIX, &self.sign_body(MAIL_DOMAIN, claims))
    }

    fn sign_body(&self, domain: &[u8], claims: &impl Serialize) -> Vec<u8> {
        let mut out = domain.to_vec();
        // Serialising a plain struct into a Vec cannot fail.
        out.extend(postcard::to_allocvec(claims).unwrap_or_default());
        let sig = self.key.sign(&out);
        out.extend_from_slice(sig.as_ref());
        out
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            public: self.key.public_key().as_ref().to_vec(),
        }
    }
}

impl Verifier {
    /// Loads `token.pub` from `dir`.
    pub fn load(dir: &Path) -> Result<Verifier, TokenError> {
        let path = dir.join("token.pub");
        let public = std::fs::read(&path).map_err(|e| key_error(&path, e))?;
        if public.len() != 32 {
            return Err(key_error(&path, "not an Ed25519 public key"));
        }
        Ok(Verifier { public })
    }

    /// The verified body of `token`, after `domain`.
    fn open<'t>(&self, token: &'t [u8], domain: &[u8]) -> Result<&'t [u8], TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() <= SIGNATURE_LEN + domain.len() {
            return Err(TokenError::Malformed);
        }
        let (body, sig) = token.split_at(token.len() - SIGNATURE_LEN);
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(body, sig)
            .map_err(|_| TokenError::BadSignature)?;
        body.strip_prefix(domain).ok_or(TokenError::Malformed)
    }

    /// The claims of a session token in text form, if it is genuine and
    /// not expired.
    pub fn check_session(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let hex = token.trim().strip_prefix(SESSION_PREFIX).ok_or(TokenError::Malformed)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(TokenError::Malformed);
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| TokenError::Malformed)?;
        let body = self.open(&bytes, SESSION_DOMAIN)?;
        let claims: SessionClaims = postcard::from_bytes(body).map_err(|_| TokenError::Malformed)?;
        if claims.expires_ms < now_ms() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a link token, if it is genuine, for `purpose` and not
    /// expired.
    pub fn check_mail(&self, token: &str, purpose: MailPurpose) -> Result<MailClaims, TokenError> {
        let bytes = from_hex(MAIL_PREFIX, token)?;
        let body = self.open(&bytes, MAIL_DOMAIN)?;
        let claims: MailClaims = postcard::from_bytes(body).map_err(|_| TokenError::Malformed)?;
        if claims.purpose != purpose {
            return Err(TokenError::Malformed);
        }
        if claims.expires_ms < now_ms() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Checks that `token` allows `access` to `block` now.
    pub fn check(&self, token: &[u8], block: BlockId, access: Access) -> Result<(), TokenError> {
        self.block_claims(token)?.allow(block, access)
    }

    /// The claims of a genuine block token, expired or not.
    fn block_claims(&self, token: &[u8]) -> Result<Claims, TokenError> {
        let body = self.open(token, BLOCK_DOMAIN)?;
        postcard::from_bytes(body).map_err(|_| TokenError::Malformed)
    }
}

impl Claims {
    /// Whether these claims allow `access` to `block` now.
    fn allow(&self, block: BlockId, access: Access) -> Result<(), TokenError> {
        if self.block != block {
            return Err(TokenError::WrongBlock);
        }
        if self.access != access {
            return Err(TokenError::WrongAccess);
        }
        if self.expires_ms < now_ms() {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Block tokens already found genuine, by their exact bytes: a reader sends
/// the same token with every read of a block for minutes, and an Ed25519
/// verification per request was a sixth of a data server's CPU under 4 KiB
/// random reads. Only the signature check is skipped; block, access and
/// expiry are checked on every request.
pub struct CheckedTokens {
    verifier: Verifier,
    genuine: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Claims>>,
}

/// Genuine tokens remembered; past it, the expired ones are forgotten, or
/// all if none has expired.
const CHECKED_TOKENS_MAX: usize = 8192;

impl CheckedTokens {
    /// Checks with `verifier`, remembering what it found genuine.
    pub fn new(verifier: Verifier) -> CheckedTokens {
        CheckedTokens {
            verifier,
            genuine: std::sync::Mutex::default(),
        }
    }

    /// Checks that `token` allows `access` to `block` now.
    pub fn check(&self, token: &[u8], block: BlockId, access: Access) -> Result<(), TokenError> {
        let known = self
            .genuine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let claims = match known {
            Some(c) => c,
            None => {
                let c = self.verifier.block_claims(token)?;
                let mut genuine = self.genuine.lock().unwrap_or_else(|p| p.into_inner());
                if genuine.len() >= CHECKED_TOKENS_MAX {
                    let now = now_ms();
                    genuine.retain(|_, c| c.expires_ms >= now);
                    if genuine.len() >= CHECKED_TOKENS_MAX {
                        genuine.clear();
                    }
                }
                genuine.insert(token.to_vec(), c.clone());
                c
            }
        };
        claims.allow(block, access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        create_keys(dir.path()).unwrap();
        let signer = Signer::load(dir.path()).unwrap();
        let verifier = Verifier::load(dir.path()).unwrap();
        let (a, b) = (BlockId([1; 16]), BlockId([2; 16]));
        let t = signer.sign(a, Access::Write, 60_000);
        assert_eq!(verifier.check(&t, a, Access::Write), Ok(()));
        assert_eq!(verifier.check(&t, b, Access::Write), Err(TokenError::WrongBlock));
        assert_eq!(verifier.check(&t, a, Access::Read), Err(TokenError::WrongAccess));
        assert_eq!(verifier.check(&[], a, Access::Write), Err(TokenError::Missing));
        let mut forged = t.clone();
        forged[0] ^= 1;
        assert_eq!(verifier.check(&forged, a, Access::Write), Err(TokenError::BadSignature));
        let expired = signer.sign_claims(&Claims {
            block: a,
            access: Access::Read,
            expires_ms: 1,
        });
        assert_eq!(verifier.check(&expired, a, Access::Read), Err(TokenError::Expired));
        // Another cluster's key.
        let other = tempfile::tempdir().unwrap();
        create_keys(other.path()).unwrap();
        let t2 = Signer::load(other.path()).unwrap().sign(a, Access::Write, 60_000);
        assert_eq!(verifier.check(&t2, a, Access::Write), Err(TokenError::BadSignature));
    }

    #[test]
    fn remembered_tokens_are_still_checked_for_block_access_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        create_keys(dir.path()).unwrap();
        let signer = Signer::load(dir.path()).unwrap();
        let tokens = CheckedTokens::new(signer.verifier());
        let (a, b) = (BlockId([1; 16]), BlockId([2; 16]));
        let t = signer.sign(a, Access::Read, 60_000);
        let expired = signer.sign_claims(&Claims {
            block: a,
            access: Access::Read,
            expires_ms: 1,
        });
        // Twice: the second time from memory, with the same answers.
        for _ in 0..2 {
            assert_eq!(tokens.check(&t, a, Access::Read), Ok(()));
            assert_eq!(tokens.check(&t, b, Access::Read), Err(TokenError::WrongBlock));
            assert_eq!(tokens.check(&t, a, Access::Write), Err(TokenError::WrongAccess));
            assert_eq!(tokens.check(&expired, a, Access::Read), Err(TokenError::Expired));
        }
        // The remembered token's signature on another body is not genuine.
        let mut forged = t.clone();
        forged[BLOCK_DOMAIN.len()] ^= 1;
        assert_eq!(tokens.check(&forged, a, Access::Read), Err(TokenError::BadSignature));
        assert_eq!(tokens.check(&[], a, Access::Read), Err(TokenError::Missing));
    }

    #[test]
    fn session_tokens_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        create_keys(dir.path()).unwrap();
        let signer = Signer::load(dir.path()).unwrap();
        let verifier = signer.verifier();
        let claims = SessionClaims {
            id: [7; 16],
            uid: 1000,
            expires_ms: now_ms() + 60_000,
        };
        let t = signer.sign_session(&claims);
        assert_eq!(verifier.check_session(&t), Ok(claims.clone()));
        // One changed hex digit in the body.
        let mut tampered = t.clone().into_bytes();
        let at = "nimbus1.".len() + 40;
        tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(verifier.check_session(&tampered), Err(TokenError::BadSignature));
        assert_eq!(verifier.check_session("nimbus1.zz"), Err(TokenError::Malformed));
        assert_eq!(verifier.check_session("hello"), Err(TokenError::Malformed));
        let expired = signer.sign_session(&SessionClaims {
            expires_ms: 1,
            ..claims
        });
        assert_eq!(verifier.check_session(&expired), Err(TokenError::Expired));
        // A block token is not a session token, nor the other way round.
        let block = signer.sign(BlockId([1; 16]), Access::Read, 60_000);
        let as_text: String = block.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            verifier.check_session(&format!("nimbus1.{as_text}")),
            Err(TokenError::Malformed)
        );
    }
}
