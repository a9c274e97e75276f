//! Accounts in the namespace state: users, groups and sign-ins.
//!
//! Password hashes (Argon2id, PHC strings) arrive in commands already
//! computed: hashing is slow and salted at random, so the leader's service
//! does it once before submitting, and apply only stores the result. User
//! and group ids come from one counter, never reused: a removed user's files
//! keep a uid nobody else will get. A user's private group has the user's id.
//!
//! | key           | value         |
//! |---------------|---------------|
//! | `u` uid       | [`User`]      |
//! | `N` name      | uid           |
//! | `p` gid       | [`Group`]     |
//! | `P` name      | gid           |
//! | `m` uid gid   | () — uid is a member of gid |
//! | `M` gid uid   | () — the same, by group |
//! | `t` id        | [`SignIn`]    |
//! | `a`           | [`Counters`]  |
//! | `A`           | generation: u64, bumped by every change that can alter an identity |

use super::caller::Caller;
use super::tables::{decode, encode, Txn};
use super::{Ino, NsError};
use crate::store::StoreError;
use nimbus_common::{Errno, Gid, Timestamp, Uid};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub(super) const USER: u8 = b'u';
pub(super) const USER_NAME: u8 = b'N';
pub(super) const GROUP: u8 = b'p';
pub(super) const GROUP_NAME: u8 = b'P';
const MEMBER: u8 = b'm';
const MEMBER_BY_GROUP: u8 = b'M';
pub(super) const SIGN_IN: u8 = b't';
const COUNTERS: &[u8] = b"a";
pub(super) const GENERATION: &[u8] = b"A";

/// The first id `user add` and `group add` give out.
pub const FIRST_ID: u32 = 1000;
/// Where home folders live.
pub const HOMES: &[u8] = b"home";
/// Longest user or group name.
pub const NAME_MAX: usize = 32;

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub uid: Uid,
    /// Argon2id, PHC string form.
    pub hash: String,
    pub admin: bool,
    pub disabled: bool,
    /// 0: no limit.
    pub quota_bytes: u64,
    /// 0: no limit.
    pub quota_inodes: u64,
    pub home: Ino,
}

/// A named group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub gid: Gid,
}

/// A live sign-in: its token is valid while this exists and has not expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    pub uid: Uid,
    pub expires_ms: u64,
}

/// The id counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub next_id: u32,
}

pub use super::AccountOp;

pub(super) fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(super) fn get<T: DeserializeOwned>(txn: &Txn, key: &[u8]) -> Result<Option<T>, StoreError> {
    match txn.raw(key)? {
        Some(v) => Ok(Some(decode(key, &v)?)),
        None => Ok(None),
    }
}

fn id_from(key: &[u8], at: usize) -> Option<u32> {
    key.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
}

/// Checks a user or group name: 1 to 32 of a-z, 0-9, `_`, `-`, `.`,
/// starting with a letter or `_`.
pub fn validate_name(name: &str) -> Result<(), Errno> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// The user with id `uid`.
pub fn user_by_uid(txn: &Txn, uid: Uid) -> Result<Option<User>, StoreError> {
    get(txn, &key(USER, &[&uid.0.to_be_bytes()]))
}

/// The id a name index (`prefix` name -> id) holds for `name`.
fn id_named(txn: &Txn, prefix: u8, name: &str) -> Result<Option<u32>, StoreError> {
    Ok(txn
        .raw(&key(prefix, &[name.as_bytes()]))?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_be_bytes))
}

/// Every record under `prefix`.
fn all<T: DeserializeOwned>(txn: &Txn, prefix: u8) -> Result<Vec<T>, StoreError> {
    txn.scan_prefix(&[prefix])?
        .into_iter()
        .map(|(k, v)| decode(&k, &v))
        .collect()
}

/// The user called `name`.
pub fn user_by_name(txn: &Txn, name: &str) -> Result<Option<User>, StoreError> {
    match id_named(txn, USER_NAME, name)? {
        Some(uid) => user_by_uid(txn, Uid(uid)),
        None => Ok(None),
    }
}

/// Every user, by uid.
pub fn users(txn: &Txn) -> Result<Vec<User>, StoreError> {
    all(txn, USER)
}

/// The group with id `gid`.
pub fn group_by_gid(txn: &Txn, gid: Gid) -> Result<Option<Group>, StoreError> {
    get(txn, &key(GROUP, &[&gid.0.to_be_bytes()]))
}

