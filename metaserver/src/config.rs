//! Settings of `nimbus-meta serve`: a TOML file whose every key a flag of
//! the same name overrides.

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Every setting, as flags or as keys of the configuration file.
#[derive(Args, Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Raft id of this node: a positive integer, unique in the cluster and never
    /// reused for another node.
    #[arg(long)]
    pub id: Option<u64>,
    /// Address to listen on for clients and peers (host:port). [default: 127.0.0.1:7100]
    #[arg(long)]
    pub listen: Option<String>,
    /// Address peers and clients reach this node at. [default: the listen address]
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory for this node's durable state (Raft log, namespace, snapshots).
    /// [default: ./nimbus-meta-ID]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory holding the cluster CA (ca.pem) and this node's certificate
    /// and key (NAME.pem, NAME.key), as made by `nimbus-meta ca`.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// File name (without .pem/.key) of this node's certificate. [default: metaID]
    #[arg(long)]
    pub tls_name: Option<String>,
    /// Serve plaintext without TLS. Only for experiments on a trusted host.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Voters of a NEW cluster, as ID=HOST:PORT,ID=HOST:PORT,... The member
    /// with the lowest id initialises the cluster once; ignored when this
    /// node already has state. Omit it on a node that will join an existing
    /// cluster with `nimbus-meta cluster add`.
    #[arg(long)]
    pub initial_members: Option<String>,
    /// With --initial-members: a file whose first line is the password of the
    /// first administrator (user `admin`, uid 0), created when the new
    /// cluster starts. Keep it 0600, or delete it once you have signed in.
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// Raft heartbeat interval in milliseconds. [default: 100]
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Shortest election timeout in milliseconds. [default: 500]
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    /// Longest election timeout in milliseconds; also the leader lease, so failover takes about this plus one election. [default: 1000]
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot and compact the log after at least this many entries,
    /// and once the log written since the last snapshot is at least a quarter
    /// of that snapshot's size (so a large namespace is not rewritten for a
    /// little log). [default: 20000]
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Memory for the namespace store's cache, in MiB: with it, a meta
    /// server's memory stays about this plus a fixed overhead whatever the
    /// namespace's size. [default: an eighth of this machine's memory, at
    /// least 64 and at most 8192]
    #[arg(long)]
    pub cache_mib: Option<u64>,
    /// Directory holding the block-token key (token.key). [default: the TLS directory]
    #[arg(long)]
    pub token_dir: Option<PathBuf>,
    /// A data server silent this long is dead and its blocks are re-replicated,
    /// in milliseconds. [default: 30000]
    #[arg(long)]
    pub dead_after_ms: Option<u64>,
    /// How often data servers send heartbeats, in milliseconds. [default: 1000]
    #[arg(long)]
    pub data_heartbeat_ms: Option<u64>,
    /// Most block copies (repair, drain, rebalance) in flight at once; bounds
    /// the repair rate. [default: 16]
    #[arg(long)]
    pub max_copies: Option<u64>,
    /// Serve Prometheus metrics over HTTP on this host:port. [default: off]
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// This node's master key (64 hex digits, mode 0600), which wraps the
    /// cluster's data secret; `nimbus-meta ca init` makes one. Required: a
    /// node refuses to start without it or with another key than the
    /// cluster's. [default: TOKEN_DIR/master.key]
    #[arg(long)]
    pub master_key: Option<PathBuf>,
    /// Accept blocks clients store unencrypted (benchmarks that measure what
    /// encryption costs). Off: every block is sealed by its writer.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub allow_clear_blocks: Option<bool>,
    /// Fault injection for tests: the leader's log fdatasyncs (run while
    /// its entries replicate) are held back this many milliseconds.
    #[arg(long, hide = true)]
    pub test_log_sync_delay_ms: Option<u64>,
    /// SMTP server for sign-up and password-reset mail:
    /// smtp://HOST:PORT (plain, for a relay on loopback),
    /// smtp://USER:PASS@HOST:587?tls=required (STARTTLS), smtps://USER:PASS@HOST (TLS).
    /// [default: none, so no self-service sign-up]
    #[arg(long)]
    pub smtp_url: Option<String>,
    /// Sender of that mail, e.g. "Nimbus <nimbus@example.org>".
    #[arg(long)]
    pub mail_from: Option<String>,
    /// Base URL of the web gateway, for links in mail. [default: http://127.0.0.1:8080]
    #[arg(long)]
    pub public_url: Option<String>,
}

