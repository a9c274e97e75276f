//! Sign-up, address verification and password reset over the account
//! service: the requests that need no session, and the administrators'
//! policy and pending list. Tokens in links are signed with the cluster's
//! token key; the state decides whether a link is still the current one.

use super::{admin_only, done, internal, refused, AccountService, R};
use crate::namespace::accounts::{self, AccountOp};
use crate::namespace::signup::{self, AddressChange, Mode, Pending, Policy, ResetRequest, SignupOp};
use crate::namespace::{Caller, Command, Op, Reply};
use crate::service::auth::{self, Identity};
use nimbus_common::token::{now_ms, MailClaims, MailPurpose, TokenError};
use nimbus_common::{Errno, Uid};
use nimbus_proto as pb;
use nimbus_proto::account_request::Op as P;
use tonic::Status;

/// How long a reset link is good for.
const RESET_TTL_MS: u64 = 3600 * 1000;
/// Shortest password a person may choose by themselves.
const MIN_SIGNUP_PASSWORD: usize = 10;

fn nonce() -> [u8; 16] {
    rand::random()
}

fn policy_to_pb(p: &Policy) -> pb::SignupPolicy {
    let (mode, domains) = match &p.mode {
        Mode::Closed => ("closed", Vec::new()),
        Mode::Open => ("open", Vec::new()),
        Mode::Domains(d) => ("domains", d.clone()),
    };
    pb::SignupPolicy {
        mode: mode.into(),
        domains,
        quota_bytes: p.quota_bytes,
        quota_inodes: p.quota_inodes,
        max_age_secs: p.max_age_ms / 1000,
    }
}

fn policy_from_pb(p: &pb::SignupPolicy) -> Result<Policy, Status> {
    let mode = match p.mode.as_str() {
        "closed" => Mode::Closed,
        "open" => Mode::Open,
        "domains" if !p.domains.is_empty() => Mode::Domains(
            p.domains
                .iter()
                .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                .collect(),
        ),
        "domains" => return Err(Status::invalid_argument("mode domains needs at least one domain")),
        other => {
            return Err(Status::invalid_argument(format!(
                "sign-up mode is closed, open or domains, not {other:?}"
            )))
        }
    };
    if p.max_age_secs == 0 {
        return Err(Status::invalid_argument(
            "unverified sign-ups need a positive maximum age",
        ));
    }
    Ok(Policy {
        mode,
        quota_bytes: p.quota_bytes,
        quota_inodes: p.quota_inodes,
        max_age_ms: p.max_age_secs.saturating_mul(1000),
    })
}

/// A password a person chose: long enough and not their name.
fn check_password(name: &str, password: &str) -> Result<(), Status> {
    auth::validate_password(password)?;
    if password.chars().count() < MIN_SIGNUP_PASSWORD {
        return Err(Status::invalid_argument(format!(
            "choose a password of at least {MIN_SIGNUP_PASSWORD} characters"
        )));
    }
    let lower = password.to_lowercase();
    if lower.contains(&name.to_lowercase()) || lower.chars().all(|c| c == lower.chars().next().unwrap_or(' ')) {
        return Err(Status::invalid_argument(
            "that password is too easy to guess (it holds the user name, or one character repeated)",
        ));
    }
    Ok(())
}

fn link_refused(e: TokenError) -> Status {
    match e {
        TokenError::Expired => Status::permission_denied("this link has expired: ask for a new one"),
        _ => Status::permission_denied("this link is not one the cluster sent (damaged or forged)"),
    }
}

