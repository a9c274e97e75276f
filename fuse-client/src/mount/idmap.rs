//! Identity mapping on a signed-in mount: Nimbus uids and gids become the
//! workstation's, by name, and back.
//!
//! The signed-in user appears as the local user who mounted (uid and
//! primary gid). Any other Nimbus user or group appears as the local account
//! or group of the same name; without one, as `nobody`/`nogroup`. A user's
//! private group carries the user's id and name. Changes (chown, chgrp, ACL
//! entries) map back by the same rule, and a local id whose name has no
//! Nimbus account is refused with EINVAL: storing it would hand the file to
//! whoever holds that number in the cluster. The same idea as NFSv4's
//! name-based mapping and sshfs's `idmap=user`.

use nimbus_client::MetaClient;
use nimbus_common::Errno;
use nimbus_proto as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often, at most, a name the mount does not know sends it back to the
/// cluster for the list of users and groups.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long a local account lookup is trusted (accounts come and go).
const LOCAL_TTL: Duration = Duration::from_secs(30);
/// The fallback ids when `nobody`/`nogroup` are missing locally.
const OVERFLOW_ID: u32 = 65_534;

/// Linux ACL xattr layout: a 4-byte version header, then 8-byte entries.
const ACL_HEADER: usize = 4;
const ACL_ENTRY: usize = 8;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// How a mount shows ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IdMode {
    /// By name: the signed-in user as the local user who mounted, others as
    /// the local accounts of the same name, else nobody/nogroup.
    Names,
    /// Nimbus ids as they are (administrators' --as-local-users mounts, and
    /// workstations whose accounts share the cluster's numbers).
    None,
}

/// Who mounted, in both worlds.
#[derive(Clone, Copy, Debug)]
pub struct Own {
    pub nimbus_uid: u32,
    pub local_uid: u32,
    pub local_gid: u32,
}

/// The cluster's names, by id and by name.
#[derive(Default)]
struct Names {
    user_by_id: HashMap<u32, String>,
    user_by_name: HashMap<String, u32>,
    group_by_id: HashMap<u32, String>,
    group_by_name: HashMap<String, u32>,
}

impl Names {
    fn from(d: pb::Directory) -> Names {
        let mut n = Names::default();
        for u in d.users {
            n.user_by_name.insert(u.name.clone(), u.id);
            n.user_by_id.insert(u.id, u.name);
        }
        for g in d.groups {
            n.group_by_name.insert(g.name.clone(), g.id);
            n.group_by_id.insert(g.id, g.name);
        }
        n
    }

    /// A group's name: a named group's, else the user's whose private group
    /// it is.
    fn group_name(&self, gid: u32) -> Option<&str> {
        self.group_by_id
            .get(&gid)
            .or_else(|| self.user_by_id.get(&gid))
            .map(String::as_str)
    }

    fn gid_named(&self, name: &str) -> Option<u32> {
        self.group_by_name
            .get(name)
            .or_else(|| self.user_by_name.get(name))
            .copied()
    }
}

/// The workstation's accounts, looked up through NSS and kept a while.
#[derive(Default)]
struct Local {
    uid_by_name: HashMap<String, (Option<u32>, Instant)>,
    gid_by_name: HashMap<String, (Option<u32>, Instant)>,
    user_by_uid: HashMap<u32, (Option<String>, Instant)>,
    group_by_gid: HashMap<u32, (Option<String>, Instant)>,
}

fn cached<K, V, F>(map: &mut HashMap<K, (V, Instant)>, key: K, look: F) -> V
where
    K: std::hash::Hash + Eq + Clone,
    V: Clone,
    F: FnOnce(&K) -> V,
{
    if let Some((v, at)) = map.get(&key) {
        if at.elapsed() < LOCAL_TTL {
            return v.clone();
        }
    }
    let v = look(&key);
    map.insert(key, (v.clone(), Instant::now()));
    v
}

