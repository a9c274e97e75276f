//! Self-service sign-up and password reset, as replicated state: the
//! policy, sign-ups waiting for their address to be verified, users' e-mail
//! addresses, and open reset requests. The links people follow carry signed
//! tokens (the service checks those); what makes a link single-use and
//! current is the nonce recorded here, which every use removes or replaces.
//!
//! | key            | value |
//! |----------------|-------|
//! | `w`            | [`Policy`] |
//! | `W` name       | [`Pending`] |
//! | `x` address    | name of the pending sign-up with that address |
//! | `X` address    | uid of the user with that address |
//! | `j` uid        | the user's address |
//! | `J` uid        | [`ResetRequest`] |
//! | `Y` uid        | [`AddressChange`] waiting for its confirmation |

use super::accounts::{self, User};
use super::caller::Caller;
use super::tables::{decode, encode};
use super::{NsError, Reply, Txn};
use nimbus_common::{Errno, Ino, Timestamp, Uid};
use serde::{Deserialize, Serialize};

const POLICY: &[u8] = b"w";
const PENDING: u8 = b'W';
const PENDING_ADDRESS: u8 = b'x';
const USER_ADDRESS: u8 = b'X';
const ADDRESS_OF: u8 = b'j';
const RESET: u8 = b'J';
const ADDRESS_CHANGE: u8 = b'Y';

/// Shortest time between two verification mails of one sign-up.
pub const RESEND_GAP_MS: u64 = 60_000;
/// Most verification mails one sign-up gets.
pub const MAX_SENDS: u32 = 5;

/// Who may sign up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Closed,
    Open,
    /// Addresses in these domains (lower case).
    Domains(Vec<String>),
}

/// The sign-up policy administrators set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// Quota of accounts made by sign-up (0: no limit).
    pub quota_bytes: u64,
    pub quota_inodes: u64,
    /// Unverified sign-ups older than this are removed.
    pub max_age_ms: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            mode: Mode::Closed,
            quota_bytes: 10 << 30,
            quota_inodes: 0,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl Policy {
    /// Whether `address` may sign up under this policy.
    pub fn admits(&self, address: &str) -> bool {
        match &self.mode {
            Mode::Closed => false,
            Mode::Open => true,
            Mode::Domains(domains) => address
                .rsplit_once('@')
                .is_some_and(|(_, d)| domains.iter().any(|x| x.eq_ignore_ascii_case(d))),
        }
    }
}

/// A sign-up waiting for its address to be verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub name: String,
    pub address: String,
    /// Argon2id of the chosen password.
    pub hash: String,
    pub created_ms: u64,
    /// The nonce of the one link that verifies it now.
    pub nonce: [u8; 16],
    pub sent_ms: u64,
    pub sends: u32,
}

/// An open password reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRequest {
    pub nonce: [u8; 16],
    pub expires_ms: u64,
}

/// A new address a user asked for, waiting for the link sent to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressChange {
    pub address: String,
    pub nonce: [u8; 16],
    pub expires_ms: u64,
}

/// A sign-up or reset mutation (the service checked tokens and drew nonces).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignupOp {
    SetPolicy(Policy),
    /// A new sign-up (anyone, if the policy admits the address).
    SignUp(Pending),
    /// A new verification link for `name`, sent at `time_ms`.
    Resend {
        name: String,
        nonce: [u8; 16],
        time_ms: u64,
    },
    /// The link with `nonce` was followed: the account, its home and quota
    /// are made in this one command. Administrators verify with nonce None.
    Verify {
        name: String,
        nonce: Option<[u8; 16]>,
    },
    /// Administrators drop a pending sign-up.
    Remove {
        name: String,
    },
    RequestReset {
        uid: Uid,
        request: ResetRequest,
    },
    /// Sets the password and ends every session of the user.
    Reset {
        uid: Uid,
        nonce: [u8; 16],
        hash: String,
        time_ms: u64,
    },
    /// A user asks for a new address (kept until the link is followed).
    ChangeAddress {
        uid: Uid,
        change: AddressChange,
    },
    /// The link sent to the new address was followed.
    ConfirmAddress {
        uid: Uid,
        nonce: [u8; 16],
        time_ms: u64,
    },
}

fn key(prefix: u8, part: &[u8]) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(part);
    k
}

fn get<T: serde::de::DeserializeOwned>(txn: &Txn, k: &[u8]) -> Result<Option<T>, NsError> {
    match txn.raw(k)? {
        None => Ok(None),
        Some(v) => Ok(Some(decode(k, &v)?)),
    }
}

/// The sign-up policy.
pub fn policy(txn: &Txn) -> Result<Policy, NsError> {
    Ok(get(txn, POLICY)?.unwrap_or_default())
}

/// A pending sign-up by name.
pub fn pending(txn: &Txn, name: &str) -> Result<Option<Pending>, NsError> {
    get(txn, &key(PENDING, name.as_bytes()))
}

