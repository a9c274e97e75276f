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

use super::ops::{self, make_dir_for};
use super::perm::Caller;
use super::tables::{decode, encode, Txn};
use super::{quota, shares, Ino, NsError, Reply, RENAME_NOREPLACE};
use crate::store::StoreError;
use nimbus_common::{Errno, Gid, Timestamp, Uid};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

const USER: u8 = b'u';
const USER_NAME: u8 = b'N';
const GROUP: u8 = b'p';
const GROUP_NAME: u8 = b'P';
const MEMBER: u8 = b'm';
const MEMBER_BY_GROUP: u8 = b'M';
const SIGN_IN: u8 = b't';
const COUNTERS: &[u8] = b"a";
const GENERATION: &[u8] = b"A";

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

/// Account mutations (`Op::Account`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountOp {
    /// The first administrator, uid 0, whose home is the root, when a
    /// cluster starts; nothing if any user exists.
    InitAdmin {
        name: String,
        hash: String,
    },
    AddUser {
        name: String,
        hash: String,
        admin: bool,
        quota_bytes: u64,
        quota_inodes: u64,
    },
    SetPassword {
        uid: Uid,
        hash: String,
    },
    SetDisabled {
        uid: Uid,
        disabled: bool,
    },
    RemoveUser {
        uid: Uid,
    },
    AddGroup {
        name: String,
    },
    SetMember {
        gid: Gid,
        uid: Uid,
        add: bool,
    },
    SetQuota {
        uid: Uid,
        bytes: Option<u64>,
        inodes: Option<u64>,
    },
    SignIn {
        id: [u8; 16],
        uid: Uid,
        expires_ms: u64,
    },
    SignOut {
        id: [u8; 16],
    },
    CheckQuota {
        fix: bool,
    },
    /// Self-service sign-up and password reset (new variants go last).
    Signup(super::signup::SignupOp),
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn get<T: DeserializeOwned>(txn: &Txn, key: &[u8]) -> Result<Option<T>, StoreError> {
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

/// The directory that holds home folders, made (0755, root's) if missing.
fn homes_dir(txn: &mut Txn, time: Timestamp) -> Result<Ino, NsError> {
    match txn.dentry(Ino::ROOT, HOMES)? {
        Some(d) => Ok(d.ino),
        None => Ok(make_dir_for(txn, time, Ino::ROOT, HOMES, 0o755, Uid::ROOT, Gid(0))?.ino),
    }
}

pub(super) fn create_user(txn: &mut Txn, time: Timestamp, mut user: User) -> Result<Reply, NsError> {
    validate_name(&user.name)?;
    if user_by_name(txn, &user.name)?.is_some() {
        return Err(Errno::EEXIST.into());
    }
    let homes = homes_dir(txn, time)?;
    if txn.dentry(homes, user.name.as_bytes())?.is_some() {
        // Someone else's folder by that name: never hand it over.
        return Err(Errno::EEXIST.into());
    }
    // The account first, so that its home is charged against its quota.
    put_user(txn, &user);
    let home = make_dir_for(txn, time, homes, user.name.as_bytes(), 0o700, user.uid, Gid(user.uid.0))?;
    user.home = home.ino;
    put_user(txn, &user);
    Ok(Reply::Id(user.uid.0))
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

/// Applies one account mutation.
pub(super) fn apply(txn: &mut Txn, time: Timestamp, caller: &Caller, op: &AccountOp) -> Result<Reply, NsError> {
    // A new sign-in changes nobody's identity and a check changes nothing;
    // anything else may (a refused command discards the bump with the rest).
    if !matches!(op, AccountOp::SignIn { .. } | AccountOp::CheckQuota { .. }) {
        let next = generation(txn)?.wrapping_add(1);
        txn.put_raw(GENERATION.to_vec(), Some(next.to_be_bytes().to_vec()));
    }
    match op {
        AccountOp::InitAdmin { name, hash } => {
            if !txn.scan_prefix(&[USER])?.is_empty() {
                return Ok(Reply::Done);
            }
            admin_only(caller)?;
            validate_name(name)?;
            // The superuser's home is the root: a new file system holds
            // nothing until someone puts something there.
            let user = User {
                name: name.clone(),
                uid: Uid::ROOT,
                hash: hash.clone(),
                admin: true,
                disabled: false,
                quota_bytes: 0,
                quota_inodes: 0,
                home: Ino::ROOT,
            };
            put_user(txn, &user);
            Ok(Reply::Id(0))
        }
        AccountOp::AddUser {
            name,
            hash,
            admin,
            quota_bytes,
            quota_inodes,
        } => {
            admin_only(caller)?;
            validate_name(name)?;
            let uid = Uid(next_id(txn)?);
            let user = User {
                name: name.clone(),
                uid,
                hash: hash.clone(),
                admin: *admin,
                disabled: false,
                quota_bytes: *quota_bytes,
                quota_inodes: *quota_inodes,
                home: Ino::ROOT,
            };
            create_user(txn, time, user)
        }
        AccountOp::SetPassword { uid, hash } => {
            if !caller.is_root() && caller.uid != *uid {
                return Err(Errno::EPERM.into());
            }
            let mut user = existing_user(txn, *uid)?;
            user.hash = hash.clone();
            put_user(txn, &user);
            Ok(Reply::Done)
        }
        AccountOp::SetDisabled { uid, disabled } => {
            admin_only(caller)?;
            let mut user = existing_user(txn, *uid)?;
            user.disabled = *disabled;
            put_user(txn, &user);
            if *disabled {
                end_sign_ins_of(txn, *uid)?;
            }
            Ok(Reply::Done)
        }
        AccountOp::RemoveUser { uid } => {
            admin_only(caller)?;
            if *uid == Uid::ROOT {
                // The first administrator owns the root; someone must.
                return Err(Errno::EPERM.into());
            }
            let user = existing_user(txn, *uid)?;
            end_sign_ins_of(txn, *uid)?;
            for gid in groups_of(txn, *uid)? {
                set_member(txn, gid, *uid, false);
            }
            shares::forget_user(txn, *uid)?;
            super::signup::forget_user(txn, *uid)?;
            txn.put_raw(key(USER, &[&uid.0.to_be_bytes()]), None);
            txn.put_raw(key(USER_NAME, &[user.name.as_bytes()]), None);
            // The home and its files stay, renamed out of the way, owned by
            // a uid nobody will get again: an administrator decides.
            let homes = homes_dir(txn, time)?;
            if txn.dentry(homes, user.name.as_bytes())?.map(|d| d.ino) == Some(user.home) {
                let kept = format!("{}.removed-{}", user.name, uid.0);
                ops::rename_as_root(
                    txn,
                    time,
                    homes,
                    user.name.as_bytes(),
                    kept.as_bytes(),
                    RENAME_NOREPLACE,
                )?;
            }
            Ok(Reply::Done)
        }
        AccountOp::Signup(op) => super::signup::apply(txn, time, caller, op),
        AccountOp::AddGroup { name } => {
            admin_only(caller)?;
            validate_name(name)?;
            if group_by_name(txn, name)?.is_some() {
                return Err(Errno::EEXIST.into());
            }
            let gid = Gid(next_id(txn)?);
            let g = Group {
                name: name.clone(),
                gid,
            };
            txn.put_raw(key(GROUP, &[&gid.0.to_be_bytes()]), Some(encode(&g)));
            txn.put_raw(key(GROUP_NAME, &[name.as_bytes()]), Some(gid.0.to_be_bytes().to_vec()));
            Ok(Reply::Id(gid.0))
        }
        AccountOp::SetMember { gid, uid, add } => {
            admin_only(caller)?;
            existing_user(txn, *uid)?;
            group_by_gid(txn, *gid)?.ok_or(Errno::ENOENT)?;
            set_member(txn, *gid, *uid, *add);
            Ok(Reply::Done)
        }
        AccountOp::SetQuota { uid, bytes, inodes } => {
            admin_only(caller)?;
            let mut user = existing_user(txn, *uid)?;
            if let Some(b) = bytes {
                user.quota_bytes = *b;
            }
            if let Some(i) = inodes {
                user.quota_inodes = *i;
            }
            put_user(txn, &user);
            Ok(Reply::Done)
        }
        AccountOp::SignIn { id, uid, expires_ms } => {
            let user = existing_user(txn, *uid)?;
            if user.disabled {
                return Err(Errno::EACCES.into());
            }
            let s = SignIn {
                uid: *uid,
                expires_ms: *expires_ms,
            };
            txn.put_raw(key(SIGN_IN, &[id]), Some(encode(&s)));
            Ok(Reply::Done)
        }
        AccountOp::SignOut { id } => {
            let k = key(SIGN_IN, &[id]);
            match get::<SignIn>(txn, &k)? {
                Some(s) if s.uid == caller.uid || caller.is_root() => {
                    txn.put_raw(k, None);
                    Ok(Reply::Done)
                }
                Some(_) => Err(Errno::EPERM.into()),
                None => Ok(Reply::Done),
            }
        }
        AccountOp::CheckQuota { fix } => {
            admin_only(caller)?;
            Ok(Reply::Usage(quota::check(txn, *fix)?))
        }
    }
}

fn set_member(txn: &mut Txn, gid: Gid, uid: Uid, add: bool) {
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
