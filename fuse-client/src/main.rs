//! `nimbus`: the Nimbus command line: the FUSE mount, a local development
//! cluster, cluster status and administration, and namespace commands by path.

mod account;
mod connection;
mod dev;
mod key;
mod mount;
mod paths;
mod replication;
mod signup;

use anyhow::bail;
use clap::{Parser, Subcommand};
use connection::Conn;
use nimbus_common::tls;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "nimbus",
    version,
    about = "Nimbus distributed file system: local cluster, status and namespace commands",
    long_about = "Nimbus distributed file system.\n\n\
                  `nimbus dev up` starts a local cluster of 3 meta and 3 data servers on 127.0.0.1 \
                  with its state in ./.nimbus-dev and signs you in as its administrator; the other \
                  commands then talk to it, unless --meta (or NIMBUS_META) names another cluster.\n\n\
                  Every command acts as the Nimbus user of a stored sign-in (`nimbus login`), \
                  picked with --profile (or NIMBUS_PROFILE)."
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a local development cluster.
    Dev {
        #[command(subcommand)]
        command: DevCmd,
    },
    /// Show the meta servers, their roles and the leader.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a directory.
    Ls { path: String },
    /// Show the attributes of a file or directory.
    Stat { path: String },
    /// Create a directory (parents must exist).
    Mkdir {
        path: String,
        /// Permission bits, octal.
        #[arg(long, default_value = "755", value_parser = parse_mode)]
        mode: u32,
    },
    /// Create an empty file, or fail if it exists.
    Touch {
        path: String,
        #[arg(long, default_value = "644", value_parser = parse_mode)]
        mode: u32,
    },
    /// Remove a file.
    Rm { path: String },
    /// Remove an empty directory.
    Rmdir { path: String },
    /// Rename a file or directory.
    Mv { from: String, to: String },
    /// Mount the file system at a directory, in the foreground, until
    /// SIGTERM/SIGINT or `umount`.
    Mount(mount::MountArgs),
    /// Master keys of encryption at rest (operators, with admin.pem).
    Key {
        #[command(subcommand)]
        command: KeyCmd,
    },
    /// Show or set how many copies new blocks under a directory get.
    Replication {
        #[command(subcommand)]
        command: ReplicationCmd,
    },
    /// Administer data servers (ids as `nimbus status` shows them).
    Server {
        #[command(subcommand)]
        command: ServerCmd,
    },
    /// Sign in and store the session token (readable only by you) in the
    /// profile (--profile, default "default").
    Login {
        /// The Nimbus user. [default: $USER]
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        password: account::PasswordSource,
        /// How long the sign-in lasts, e.g. 12h or 30d. [default: 7d]
        #[arg(long, value_parser = account::parse_duration)]
        ttl: Option<u64>,
    },
    /// End the profile's session in the cluster and forget its token.
    Logout,
    /// Show who the profile is signed in as, with quota and usage.
    Whoami,
    /// Create your own account (if the cluster's sign-up policy lets you):
    /// signup NAME --email ADDRESS; a mail with a link verifies the address.
    ///
    /// `signup verify TOKEN` verifies with the token from the mail; `signup
    /// resend NAME` sends a new link. Administrators: `signup policy`,
    /// `signup list`, `signup approve NAME`, `signup remove NAME`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Signup {
        #[command(subcommand)]
        command: Option<SignupCmd>,
        /// The user name you want.
        #[arg(required = true)]
        name: Option<String>,
        /// Your e-mail address, where the link goes.
        #[arg(long, required = true)]
        email: Option<String>,
        #[command(flatten)]
        password: account::PasswordSource,
    },
    /// Forgot your password: `password-reset request ADDRESS` mails a link;
    /// `password-reset set TOKEN` sets a new password with it.
    PasswordReset {
        #[command(subcommand)]
        command: ResetCmd,
    },
    /// Manage user accounts (administrators; `passwd` for everyone).
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
    /// Manage groups (administrators; `list` for everyone).
    Group {
        #[command(subcommand)]
        command: GroupCmd,
    },
    /// Show and set space and inode quotas.
    Quota {
        #[command(subcommand)]
        command: QuotaCmd,
    },
    /// Share a folder or file with a user or @group (share PATH WHO --ro|--rw).
    ///
    /// PATH is a path in the store (/home/alice/projects) or inside a local
    /// Nimbus mount. The recipient uses the same path: the share lets them
    /// through the folders above it, to it only. `share list` shows what you
    /// shared and what was shared with you; `share revoke` ends a share at
    /// once.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Share {
        #[command(subcommand)]
        command: Option<ShareCmd>,
        /// What to share.
        #[arg(required = true)]
        path: Option<String>,
        /// A user name, or @group.
        #[arg(required = true)]
        who: Option<String>,
        /// Read-only access.
        #[arg(long, conflicts_with = "rw", required_unless_present = "rw")]
        ro: bool,
        /// Read-write access.
        #[arg(long)]
        rw: bool,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user with home folder /home/NAME (mode 0700).
    Add {
        name: String,
        /// Space quota, e.g. 10G (0: none).
        #[arg(long, default_value = "0", value_parser = account::parse_size)]
        quota_bytes: u64,
        /// Most files and directories (0: none).
        #[arg(long, default_value_t = 0)]
        quota_inodes: u64,
        /// Make the user an administrator (the file-system superuser).
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        password: account::PasswordSource,
    },
    /// List users with their usage and quotas.
    List,
    /// Change your password, or (administrators) reset another user's. With
    /// --password-stdin, your own change reads the current password on the
    /// first line and the new one on the second.
    Passwd {
        name: Option<String>,
        #[command(flatten)]
        password: account::PasswordSource,
    },
    /// Stop a user from signing in and end their sessions.
    Disable { name: String },
    /// Let a disabled user sign in again.
    Enable { name: String },
    /// Delete an account. Their home folder and files stay, renamed to
    /// /home/NAME.removed-UID; their shares end.
    Remove { name: String },
    /// Set your e-mail address (for password reset): a link mailed to it
    /// confirms it; until then the earlier one stays.
    Email { address: String },
}