/// Every pending sign-up.
pub fn all_pending(txn: &Txn) -> Result<Vec<Pending>, NsError> {
    let mut out = Vec::new();
    for (k, v) in txn.scan_prefix(&[PENDING])? {
        out.push(decode(&k, &v)?);
    }
    Ok(out)
}

/// The user with `address`, if any.
pub fn user_with_address(txn: &Txn, address: &str) -> Result<Option<User>, NsError> {
    let Some(uid) = txn.raw(&key(USER_ADDRESS, address.as_bytes()))? else {
        return Ok(None);
    };
    let Ok(b) = <[u8; 4]>::try_from(uid.as_slice()) else {
        return Ok(None);
    };
    Ok(accounts::user_by_uid(txn, Uid(u32::from_be_bytes(b)))?)
}

/// The address of user `uid`, if they gave one.
pub fn address_of(txn: &Txn, uid: Uid) -> Result<Option<String>, NsError> {
    Ok(txn
        .raw(&key(ADDRESS_OF, &uid.0.to_be_bytes()))?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// The open reset request of `uid`.
pub fn reset_request(txn: &Txn, uid: Uid) -> Result<Option<ResetRequest>, NsError> {
    get(txn, &key(RESET, &uid.0.to_be_bytes()))
}

/// Whether `address` belongs to someone else, or waits for a sign-up.
pub fn address_taken(txn: &Txn, address: &str) -> Result<bool, NsError> {
    Ok(txn.raw(&key(PENDING_ADDRESS, address.as_bytes()))?.is_some()
        || txn.raw(&key(USER_ADDRESS, address.as_bytes()))?.is_some())
}

/// An address as kept: trimmed, lower case; EINVAL unless it looks like one.
pub fn normalize_address(address: &str) -> Result<String, Errno> {
    let a = address.trim().to_ascii_lowercase();
    let ok = a.len() <= 254
        && a.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && a.chars().all(|c| c.is_ascii_graphic())
                && a.matches('@').count() == 1
        });
    if ok {
        Ok(a)
    } else {
        Err(Errno::EINVAL)
    }
}

fn drop_pending(txn: &mut Txn, p: &Pending) {
    txn.put_raw(key(PENDING, p.name.as_bytes()), None);
    txn.put_raw(key(PENDING_ADDRESS, p.address.as_bytes()), None);
}

/// Forgets the address and reset request of a removed user.
pub(super) fn forget_user(txn: &mut Txn, uid: Uid) -> Result<(), NsError> {
    if let Some(a) = address_of(txn, uid)? {
        txn.put_raw(key(USER_ADDRESS, a.as_bytes()), None);
    }
    txn.put_raw(key(ADDRESS_OF, &uid.0.to_be_bytes()), None);
    txn.put_raw(key(RESET, &uid.0.to_be_bytes()), None);
    txn.put_raw(key(ADDRESS_CHANGE, &uid.0.to_be_bytes()), None);
    Ok(())
}

/// Removes unverified sign-ups older than the policy allows, and expired
/// reset requests (the leader, periodically).
pub(super) fn expire(txn: &mut Txn, time: Timestamp) -> Result<(), NsError> {
    let now = (time.0.max(0) / 1_000_000) as u64;
    let max_age = policy(txn)?.max_age_ms;
    for p in all_pending(txn)? {
        if now.saturating_sub(p.created_ms) > max_age {
            drop_pending(txn, &p);
        }
    }
    for (k, v) in txn.scan_prefix(&[RESET])? {
        let r: ResetRequest = decode(&k, &v)?;
        if r.expires_ms < now {
            txn.put_raw(k, None);
        }
    }
    Ok(())
}

/// Makes the account of a verified sign-up: user, home (0700) and quota.
fn make_account(txn: &mut Txn, time: Timestamp, p: &Pending) -> Result<Reply, NsError> {
    let policy = policy(txn)?;
    let uid = Uid(accounts::next_id(txn)?);
    let user = User {
        name: p.name.clone(),
        uid,
        hash: p.hash.clone(),
        admin: false,
        disabled: false,
        quota_bytes: policy.quota_bytes,
        quota_inodes: policy.quota_inodes,
        home: Ino::ROOT,
    };
    let made = super::homes::create_user(txn, time, user)?;
    drop_pending(txn, p);
    txn.put_raw(
        key(USER_ADDRESS, p.address.as_bytes()),
        Some(uid.0.to_be_bytes().to_vec()),
    );
    txn.put_raw(
        key(ADDRESS_OF, &uid.0.to_be_bytes()),
        Some(p.address.as_bytes().to_vec()),
    );
    Ok(made)
}

