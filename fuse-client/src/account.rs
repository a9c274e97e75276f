//! `nimbus login/logout/whoami` and the `user`, `group`, `quota` and `share`
//! commands: thin wrappers over the cluster's account service.

use crate::connection::Cluster;
use crate::paths;
use anyhow::{bail, Context};
use nimbus_client::{profile, MetaClient};
use nimbus_proto as pb;
use nimbus_proto::account_reply::Result as R;
use nimbus_proto::account_request::Op;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// Where a password comes from.
#[derive(clap::Args, Clone, Copy)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input (for
    /// scripts) instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

impl PasswordSource {
    /// Reads one password, asking with `prompt` on the terminal.
    pub fn read(&self, prompt: &str) -> anyhow::Result<String> {
        if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let p = line.trim_end_matches(['\n', '\r']).to_owned();
            if p.is_empty() {
                bail!("no password on standard input");
            }
            return Ok(p);
        }
        read_hidden(prompt)
    }
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
        .filter(|_| std::io::stdin().is_terminal());
    let Some(mut tty) = tty else {
        bail!("no terminal to read the password from: pass it with --password-stdin");
    };
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: tcgetattr/tcsetattr on a descriptor we own, with a zeroed
    // termios that tcgetattr fills in.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        bail!(
            "cannot read the terminal's settings: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    write!(tty, "{prompt}")?;
    tty.flush()?;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Parses a size: a number with an optional K, M, G, T (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500M or 10G"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: the unit is one of K, M, G, T")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration: a number with s, m, h or d.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 12h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d")),
    };
    match n.checked_mul(secs) {
        Some(0) | None => Err(format!("{s:?} is not a usable duration")),
        Some(t) => Ok(t),
    }
}

async fn call(client: &MetaClient, op: Op) -> anyhow::Result<R> {
    Ok(client.account(op).await?)
}

/// The current user's name, as `nimbus login` would default it.
fn local_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "admin".into())
}

/// `nimbus login`: signs in and stores the token in profile `profile_name`.
pub async fn login(
    cluster: &Cluster,
    profile_name: &str,
    user: Option<String>,
    password: PasswordSource,
    ttl_secs: u64,
) -> anyhow::Result<()> {
    let user = user.unwrap_or_else(local_user);
    let pw = password.read(&format!("Nimbus password for {user}: "))?;
    let granted = cluster.client(profile_name)?.login(&user, &pw, ttl_secs).await?;
    // Later commands find the cluster through the profile: a workstation
    // needs flags only once.
    let (meta, insecure) = match cluster.record {
        true => (cluster.meta.clone(), cluster.security.ca_pem().is_none()),
        false => (Vec::new(), false),
    };
    profile::save_ca(
        profile_name,
        cluster.record.then(|| cluster.security.ca_pem()).flatten(),
    )?;
    let path = profile::save(
        profile_name,
        &profile::Profile {
            user: user.clone(),
            token: granted.token,
            expires_ms: granted.expires_ms,
            meta,
            insecure,
        },
    )?;
    let admin = granted.account.as_ref().is_some_and(|a| a.admin);
    println!(
        "signed in as {user}{} until {} (profile {profile_name}, {})",
        if admin { " (administrator)" } else { "" },
        when(granted.expires_ms),
        path.display()
    );
    Ok(())
}

/// A time in milliseconds since the epoch, as UTC.
fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

/// `nimbus logout`: ends the session in the cluster and forgets it here.
pub async fn logout(client: &MetaClient, profile_name: &str) -> anyhow::Result<()> {
    let Some(stored) = profile::load(profile_name)? else {
        println!("not signed in (profile {profile_name})");
        return Ok(());
    };
    // An expired or revoked token has nothing left to end in the cluster.
    if let Err(e) = call(client, Op::Logout(pb::Logout {})).await {
        eprintln!("note: {e}");
    }
    profile::remove(profile_name)?;
    println!("signed out {} (profile {profile_name})", stored.user);
    Ok(())
}

fn print_account(a: &pb::Account) {
    let limit = |q: u64, f: &dyn Fn(u64) -> String| if q == 0 { "none".to_owned() } else { f(q) };
    println!(
        "user:    {} (uid {}){}",
        a.name,
        a.uid,
        if a.admin { ", administrator" } else { "" }
    );
    if a.disabled {
        println!("state:   DISABLED");
    }
    println!("home:    {}", a.home);
    println!(
        "groups:  {}",
        if a.groups.is_empty() {
            "-".into()
        } else {
            a.groups.join(", ")
        }
    );
    println!(
        "space:   {} used of {}",
        paths::human(a.used_bytes),
        limit(a.quota_bytes, &paths::human)
    );
    println!(
        "inodes:  {} used of {}",
        a.used_inodes,
        limit(a.quota_inodes, &|n| n.to_string())
    );
}