#[derive(Subcommand)]
enum GroupCmd {
    /// Create a group.
    Add { name: String },
    /// Add a user to a group.
    Adduser { group: String, user: String },
    /// Remove a user from a group.
    Deluser { group: String, user: String },
    /// List groups and their members.
    List,
}

#[derive(Subcommand)]
enum QuotaCmd {
    /// Show a user's quota and usage (yours by default).
    Get { user: Option<String> },
    /// Set a user's limits (administrators); 0 removes a limit.
    Set {
        user: String,
        /// Space, e.g. 10G.
        #[arg(long, value_parser = account::parse_size)]
        bytes: Option<u64>,
        /// Files and directories.
        #[arg(long)]
        inodes: Option<u64>,
    },
    /// Recount every user's usage from the namespace and compare
    /// (administrators); exits 1 on a difference unless --fix records the counts.
    Check {
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Subcommand)]
enum ShareCmd {
    /// Shares you made or received (administrators: all).
    List,
    /// End a share.
    Revoke { path: String, who: String },
}

#[derive(Subcommand)]
enum SignupCmd {
    /// Verify your address with the token from the mail.
    Verify { token: String },
    /// Send a new verification mail (at most one a minute, five in all).
    Resend { name: String },
    /// Show the sign-up policy, or change it (administrators).
    Policy {
        /// closed (the default), open, or domains (with --domains).
        #[arg(long, value_parser = ["closed", "open", "domains"])]
        mode: Option<String>,
        /// Domains whose addresses may sign up (comma-separated).
        #[arg(long, value_delimiter = ',')]
        domains: Vec<String>,
        /// Space quota of new accounts, e.g. 10G (0: no limit).
        #[arg(long, value_parser = account::parse_size)]
        quota_bytes: Option<u64>,
        /// Inode quota of new accounts (0: no limit).
        #[arg(long)]
        quota_inodes: Option<u64>,
        /// Remove unverified sign-ups older than this, e.g. 7d.
        #[arg(long, value_parser = account::parse_duration)]
        max_age: Option<u64>,
    },
    /// Pending sign-ups (administrators).
    List,
    /// Make a pending sign-up's account without its verification (administrators).
    Approve { name: String },
    /// Drop a pending sign-up (administrators).
    Remove { name: String },
}