/// Applies one sign-up mutation.
pub(super) fn apply(txn: &mut Txn, time: Timestamp, caller: &Caller, op: &SignupOp) -> Result<Reply, NsError> {
    let now = (time.0.max(0) / 1_000_000) as u64;
    match op {
        SignupOp::SetPolicy(p) => {
            accounts::admin_only(caller)?;
            txn.put_raw(POLICY.to_vec(), Some(encode(p)));
            Ok(Reply::Done)
        }
        SignupOp::SignUp(p) => {
            accounts::validate_name(&p.name)?;
            let address = normalize_address(&p.address)?;
            if address != p.address {
                return Err(Errno::EINVAL.into());
            }
            if !policy(txn)?.admits(&address) {
                return Err(Errno::EPERM.into());
            }
            let taken = accounts::user_by_name(txn, &p.name)?.is_some()
                || pending(txn, &p.name)?.is_some()
                || txn.raw(&key(PENDING_ADDRESS, address.as_bytes()))?.is_some()
                || txn.raw(&key(USER_ADDRESS, address.as_bytes()))?.is_some();
            if taken {
                return Err(Errno::EEXIST.into());
            }
            txn.put_raw(key(PENDING, p.name.as_bytes()), Some(encode(p)));
            txn.put_raw(
                key(PENDING_ADDRESS, address.as_bytes()),
                Some(p.name.as_bytes().to_vec()),
            );
            Ok(Reply::Done)
        }
        SignupOp::Resend { name, nonce, time_ms } => {
            let mut p = pending(txn, name)?.ok_or(Errno::ENOENT)?;
            if p.sends >= MAX_SENDS || time_ms.saturating_sub(p.sent_ms) < RESEND_GAP_MS {
                return Err(Errno::EAGAIN.into());
            }
            p.nonce = *nonce;
            p.sent_ms = *time_ms;
            p.sends += 1;
            txn.put_raw(key(PENDING, name.as_bytes()), Some(encode(&p)));
            Ok(Reply::Done)
        }
        SignupOp::Verify { name, nonce } => {
            let p = pending(txn, name)?.ok_or(Errno::ENOENT)?;
            match nonce {
                None => accounts::admin_only(caller)?,
                Some(n) if *n != p.nonce => return Err(Errno::EACCES.into()),
                Some(_) => {
                    if now.saturating_sub(p.created_ms) > policy(txn)?.max_age_ms {
                        return Err(Errno::ETIMEDOUT.into());
                    }
                }
            }
            make_account(txn, time, &p)
        }
        SignupOp::Remove { name } => {
            accounts::admin_only(caller)?;
            let p = pending(txn, name)?.ok_or(Errno::ENOENT)?;
            drop_pending(txn, &p);
            Ok(Reply::Done)
        }
        SignupOp::RequestReset { uid, request } => {
            accounts::existing_user(txn, *uid)?;
            txn.put_raw(key(RESET, &uid.0.to_be_bytes()), Some(encode(request)));
            Ok(Reply::Done)
        }
        SignupOp::ChangeAddress { uid, change } => {
            if !caller.is_root() && caller.uid != *uid {
                return Err(Errno::EPERM.into());
            }
            accounts::existing_user(txn, *uid)?;
            if address_taken(txn, &change.address)? {
                return Err(Errno::EEXIST.into());
            }
            txn.put_raw(key(ADDRESS_CHANGE, &uid.0.to_be_bytes()), Some(encode(change)));
            Ok(Reply::Done)
        }
        SignupOp::ConfirmAddress { uid, nonce, time_ms } => {
            let k = key(ADDRESS_CHANGE, &uid.0.to_be_bytes());
            let change: AddressChange = get(txn, &k)?.ok_or(Errno::EACCES)?;
            if change.nonce != *nonce {
                return Err(Errno::EACCES.into());
            }
            if change.expires_ms < *time_ms {
                return Err(Errno::ETIMEDOUT.into());
            }
            if address_taken(txn, &change.address)? {
                return Err(Errno::EEXIST.into());
            }
            if let Some(old) = address_of(txn, *uid)? {
                txn.put_raw(key(USER_ADDRESS, old.as_bytes()), None);
            }
            txn.put_raw(
                key(USER_ADDRESS, change.address.as_bytes()),
                Some(uid.0.to_be_bytes().to_vec()),
            );
            txn.put_raw(
                key(ADDRESS_OF, &uid.0.to_be_bytes()),
                Some(change.address.as_bytes().to_vec()),
            );
            txn.put_raw(k, None);
            Ok(Reply::Done)
        }
        SignupOp::Reset {
            uid,
            nonce,
            hash,
            time_ms,
        } => {
            let r = reset_request(txn, *uid)?.ok_or(Errno::EACCES)?;
            if r.nonce != *nonce {
                return Err(Errno::EACCES.into());
            }
            if r.expires_ms < *time_ms {
                return Err(Errno::ETIMEDOUT.into());
            }
            let mut user = accounts::existing_user(txn, *uid)?;
            user.hash = hash.clone();
            accounts::put_user(txn, &user);
            accounts::end_sign_ins_of(txn, *uid)?;
            txn.put_raw(key(RESET, &uid.0.to_be_bytes()), None);
            Ok(Reply::Done)
        }
    }
}