fn account_of(r: R) -> anyhow::Result<pb::Account> {
    match r {
        R::Account(a) => Ok(a),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// `nimbus whoami`.
pub async fn whoami(client: &MetaClient) -> anyhow::Result<()> {
    print_account(&account_of(call(client, Op::Whoami(pb::WhoAmI {})).await?)?);
    Ok(())
}

/// `nimbus user add`.
pub async fn user_add(
    client: &MetaClient,
    name: String,
    quota_bytes: u64,
    quota_inodes: u64,
    admin: bool,
    password: PasswordSource,
) -> anyhow::Result<()> {
    let pw = password.read(&format!("password for the new user {name}: "))?;
    let op = Op::UserAdd(pb::UserAdd {
        name,
        password: pw,
        quota_bytes,
        quota_inodes,
        admin,
    });
    let a = account_of(call(client, op).await?)?;
    println!("created user {} (uid {}) with home {}", a.name, a.uid, a.home);
    Ok(())
}

/// `nimbus user list`.
pub async fn user_list(client: &MetaClient) -> anyhow::Result<()> {
    let R::Accounts(list) = call(client, Op::UserList(pb::UserList {})).await? else {
        bail!("unexpected answer to user list");
    };
    println!(
        "{:<20} {:>7} {:<6} {:<9} {:>12} {:>12} {:>10} {:>10}",
        "NAME", "UID", "ADMIN", "STATE", "USED", "QUOTA", "INODES", "LIMIT"
    );
    for a in list.accounts {
        let q = |v: u64, f: fn(u64) -> String| if v == 0 { "-".to_owned() } else { f(v) };
        println!(
            "{:<20} {:>7} {:<6} {:<9} {:>12} {:>12} {:>10} {:>10}",
            a.name,
            a.uid,
            if a.admin { "yes" } else { "no" },
            if a.disabled { "disabled" } else { "active" },
            paths::human(a.used_bytes),
            q(a.quota_bytes, paths::human),
            a.used_inodes,
            q(a.quota_inodes, |n| n.to_string()),
        );
    }
    // Administrators also see who waits for verification.
    if let Err(e) = crate::signup::print_pending(client).await {
        tracing::debug!("pending sign-ups: {e}");
    }
    Ok(())
}

/// `nimbus user passwd [NAME]`: one's own (asks the current password) or,
/// for an administrator, anyone's.
pub async fn user_passwd(
    client: &MetaClient,
    name: Option<String>,
    own_name: Option<String>,
    password: PasswordSource,
) -> anyhow::Result<()> {
    let own = name.is_none() || name == own_name;
    let old = if own && !password.password_stdin {
        read_hidden("current password: ")?
    } else if own {
        // For scripts: the current password on the first line, the new one
        // on the second.
        password.read("")?
    } else {
        String::new()
    };
    let new = password.read("new password: ")?;
    if !password.password_stdin {
        let again = read_hidden("new password again: ")?;
        if again != new {
            bail!("the two new passwords differ; nothing changed");
        }
    }
    let op = Op::UserPasswd(pb::UserPasswd {
        name: name.clone().unwrap_or_default(),
        old_password: old,
        new_password: new,
    });
    call(client, op).await?;
    println!(
        "password changed{}",
        name.map(|n| format!(" for {n}")).unwrap_or_default()
    );
    Ok(())
}

/// `nimbus user disable/enable`.
pub async fn user_disable(client: &MetaClient, name: String, disabled: bool) -> anyhow::Result<()> {
    call(
        client,
        Op::UserDisable(pb::UserDisable {
            name: name.clone(),
            disabled,
        }),
    )
    .await?;
    if disabled {
        println!("disabled {name}: their sessions are ended and they cannot sign in");
    } else {
        println!("enabled {name}");
    }
    Ok(())
}

/// `nimbus user remove`.
pub async fn user_remove(client: &MetaClient, name: String) -> anyhow::Result<()> {
    let who = account_of(call(client, Op::QuotaGet(pb::QuotaGet { user: name.clone() })).await?)?;
    call(client, Op::UserRemove(pb::UserRemove { name: name.clone() })).await?;
    println!(
        "removed {name}; their files stay, in {}.removed-{} (uid {} is never reused): move or delete them",
        who.home, who.uid, who.uid
    );
    Ok(())
}

/// `nimbus group ...`.
pub async fn group_add(client: &MetaClient, name: String) -> anyhow::Result<()> {
    call(client, Op::GroupAdd(pb::GroupAdd { name: name.clone() })).await?;
    println!("created group {name}");
    Ok(())
}

/// `nimbus group adduser/deluser`.
pub async fn group_member(client: &MetaClient, group: String, user: String, add: bool) -> anyhow::Result<()> {
    let op = Op::GroupMember(pb::GroupMember {
        group: group.clone(),
        user: user.clone(),
        add,
    });
    call(client, op).await?;
    println!(
        "{} {user} {} {group}",
        if add { "added" } else { "removed" },
        if add { "to" } else { "from" }
    );
    Ok(())
}

/// `nimbus group list`.
pub async fn group_list(client: &MetaClient) -> anyhow::Result<()> {
    let R::Groups(g) = call(client, Op::GroupList(pb::GroupList {})).await? else {
        bail!("unexpected answer to group list");
    };
    for g in g.groups {
        println!("{} (gid {}): {}", g.name, g.gid, g.members.join(", "));
    }
    Ok(())
}

/// `nimbus quota get`.
pub async fn quota_get(client: &MetaClient, user: Option<String>) -> anyhow::Result<()> {
    let op = Op::QuotaGet(pb::QuotaGet {
        user: user.unwrap_or_default(),
    });
    print_account(&account_of(call(client, op).await?)?);
    Ok(())
}

/// `nimbus quota set`.
pub async fn quota_set(
    client: &MetaClient,
    user: String,
    bytes: Option<u64>,
    inodes: Option<u64>,
) -> anyhow::Result<()> {
    if bytes.is_none() && inodes.is_none() {
        bail!("give --bytes and/or --inodes (0 removes a limit)");
    }
    let op = Op::QuotaSet(pb::QuotaSet { user, bytes, inodes });
    print_account(&account_of(call(client, op).await?)?);
    Ok(())
}

/// `nimbus quota check`: exits non-zero when usage disagrees (unless fixed).
pub async fn quota_check(client: &MetaClient, fix: bool) -> anyhow::Result<()> {
    let R::Quota(report) = call(client, Op::QuotaCheck(pb::QuotaCheck { fix })).await? else {
        bail!("unexpected answer to quota check");
    };
    if report.diffs.is_empty() {
        println!("usage of every user agrees with the namespace");
        return Ok(());
    }
    for d in &report.diffs {
        println!(
            "{} (uid {}): recorded {} bytes / {} inodes, counted {} bytes / {} inodes",
            if d.user.is_empty() { "-" } else { &d.user },
            d.uid,
            d.recorded_bytes,
            d.recorded_inodes,
            d.actual_bytes,
            d.actual_inodes
        );
    }
    if report.fixed {
        println!("recorded the counted usage for {} user(s)", report.diffs.len());
        Ok(())
    } else {
        bail!(
            "{} user(s) with usage that disagrees; run `nimbus quota check --fix`",
            report.diffs.len()
        )
    }
}

/// A path in the store from one given on the command line: an absolute
/// store path, or a local path inside a Nimbus mount.
fn store_path(arg: &str) -> anyhow::Result<String> {
    let local = Path::new(arg);
    if let Ok(abs) = local.canonicalize() {
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let mut best: Option<&str> = None;
            for line in mounts.lines() {
                let mut f = line.split_whitespace();
                let (Some(source), Some(point), Some(fstype)) = (f.next(), f.next(), f.next()) else {
                    continue;
                };
                let nimbus = source == "nimbus" && fstype.starts_with("fuse");
                if nimbus && abs.starts_with(point) && best.is_none_or(|b| point.len() > b.len()) {
                    best = Some(point);
                }
            }
            if let Some(point) = best {
                let rest = abs.strip_prefix(point).unwrap_or(&abs);
                return Ok(format!("/{}", rest.display()));
            }
        }
    }
    if !arg.starts_with('/') {
        bail!("{arg:?} is neither inside a Nimbus mount nor an absolute path in the store");
    }
    Ok(arg.to_owned())
}

/// `nimbus share PATH WHO --ro|--rw`.
pub async fn share(client: &MetaClient, path: &str, grantee: String, rw: bool) -> anyhow::Result<()> {
    let p = store_path(path)?;
    let attr = paths::resolve(client, &p).await?;
    let op = Op::ShareAdd(pb::ShareAdd {
        ino: attr.ino,
        grantee: grantee.clone(),
        rw,
    });
    call(client, op).await?;
    println!(
        "shared {p} with {grantee}, {}; they reach it at {p}",
        if rw { "read-write" } else { "read-only" }
    );
    Ok(())
}

/// `nimbus share revoke PATH WHO`.
pub async fn revoke(client: &MetaClient, path: &str, grantee: String) -> anyhow::Result<()> {
    let p = store_path(path)?;
    let attr = paths::resolve(client, &p).await?;
    let op = Op::ShareRevoke(pb::ShareRevoke {
        ino: attr.ino,
        grantee: grantee.clone(),
    });
    call(client, op).await?;
    println!("{grantee} no longer has access to {p} through a share");
    Ok(())
}

/// `nimbus share list`.
pub async fn share_list(client: &MetaClient) -> anyhow::Result<()> {
    let R::Shares(s) = call(client, Op::ShareList(pb::ShareList {})).await? else {
        bail!("unexpected answer to share list");
    };
    if s.shares.is_empty() {
        println!("no shares");
    }
    for s in s.shares {
        println!(
            "{}  {}  by {} with {}",
            s.path,
            if s.rw { "rw" } else { "ro" },
            s.owner,
            s.grantee
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").is_err());
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_700_000_000_000), "2023-11-14 22:13 UTC");
    }
}