#[derive(Subcommand)]
enum ResetCmd {
    /// Mail a link to set a new password to the account with this address.
    Request { email: String },
    /// Set a new password with the token from the mail.
    Set {
        token: String,
        #[command(flatten)]
        password: account::PasswordSource,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Show each meta server's master key, staged key and key ring (fingerprints).
    Status,
    /// Move the cluster's wrapped data secret to a new master key, made and
    /// sent (over TLS) to every meta server by the leader. Data is not
    /// re-encrypted; afterwards the old key no longer starts a meta server.
    /// Safe to run again after a failure.
    Rotate,
}

#[derive(Subcommand)]
enum ReplicationCmd {
    /// Show a file's or directory's replication.
    Get { path: String },
    /// Set it (1 to 5 copies) for what is made in the directory from now on.
    Set { path: String, copies: u32 },
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Stop placing blocks on a server and move its blocks elsewhere.
    Drain {
        id: u64,
        /// Stay until it is empty, printing how many blocks are left.
        #[arg(long)]
        wait: bool,
    },
    /// Take a drained or draining server back into service.
    Activate { id: u64 },
    /// Remove an emptied (drained) server for good; its id is never reused.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum DevCmd {
    /// Start 3 meta and 3 data servers on free 127.0.0.1 ports, in the background.
    Up {
        /// Also mount the cluster at this directory (created if missing).
        #[arg(long)]
        mount: Option<PathBuf>,
    },
    /// Stop every process of the dev cluster.
    Down {
        /// Also delete its state (namespace, certificates, logs).
        #[arg(long)]
        purge: bool,
    },
    /// Show the dev cluster's processes.
    Status {
        /// Print JSON: processes with role, id, pid, address, data dir, leader.
        #[arg(long)]
        json: bool,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal mode (0-7777)")),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Commands that print end quietly on a closed pipe (`nimbus status |
    // head`); the mount serves sockets and keeps SIGPIPE ignored.
    if !matches!(cli.command, Cmd::Mount(_)) {
        nimbus_common::process::die_on_closed_pipe();
    }
    tls::install_crypto_provider();
    nimbus_common::process::run("nimbus", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let conn = cli.conn;
    match cli.command {
        Cmd::Dev { command } => match command {
            DevCmd::Up { mount } => dev::up(&conn.dev_dir, mount.as_deref(), &conn.profile).await,
            DevCmd::Down { purge } => dev::down(&conn.dev_dir, purge),
            DevCmd::Status { json } => dev::status(&conn.dev_dir, json).await,
        },
        Cmd::Status { json } => paths::status(&conn.client()?, json).await,
        Cmd::Ls { path } => paths::ls(&conn.client()?, &path).await,
        Cmd::Stat { path } => paths::stat(&conn.client()?, &path).await,
        Cmd::Mkdir { path, mode } => paths::mkdir(&conn.client()?, &path, mode).await,
        Cmd::Touch { path, mode } => paths::touch(&conn.client()?, &path, mode).await,
        Cmd::Rm { path } => paths::rm(&conn.client()?, &path, false).await,
        Cmd::Rmdir { path } => paths::rm(&conn.client()?, &path, true).await,
        Cmd::Mv { from, to } => paths::mv(&conn.client()?, &from, &to).await,
        Cmd::Mount(args) => mount::run(conn.client()?, args).await,
        Cmd::Key { command } => match command {
            KeyCmd::Status => key::status(&conn.client()?).await,
            KeyCmd::Rotate => key::rotate(&conn.client()?).await,
        },
        Cmd::Replication { command } => match command {
            ReplicationCmd::Get { path } => replication::get(&conn.client()?, &path).await,
            ReplicationCmd::Set { path, copies } => replication::set(&conn.client()?, &path, copies).await,
        },
        Cmd::Server { command } => {
            let (id, state) = match command {
                ServerCmd::Drain { id, wait: true } => {
                    let client = conn.client()?;
                    paths::server_state(&client, id, "draining").await?;
                    return paths::wait_drained(&client, id).await;
                }
                ServerCmd::Drain { id, wait: false } => (id, "draining"),
                ServerCmd::Activate { id } => (id, "active"),
                ServerCmd::Remove { id } => (id, "removed"),
            };
            paths::server_state(&conn.client()?, id, state).await
        }
        Cmd::Login { user, password, ttl } => {
            let cluster = conn.cluster()?;
            account::login(&cluster, &conn.profile, user, password, ttl.unwrap_or(0)).await
        }
        Cmd::Logout => account::logout(&conn.client()?, &conn.profile).await,
        Cmd::Whoami => account::whoami(&conn.client()?).await,
        Cmd::Signup {
            command,
            name,
            email,
            password,
        } => match (command, name, email) {
            (Some(SignupCmd::Verify { token }), _, _) => signup::verify(&conn.cluster()?, &token).await,
            (Some(SignupCmd::Resend { name }), _, _) => signup::resend(&conn.cluster()?, &name).await,
            (
                Some(SignupCmd::Policy {
                    mode,
                    domains,
                    quota_bytes,
                    quota_inodes,
                    max_age,
                }),
                _,
                _,
            ) => {
                let change = signup::PolicyChange {
                    mode,
                    domains,
                    quota_bytes,
                    quota_inodes,
                    max_age_secs: max_age,
                };
                signup::policy(&conn.client()?, change).await
            }
            (Some(SignupCmd::List), _, _) => signup::print_pending(&conn.client()?).await,
            (Some(SignupCmd::Approve { name }), _, _) => signup::decide(&conn.client()?, &name, true).await,
            (Some(SignupCmd::Remove { name }), _, _) => signup::decide(&conn.client()?, &name, false).await,
            (None, Some(name), Some(email)) => signup::sign_up(&conn.cluster()?, &name, &email, password).await,
            _ => {
                bail!("usage: nimbus signup NAME --email ADDRESS (or signup verify|resend|policy|list|approve|remove)")
            }
        },
        Cmd::PasswordReset { command } => match command {
            ResetCmd::Request { email } => signup::request_reset(&conn.cluster()?, &email).await,
            ResetCmd::Set { token, password } => signup::reset(&conn.cluster()?, &token, password).await,
        },
        Cmd::User { command } => {
            let client = conn.client()?;
            match command {
                UserCmd::Add {
                    name,
                    quota_bytes,
                    quota_inodes,
                    admin,
                    password,
                } => account::user_add(&client, name, quota_bytes, quota_inodes, admin, password).await,
                UserCmd::List => account::user_list(&client).await,
                UserCmd::Passwd { name, password } => {
                    let own = nimbus_client::profile::load(&conn.profile)?.map(|p| p.user);
                    account::user_passwd(&client, name, own, password).await
                }
                UserCmd::Disable { name } => account::user_disable(&client, name, true).await,
                UserCmd::Enable { name } => account::user_disable(&client, name, false).await,
                UserCmd::Remove { name } => account::user_remove(&client, name).await,
                UserCmd::Email { address } => signup::set_address(&client, &address).await,
            }
        }
        Cmd::Group { command } => {
            let client = conn.client()?;
            match command {
                GroupCmd::Add { name } => account::group_add(&client, name).await,
                GroupCmd::Adduser { group, user } => account::group_member(&client, group, user, true).await,
                GroupCmd::Deluser { group, user } => account::group_member(&client, group, user, false).await,
                GroupCmd::List => account::group_list(&client).await,
            }
        }
        Cmd::Quota { command } => {
            let client = conn.client()?;
            match command {
                QuotaCmd::Get { user } => account::quota_get(&client, user).await,
                QuotaCmd::Set { user, bytes, inodes } => account::quota_set(&client, user, bytes, inodes).await,
                QuotaCmd::Check { fix } => account::quota_check(&client, fix).await,
            }
        }
        Cmd::Share {
            command,
            path,
            who,
            ro: _,
            rw,
        } => {
            let client = conn.client()?;
            match (command, path, who) {
                (Some(ShareCmd::List), _, _) => account::share_list(&client).await,
                (Some(ShareCmd::Revoke { path, who }), _, _) => account::revoke(&client, &path, who).await,
                (None, Some(path), Some(who)) => account::share(&client, &path, who, rw).await,
                _ => bail!("usage: nimbus share PATH USER|@GROUP --ro|--rw (or share list, share revoke)"),
            }
        }
    }
}