impl Settings {
    /// These settings, with every unset one taken from `file`.
    pub fn or(self, file: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*) => { Settings { $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            id,
            listen,
            advertise,
            data_dir,
            tls_dir,
            tls_name,
            insecure,
            initial_members,
            admin_password_file,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_every,
            cache_mib,
            token_dir,
            dead_after_ms,
            data_heartbeat_ms,
            max_copies,
            metrics_listen,
            master_key,
            allow_clear_blocks,
            test_log_sync_delay_ms,
            smtp_url,
            mail_from,
            public_url
        )
    }
}

/// Settings after defaults and checks.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub listen: String,
    pub advertise: String,
    pub data_dir: PathBuf,
    /// None with `--insecure`.
    pub tls: Option<(PathBuf, String)>,
    pub initial_members: BTreeMap<u64, String>,
    /// The first administrator's password, for a new cluster.
    pub admin_password: Option<String>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_every: u64,
    /// Bytes of the namespace store's cache.
    pub cache_bytes: u64,
    /// None: no token key, so no block allocation on this node.
    pub token_dir: Option<PathBuf>,
    pub dead_after_ms: u64,
    pub data_heartbeat_ms: u64,
    pub max_copies: u64,
    pub metrics_listen: Option<String>,
    /// The master key file.
    pub master_key: PathBuf,
    pub allow_clear_blocks: bool,
    /// Fault injection: see `Settings::test_log_sync_delay_ms`.
    pub log_sync_delay_ms: u64,
    /// (smtp url, sender, public url), when mail is configured.
    pub mail: Option<(String, String, String)>,
}

/// Parses `ID=HOST:PORT,...`.
pub fn parse_members(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("member {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("member id {id:?} is not a number"))?;
        check_addr(addr)?;
        if id == 0 {
            bail!("member ids start at 1");
        }
        if out.insert(id, addr.trim().to_owned()).is_some() {
            bail!("member {id} is listed twice");
        }
    }
    Ok(out)
}

fn check_addr(addr: &str) -> anyhow::Result<()> {
    match addr.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => bail!("{addr:?} is not HOST:PORT"),
    }
}

