//! `nimbus`: the Nimbus command line: the FUSE mount, a local development
//! cluster, cluster status and administration, and namespace commands by path.

mod dev;
mod mount;
mod paths;

use anyhow::bail;
use clap::{Parser, Subcommand};
use nimbus_client::MetaClient;
use nimbus_common::tls::{self, Security};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nimbus",
    version,
    about = "Nimbus distributed file system: local cluster, status and namespace commands",
    long_about = "Nimbus distributed file system.\n\n\
                  `nimbus dev up` starts a local cluster of 3 meta servers on 127.0.0.1 with its \
                  state in ./.nimbus-dev; the other commands then talk to it, unless --meta (or \
                  NIMBUS_META) names another cluster."
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Cmd,
}

/// Which cluster to talk to.
#[derive(clap::Args)]
struct Conn {
    /// Meta servers (host:port, comma-separated). Default: the dev cluster.
    #[arg(long, global = true, env = "NIMBUS_META", value_delimiter = ',')]
    meta: Vec<String>,
    /// Directory with ca.pem and the operator certificate (admin.pem/.key).
    #[arg(long, global = true, env = "NIMBUS_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Connect without TLS, to servers started with --insecure.
    #[arg(long, global = true)]
    insecure: bool,
    /// State directory of the dev cluster.
    #[arg(long, global = true, env = "NIMBUS_DEV_DIR", default_value = ".nimbus-dev")]
    dev_dir: PathBuf,
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
    /// Administer data servers (ids as `nimbus status` shows them).
    Server {
        #[command(subcommand)]
        command: ServerCmd,
    },
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Stop placing blocks on a server and move its blocks elsewhere.
    Drain { id: u64 },
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

impl Conn {
    fn client(&self) -> anyhow::Result<MetaClient> {
        if self.meta.is_empty() {
            let Some(dev) = dev::load(&self.dev_dir)? else {
                bail!("no cluster given: pass --meta HOST:PORT (or NIMBUS_META), or start one with `nimbus dev up`");
            };
            return dev.client();
        }
        let security = match (&self.tls_dir, self.insecure) {
            (_, true) => Security::Insecure,
            (Some(d), false) => Security::load(d, "admin")?,
            (None, false) => bail!("--tls-dir (or NIMBUS_TLS_DIR) is required with --meta, or --insecure"),
        };
        Ok(MetaClient::new(security, self.meta.clone(), Duration::from_secs(30))?)
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
            DevCmd::Up { mount } => dev::up(&conn.dev_dir, mount.as_deref()).await,
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
        Cmd::Server { command } => {
            let (id, state) = match command {
                ServerCmd::Drain { id } => (id, "draining"),
                ServerCmd::Activate { id } => (id, "active"),
                ServerCmd::Remove { id } => (id, "removed"),
            };
            paths::server_state(&conn.client()?, id, state).await
        }
    }
}
