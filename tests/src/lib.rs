//! Cluster tests and benchmarks for Nimbus: starts real `nimbus-meta`
//! processes on 127.0.0.1, drives them through the client library, and stops
//! every process it started, by pid.

pub mod mail;
pub mod mount;

use anyhow::{bail, Context};
use nimbus_client::MetaClient;
use nimbus_common::tls::{self, Security};
use nimbus_proto as pb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Directory of the built binaries: `NIMBUS_BIN_DIR`, else the target
/// directory this test executable was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NIMBUS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    free_ports(1).first().copied().unwrap_or(0)
}

/// `n` distinct free ports: all are held until all are chosen, so that one
/// cluster never gets the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port())
        .collect()
}

/// Knobs of a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u64,
    pub snapshot_every: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Data servers silent this long are dead.
    pub dead_after_ms: u64,
    /// Data server heartbeat interval.
    pub data_heartbeat_ms: u64,
    /// More flags for every `nimbus-meta serve`.
    pub meta_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            snapshot_every: 20_000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            dead_after_ms: 3000,
            data_heartbeat_ms: 300,
            meta_args: Vec::new(),
        }
    }
}

/// One meta server process.
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    initial_members: Option<String>,
}

impl Node {
    /// The pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// One data server process.
pub struct DataNode {
    pub name: String,
    pub addr: String,
    pub dir: PathBuf,
    pub zone: String,
    pub capacity: Option<u64>,
    child: Option<Child>,
}

impl DataNode {
    /// The pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Every block file this server holds.
    pub fn block_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "blk") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.join("blocks"), &mut out);
        out
    }

    /// Files left in the temporary directory (half-written blocks).
    pub fn temp_files(&self) -> usize {
        std::fs::read_dir(self.dir.join("tmp")).map(|r| r.count()).unwrap_or(0)
    }
}

/// The first administrator's password in test clusters.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A meta cluster of real processes under a temporary directory.
pub struct MetaCluster {
    /// Data servers by index (1, 2, ...).
    pub data: BTreeMap<usize, DataNode>,
    /// Certificates, data directories and logs of every node.
    pub dir: PathBuf,
    tmp: Option<tempfile::TempDir>,
    pub certs: PathBuf,
    pub nodes: BTreeMap<u64, Node>,
    opts: Options,
}

impl MetaCluster {
    /// Creates the CA and certificates and starts `opts.nodes` servers that
    /// bootstrap a new cluster.
    pub fn start(opts: Options) -> anyhow::Result<MetaCluster> {
        tls::install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("nimbus-test-").tempdir()?;
        let certs = dir.path().join("certs");
        tls::create_ca(&certs)?;
        tls::issue(&certs, "admin", &[])?;
        std::fs::write(dir.path().join("admin.password"), format!("{ADMIN_PASSWORD}\n"))?;
        let mut cluster = MetaCluster {
            dir: dir.path().to_path_buf(),
            tmp: Some(dir),
            certs,
            nodes: BTreeMap::new(),
            data: BTreeMap::new(),
            opts: opts.clone(),
        };
        let ids: Vec<u64> = (1..=opts.nodes).collect();
        let ports = free_ports(ids.len());
        let addrs: BTreeMap<u64, String> = ids
            .iter()
            .zip(&ports)
            .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
            .collect();
        let members = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        for id in ids {
            cluster.add_process(id, addrs[&id].clone(), Some(members.clone()))?;
        }
        Ok(cluster)
    }

