//! `nimbus-data`: a Nimbus data server. Stores blocks on local directories,
//! serves them to clients and peers over TLS, reports to the meta leader, and
//! scrubs its disks.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use nimbus_client::MetaClient;
use nimbus_common::tls::{self, Security, MAX_MESSAGE_BYTES};
use nimbus_common::token::Verifier;
use nimbus_common::ServerId;
use nimbus_data::block_store::BlockStore;
use nimbus_data::{heartbeat, orphans, scrub, service::BlockService};
use nimbus_proto::blocks_server::BlocksServer;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

/// Largest block this server accepts (the meta cluster's slot size).
/// The largest block: a 4 MiB slot, sealed (nimbus_common::encryption).
const MAX_BLOCK: u64 =
    (4 << 20) + (4 << 20) / nimbus_common::encryption::SEAL_CHUNK * nimbus_common::encryption::CHUNK_OVERHEAD;

#[derive(Parser)]
#[command(
    name = "nimbus-data",
    version,
    about = "Nimbus data server: replicated, checksummed block storage",
    long_about = "Nimbus data server. Stores immutable file blocks on one or more local \
                  directories (crc32c per 64 KiB, verified on every read and by a background \
                  scrubber), serves them only against block tokens signed by the meta leader, \
                  and registers itself with the meta cluster, which tells it what to copy and \
                  delete.\n\nExample:\n  nimbus-data serve --listen 10.0.0.21:7200 --data-dir /srv/nimbus \
                  --meta 10.0.0.11:7100,10.0.0.12:7100 --tls-dir /etc/nimbus/tls --tls-name data1 --zone rack1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the data server until SIGTERM or SIGINT.
    Serve {
        /// TOML file with any of the settings below (`_` for `-`); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

/// Settings, as flags or as keys of the configuration file.
#[derive(Args, Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Address to listen on (host:port). [default: 127.0.0.1:7200]
    #[arg(long)]
    listen: Option<String>,
    /// Address clients and peers reach this server at. [default: the listen address]
    #[arg(long)]
    advertise: Option<String>,
    /// A directory to store blocks in; repeat for several disks.
    #[arg(long = "data-dir")]
    #[serde(default)]
    data_dirs: Vec<PathBuf>,
    /// Meta servers (host:port, comma-separated, any members).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    meta: Vec<String>,
    /// Directory with ca.pem, token.pub and this server's certificate.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// File name (without .pem/.key) of this server's certificate. [default: data]
    #[arg(long)]
    tls_name: Option<String>,
    /// Serve plaintext without TLS; token.pub is then read from --token-dir.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    insecure: Option<bool>,
    /// Directory holding token.pub. [default: the TLS directory]
    #[arg(long)]
    token_dir: Option<PathBuf>,
    /// Failure domain (rack, room); replicas spread over zones. [default: default]
    #[arg(long)]
    zone: Option<String>,
    /// Most bytes of blocks to store, across all data directories. [default: the disks' size]
    #[arg(long)]
    capacity: Option<u64>,
    /// Scrubber read rate in MiB/s. [default: 16]
    #[arg(long)]
    scrub_mib_per_sec: Option<u64>,
    /// Seconds between two scrub passes. [default: 3600]
    #[arg(long)]
    scrub_pause_secs: Option<u64>,
    /// Serve Prometheus metrics over HTTP on this host:port. [default: off]
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Blocks younger than this are never taken for orphans; it must exceed
    /// the longest a client keeps written blocks uncommitted. [default: 21600]
    #[arg(long)]
    orphan_grace_secs: Option<u64>,
    /// Seconds between two orphan scans. [default: 3600]
    #[arg(long)]
    orphan_scan_secs: Option<u64>,
}

impl Settings {
    fn or(self, file: Settings) -> Settings {
        Settings {
            listen: self.listen.or(file.listen),
            advertise: self.advertise.or(file.advertise),
            data_dirs: if self.data_dirs.is_empty() {
                file.data_dirs
            } else {
                self.data_dirs
            },
            meta: if self.meta.is_empty() { file.meta } else { self.meta },
            tls_dir: self.tls_dir.or(file.tls_dir),
            tls_name: self.tls_name.or(file.tls_name),
            insecure: self.insecure.or(file.insecure),
            token_dir: self.token_dir.or(file.token_dir),
            zone: self.zone.or(file.zone),
            capacity: self.capacity.or(file.capacity),
            scrub_mib_per_sec: self.scrub_mib_per_sec.or(file.scrub_mib_per_sec),
            scrub_pause_secs: self.scrub_pause_secs.or(file.scrub_pause_secs),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            orphan_grace_secs: self.orphan_grace_secs.or(file.orphan_grace_secs),
            orphan_scan_secs: self.orphan_scan_secs.or(file.orphan_scan_secs),
        }
    }
}