/// The group called `name`.
pub fn group_by_name(txn: &Txn, name: &str) -> Result<Option<Group>, StoreError> {
    match id_named(txn, GROUP_NAME, name)? {
        Some(gid) => group_by_gid(txn, Gid(gid)),
        None => Ok(None),
    }
}

/// Every group, by gid.
pub fn groups(txn: &Txn) -> Result<Vec<Group>, StoreError> {
    all(txn, GROUP)
}

/// The named groups `uid` belongs to.
pub fn groups_of(txn: &Txn, uid: Uid) -> Result<Vec<Gid>, StoreError> {
    Ok(txn
        .scan_prefix(&key(MEMBER, &[&uid.0.to_be_bytes()]))?
        .into_iter()
        .filter_map(|(k, _)| id_from(&k, 5).map(Gid))
        .collect())
}

/// The members of group `gid`.
pub fn members(txn: &Txn, gid: Gid) -> Result<Vec<Uid>, StoreError> {
    Ok(txn
        .scan_prefix(&key(MEMBER_BY_GROUP, &[&gid.0.to_be_bytes()]))?
        .into_iter()
        .filter_map(|(k, _)| id_from(&k, 5).map(Uid))
        .collect())
}

/// The sign-in `id`, if it was not ended.
pub fn sign_in(txn: &Txn, id: &[u8; 16]) -> Result<Option<SignIn>, StoreError> {
    get(txn, &key(SIGN_IN, &[id]))
}

/// The identity a signed-in user acts as: their uid, their private group
/// first, then their named groups; administrators are the superuser.
pub fn caller_of(txn: &Txn, user: &User) -> Result<Caller, StoreError> {
    let mut gids = vec![Gid(user.uid.0)];
    gids.extend(groups_of(txn, user.uid)?);
    Ok(Caller {
        uid: user.uid,
        gids,
        superuser: user.admin,
    })
}

pub(super) fn put_user(txn: &mut Txn, u: &User) {
    txn.put_raw(key(USER, &[&u.uid.0.to_be_bytes()]), Some(encode(u)));
    txn.put_raw(
        key(USER_NAME, &[u.name.as_bytes()]),
        Some(u.uid.0.to_be_bytes().to_vec()),
    );
}

pub(super) fn existing_user(txn: &Txn, uid: Uid) -> Result<User, NsError> {
    Ok(user_by_uid(txn, uid)?.ok_or(Errno::ENOENT)?)
}

pub(super) fn next_id(txn: &mut Txn) -> Result<u32, NsError> {
    let mut c: Counters = get(txn, COUNTERS)?.unwrap_or_default();
    let id = c.next_id.max(FIRST_ID);
    c.next_id = id.checked_add(1).ok_or(Errno::ENOSPC)?;
    txn.put_raw(COUNTERS.to_vec(), Some(encode(&c)));
    Ok(id)
}

pub(super) fn admin_only(caller: &Caller) -> Result<(), NsError> {
    if caller.is_root() {
        Ok(())
    } else {
        Err(Errno::EPERM.into())
    }
}

pub(super) fn end_sign_ins_of(txn: &mut Txn, uid: Uid) -> Result<(), NsError> {
    for (k, v) in txn.scan_prefix(&[SIGN_IN])? {
        let s: SignIn = decode(&k, &v)?;
        if s.uid == uid {
            txn.put_raw(k, None);
        }
    }
    Ok(())
}

/// Ends sign-ins whose tokens expired before `time`.
pub fn expire_sign_ins(txn: &mut Txn, time: Timestamp) -> Result<(), NsError> {
    let now_ms = (time.0.max(0) / 1_000_000) as u64;
    for (k, v) in txn.scan_prefix(&[SIGN_IN])? {
        let s: SignIn = decode(&k, &v)?;
        if s.expires_ms < now_ms {
            txn.put_raw(k, None);
        }
    }
    Ok(())
}

/// A number that changes whenever an account, group, membership or sign-in
/// might have changed, so that services may cache what they derived from
/// them (who a token is) until it moves.
pub fn generation(txn: &Txn) -> Result<u64, StoreError> {
    Ok(txn
        .raw(GENERATION)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

pub(super) fn set_member(txn: &mut Txn, gid: Gid, uid: Uid, add: bool) {
    let value = add.then(Vec::new);
    txn.put_raw(
        key(MEMBER, &[&uid.0.to_be_bytes(), &gid.0.to_be_bytes()]),
        value.clone(),
    );
    txn.put_raw(
        key(MEMBER_BY_GROUP, &[&gid.0.to_be_bytes(), &uid.0.to_be_bytes()]),
        value,
    );
}
