//! `nimbus-meta`: runs a Nimbus metadata server, creates the cluster's TLS
//! certificates, and administers cluster membership.

mod config;
mod server;

use anyhow::bail;
use clap::{Parser, Subcommand};
use config::{Config, Settings};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::tls::{self, Security};
use nimbus_proto as pb;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nimbus-meta",
    version,
    about = "Nimbus metadata server: the Raft-replicated namespace",
    long_about = "Nimbus metadata server. A cluster of 3 (or 5) nimbus-meta processes keeps \
                  the namespace (inodes, directories, attributes) replicated with Raft; every \
                  change is durable on a majority before it is acknowledged.\n\n\
                  A new cluster, by hand:\n  \
                  nimbus-meta ca init --dir certs\n  \
                  nimbus-meta ca issue --dir certs --name meta1   (and meta2, meta3, admin)\n  \
                  nimbus-meta serve --id 1 --listen 127.0.0.1:7101 --data-dir m1 --tls-dir certs \\\n      \
                  --initial-members 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103\n  \
                  (the same for ids 2 and 3)\n  \
                  nimbus-meta cluster status --meta 127.0.0.1:7101 --tls-dir certs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a meta server until SIGTERM or SIGINT.
    Serve {
        /// TOML file with any of the settings below (same names, with `_`
        /// for `-`); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Create the cluster CA and certificates for servers and operators.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Inspect and change the members of a running cluster.
    Cluster {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new CA (ca.pem, ca.key), the block-token keys (token.key,
    /// token.pub) and the meta servers' master key (master.key) in DIR;
    /// refuses to overwrite a CA.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Create the meta servers' master key (DIR/master.key, 0600) unless
    /// one is there: for a CA made before encryption at rest.
    MasterKey {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue NAME.pem and NAME.key in DIR, signed by the CA there.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// Certificate name, e.g. meta1, data1 or admin.
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the certificate is valid for.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

/// How to reach the cluster.
#[derive(clap::Args)]
struct Conn {
    /// Meta servers to contact (host:port, comma-separated, any members).
    #[arg(
        long,
        global = true,
        env = "NIMBUS_META",
        value_delimiter = ',',
        default_value = "127.0.0.1:7100"
    )]
    meta: Vec<String>,
    /// Directory with ca.pem and the operator certificate.
    #[arg(long, global = true, env = "NIMBUS_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Name of the operator certificate in the TLS directory.
    #[arg(long, global = true, default_value = "admin")]
    tls_name: String,
    /// Connect without TLS, to servers started with --insecure.
    #[arg(long, global = true)]
    insecure: bool,
    /// Give up after this many seconds without an answer from a leader.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show every reachable member: role, term, log and applied indexes.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a node (started without --initial-members) as a learner, wait until
    /// it has caught up, then make it a voter.
    Add {
        #[arg(long)]
        id: u64,
        /// The address the new node serves on (host:port).
        #[arg(long)]
        addr: String,
    },
    /// Remove a node from the cluster; stop its process afterwards.
    Remove {
        #[arg(long)]
        id: u64,
    },
    /// Build a snapshot on the leader now and compact its log.
    Snapshot,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Commands that print end quietly on a closed pipe; a server must not
    // die when a peer's socket closes under it, so it keeps SIGPIPE ignored.
    if !matches!(cli.command, Command::Serve { .. }) {
        nimbus_common::process::die_on_closed_pipe();
    } else {
        nimbus_common::process::tune_malloc();
    }
    nimbus_common::logging::init();
    tls::install_crypto_provider();
    nimbus_common::process::run("nimbus-meta", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, settings } => {
            let file = match config {
                Some(path) => nimbus_common::config::load(&path)?,
                None => Settings::default(),
            };
            server::serve(Config::resolve(settings.or(file))?).await
        }
        Command::Ca { command } => match command {
            CaCommand::Init { dir } => {
                tls::create_ca(&dir)?;
                println!("created cluster CA in {}", dir.display());
                Ok(())
            }
            CaCommand::MasterKey { dir } => {
                let path = dir.join("master.key");
                let existed = path.exists();
                nimbus_common::encryption::create_master_key(&path)?;
                match existed {
                    true => println!("{} exists; left as it is", path.display()),
                    false => println!("created {} (mode 0600): copy it to every meta server", path.display()),
                }
                Ok(())
            }
            CaCommand::Issue { dir, name, hosts } => {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    bail!("certificate names are letters, digits, '-' and '_'");
                }
                tls::issue(&dir, &name, &hosts)?;
                println!("issued {0}.pem and {0}.key in {1}", name, dir.display());
                Ok(())
            }
        },
        Command::Cluster { conn, command } => cluster(conn, command).await,
    }
}

