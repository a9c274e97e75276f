//! `nimbus-web`: the web gateway process.

use anyhow::{bail, Context};
use clap::Parser;
use nimbus_common::tls::Security;
use nimbus_web::api::App;
use nimbus_web::session::{ClusterAccess, Sessions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The Nimbus web gateway: the store's files in a browser (upload,
/// download, folders, shares, quota, previews) and a JSON API under /api/,
/// each request acting as the signed-in Nimbus user.
///
/// Without --cert/--key it speaks plain HTTP, which it allows only on a
/// loopback address (for development, or behind a reverse proxy on the same
/// host: see docs/web.md); with them, HTTPS.
#[derive(Parser)]
#[command(name = "nimbus-web", version)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Meta servers of the cluster (host:port, comma-separated).
    #[arg(long, env = "NIMBUS_META", value_delimiter = ',', required = true)]
    meta: Vec<String>,
    /// Directory holding the cluster's CA certificate (ca.pem), to verify
    /// the meta and data servers.
    #[arg(long, env = "NIMBUS_TLS_DIR", required_unless_present = "insecure")]
    tls_dir: Option<PathBuf>,
    /// Talk to the cluster without TLS (servers started with --insecure).
    #[arg(long)]
    insecure: bool,
    /// PEM certificate chain to serve HTTPS with (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Behind a reverse proxy that terminates HTTPS: believe its
    /// `X-Forwarded-Proto: https` and mark cookies Secure accordingly.
    #[arg(long)]
    behind_proxy: bool,
    /// Serve plain HTTP on a non-loopback address (not recommended:
    /// passwords and cookies would cross the network in the clear).
    #[arg(long)]
    allow_plain_http: bool,
    /// How long a browser sign-in lasts, in hours (at most 90 days).
    #[arg(long, default_value_t = 12)]
    session_hours: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    nimbus_common::tls::install_crypto_provider();
    let args = Args::parse();
    let security = match (&args.tls_dir, args.insecure) {
        (_, true) => Security::Insecure,
        (Some(dir), false) => Security::load_ca(dir).with_context(|| format!("loading {}/ca.pem", dir.display()))?,
        (None, false) => bail!("--tls-dir with the cluster's ca.pem is required (or --insecure)"),
    };
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(nimbus_web::serve::tls_config(cert, key)?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.allow_plain_http {
        bail!(
            "refusing to serve plain HTTP on {}: give --cert and --key, listen on 127.0.0.1 behind a \
             reverse proxy, or pass --allow-plain-http",
            args.listen
        );
    }
    if args.session_hours == 0 || args.session_hours > 90 * 24 {
        bail!("--session-hours must be between 1 and 2160");
    }
    let access = ClusterAccess {
        security,
        meta: args.meta.clone(),
        https: tls.is_some(),
        trust_forwarded_proto: args.behind_proxy,
        session_ttl_secs: args.session_hours * 3600,
        basic_auth_allowed: tls.is_some() || args.listen.ip().is_loopback(),
    };
    let app = Arc::new(App {
        sessions: Sessions::new(access),
        dav: nimbus_web::dav::handler(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let local = listener.local_addr()?;
    println!("nimbus-web serving {scheme}://{local}/");
    tracing::info!("serving {scheme}://{local}/ for meta cluster {}", args.meta.join(","));
    nimbus_web::serve::run(listener, nimbus_web::router(app), tls).await?;
    Ok(())
}