    /// Starts a new server `id` that is not (yet) a member.
    pub fn spawn_joiner(&mut self, id: u64) -> anyhow::Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        self.add_process(id, addr.clone(), None)?;
        Ok(addr)
    }

    fn add_process(&mut self, id: u64, addr: String, initial_members: Option<String>) -> anyhow::Result<()> {
        tls::issue(&self.certs, &format!("meta{id}"), &[])?;
        let node = Node {
            id,
            addr,
            data_dir: self.dir.join(format!("meta{id}")),
            child: None,
            initial_members,
        };
        self.nodes.insert(id, node);
        self.launch(id)
    }

    /// (Re)starts the process of node `id` on its data directory.
    pub fn launch(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = bin_dir().join("nimbus-meta");
        if !bin.exists() {
            bail!("{} not found: run `cargo build --workspace` first", bin.display());
        }
        let opts = self.opts.clone();
        let certs = self.certs.clone();
        let log_path = self.dir.join(format!("meta{id}.log"));
        let node = self.nodes.get_mut(&id).context("no such node")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--id", &id.to_string(), "--listen", &node.addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--tls-dir")
            .arg(&certs)
            .args(["--snapshot-every", &opts.snapshot_every.to_string()])
            .args(["--heartbeat-ms", &opts.heartbeat_ms.to_string()])
            .args(["--election-timeout-min-ms", &opts.election_timeout_min_ms.to_string()])
            .args(["--election-timeout-max-ms", &opts.election_timeout_max_ms.to_string()])
            .args(["--dead-after-ms", &opts.dead_after_ms.to_string()])
            .args(["--data-heartbeat-ms", &opts.data_heartbeat_ms.to_string()])
            .args(&opts.meta_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(m) = &node.initial_members {
            cmd.args(["--initial-members", m])
                .arg("--admin-password-file")
                .arg(self.dir.join("admin.password"));
        }
        node.child = Some(cmd.spawn().context("spawning nimbus-meta")?);
        Ok(())
    }

    /// Starts data server number `index` (a new one) in `zone`, storing at
    /// most `capacity` bytes if given.
    pub fn add_data(&mut self, index: usize, zone: &str, capacity: Option<u64>) -> anyhow::Result<()> {
        let name = format!("data{index}");
        tls::issue(&self.certs, &name, &[])?;
        let node = DataNode {
            name,
            addr: format!("127.0.0.1:{}", free_port()),
            dir: self.dir.join(format!("data{index}")),
            zone: zone.to_owned(),
            capacity,
            child: None,
        };
        self.data.insert(index, node);
        self.launch_data(index)
    }

    /// (Re)starts data server `index` on its directory.
    pub fn launch_data(&mut self, index: usize) -> anyhow::Result<()> {
        let bin = bin_dir().join("nimbus-data");
        if !bin.exists() {
            bail!("{} not found: run `cargo build --workspace` first", bin.display());
        }
        let meta = self
            .nodes
            .values()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        let certs = self.certs.clone();
        let log_path = self.dir.join(format!("data{index}.log"));
        let node = self.data.get_mut(&index).context("no such data server")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args([
                "--listen",
                &node.addr,
                "--meta",
                &meta,
                "--zone",
                &node.zone,
                "--tls-name",
                &node.name,
            ])
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--tls-dir")
            .arg(&certs)
            .args(["--scrub-pause-secs", "1", "--scrub-mib-per-sec", "256"])
            // The grace must exceed the longest a test keeps written blocks
            // uncommitted, on a loaded 2-core CI machine too: at 5 s, the
            // first blocks of a 10-block file were collected before its
            // commit.
            .args(["--orphan-grace-secs", "30", "--orphan-scan-secs", "2"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(c) = node.capacity {
            cmd.args(["--capacity", &c.to_string()]);
        }
        node.child = Some(cmd.spawn().context("spawning nimbus-data")?);
        Ok(())
    }

    /// `kill -9` of data server `index`.
    pub fn kill_data(&mut self, index: usize) {
        if let Some(mut c) = self.data.get_mut(&index).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the leader sees `n` data servers in state `active` with a
    /// capacity reported.
    pub async fn wait_data(&self, n: usize, timeout: Duration) -> anyhow::Result<pb::DataHealth> {
        let client = self.client()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(h) = client.data_health().await {
                let ready = h
                    .servers
                    .iter()
                    .filter(|s| s.state == "active" && s.capacity > 0)
                    .count();
                if ready >= n {
                    return Ok(h);
                }
            }
            if Instant::now() > deadline {
                bail!("{n} data servers not active within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `check` on the data health until it holds.
    pub async fn wait_health(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&pb::DataHealth) -> bool,
    ) -> anyhow::Result<pb::DataHealth> {
        let client = self.client()?;
        let deadline = Instant::now() + timeout;
        loop {
            let h = client.data_health().await;
            if let Ok(h) = &h {
                if check(h) {
                    return Ok(h.clone());
                }
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {timeout:?}; last health: {h:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9` of node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to node `id`, and wait for it to exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The addresses of the running nodes.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.addr.clone())
            .collect()
    }

    /// The operator's TLS identity.
    pub fn security(&self) -> anyhow::Result<Security> {
        Ok(Security::load(&self.certs, "admin")?)
    }

    /// A client of the running nodes, signed in as the administrator and
    /// acting as the file-system root.
    pub fn client(&self) -> anyhow::Result<MetaClient> {
        Ok(
            MetaClient::new(self.security()?, self.addrs(), Duration::from_secs(30))?
                .with_password("admin", ADMIN_PASSWORD)
                .with_caller(0, vec![0]),
        )
    }

    /// A client signed in as `user` with `password`, acting as that user.
    pub fn client_as(&self, user: &str, password: &str) -> anyhow::Result<MetaClient> {
        Ok(MetaClient::new(self.security()?, self.addrs(), Duration::from_secs(30))?.with_password(user, password))
    }

    /// Where the `nimbus` command keeps this cluster's sign-ins
    /// (`NIMBUS_CONFIG_DIR`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// The `nimbus` command for this cluster, with profile `profile`.
    pub fn nimbus(&self, profile: &str) -> Command {
        let mut c = Command::new(bin_dir().join("nimbus"));
        c.arg("--meta")
            .arg(self.addrs().join(","))
            .arg("--tls-dir")
            .arg(&self.certs)
            .args(["--profile", profile])
            .env("NIMBUS_CONFIG_DIR", self.config_dir())
            .env_remove("NIMBUS_PROFILE");
        c
    }

    /// Runs `nimbus ARGS` with `profile`, feeding `stdin`: whether it
    /// succeeded, and its stdout and stderr together.
    pub fn run_nimbus(&self, profile: &str, args: &[&str], stdin: &str) -> anyhow::Result<(bool, String)> {
        let mut child = self
            .nimbus(profile)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nimbus")?;
        if let Some(mut s) = child.stdin.take() {
            use std::io::Write;
            s.write_all(stdin.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Signs `user` in with `nimbus login` into profile `profile` (named
    /// after the user), retrying while a new cluster has yet to create the
    /// account.
    pub fn login(&self, user: &str, password: &str, extra: &[&str]) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = self
                .nimbus(user)
                .args(["login", "--user", user, "--password-stdin"])
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("running nimbus login")?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                writeln!(stdin, "{password}")?;
            }
            let out = child.wait_with_output()?;
            if out.status.success() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "nimbus login as {user} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let client = self.client()?;
        let deadline = Instant::now() + timeout;
        loop {
            for addr in self.addrs() {
                if let Ok(s) = client.node_status(&addr).await {
                    if s.role == "leader" {
                        return Ok(s.id);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied the same index and holds
    /// the same namespace digest; returns (applied index, inode count).
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<(u64, u64)> {
        let client = self.client()?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut digests: Vec<pb::DigestReply> = Vec::new();
            for addr in self.addrs() {
                match client.node_digest(&addr).await {
                    Ok(d) => digests.push(d),
                    Err(_) => break,
                }
            }
            if digests.len() == self.addrs().len()
                && digests
                    .windows(2)
                    .all(|w| w[0].last_applied == w[1].last_applied && w[0].digest == w[1].digest)
            {
                let d = &digests[0];
                return Ok((d.last_applied.unwrap_or(0), d.inodes));
            }
            if Instant::now() > deadline {
                let last: Vec<_> = digests.iter().map(|d| (d.last_applied, d.inodes)).collect();
                bail!("nodes did not converge within {timeout:?}: (applied, inodes) = {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The log of node `id`, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("meta{id}.log"))).unwrap_or_default()
    }
}

impl Drop for MetaCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        let data: Vec<usize> = self.data.keys().copied().collect();
        for i in data {
            self.kill_data(i);
        }
        if std::env::var_os("NIMBUS_KEEP_TEST_DIRS").is_some() {
            if let Some(t) = self.tmp.take() {
                eprintln!("keeping {}", t.keep().display());
            }
        }
    }
}
