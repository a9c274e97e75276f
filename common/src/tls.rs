//! Every gRPC channel and server of Nimbus is built here, so that TLS is on
//! everywhere unless an operator explicitly asks for `--insecure`.
//!
//! A cluster has one CA (`ca.pem`, `ca.key`). Each server holds a certificate
//! signed by it whose subject alternative names include [`CLUSTER_NAME`];
//! clients verify servers against the CA with that name, so certificates stay
//! valid when nodes move between addresses. Servers ask for, but do not
//! require, client certificates: meta and data servers present theirs to each
//! other, and services meant only for servers check
//! [`tonic::Request::peer_certs`] themselves.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// The DNS name every node certificate carries and every client verifies.
pub const CLUSTER_NAME: &str = "nimbus.cluster";

/// Largest gRPC message either side accepts (block chunks come later).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why TLS material could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} already exists; refusing to overwrite a cluster CA")]
    Exists(PathBuf),
    #[error("a server needs a certificate of its own, not only the CA")]
    NoIdentity,
    #[error("TLS configuration: {0}")]
    Config(#[from] tonic::transport::Error),
    #[error("invalid endpoint address {addr}: {source}")]
    Endpoint {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// The PEM files a process uses to speak TLS.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    ca: Vec<u8>,
    /// Certificate and key; servers need one, user clients have none.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// How a process connects: TLS with cluster certificates, or plaintext.
#[derive(Clone, Debug)]
pub enum Security {
    /// Mutual TLS with certificates of the cluster CA.
    Tls(TlsMaterial),
    /// Plaintext; only with an explicit `--insecure`.
    Insecure,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, data: &[u8], private: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Installs ring as rustls' process-wide crypto provider; call once at start.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Security {
    /// Loads `ca.pem`, `NAME.pem` and `NAME.key` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Security, TlsError> {
        Ok(Security::Tls(TlsMaterial {
            ca: read(&dir.join("ca.pem"))?,
            identity: Some((
                read(&dir.join(format!("{name}.pem")))?,
                read(&dir.join(format!("{name}.key")))?,
            )),
        }))
    }

    /// Loads only `ca.pem`: a client that verifies servers and presents no
    /// certificate (users' workstations).
    pub fn load_ca(dir: &Path) -> Result<Security, TlsError> {
        Ok(Security::Tls(TlsMaterial {
            ca: read(&dir.join("ca.pem"))?,
            identity: None,
        }))
    }

    /// A client's security from directory `dir`: the operator certificate
    /// `admin.pem`/`admin.key` when present (administrative services ask for
    /// one), else `ca.pem` alone, which is all a user's workstation needs.
    pub fn load_client(dir: &Path) -> Result<Security, TlsError> {
        if dir.join("admin.pem").exists() && dir.join("admin.key").exists() {
            Security::load(dir, "admin")
        } else {
            Security::load_ca(dir)
        }
    }

    /// A client that verifies servers against CA certificate `pem` and
    /// presents none.
    pub fn from_ca_pem(pem: Vec<u8>) -> Security {
        Security::Tls(TlsMaterial {
            ca: pem,
            identity: None,
        })
    }

    /// Loads a CA certificate file (any name) for a client without
    /// certificate.
    pub fn load_ca_file(path: &Path) -> Result<Security, TlsError> {
        Ok(Security::from_ca_pem(read(path)?))
    }

    /// The CA certificate servers are verified against (None: no TLS).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        match self {
            Security::Tls(m) => Some(&m.ca),
            Security::Insecure => None,
        }
    }

    /// A server builder with TLS configured and message-friendly HTTP/2 windows.
    pub fn server(&self) -> Result<Server, TlsError> {
        let builder = Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .http2_keepalive_interval(Some(Duration::from_secs(10)));
        match self {
            Security::Insecure => Ok(builder),
            Security::Tls(m) => {
                let (cert, key) = m.identity.as_ref().ok_or(TlsError::NoIdentity)?;
                Ok(builder.tls_config(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(cert, key))
                        .client_ca_root(Certificate::from_pem(&m.ca))
                        .client_auth_optional(true),
                )?)
            }
        }
    }

    /// An endpoint for `addr` (`host:port`); connect lazily with
    /// [`Endpoint::connect_lazy`] and clone the channel, it is one HTTP/2
    /// connection.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TlsError> {
        let scheme = match self {
            Security::Insecure => "http",
            Security::Tls(_) => "https",
        };
        let bad = |source| TlsError::Endpoint {
            addr: addr.to_owned(),
            source,
        };
        let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(bad)?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        match self {
            Security::Insecure => Ok(ep),
            Security::Tls(m) => {
                let mut config = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&m.ca))
                    .domain_name(CLUSTER_NAME);
                if let Some((cert, key)) = &m.identity {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                ep.tls_config(config).map_err(bad)
            }
        }
    }

    /// The connections a server accepts on `listener`, with Nagle's
    /// algorithm off. tonic ignores the builder's `tcp_nodelay` for a
    /// listener it did not bind itself, and a small reply held back by Nagle
    /// waits for the peer's delayed ACK: 40 ms on many requests.
    pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
        tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(30)))
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls(_))
    }
}

