//! `AccountService.Call`: sign-in and sign-out, users, groups, quotas and
//! shares, and self-service sign-up ([`signup`]). Refusals are gRPC
//! statuses with a message meant for a person.

mod signup;

use super::auth::{self, Auth, Identity};
use crate::commit::{Committer, ReadBarrier};
use crate::namespace::accounts::{self, AccountOp, User};
use crate::namespace::shares::{self, Grantee};
use crate::namespace::{quota, Caller, Command, Op, Reply, Txn};
use crate::store::Store;
use nimbus_common::{Errno, Ino};
use nimbus_proto as pb;
use nimbus_proto::account_reply::Result as R;
use nimbus_proto::account_request::Op as P;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// How long a sign-in lasts unless the client asks otherwise: a working week.
const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;
/// Longest sign-in a client may ask for.
const MAX_TTL_SECS: u64 = 90 * 24 * 3600;

/// The account service of one meta server.
pub struct AccountService {
    store: Arc<dyn Store>,
    committer: Committer,
    barrier: ReadBarrier,
    auth: Arc<Auth>,
    /// Sends sign-up and reset mail; None: those are refused.
    mailer: Option<Arc<crate::mail::Mailer>>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!("storage failure serving an account request: {e}");
    Status::internal("meta server storage failure")
}

fn done() -> R {
    R::Done(pb::Done {})
}

fn admin_only(id: &Identity) -> Result<(), Status> {
    if id.user.admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "only an administrator may do this, and {} is not one",
            id.user.name
        )))
    }
}

/// A refusal from apply, said for the command that got it.
fn refused(e: Errno, what: &str) -> Status {
    match e {
        Errno::EPERM | Errno::EACCES => Status::permission_denied(format!("{what}: not permitted")),
        Errno::ENOENT => Status::not_found(format!("{what}: no such user, group or file")),
        Errno::EEXIST => Status::already_exists(format!("{what}: already exists")),
        Errno::EINVAL => Status::invalid_argument(format!(
            "{what}: invalid name (1-32 of a-z 0-9 _ - ., starting with a letter or _)"
        )),
        Errno::EDQUOT => nimbus_proto::Reason::Quota.tag(Status::resource_exhausted(format!("{what}: quota exceeded"))),
        Errno::EAGAIN => Status::permission_denied(format!("{what}: too soon, try again later")),
        Errno::ETIMEDOUT => Status::permission_denied(format!("{what}: expired")),
        e => Status::internal(format!("{what}: {e}")),
    }
}

impl AccountService {
    /// Serves accounts from `store`, changing them through `committer`.
    pub fn new(store: Arc<dyn Store>, committer: Committer, barrier: ReadBarrier, auth: Arc<Auth>) -> Self {
        AccountService {
            store,
            committer,
            barrier,
            auth,
            mailer: None,
        }
    }

    /// Sends sign-up and password-reset mail through `mailer`.
    pub fn with_mailer(mut self, mailer: Option<Arc<crate::mail::Mailer>>) -> Self {
        self.mailer = mailer;
        self
    }

    async fn submit(&self, caller: Caller, op: Op, what: &str) -> Result<Reply, Status> {
        self.committer
            .submit(Command {
                caller,
                op,
                request: None,
            })
            .await?
            .map_err(|e| refused(e, what))
    }