/// A local lookup; a failing NSS counts as "no such account".
fn local_uid(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

fn local_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

fn local_user(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name)
}

fn local_group(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(gid.into()).ok().flatten().map(|g| g.name)
}

/// The id mapping of one mount.
pub struct IdMap {
    mode: IdMode,
    own: Own,
    nobody: u32,
    nogroup: u32,
    names: RwLock<Names>,
    local: Mutex<Local>,
    /// When the names were last fetched (None: never).
    fetched: Mutex<Option<Instant>>,
    client: Option<Arc<MetaClient>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IdMap {
    /// Ids as they are.
    pub fn identity() -> IdMap {
        IdMap::with_names(
            IdMode::None,
            Own {
                nimbus_uid: 0,
                local_uid: 0,
                local_gid: 0,
            },
            pb::Directory::default(),
            None,
        )
    }

    /// A mapping for `own`, starting from `directory`; `client` fetches the
    /// names again when one is missing.
    pub fn with_names(mode: IdMode, own: Own, directory: pb::Directory, client: Option<Arc<MetaClient>>) -> IdMap {
        IdMap {
            mode,
            own,
            nobody: local_uid("nobody").unwrap_or(OVERFLOW_ID),
            nogroup: local_gid("nogroup").unwrap_or(OVERFLOW_ID),
            names: RwLock::new(Names::from(directory)),
            local: Mutex::default(),
            fetched: Mutex::new(Some(Instant::now())),
            client,
        }
    }

    /// The mapping of a mount signed in as `me` through `client` and
    /// mounted by this process's user.
    pub async fn load(
        mode: IdMode,
        me: &pb::Account,
        client: Arc<MetaClient>,
    ) -> Result<IdMap, nimbus_client::ClientError> {
        if mode == IdMode::None {
            return Ok(IdMap::identity());
        }
        let directory = client.directory().await?;
        let own = Own {
            nimbus_uid: me.uid,
            local_uid: nix::unistd::getuid().as_raw(),
            local_gid: nix::unistd::getgid().as_raw(),
        };
        Ok(IdMap::with_names(mode, own, directory, Some(client)))
    }

    fn names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.names.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the names may be fetched again now (at most every
    /// REFRESH_EVERY); marks them as being fetched.
    fn may_refresh(&self) -> bool {
        let mut fetched = locked(&self.fetched);
        if fetched.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return false;
        }
        *fetched = Some(Instant::now());
        true
    }

    /// Fetches the names again (a user or group the mount has not seen).
    async fn refresh(&self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        if !self.may_refresh() {
            return false;
        }
        match client.directory().await {
            Ok(d) => {
                *self.names.write().unwrap_or_else(|p| p.into_inner()) = Names::from(d);
                true
            }
            Err(e) => {
                tracing::warn!("fetching the cluster's user and group names: {e}");
                false
            }
        }
    }

    /// Fetches the names in the background: an attribute is being shown
    /// with an id the mount does not know (a user added since it started).
    fn refresh_later(self: &Arc<Self>) {
        if self.client.is_none() || locked(&self.fetched).is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            rt.spawn(async move { me.refresh().await });
        }
    }

    /// A Nimbus uid as the workstation shows it.
    pub fn uid_out(self: &Arc<Self>, uid: u32) -> u32 {
        if self.mode == IdMode::None {
            return uid;
        }
        if uid == self.own.nimbus_uid {
            return self.own.local_uid;
        }
        let name = self.names().user_by_id.get(&uid).cloned();
        let Some(name) = name else {
            self.refresh_later();
            return self.nobody;
        };
        cached(&mut locked(&self.local).uid_by_name, name, |n| local_uid(n)).unwrap_or(self.nobody)
    }

    /// A Nimbus gid as the workstation shows it.
    pub fn gid_out(self: &Arc<Self>, gid: u32) -> u32 {
        if self.mode == IdMode::None {
            return gid;
        }
        // The signed-in user's private group has the user's id.
        if gid == self.own.nimbus_uid {
            return self.own.local_gid;
        }
        let name = self.names().group_name(gid).map(str::to_owned);
        let Some(name) = name else {
            self.refresh_later();
            return self.nogroup;
        };
        cached(&mut locked(&self.local).gid_by_name, name, |n| local_gid(n)).unwrap_or(self.nogroup)
    }