impl AccountService {
    fn mailer(&self) -> Result<&crate::mail::Mailer, Status> {
        self.mailer.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "sign-up and password reset need mail, and these meta servers have no smtp_url configured",
            )
        })
    }

    /// Commits `op` as the superuser; the errno apply answered, if any,
    /// for the caller to say in words.
    async fn commit_signup(&self, op: SignupOp) -> Result<Result<Reply, Errno>, Status> {
        Ok(self
            .committer
            .submit(Command {
                caller: Caller::root(),
                op: Op::Account(AccountOp::Signup(op)),
                request: None,
            })
            .await?)
    }

    async fn send_verification(&self, p: &Pending) -> Result<(), Status> {
        let policy = signup::policy(&self.txn()).map_err(internal)?;
        let token = self.auth.signer()?.sign_mail(&MailClaims {
            purpose: MailPurpose::Verify,
            subject: p.name.clone(),
            nonce: p.nonce,
            expires_ms: p.created_ms.saturating_add(policy.max_age_ms),
        });
        let mailer = self.mailer()?;
        let body = format!(
            "Someone (we hope you) signed up for a Nimbus account named {name} with this address.\n\n\
             To confirm it, open this link:\n\n    {link}\n\n\
             or run:\n\n    nimbus signup verify {token}\n\n\
             The link works once and expires in {days} days. If this was not you, ignore this mail:\n\
             nothing is created without it.\n",
            name = p.name,
            link = mailer.link("signup/verify", &token),
            days = policy.max_age_ms / (24 * 3600 * 1000),
        );
        mailer
            .send(&p.address, "Confirm your Nimbus account", body)
            .await
            .map_err(|e| {
                tracing::error!("verification mail to {}: {e}", p.address);
                Status::failed_precondition(format!(
                    "the verification mail could not be sent ({e}); try again later with `nimbus signup resend {}`",
                    p.name
                ))
            })
    }

    /// The sign-up requests; None for any other.
    pub(super) async fn signup_without_session(&self, op: &P) -> Option<Result<R, Status>> {
        Some(match op {
            P::SignupPolicyGet(_) => signup::policy(&self.txn())
                .map(|p| R::SignupPolicy(policy_to_pb(&p)))
                .map_err(internal),
            P::Signup(r) => self.sign_up(r).await,
            P::SignupResend(r) => self.resend(&r.name).await,
            P::SignupVerify(r) => self.verify(&r.token).await,
            P::ResetRequest(r) => self.request_reset(&r.email).await,
            P::ResetPassword(r) => self.reset(&r.token, &r.password).await,
            _ => return None,
        })
    }

    /// The administrators' sign-up requests; None for any other.
    pub(super) async fn signup_admin(&self, id: &Identity, op: &P) -> Option<Result<R, Status>> {
        let admin = || admin_only(id);
        Some(match op {
            P::SignupPolicySet(p) => match admin().and_then(|()| policy_from_pb(p)) {
                Ok(policy) => self
                    .submit(
                        id.caller.clone(),
                        Op::Account(AccountOp::Signup(SignupOp::SetPolicy(policy))),
                        "sign-up policy",
                    )
                    .await
                    .map(|_| done()),
                Err(e) => Err(e),
            },
            P::SignupList(_) => admin().and_then(|()| {
                let pending = signup::all_pending(&self.txn()).map_err(internal)?;
                Ok(R::Pending(pb::PendingSignups {
                    pending: pending
                        .into_iter()
                        .map(|p| pb::PendingSignup {
                            name: p.name,
                            email: p.address,
                            created_ms: p.created_ms,
                            mails_sent: p.sends,
                        })
                        .collect(),
                }))
            }),
            P::SignupApprove(r) => match admin() {
                Ok(()) => {
                    let op = Op::Account(AccountOp::Signup(SignupOp::Verify {
                        name: r.name.clone(),
                        nonce: None,
                    }));
                    self.submit(id.caller.clone(), op, &format!("sign-up {:?}", r.name))
                        .await
                        .map(|_| done())
                }
                Err(e) => Err(e),
            },
            P::AddressSet(r) => self.change_address(id, &r.email).await,
            P::SignupRemove(r) => match admin() {
                Ok(()) => {
                    let op = Op::Account(AccountOp::Signup(SignupOp::Remove { name: r.name.clone() }));
                    self.submit(id.caller.clone(), op, &format!("sign-up {:?}", r.name))
                        .await
                        .map(|_| done())
                }
                Err(e) => Err(e),
            },
            _ => return None,
        })
    }

    async fn sign_up(&self, r: &pb::Signup) -> Result<R, Status> {
        self.mailer()?;
        accounts::validate_name(&r.name).map_err(|e| refused(e, &format!("user {:?}", r.name)))?;
        let address = signup::normalize_address(&r.email)
            .map_err(|_| Status::invalid_argument(format!("{:?} is not an e-mail address", r.email)))?;
        let policy = signup::policy(&self.txn()).map_err(internal)?;
        if !policy.admits(&address) {
            return Err(match policy.mode {
                Mode::Closed => {
                    Status::permission_denied("sign-up is closed on this cluster: ask an administrator for an account")
                }
                _ => Status::permission_denied(format!(
                    "addresses at {} may not sign up here",
                    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
                )),
            });
        }
        check_password(&r.name, &r.password)?;
        let hash = auth::hash_password(r.password.clone()).await?;
        let now = now_ms();
        let pending = Pending {
            name: r.name.clone(),
            address,
            hash,
            created_ms: now,
            nonce: nonce(),
            sent_ms: now,
            sends: 1,
        };
        match self.commit_signup(SignupOp::SignUp(pending.clone())).await? {
            Ok(_) => {}
            Err(Errno::EEXIST) => {
                return Err(Status::already_exists(
                    "that name or address is taken, or waits for verification",
                ))
            }
            Err(e) => return Err(refused(e, &format!("sign-up {:?}", r.name))),
        }
        self.send_verification(&pending).await?;
        Ok(done())
    }

    async fn resend(&self, name: &str) -> Result<R, Status> {
        self.mailer()?;
        let n = nonce();
        let now = now_ms();
        let op = SignupOp::Resend {
            name: name.to_owned(),
            nonce: n,
            time_ms: now,
        };
        match self.commit_signup(op).await? {
            Ok(_) => {}
            Err(Errno::EAGAIN) => {
                return Err(Status::permission_denied(format!(
                    "too many mails for this sign-up: wait a minute between them, at most {} in all",
                    signup::MAX_SENDS
                )))
            }
            Err(Errno::ENOENT) => return Err(Status::not_found(format!("no sign-up waits under the name {name:?}"))),
            Err(e) => return Err(refused(e, "resend")),
        }
        let p = signup::pending(&self.txn(), name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no sign-up waits under the name {name:?}")))?;
        self.send_verification(&p).await?;
        Ok(done())
    }

    /// A new address for the signed-in user: kept aside, and a link mailed
    /// to it; the address counts once the link is followed.
    async fn change_address(&self, id: &Identity, email: &str) -> Result<R, Status> {
        let mailer = self.mailer()?;
        let address = signup::normalize_address(email)
            .map_err(|_| Status::invalid_argument(format!("{email:?} is not an e-mail address")))?;
        let policy = signup::policy(&self.txn()).map_err(internal)?;
        if matches!(policy.mode, Mode::Domains(_)) && !policy.admits(&address) {
            return Err(Status::permission_denied(format!(
                "addresses at {} are not allowed here",
                address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
            )));
        }
        let change = AddressChange {
            address: address.clone(),
            nonce: nonce(),
            expires_ms: now_ms() + RESET_TTL_MS * 24,
        };
        let op = SignupOp::ChangeAddress {
            uid: id.user.uid,
            change: change.clone(),
        };
        match self.commit_signup(op).await? {
            Ok(_) => {}
            Err(Errno::EEXIST) => return Err(Status::already_exists("that address belongs to another account")),
            Err(e) => return Err(refused(e, "address change")),
        }
        let token = self.auth.signer()?.sign_mail(&MailClaims {
            purpose: MailPurpose::Address,
            subject: id.user.uid.0.to_string(),
            nonce: change.nonce,
            expires_ms: change.expires_ms,
        });
        let body = format!(
            "The Nimbus account {name} asked to use this address from now on.\n\n\
             To confirm it, open this link:\n\n    {link}\n\n\
             or run:\n\n    nimbus signup verify {token}\n\n\
             Until then the account keeps its earlier address. If this was not you, ignore this mail.\n",
            name = id.user.name,
            link = mailer.link("signup/verify", &token),
        );
        mailer
            .send(&address, "Confirm your new Nimbus address", body)
            .await
            .map_err(|e| Status::failed_precondition(format!("the confirmation mail could not be sent: {e}")))?;
        Ok(done())
    }

    /// Follows an address-change link.
    async fn confirm_address(&self, claims: MailClaims) -> Result<R, Status> {
        let uid: u32 = claims
            .subject
            .parse()
            .map_err(|_| Status::permission_denied("this link is not one the cluster sent"))?;
        let op = SignupOp::ConfirmAddress {
            uid: Uid(uid),
            nonce: claims.nonce,
            time_ms: now_ms(),
        };
        match self.commit_signup(op).await? {
            Ok(_) => Ok(done()),
            Err(Errno::EACCES) => Err(Status::permission_denied(
                "this link was already used, or a newer one replaced it",
            )),
            Err(Errno::ETIMEDOUT) => Err(Status::permission_denied("this link has expired: ask again")),
            Err(Errno::EEXIST) => Err(Status::already_exists("that address belongs to another account now")),
            Err(e) => Err(refused(e, "address change")),
        }
    }

    async fn verify(&self, token: &str) -> Result<R, Status> {
        let verifier = self.auth.signer()?.verifier();
        // One link page and one command for both kinds of address check.
        if let Ok(claims) = verifier.check_mail(token, MailPurpose::Address) {
            return self.confirm_address(claims).await;
        }
        let claims = verifier.check_mail(token, MailPurpose::Verify).map_err(link_refused)?;
        let op = SignupOp::Verify {
            name: claims.subject.clone(),
            nonce: Some(claims.nonce),
        };
        match self.commit_signup(op).await? {
            Ok(_) => Ok(done()),
            Err(Errno::EACCES) => Err(Status::permission_denied(
                "this link was already used, or a newer one replaced it",
            )),
            Err(Errno::ENOENT) => Err(Status::not_found(
                "no sign-up waits for this link (already verified, removed or expired)",
            )),
            Err(Errno::ETIMEDOUT) => Err(Status::permission_denied("this sign-up has expired: sign up again")),
            Err(e) => Err(refused(e, "verification")),
        }
    }

    async fn request_reset(&self, email: &str) -> Result<R, Status> {
        let mailer = self.mailer()?;
        // The answer is the same whether or not the address has an account.
        let Ok(address) = signup::normalize_address(email) else {
            return Ok(done());
        };
        let user = signup::user_with_address(&self.txn(), &address).map_err(internal)?;
        let Some(user) = user else {
            return Ok(done());
        };
        let now = now_ms();
        if let Some(open) = signup::reset_request(&self.txn(), user.uid).map_err(internal)? {
            // One mail a minute at most.
            if open.expires_ms.saturating_sub(RESET_TTL_MS) + 60_000 > now {
                return Ok(done());
            }
        }
        let request = ResetRequest {
            nonce: nonce(),
            expires_ms: now + RESET_TTL_MS,
        };
        if let Err(e) = self
            .commit_signup(SignupOp::RequestReset {
                uid: user.uid,
                request: request.clone(),
            })
            .await?
        {
            return Err(refused(e, "reset request"));
        }
        let token = self.auth.signer()?.sign_mail(&MailClaims {
            purpose: MailPurpose::Reset,
            subject: user.uid.0.to_string(),
            nonce: request.nonce,
            expires_ms: request.expires_ms,
        });
        let body = format!(
            "Someone (we hope you) asked to set a new password for the Nimbus account {name}.\n\n\
             Open this link to choose it:\n\n    {link}\n\n\
             or run:\n\n    nimbus password-reset set {token}\n\n\
             The link works once, for one hour. Setting a new password signs you out everywhere.\n\
             If this was not you, ignore this mail: your password stays as it is.\n",
            name = user.name,
            link = mailer.link("reset", &token),
        );
        if let Err(e) = mailer.send(&address, "Set a new Nimbus password", body).await {
            // Said in the log, not to the asker: the answer must not tell
            // whether the address has an account.
            tracing::error!("password reset mail to {address}: {e}");
        }
        Ok(done())
    }

    async fn reset(&self, token: &str, password: &str) -> Result<R, Status> {
        let claims = self
            .auth
            .signer()?
            .verifier()
            .check_mail(token, MailPurpose::Reset)
            .map_err(link_refused)?;
        let uid: u32 = claims
            .subject
            .parse()
            .map_err(|_| Status::permission_denied("this link is not one the cluster sent"))?;
        let user = accounts::user_by_uid(&self.txn(), Uid(uid))
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("the account of this link no longer exists"))?;
        check_password(&user.name, password)?;
        let hash = auth::hash_password(password.to_owned()).await?;
        let op = SignupOp::Reset {
            uid: Uid(uid),
            nonce: claims.nonce,
            hash,
            time_ms: now_ms(),
        };
        match self.commit_signup(op).await? {
            Ok(_) => Ok(done()),
            Err(Errno::EACCES) => Err(Status::permission_denied(
                "this link was already used, or a newer one replaced it",
            )),
            Err(Errno::ETIMEDOUT) => Err(Status::permission_denied("this link has expired: ask for a new one")),
            Err(e) => Err(refused(e, "password reset")),
        }
    }
}