    fn txn(&self) -> Txn<'_> {
        Txn::new(self.store.as_ref())
    }

    fn user(&self, name: &str) -> Result<User, Status> {
        accounts::user_by_name(&self.txn(), name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no user called {name:?}")))
    }

    fn grantee(&self, name: &str) -> Result<Grantee, Status> {
        match name.strip_prefix('@') {
            Some(group) => accounts::group_by_name(&self.txn(), group)
                .map_err(internal)?
                .map(|g| Grantee::Group(g.gid))
                .ok_or_else(|| Status::not_found(format!("no group called {group:?}"))),
            None => Ok(Grantee::User(self.user(name)?.uid)),
        }
    }

    fn grantee_name(&self, g: Grantee) -> Result<String, Status> {
        let txn = self.txn();
        Ok(match g {
            Grantee::User(u) => accounts::user_by_uid(&txn, u)
                .map_err(internal)?
                .map(|u| u.name)
                .unwrap_or_else(|| format!("#{}", u.0)),
            Grantee::Group(g) => match accounts::group_by_gid(&txn, g).map_err(internal)? {
                Some(g) => format!("@{}", g.name),
                None => format!("@#{}", g.0),
            },
        })
    }

    fn account(&self, user: &User) -> Result<pb::Account, Status> {
        let txn = self.txn();
        let usage = quota::usage(&txn, user.uid).map_err(internal)?;
        let mut groups = Vec::new();
        for gid in accounts::groups_of(&txn, user.uid).map_err(internal)? {
            if let Some(g) = accounts::group_by_gid(&txn, gid).map_err(internal)? {
                groups.push(g.name);
            }
        }
        Ok(pb::Account {
            name: user.name.clone(),
            uid: user.uid.0,
            admin: user.admin,
            disabled: user.disabled,
            quota_bytes: user.quota_bytes,
            quota_inodes: user.quota_inodes,
            used_bytes: usage.bytes,
            used_inodes: usage.inodes,
            groups,
            home: path_of(&txn, user.home).unwrap_or_default(),
        })
    }

    async fn login(&self, r: pb::Login) -> Result<R, Status> {
        self.barrier.wait().await?;
        self.auth.brake(&r.user).await;
        let wrong = || Status::unauthenticated("wrong user name or password");
        let user = accounts::user_by_name(&self.txn(), &r.user).map_err(internal)?;
        // A missing user costs a hash too, so that timing does not tell
        // which names exist.
        let hash = user
            .as_ref()
            .map(|u| u.hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.into());
        let ok = auth::password_matches(r.password, hash).await;
        let user = match user {
            Some(u) if ok => u,
            _ => {
                self.auth.record(&r.user, true);
                tracing::warn!(user = r.user, "failed sign-in");
                return Err(wrong());
            }
        };
        self.auth.record(&r.user, false);
        if user.disabled {
            return Err(Status::unauthenticated(format!("account {} is disabled", user.name)));
        }
        let ttl = match r.ttl_secs {
            0 => DEFAULT_TTL_SECS,
            t => t.min(MAX_TTL_SECS),
        };
        let expires_ms = nimbus_common::token::now_ms().saturating_add(ttl.saturating_mul(1000));
        let id: [u8; 16] = rand::random();
        let op = Op::Account(AccountOp::SignIn {
            id,
            uid: user.uid,
            expires_ms,
        });
        self.submit(Caller::root(), op, "sign-in").await?;
        let token = self.auth.signer()?.sign_session(&nimbus_common::token::SessionClaims {
            id,
            uid: user.uid.0,
            expires_ms,
        });
        tracing::info!(user = user.name, ttl_secs = ttl, "signed in");
        Ok(R::Login(pb::LoginGranted {
            token,
            expires_ms,
            account: Some(self.account(&user)?),
        }))
    }

    async fn handle(&self, request: Request<pb::AccountRequest>) -> Result<R, Status> {
        let op = request
            .get_ref()
            .op
            .clone()
            .ok_or_else(|| Status::invalid_argument("request names no operation"))?;
        if let P::Login(r) = op {
            return self.login(r).await;
        }
        if let Some(r) = self.signup_without_session(&op).await {
            return r;
        }
        let id = self.auth.identify(&request).await?;
        if let Some(r) = self.signup_admin(&id, &op).await {
            return r;
        }
        let me = id.caller.clone();
        match op {
            P::Login(_) => Err(Status::internal("sign-in routed wrongly")),
            P::SignupPolicyGet(_)
            | P::SignupPolicySet(_)
            | P::Signup(_)
            | P::SignupResend(_)
            | P::SignupVerify(_)
            | P::SignupList(_)
            | P::SignupApprove(_)
            | P::SignupRemove(_)
            | P::ResetRequest(_)
            | P::ResetPassword(_)
            | P::AddressSet(_) => Err(Status::internal("sign-up request routed wrongly")),
            P::Logout(_) => {
                let op = Op::Account(AccountOp::SignOut { id: id.sign_in });
                self.submit(me, op, "sign-out").await?;
                Ok(done())
            }
            P::Whoami(_) => Ok(R::Account(self.account(&id.user)?)),
            P::UserAdd(r) => {
                admin_only(&id)?;
                accounts::validate_name(&r.name).map_err(|e| refused(e, &format!("user {:?}", r.name)))?;
                auth::validate_password(&r.password)?;
                let hash = auth::hash_password(r.password).await?;
                let op = Op::Account(AccountOp::AddUser {
                    name: r.name.clone(),
                    hash,
                    admin: r.admin,
                    quota_bytes: r.quota_bytes,
                    quota_inodes: r.quota_inodes,
                });
                self.submit(me, op, &format!("user {} (or /home/{})", r.name, r.name))
                    .await?;
                Ok(R::Account(self.account(&self.user(&r.name)?)?))
            }
            P::UserList(_) => {
                admin_only(&id)?;
                let users = accounts::users(&self.txn()).map_err(internal)?;
                let accounts = users.iter().map(|u| self.account(u)).collect::<Result<_, _>>()?;
                Ok(R::Accounts(pb::Accounts { accounts }))
            }
            P::UserPasswd(r) => {
                let target = if r.name.is_empty() || r.name == id.user.name {
                    id.user.clone()
                } else {
                    admin_only(&id)?;
                    self.user(&r.name)?
                };
                if target.uid == id.user.uid && !id.user.admin {
                    // Self-service needs the current password: a token alone
                    // (left on a shared machine) must not take the account over.
                    if !auth::password_matches(r.old_password, target.hash.clone()).await {
                        return Err(Status::unauthenticated("the current password is wrong"));
                    }
                }
                auth::validate_password(&r.new_password)?;
                let hash = auth::hash_password(r.new_password).await?;
                let op = Op::Account(AccountOp::SetPassword { uid: target.uid, hash });
                self.submit(me, op, &format!("password of {}", target.name)).await?;
                Ok(done())
            }
            P::UserDisable(r) => {
                admin_only(&id)?;
                let user = self.user(&r.name)?;
                let op = Op::Account(AccountOp::SetDisabled {
                    uid: user.uid,
                    disabled: r.disabled,
                });
                self.submit(me, op, &format!("user {}", r.name)).await?;
                Ok(done())
            }
            P::UserRemove(r) => {
                admin_only(&id)?;
                let user = self.user(&r.name)?;
                let op = Op::Account(AccountOp::RemoveUser { uid: user.uid });
                self.submit(me, op, &format!("removing user {}", r.name)).await?;
                Ok(done())
            }
            P::GroupAdd(r) => {
                admin_only(&id)?;
                let op = Op::Account(AccountOp::AddGroup { name: r.name.clone() });
                self.submit(me, op, &format!("group {}", r.name)).await?;
                Ok(done())
            }
            P::GroupMember(r) => {
                admin_only(&id)?;
                let user = self.user(&r.user)?;
                let group = accounts::group_by_name(&self.txn(), &r.group)
                    .map_err(internal)?
                    .ok_or_else(|| Status::not_found(format!("no group called {:?}", r.group)))?;
                let op = Op::Account(AccountOp::SetMember {
                    gid: group.gid,
                    uid: user.uid,
                    add: r.add,
                });
                self.submit(me, op, &format!("group {}", r.group)).await?;
                Ok(done())
            }
            P::GroupList(_) => {
                let txn = self.txn();
                let mut groups = Vec::new();
                for g in accounts::groups(&txn).map_err(internal)? {
                    let mut members = Vec::new();
                    for uid in accounts::members(&txn, g.gid).map_err(internal)? {
                        if let Some(u) = accounts::user_by_uid(&txn, uid).map_err(internal)? {
                            members.push(u.name);
                        }
                    }
                    groups.push(pb::Group {
                        name: g.name,
                        gid: g.gid.0,
                        members,
                    });
                }
                Ok(R::Groups(pb::Groups { groups }))
            }
            P::QuotaGet(r) => {
                let user = if r.user.is_empty() || r.user == id.user.name {
                    id.user.clone()
                } else {
                    admin_only(&id)?;
                    self.user(&r.user)?
                };
                Ok(R::Account(self.account(&user)?))
            }
            P::QuotaSet(r) => {
                admin_only(&id)?;
                let user = self.user(&r.user)?;
                let op = Op::Account(AccountOp::SetQuota {
                    uid: user.uid,
                    bytes: r.bytes,
                    inodes: r.inodes,
                });
                self.submit(me, op, &format!("quota of {}", r.user)).await?;
                Ok(R::Account(self.account(&self.user(&r.user)?)?))
            }
            P::QuotaCheck(r) => {
                admin_only(&id)?;
                let op = Op::Account(AccountOp::CheckQuota { fix: r.fix });
                let Reply::Usage(diffs) = self.submit(me, op, "quota check").await? else {
                    return Err(Status::internal("quota check answered oddly"));
                };
                let txn = self.txn();
                let diffs = diffs
                    .into_iter()
                    .map(|d| {
                        let user = accounts::user_by_uid(&txn, d.uid)
                            .map_err(internal)?
                            .map(|u| u.name)
                            .unwrap_or_default();
                        Ok(pb::QuotaDiff {
                            user,
                            uid: d.uid.0,
                            recorded_bytes: d.recorded.bytes,
                            actual_bytes: d.actual.bytes,
                            recorded_inodes: d.recorded.inodes,
                            actual_inodes: d.actual.inodes,
                        })
                    })
                    .collect::<Result<_, Status>>()?;
                Ok(R::Quota(pb::QuotaReport { diffs, fixed: r.fix }))
            }
            P::ShareAdd(r) => {
                let grantee = self.grantee(&r.grantee)?;
                if grantee == Grantee::User(id.user.uid) {
                    return Err(Status::invalid_argument("you cannot share with yourself"));
                }
                let op = Op::Share {
                    ino: Ino(r.ino),
                    grantee,
                    rw: r.rw,
                };
                self.submit(me, op, "share (only the owner may share)").await?;
                Ok(done())
            }
            P::ShareRevoke(r) => {
                let grantee = self.grantee(&r.grantee)?;
                let op = Op::Unshare {
                    ino: Ino(r.ino),
                    grantee,
                };
                self.submit(me, op, &format!("share with {}", r.grantee)).await?;
                Ok(done())
            }
            P::ShareList(_) => {
                let txn = self.txn();
                let mine = |s: &shares::Share| {
                    id.user.admin
                        || s.owner == id.user.uid
                        || match s.grantee {
                            Grantee::User(u) => u == id.user.uid,
                            Grantee::Group(g) => me.in_group(g),
                        }
                };
                let mut out = Vec::new();
                for s in shares::all(&txn).map_err(internal)?.into_iter().filter(mine) {
                    let owner = accounts::user_by_uid(&txn, s.owner)
                        .map_err(internal)?
                        .map(|u| u.name)
                        .unwrap_or_else(|| format!("#{}", s.owner.0));
                    out.push(pb::Share {
                        ino: s.ino.0,
                        path: path_of(&txn, s.ino).unwrap_or_else(|| "(removed)".into()),
                        owner,
                        grantee: self.grantee_name(s.grantee)?,
                        rw: s.rw,
                    });
                }
                Ok(R::Shares(pb::Shares { shares: out }))
            }
            P::Directory(_) => {
                // Names and ids only, for every signed-in user, as
                // /etc/passwd is readable by everyone on a workstation.
                let txn = self.txn();
                let users = accounts::users(&txn).map_err(internal)?;
                let groups = accounts::groups(&txn).map_err(internal)?;
                Ok(R::Directory(pb::Directory {
                    users: users
                        .into_iter()
                        .map(|u| pb::IdName {
                            name: u.name,
                            id: u.uid.0,
                        })
                        .collect(),
                    groups: groups
                        .into_iter()
                        .map(|g| pb::IdName {
                            name: g.name,
                            id: g.gid.0,
                        })
                        .collect(),
                }))
            }
        }
    }
}