/// This server's id: made once, kept in the first data directory.
fn server_id(dir: &Path) -> anyhow::Result<ServerId> {
    let path = dir.join("server.id");
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            Ok(ServerId(s.trim().parse().with_context(|| {
                format!("{} does not hold a server id", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id =
                ServerId(u64::from_le_bytes(nimbus_common::BlockId::random().0[..8].try_into().unwrap_or([1; 8])) | 1);
            std::fs::write(&path, format!("{}\n", id.0)).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn serve(s: Settings) -> anyhow::Result<()> {
    let listen = s.listen.unwrap_or_else(|| "127.0.0.1:7200".into());
    let addr = s.advertise.unwrap_or_else(|| listen.clone());
    if s.data_dirs.is_empty() {
        bail!("--data-dir is required (repeat it for several disks)");
    }
    if s.meta.is_empty() {
        bail!("--meta is required: the meta servers to register with");
    }
    let zone = s.zone.unwrap_or_else(|| "default".into());
    let security = if s.insecure.unwrap_or(false) {
        tracing::warn!("serving WITHOUT TLS (--insecure)");
        Security::Insecure
    } else {
        let dir = s.tls_dir.as_ref().context("--tls-dir is required (or --insecure)")?;
        Security::load(dir, s.tls_name.as_deref().unwrap_or("data"))?
    };
    let token_dir = s
        .token_dir
        .or(s.tls_dir)
        .context("--token-dir is required to check block tokens")?;
    let verifier = Verifier::load(&token_dir)?;
    for d in &s.data_dirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let id = server_id(&s.data_dirs[0])?;
    let store = Arc::new(BlockStore::open(&s.data_dirs, s.capacity, MAX_BLOCK)?);
    let meta = Arc::new(MetaClient::new(
        security.clone(),
        s.meta.clone(),
        Duration::from_secs(10),
    )?);
    let load = Arc::new(AtomicU32::new(0));

    let usage = store.usage();
    tracing::info!(%id, %listen, %addr, %zone, blocks = usage.blocks, used = usage.used, capacity = usage.capacity, "nimbus-data serving");

    tokio::spawn(heartbeat::run(
        meta.clone(),
        store.clone(),
        heartbeat::Identity {
            id,
            addr: addr.clone(),
            zone,
        },
        load.clone(),
    ));
    let scrub_stats = Arc::new(scrub::ScrubStats::default());
    tokio::spawn(scrub::run(
        meta.clone(),
        store.clone(),
        id,
        s.scrub_mib_per_sec.unwrap_or(16) << 20,
        Duration::from_secs(s.scrub_pause_secs.unwrap_or(3600)),
        scrub_stats.clone(),
    ));
    tokio::spawn(orphans::run(
        meta.clone(),
        store.clone(),
        id,
        Duration::from_secs(s.orphan_grace_secs.unwrap_or(6 * 3600)),
        Duration::from_secs(s.orphan_scan_secs.unwrap_or(3600).max(1)),
    ));
    if let Some(addr) = s.metrics_listen.clone() {
        let render = metrics_page(store.clone(), load.clone(), scrub_stats);
        tokio::spawn(async move {
            if let Err(e) = nimbus_common::metrics::serve(addr, render).await {
                tracing::error!("metrics endpoint: {e}");
            }
        });
    }

    let service = BlockService::new(store, verifier, meta, id, addr, MAX_BLOCK, load);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    security
        .server()?
        .add_service(
            BlocksServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(Security::incoming(listener), nimbus_common::process::shutdown_signal())
        .await
        .context("gRPC server")?;
    tracing::info!("shut down");
    Ok(())
}

/// This server's metrics: space, blocks, load and scrub counters.
fn metrics_page(
    store: Arc<BlockStore>,
    load: Arc<AtomicU32>,
    scrub: Arc<scrub::ScrubStats>,
) -> nimbus_common::metrics::Render {
    use std::sync::atomic::Ordering::Relaxed;
    Arc::new(move || {
        let u = store.usage();
        let mut page = nimbus_common::metrics::Page::default();
        page.metric(
            "nimbus_data_capacity_bytes",
            "gauge",
            "bytes this server may store",
            &[("", u.capacity as f64)],
        )
        .metric(
            "nimbus_data_used_bytes",
            "gauge",
            "bytes of block data stored",
            &[("", u.used as f64)],
        )
        .metric("nimbus_data_blocks", "gauge", "blocks stored", &[("", u.blocks as f64)])
        .metric(
            "nimbus_data_load",
            "gauge",
            "block operations in progress",
            &[("", f64::from(load.load(Relaxed)))],
        )
        .metric(
            "nimbus_scrub_verified_total",
            "counter",
            "blocks verified by the scrubber",
            &[("", scrub.verified.load(Relaxed) as f64)],
        )
        .metric(
            "nimbus_scrub_corrupt_total",
            "counter",
            "corrupt replicas the scrubber found",
            &[("", scrub.corrupt.load(Relaxed) as f64)],
        )
        .metric(
            "nimbus_scrub_passes_total",
            "counter",
            "complete scrub passes",
            &[("", scrub.passes.load(Relaxed) as f64)],
        );
        page.finish()
    })
}

fn main() -> std::process::ExitCode {
    nimbus_common::logging::init();
    tls::install_crypto_provider();
    let cli = Cli::parse();
    nimbus_common::process::run("nimbus-data", async {
        match cli.command {
            Command::Serve { config, settings } => {
                let file = match config {
                    Some(p) => nimbus_common::config::load(&p)?,
                    None => Settings::default(),
                };
                serve(settings.or(file)).await
            }
        }
    })
}