impl Config {
    /// Applies defaults and checks the combination.
    pub fn resolve(s: Settings) -> anyhow::Result<Config> {
        let id =
            s.id.context("--id is required (a positive integer, unique in the cluster)")?;
        if id == 0 {
            bail!("--id must be positive");
        }
        let listen = s.listen.unwrap_or_else(|| "127.0.0.1:7100".into());
        check_addr(&listen)?;
        let advertise = s.advertise.unwrap_or_else(|| listen.clone());
        check_addr(&advertise)?;
        let tls = if s.insecure.unwrap_or(false) {
            None
        } else {
            let dir = s.tls_dir.context(
                "--tls-dir is required (or --insecure for plaintext); create one with `nimbus-meta ca init`",
            )?;
            Some((dir, s.tls_name.unwrap_or_else(|| format!("meta{id}"))))
        };
        let initial_members = match &s.initial_members {
            Some(m) => parse_members(m)?,
            None => BTreeMap::new(),
        };
        if !initial_members.is_empty() && !initial_members.contains_key(&id) {
            bail!("--initial-members does not list this node's id {id}");
        }
        let admin_password = match &s.admin_password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the administrator's password from {}", path.display()))?;
                let password = text.lines().next().unwrap_or("").to_owned();
                if password.len() < 8 {
                    bail!(
                        "{}: the administrator's password needs at least 8 characters",
                        path.display()
                    );
                }
                Some(password)
            }
            None => None,
        };
        if !initial_members.is_empty() && admin_password.is_none() {
            bail!(
                "--admin-password-file is required with --initial-members: a new cluster starts with one \
                 administrator (`admin`) and needs their password"
            );
        }
        let token_dir = s.token_dir.or_else(|| tls.as_ref().map(|(d, _)| d.clone()));
        let master_key = s
            .master_key
            .or_else(|| token_dir.as_ref().map(|d| d.join("master.key")))
            .context(
                "--master-key is required (a file of 64 hex digits, mode 0600; `nimbus-meta ca init` makes one): \
                 data is encrypted at rest",
            )?;
        let c = Config {
            master_key,
            allow_clear_blocks: s.allow_clear_blocks.unwrap_or(false),
            log_sync_delay_ms: s.test_log_sync_delay_ms.unwrap_or(0),
            mail: match (s.smtp_url, s.mail_from) {
                (Some(url), Some(from)) => Some((
                    url,
                    from,
                    s.public_url.unwrap_or_else(|| "http://127.0.0.1:8080".into()),
                )),
                (Some(_), None) => bail!("--smtp-url needs --mail-from (the sender of sign-up mail)"),
                _ => None,
            },
            token_dir,
            dead_after_ms: s.dead_after_ms.unwrap_or(30_000),
            data_heartbeat_ms: s.data_heartbeat_ms.unwrap_or(1000),
            max_copies: s.max_copies.unwrap_or(16),
            metrics_listen: s.metrics_listen,
            id,
            listen,
            advertise,
            data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from(format!("nimbus-meta-{id}"))),
            tls,
            initial_members,
            admin_password,
            heartbeat_ms: s.heartbeat_ms.unwrap_or(100),
            election_timeout_min_ms: s.election_timeout_min_ms.unwrap_or(500),
            election_timeout_max_ms: s.election_timeout_max_ms.unwrap_or(1000),
            snapshot_every: s.snapshot_every.unwrap_or(20_000),
            cache_bytes: s
                .cache_mib
                .map(|m| m.saturating_mul(1 << 20))
                .unwrap_or_else(default_cache_bytes),
        };
        if c.heartbeat_ms == 0 || c.election_timeout_min_ms <= c.heartbeat_ms * 2 {
            bail!("the election timeout must exceed twice the heartbeat interval");
        }
        if c.election_timeout_max_ms <= c.election_timeout_min_ms {
            bail!("--election-timeout-max-ms must exceed --election-timeout-min-ms");
        }
        if c.data_heartbeat_ms == 0 || c.dead_after_ms < 3 * c.data_heartbeat_ms {
            bail!("--dead-after-ms must be at least three data heartbeats");
        }
        if c.max_copies == 0 {
            bail!("--max-copies must be positive");
        }
        if c.snapshot_every == 0 {
            bail!("--snapshot-every must be positive");
        }
        if c.cache_bytes < 16 << 20 || c.cache_bytes > 1 << 50 {
            bail!("--cache-mib must be at least 16");
        }
        Ok(c)
    }
}

/// An eighth of this machine's memory, between 64 MiB and 8 GiB.
fn default_cache_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib << 10)
        .unwrap_or(2 << 30);
    (total / 8).clamp(64 << 20, 8 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_keys() {
        let file: Settings =
            toml::from_str("id = 3\nlisten = \"127.0.0.1:9000\"\ninsecure = true\nmaster_key = \"/k\"").unwrap();
        let flags = Settings {
            listen: Some("127.0.0.1:9100".into()),
            ..Settings::default()
        };
        let c = Config::resolve(flags.or(file)).unwrap();
        assert_eq!((c.id, c.listen.as_str(), c.tls.is_none()), (3, "127.0.0.1:9100", true));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(toml::from_str::<Settings>("idd = 3").is_err());
        assert!(parse_members("1=a:1,1=b:2").is_err());
        assert!(parse_members("x=a:1").is_err());
        assert!(parse_members("1=nocolon").is_err());
        assert!(Config::resolve(Settings::default()).is_err());
        let s = Settings {
            id: Some(1),
            insecure: Some(true),
            initial_members: Some("2=127.0.0.1:1".into()),
            ..Settings::default()
        };
        assert!(Config::resolve(s).is_err());
    }
}