/// A hash no password matches, verified when a user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmltYnVzLWR1bW15$Kc6dQ4q+eS1TfBvbQ0f1nWbZ0Xc3nFz7mTtJgO6nJ1A";

/// The path of `ino` from the root, found through parents and a search of
/// each parent's entries (for listings, not for hot paths).
pub fn path_of(txn: &Txn, ino: Ino) -> Option<String> {
    let mut names = Vec::new();
    let mut cur = txn.inode(ino).ok()??;
    for _ in 0..4096 {
        if cur.ino == Ino::ROOT {
            names.reverse();
            return Some(format!("/{}", names.join("/")));
        }
        let parent = cur.parent;
        let name = txn
            .scan_prefix(&crate::namespace::tables::dentry_prefix(parent))
            .ok()?
            .into_iter()
            .find_map(|(k, v)| {
                let d: crate::namespace::Dentry = crate::namespace::tables::decode(&k, &v).ok()?;
                (d.ino == cur.ino).then(|| String::from_utf8_lossy(k.get(9..).unwrap_or_default()).into_owned())
            })?;
        names.push(name);
        cur = txn.inode(parent).ok()??;
    }
    None
}

#[tonic::async_trait]
impl pb::account_service_server::AccountService for AccountService {
    async fn call(&self, request: Request<pb::AccountRequest>) -> Result<Response<pb::AccountReply>, Status> {
        let result = self.handle(request).await?;
        Ok(Response::new(pb::AccountReply { result: Some(result) }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash() {
        // Else a sign-in as a missing user would fail fast and tell names apart.
        let parsed = argon2::password_hash::phc::PasswordHash::new(super::DUMMY_HASH);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