    /// `look` in the cluster's names, fetched again once if it finds
    /// nothing (a user or group added since).
    async fn find(&self, look: impl Fn(&Names) -> Option<u32>) -> Option<u32> {
        if let Some(id) = look(&self.names()) {
            return Some(id);
        }
        if self.refresh().await {
            return look(&self.names());
        }
        None
    }

    /// A local uid (chown, an ACL entry) as the Nimbus uid of the same name.
    pub async fn uid_in(&self, uid: u32) -> Result<u32, Errno> {
        if self.mode == IdMode::None {
            return Ok(uid);
        }
        if uid == self.own.local_uid {
            return Ok(self.own.nimbus_uid);
        }
        let Some(name) = cached(&mut locked(&self.local).user_by_uid, uid, |&u| local_user(u)) else {
            tracing::info!("local uid {uid} has no account name: it cannot be mapped to a Nimbus user");
            return Err(Errno::EINVAL);
        };
        if let Some(id) = self.find(|n| n.user_by_name.get(&name).copied()).await {
            return Ok(id);
        }
        tracing::info!("local user {name} (uid {uid}) has no Nimbus account of that name");
        Err(Errno::EINVAL)
    }

    /// A local gid as the Nimbus group (or private group) of the same name.
    pub async fn gid_in(&self, gid: u32) -> Result<u32, Errno> {
        if self.mode == IdMode::None {
            return Ok(gid);
        }
        if gid == self.own.local_gid {
            return Ok(self.own.nimbus_uid);
        }
        let Some(name) = cached(&mut locked(&self.local).group_by_gid, gid, |&g| local_group(g)) else {
            tracing::info!("local gid {gid} has no group name: it cannot be mapped to a Nimbus group");
            return Err(Errno::EINVAL);
        };
        if let Some(id) = self.find(|n| n.gid_named(&name)).await {
            return Ok(id);
        }
        tracing::info!("local group {name} (gid {gid}) has no Nimbus group or user of that name");
        Err(Errno::EINVAL)
    }

    /// Whether xattr `name` is a POSIX ACL, whose entries carry ids.
    pub fn is_acl(name: &[u8]) -> bool {
        name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
    }

    /// An ACL value the kernel sent, with its named entries mapped to
    /// Nimbus ids. A malformed value goes on as it is, for the cluster to
    /// refuse.
    pub async fn acl_in(&self, mut value: Vec<u8>) -> Result<Vec<u8>, Errno> {
        if self.mode == IdMode::None {
            return Ok(value);
        }
        for (tag, at) in acl_entries(&value) {
            let id = read_id(&value, at);
            let mapped = match tag {
                ACL_USER => self.uid_in(id).await?,
                ACL_GROUP => self.gid_in(id).await?,
                _ => continue,
            };
            write_id(&mut value, at, mapped);
        }
        Ok(value)
    }

    /// An ACL value from the cluster, with its named entries shown as local
    /// ids.
    pub fn acl_out(self: &Arc<Self>, mut value: Vec<u8>) -> Vec<u8> {
        if self.mode == IdMode::None {
            return value;
        }
        for (tag, at) in acl_entries(&value) {
            let id = read_id(&value, at);
            let mapped = match tag {
                ACL_USER => self.uid_out(id),
                ACL_GROUP => self.gid_out(id),
                _ => continue,
            };
            write_id(&mut value, at, mapped);
        }
        value
    }
}

