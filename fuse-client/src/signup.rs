//! `nimbus signup` and `nimbus password-reset`: people create their own
//! account (when the cluster's policy lets them) and verify their address
//! by mail, or set a new password through a link sent to it;
//! administrators set the policy and see, approve or remove pending
//! sign-ups (docs/accounts.md).

use crate::account::PasswordSource;
use crate::connection::Cluster;
use anyhow::bail;
use nimbus_client::MetaClient;
use nimbus_proto as pb;
use nimbus_proto::account_reply::Result as R;
use nimbus_proto::account_request::Op;

/// A client for requests that need no session.
fn anonymous(cluster: &Cluster) -> anyhow::Result<MetaClient> {
    Ok(MetaClient::new(
        cluster.security.clone(),
        cluster.meta.clone(),
        std::time::Duration::from_secs(30),
    )?)
}

/// `nimbus signup NAME --email ADDRESS`.
pub async fn sign_up(cluster: &Cluster, name: &str, email: &str, password: PasswordSource) -> anyhow::Result<()> {
    let pw = password.read(&format!("choose a password for {name}: "))?;
    if !password.password_stdin && password.read("the same again: ")? != pw {
        bail!("the two passwords differ");
    }
    anonymous(cluster)?
        .account(Op::Signup(pb::Signup {
            name: name.to_owned(),
            email: email.to_owned(),
            password: pw,
        }))
        .await?;
    println!("signed up as {name}: a mail with a link went to {email}");
    println!(
        "follow it (or run `nimbus signup verify TOKEN` with the token it holds), then `nimbus login --user {name}`"
    );
    Ok(())
}

/// `nimbus signup verify TOKEN`.
pub async fn verify(cluster: &Cluster, token: &str) -> anyhow::Result<()> {
    anonymous(cluster)?
        .account(Op::SignupVerify(pb::SignupVerify {
            token: token.trim().to_owned(),
        }))
        .await?;
    println!("address verified: your account and home folder are ready; sign in with `nimbus login`");
    Ok(())
}

/// `nimbus signup resend NAME`.
pub async fn resend(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    anonymous(cluster)?
        .account(Op::SignupResend(pb::SignupResend { name: name.to_owned() }))
        .await?;
    println!("a new link is on its way (the earlier one no longer works)");
    Ok(())
}

/// `nimbus password-reset request ADDRESS`.
pub async fn request_reset(cluster: &Cluster, email: &str) -> anyhow::Result<()> {
    anonymous(cluster)?
        .account(Op::ResetRequest(pb::ResetRequest {
            email: email.to_owned(),
        }))
        .await?;
    println!("if an account has the address {email}, a mail with a link to set a new password is on its way");
    Ok(())
}

/// `nimbus password-reset set TOKEN`.
pub async fn reset(cluster: &Cluster, token: &str, password: PasswordSource) -> anyhow::Result<()> {
    let pw = password.read("new password: ")?;
    if !password.password_stdin && password.read("the same again: ")? != pw {
        bail!("the two passwords differ");
    }
    anonymous(cluster)?
        .account(Op::ResetPassword(pb::ResetPassword {
            token: token.trim().to_owned(),
            password: pw,
        }))
        .await?;
    println!("password set; every earlier session of this account has ended: sign in again with `nimbus login`");
    Ok(())
}

/// What `nimbus signup policy` changes; None keeps the current value.
pub struct PolicyChange {
    pub mode: Option<String>,
    pub domains: Vec<String>,
    pub quota_bytes: Option<u64>,
    pub quota_inodes: Option<u64>,
    pub max_age_secs: Option<u64>,
}

/// `nimbus signup policy`: shows it, or (administrators) changes it.
pub async fn policy(client: &MetaClient, change: PolicyChange) -> anyhow::Result<()> {
    let R::SignupPolicy(mut p) = client.account(Op::SignupPolicyGet(pb::SignupPolicyGet {})).await? else {
        bail!("unexpected answer to the policy request");
    };
    let changed = change.mode.is_some()
        || !change.domains.is_empty()
        || change.quota_bytes.is_some()
        || change.quota_inodes.is_some()
        || change.max_age_secs.is_some();
    if changed {
        let mode_given = change.mode.is_some();
        if let Some(m) = change.mode {
            p.mode = m;
        }
        if !change.domains.is_empty() {
            p.domains = change.domains;
            if !mode_given {
                p.mode = "domains".into();
            }
        }
        p.quota_bytes = change.quota_bytes.unwrap_or(p.quota_bytes);
        p.quota_inodes = change.quota_inodes.unwrap_or(p.quota_inodes);
        p.max_age_secs = change.max_age_secs.unwrap_or(p.max_age_secs);
        client.account(Op::SignupPolicySet(p.clone())).await?;
    }
    let who = match p.mode.as_str() {
        "domains" => format!("open to addresses at {}", p.domains.join(", ")),
        other => other.to_owned(),
    };
    println!("sign-up: {who}");
    println!(
        "new accounts get a quota of {} and {} inodes; unverified sign-ups are removed after {} h",
        if p.quota_bytes == 0 {
            "no limit".into()
        } else {
            crate::paths::human(p.quota_bytes)
        },
        if p.quota_inodes == 0 {
            "unlimited".into()
        } else {
            p.quota_inodes.to_string()
        },
        p.max_age_secs / 3600
    );
    Ok(())
}

/// Pending sign-ups, for `nimbus user list` and `nimbus signup list`.
pub async fn print_pending(client: &MetaClient) -> anyhow::Result<()> {
    let R::Pending(list) = client.account(Op::SignupList(pb::SignupList {})).await? else {
        bail!("unexpected answer to the pending list");
    };
    if list.pending.is_empty() {
        println!("no sign-ups wait for verification");
        return Ok(());
    }
    println!("sign-ups waiting for their address to be verified (`nimbus signup approve|remove NAME`):");
    println!("{:<20} {:<32} {:>10} {:>6}", "NAME", "ADDRESS", "AGE", "MAILS");
    let now = nimbus_common::token::now_ms();
    for p in list.pending {
        let age = now.saturating_sub(p.created_ms) / 1000;
        println!("{:<20} {:<32} {:>9}m {:>6}", p.name, p.email, age / 60, p.mails_sent);
    }
    Ok(())
}

/// `nimbus signup approve|remove NAME` (administrators).
pub async fn decide(client: &MetaClient, name: &str, approve: bool) -> anyhow::Result<()> {
    let op = match approve {
        true => Op::SignupApprove(pb::SignupApprove { name: name.to_owned() }),
        false => Op::SignupRemove(pb::SignupRemove { name: name.to_owned() }),
    };
    client.account(op).await?;
    match approve {
        true => println!("{name}'s account is made, with home folder and quota, as if they had verified"),
        false => println!("{name}'s sign-up is removed"),
    }
    Ok(())
}

/// `nimbus user email ADDRESS`: the signed-in user's new address.
pub async fn set_address(client: &MetaClient, address: &str) -> anyhow::Result<()> {
    client
        .account(Op::AddressSet(pb::AddressSet {
            email: address.to_owned(),
        }))
        .await?;
    println!("a link went to {address}: the address counts once you follow it (or run `nimbus signup verify TOKEN`)");
    Ok(())
}
