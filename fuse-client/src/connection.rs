//! Which cluster a command talks to, and with what TLS material.
//!
//! In order: `--meta` (with `--tls-dir` or `--insecure`); else the cluster
//! the profile signed in to (`nimbus login` records it); else the
//! workstation's `/etc/nimbus/client.toml`, which an administrator
//! distributes; else the dev cluster in `./.nimbus-dev`. A workstation
//! needs only the cluster's CA certificate: the operator certificate
//! (`admin.pem`) is used when present, for the administrative services.

use crate::dev;
use anyhow::{bail, Context};
use nimbus_client::{profile, MetaClient};
use nimbus_common::tls::Security;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The system-wide client configuration, unless NIMBUS_CLIENT_CONFIG names
/// another file.
const SYSTEM_CONFIG: &str = "/etc/nimbus/client.toml";

/// How long a command keeps retrying an unavailable cluster.
const DEADLINE: Duration = Duration::from_secs(30);

/// Which cluster to talk to.
#[derive(clap::Args)]
pub struct Conn {
    /// Meta servers (host:port, comma-separated). Default: the cluster the
    /// profile signed in to, else /etc/nimbus/client.toml, else the dev
    /// cluster.
    #[arg(long, global = true, env = "NIMBUS_META", value_delimiter = ',')]
    pub meta: Vec<String>,
    /// Directory with the cluster's ca.pem; administrators' also hold the
    /// operator certificate (admin.pem/.key) for the administrative services.
    #[arg(long, global = true, env = "NIMBUS_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Connect without TLS, to servers started with --insecure.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// State directory of the dev cluster.
    #[arg(long, global = true, env = "NIMBUS_DEV_DIR", default_value = ".nimbus-dev")]
    pub dev_dir: PathBuf,
    /// Which stored sign-in to act as (see `nimbus login`); one local account
    /// may keep several.
    #[arg(long, global = true, env = "NIMBUS_PROFILE", default_value = nimbus_client::profile::DEFAULT)]
    pub profile: String,
}

/// `/etc/nimbus/client.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemConfig {
    /// Meta servers, host:port.
    meta: Vec<String>,
    /// The cluster's CA certificate; relative to the file's directory.
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
}

/// A cluster to connect to.
pub struct Cluster {
    pub meta: Vec<String>,
    pub security: Security,
    /// Worth recording in the profile at sign-in (not the dev cluster, whose
    /// ports change at every `dev up`).
    pub record: bool,
}

impl Conn {
    /// The cluster this command talks to.
    pub fn cluster(&self) -> anyhow::Result<Cluster> {
        if !self.meta.is_empty() {
            let security = match (&self.tls_dir, self.insecure) {
                (_, true) => Security::Insecure,
                (Some(d), false) => Security::load_client(d)?,
                (None, false) => match self.stored()? {
                    Some(c) => c.security,
                    None => bail!("--tls-dir (or NIMBUS_TLS_DIR) with the cluster's ca.pem is required with --meta, or --insecure"),
                },
            };
            return Ok(Cluster {
                meta: self.meta.clone(),
                security,
                record: true,
            });
        }
        if let Some(c) = self.stored()? {
            return Ok(c);
        }
        if let Some(c) = system_config()? {
            return Ok(c);
        }
        let Some(dev) = dev::load(&self.dev_dir)? else {
            bail!(
                "no cluster given: pass --meta HOST:PORT and --tls-dir (or sign in once with them: \
                 `nimbus --meta HOST:PORT --tls-dir DIR login`), install {SYSTEM_CONFIG}, or start a \
                 local cluster with `nimbus dev up`"
            );
        };
        Ok(Cluster {
            meta: dev.meta.iter().map(|p| p.addr.clone()).collect(),
            security: Security::load_client(&dev.certs)?,
            record: false,
        })
    }

    /// The cluster the profile signed in to, if it recorded one.
    fn stored(&self) -> anyhow::Result<Option<Cluster>> {
        let Some(p) = profile::load(&self.profile)? else {
            return Ok(None);
        };
        if p.meta.is_empty() {
            return Ok(None);
        }
        let security = match (&self.tls_dir, p.insecure || self.insecure) {
            (_, true) => Security::Insecure,
            (Some(d), false) => Security::load_client(d)?,
            (None, false) => {
                let ca = profile::ca_path(&self.profile)?;
                Security::load_ca_file(&ca).with_context(|| {
                    format!(
                        "profile {} has no CA certificate: sign in again with --tls-dir",
                        self.profile
                    )
                })?
            }
        };
        Ok(Some(Cluster {
            meta: p.meta,
            security,
            record: true,
        }))
    }

    /// A client of the cluster, signing its requests with the profile's
    /// token.
    pub fn client(&self) -> anyhow::Result<MetaClient> {
        self.cluster()?.client(&self.profile)
    }
}

impl Cluster {
    /// A client of this cluster signing with profile `name`'s token.
    pub fn client(&self, name: &str) -> anyhow::Result<MetaClient> {
        Ok(MetaClient::new(self.security.clone(), self.meta.clone(), DEADLINE)?.with_profile(name)?)
    }
}

/// The workstation's configuration, if installed.
fn system_config() -> anyhow::Result<Option<Cluster>> {
    let path = std::env::var_os("NIMBUS_CLIENT_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: SystemConfig = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    if config.meta.is_empty() {
        bail!("{}: `meta` lists no server", path.display());
    }
    let security = match (config.insecure, &config.ca) {
        (true, _) => Security::Insecure,
        (false, Some(ca)) => {
            let base = path.parent().unwrap_or(Path::new("/"));
            Security::load_ca_file(&base.join(ca)).with_context(|| format!("the CA named in {}", path.display()))?
        }
        (false, None) => bail!("{}: `ca` (the cluster's ca.pem) is missing", path.display()),
    };
    Ok(Some(Cluster {
        meta: config.meta,
        security,
        record: true,
    }))
}