fn ca_params() -> CertificateParams {
    // Rebuilt identically whenever a certificate is issued: the issuer's name
    // and key are all a signature needs, so no certificate parser is required.
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Nimbus cluster CA");
    dn.push(DnType::OrganizationName, "Nimbus");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + Duration::from_secs(days as u64 * 86_400)).into();
}

/// Creates a new cluster CA in `dir` (`ca.pem`, `ca.key` mode 0600), the
/// block-token key pair (`token.key` mode 0600, `token.pub`) and the meta
/// servers' master key (`master.key`, mode 0600).
pub fn create_ca(dir: &Path) -> Result<(), TlsError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if key_path.exists() {
        return Err(TlsError::Exists(key_path));
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    write(&key_path, key.serialize_pem().as_bytes(), true)?;
    write(&cert_path, cert.pem().as_bytes(), false)?;
    // The block-token keys belong to the cluster as much as its CA does.
    crate::token::create_keys(dir).map_err(|e| TlsError::Io {
        path: dir.join("token.key"),
        source: std::io::Error::other(e.to_string()),
    })?;
    // So does the master key the meta servers wrap the data secret with.
    crate::encryption::create_master_key(&dir.join("master.key")).map_err(|e| TlsError::Io {
        path: dir.join("master.key"),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Issues `NAME.pem`/`NAME.key` in `dir`, signed by the CA there. The
/// certificate is valid for [`CLUSTER_NAME`], `localhost`, and `extra_names`
/// (DNS names or IP addresses), as a server and as a client.
pub fn issue(dir: &Path, name: &str, extra_names: &[String]) -> Result<(), TlsError> {
    let ca_key_pem = String::from_utf8_lossy(&read(&dir.join("ca.key"))?).into_owned();
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut names = vec![CLUSTER_NAME.to_owned(), "localhost".to_owned()];
    names.extend(extra_names.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name.to_owned());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 825);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write(&dir.join(format!("{name}.key")), key.serialize_pem().as_bytes(), true)?;
    write(&dir.join(format!("{name}.pem")), cert.pem().as_bytes(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_node_certificates_load() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path()).unwrap();
        assert!(matches!(create_ca(dir.path()), Err(TlsError::Exists(_))));
        issue(dir.path(), "meta1", &["127.0.0.1".into()]).unwrap();
        let sec = Security::load(dir.path(), "meta1").unwrap();
        assert!(sec.is_tls());
        sec.server().unwrap();
        sec.endpoint("127.0.0.1:1").unwrap();
        let ca_only = Security::load_ca(dir.path()).unwrap();
        ca_only.endpoint("127.0.0.1:1").unwrap();
        assert!(matches!(ca_only.server(), Err(TlsError::NoIdentity)));
    }
}