/// The tag and id offset of each entry of a well-formed ACL value (none if
/// malformed).
fn acl_entries(value: &[u8]) -> Vec<(u16, usize)> {
    if value.len() < ACL_HEADER || !(value.len() - ACL_HEADER).is_multiple_of(ACL_ENTRY) {
        return Vec::new();
    }
    value[ACL_HEADER..]
        .chunks_exact(ACL_ENTRY)
        .enumerate()
        .map(|(i, e)| (u16::from_le_bytes([e[0], e[1]]), ACL_HEADER + i * ACL_ENTRY + 4))
        .collect()
}

fn read_id(value: &[u8], at: usize) -> u32 {
    value
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

fn write_id(value: &mut [u8], at: usize, id: u32) {
    if let Some(b) = value.get_mut(at..at + 4) {
        b.copy_from_slice(&id.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> pb::Directory {
        let id = |name: &str, id| pb::IdName { name: name.into(), id };
        pb::Directory {
            // "root" stands for a name every workstation has locally.
            users: vec![id("carol", 1000), id("root", 1001), id("ghost", 1002)],
            groups: vec![id("team", 1003), id("root", 1004)],
        }
    }

    fn names() -> Arc<IdMap> {
        let own = Own {
            nimbus_uid: 1000,
            local_uid: 4242,
            local_gid: 4343,
        };
        Arc::new(IdMap::with_names(IdMode::Names, own, directory(), None))
    }

    fn acl(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&4u16.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[tokio::test]
    async fn own_ids_map_to_the_local_user_who_mounted() {
        let m = names();
        assert_eq!(m.uid_out(1000), 4242);
        assert_eq!(m.gid_out(1000), 4343);
        assert_eq!(m.uid_in(4242).await, Ok(1000));
        assert_eq!(m.gid_in(4343).await, Ok(1000));
    }

    #[tokio::test]
    async fn others_map_by_name_or_to_the_fallback() {
        let m = names();
        // Nimbus "root" (1001) is the local root.
        assert_eq!(m.uid_out(1001), 0);
        assert_eq!(m.uid_in(0).await, Ok(1001));
        assert_eq!(m.gid_out(1004), 0);
        assert_eq!(m.gid_in(0).await, Ok(1004));
        // No local "ghost", no such Nimbus id: nobody.
        assert_eq!(m.uid_out(1002), m.nobody);
        assert_eq!(m.uid_out(77_777), m.nobody);
        assert_eq!(m.gid_out(1003), local_gid("team").unwrap_or(m.nogroup));
        // A local id whose name Nimbus does not know: refused.
        let daemon = local_uid("daemon").unwrap_or(1);
        assert_eq!(m.uid_in(daemon).await, Err(Errno::EINVAL));
        assert_eq!(m.uid_in(3_999_999).await, Err(Errno::EINVAL));
    }

    #[tokio::test]
    async fn acl_entries_map_both_ways_and_base_entries_stay() {
        let m = names();
        let undefined = u32::MAX;
        let local = acl(&[
            (0x01, undefined),
            (ACL_USER, 0),
            (ACL_USER, 4242),
            (0x04, undefined),
            (ACL_GROUP, 0),
            (0x10, undefined),
            (0x20, undefined),
        ]);
        let nimbus = acl(&[
            (0x01, undefined),
            (ACL_USER, 1001),
            (ACL_USER, 1000),
            (0x04, undefined),
            (ACL_GROUP, 1004),
            (0x10, undefined),
            (0x20, undefined),
        ]);
        assert_eq!(m.acl_in(local.clone()).await, Ok(nimbus.clone()));
        assert_eq!(m.acl_out(nimbus), local);
        // Malformed values pass untouched, for the cluster to refuse.
        assert_eq!(m.acl_in(vec![1, 2, 3]).await, Ok(vec![1, 2, 3]));
    }

    #[tokio::test]
    async fn identity_changes_nothing() {
        let m = Arc::new(IdMap::identity());
        assert_eq!(m.uid_out(1234), 1234);
        assert_eq!(m.gid_in(99).await, Ok(99));
        let v = acl(&[(ACL_USER, 5)]);
        assert_eq!(m.acl_out(v.clone()), v);
    }
}