async fn cluster(conn: Conn, command: ClusterCommand) -> anyhow::Result<()> {
    let security = match (&conn.tls_dir, conn.insecure) {
        (_, true) => Security::Insecure,
        (Some(dir), false) => Security::load(dir, &conn.tls_name)?,
        (None, false) => bail!("--tls-dir is required (or --insecure for servers started with --insecure)"),
    };
    let client = MetaClient::new(security, conn.meta.clone(), Duration::from_secs(conn.timeout))?;
    let status = match command {
        ClusterCommand::Status { json } => return print_status(&client, &conn.meta, json).await,
        ClusterCommand::Add { id, addr } => {
            client
                .on_leader(|ch| {
                    let req = pb::AddMemberRequest { id, addr: addr.clone() };
                    async move { MetaClient::admin(ch).add_member(req).await }
                })
                .await?
        }
        ClusterCommand::Remove { id } => {
            client
                .on_leader(|ch| async move {
                    MetaClient::admin(ch)
                        .remove_member(pb::RemoveMemberRequest { id })
                        .await
                })
                .await?
        }
        ClusterCommand::Snapshot => {
            client
                .on_leader(|ch| async move { MetaClient::admin(ch).trigger_snapshot(pb::SnapshotRequest {}).await })
                .await?
        }
    };
    print_members(&status);
    Ok(())
}

fn print_members(s: &pb::NodeStatus) {
    println!(
        "leader: {} ({})",
        s.leader_id.map(|l| l.to_string()).unwrap_or("none".into()),
        s.leader_addr
    );
    for m in &s.members {
        println!(
            "  {:>4}  {:<22} {}",
            m.id,
            m.addr,
            if m.voter { "voter" } else { "learner" }
        );
    }
}

async fn print_status(client: &MetaClient, seeds: &[String], json: bool) -> anyhow::Result<()> {
    // Ask the seeds, then every member they know of.
    let mut addrs: Vec<String> = seeds.to_vec();
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < addrs.len() {
        let addr = addrs[i].clone();
        i += 1;
        match client.node_status(&addr).await {
            Ok(s) => {
                for m in &s.members {
                    if !addrs.contains(&m.addr) {
                        addrs.push(m.addr.clone());
                    }
                }
                nodes.push((addr, Ok(s)));
            }
            Err(e) => nodes.push((addr, Err(e))),
        }
    }
    if json {
        let list: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(addr, s)| match s {
                Ok(s) => serde_json::json!({
                    "addr": addr, "id": s.id, "role": s.role, "term": s.term,
                    "leader_id": s.leader_id, "leader_addr": s.leader_addr,
                    "last_log_index": s.last_log_index, "last_applied": s.last_applied,
                    "snapshot_index": s.snapshot_index,
                    "members": s.members.iter().map(|m| serde_json::json!({"id": m.id, "addr": m.addr, "voter": m.voter})).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({"addr": addr, "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<22} {:>4} {:<10} {:>6} {:>10} {:>10} {:>10}",
        "ADDRESS", "ID", "ROLE", "TERM", "LAST LOG", "APPLIED", "SNAPSHOT"
    );
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
    for (addr, s) in &nodes {
        match s {
            Ok(s) => println!(
                "{:<22} {:>4} {:<10} {:>6} {:>10} {:>10} {:>10}",
                addr,
                s.id,
                s.role,
                s.term,
                opt(s.last_log_index),
                opt(s.last_applied),
                opt(s.snapshot_index)
            ),
            Err(e) => println!("{addr:<22} unreachable: {e}"),
        }
    }
    if nodes.iter().all(|(_, s)| s.is_err()) {
        return Err(ClientError::Unavailable("no meta server answered".into()).into());
    }
    Ok(())
}
