//! `nimbus dev`: a complete local cluster on 127.0.0.1 for development,
//! started in the background with its state under one directory.

use anyhow::{bail, Context};
use nimbus_client::MetaClient;
use nimbus_common::tls::{self, Security};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Meta servers of a dev cluster.
const META_NODES: u64 = 3;
/// Data servers of a dev cluster.
const DATA_NODES: u64 = 3;

/// What `dev up` started, kept in `DIR/cluster.json`.
#[derive(Serialize, Deserialize, Debug)]
pub struct DevCluster {
    pub dir: PathBuf,
    pub certs: PathBuf,
    pub meta: Vec<DevProcess>,
    #[serde(default)]
    pub data: Vec<DevProcess>,
    /// The FUSE mount `dev up --mount` started.
    #[serde(default)]
    pub mount: Option<DevMount>,
    /// The web gateway (`nimbus-web`), serving http://ADDR/.
    #[serde(default)]
    pub web: Option<DevProcess>,
}

/// A `nimbus mount` process of the dev cluster.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevMount {
    pub path: PathBuf,
    pub pid: u32,
    pub log: PathBuf,
    /// Where the mount serves its counters (Prometheus text).
    #[serde(default)]
    pub metrics: Option<String>,
}

/// Whether `path` is a mount point now.
fn mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_ref()))
}

/// Starts `nimbus mount` of the cluster at `path` in the background and
/// waits until the kernel shows the mount.
fn start_mount(cluster: &DevCluster, path: &Path, profile: &str) -> anyhow::Result<DevMount> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let path = path.canonicalize()?;
    if mounted(&path) {
        bail!(
            "{} is already a mount point; unmount it first (umount {})",
            path.display(),
            path.display()
        );
    }
    let exe = std::env::current_exe().context("locating the nimbus binary")?;
    let log = cluster.dir.join("mount.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let meta = cluster
        .meta
        .iter()
        .map(|p| p.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let metrics = free_addr()?;
    let child = Command::new(exe)
        .args(["--meta", &meta])
        .arg("--tls-dir")
        .arg(&cluster.certs)
        .args(["--profile", profile])
        .arg("mount")
        .args(["--metrics", &metrics])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("starting nimbus mount")?;
    let pid = child.id();
    let started = Instant::now();
    while !mounted(&path) {
        if !alive(pid) {
            bail!("nimbus mount exited; see {}", log.display());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{} not mounted after 30 s; see {}", path.display(), log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(DevMount {
        path,
        pid,
        log,
        metrics: Some(metrics),
    })
}

/// One process of the dev cluster.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DevProcess {
    pub role: String,
    pub id: u64,
    pub pid: u32,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// The dev cluster recorded in `dir`, if any.
pub fn load(dir: &Path) -> anyhow::Result<Option<DevCluster>> {
    let path = state_file(dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether `pid` is a live nimbus process (not a recycled pid).
///
/// The state in `/proc/PID/stat` decides: gone or a zombie is dead. The
/// command line guards against a recycled pid, but only when there is one:
/// between spawn and exec a child may show an empty command line, or its
/// parent's (`nimbus dev up`).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may hold spaces.
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    if matches!(state, None | Some('Z') | Some('X')) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.is_empty() || String::from_utf8_lossy(&c).contains("nimbus"))
        .unwrap_or(false)
}

fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.to_string())
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the nimbus binary")?;
    let bin = exe.with_file_name(name);
    if !bin.exists() {
        bail!(
            "{} not found next to {}; build the workspace first",
            name,
            exe.display()
        );
    }
    Ok(bin)
}

impl DevCluster {
    /// A client of this cluster, as the operator.
    pub fn client(&self) -> anyhow::Result<MetaClient> {
        let security = Security::load(&self.certs, "admin")?;
        let addrs = self.meta.iter().map(|p| p.addr.clone()).collect();
        Ok(MetaClient::new(security, addrs, Duration::from_secs(30))?)
    }
}

/// Starts the web gateway (`nimbus-web`, plain HTTP on loopback) for the
/// cluster, on `addr`; `None` (with a note) when the binary was not built.
fn start_web(cluster: &DevCluster, addr: &str) -> anyhow::Result<Option<DevProcess>> {
    let Ok(bin) = sibling_binary("nimbus-web") else {
        println!("nimbus-web is not built (cargo build -p nimbus-web): no web gateway");
        return Ok(None);
    };
    let log = cluster.dir.join("web.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let meta = cluster
        .meta
        .iter()
        .map(|p| p.addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new(&bin)
        .args(["--listen", addr, "--meta", &meta])
        .arg("--tls-dir")
        .arg(&cluster.certs)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    // Ready when it accepts connections (it binds before anything else).
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if !alive(pid) {
            bail!("nimbus-web exited; see {}", log.display());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("nimbus-web not listening on {addr} after 20 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(DevProcess {
        role: "web".into(),
        id: 1,
        pid,
        addr: addr.to_owned(),
        data_dir: cluster.dir.clone(),
        log,
    }))
}

/// Starts the web gateway unless it runs, on its earlier port if it had
/// one, records it in the state file and prints its URL.
fn ensure_web(cluster: &mut DevCluster) -> anyhow::Result<()> {
    if let Some(w) = cluster.web.as_ref().filter(|w| alive(w.pid)) {
        println!("web gateway: http://{}/ (sign in as admin or any user)", w.addr);
        return Ok(());
    }
    let addr = match &cluster.web {
        Some(w) => w.addr.clone(),
        None => free_addr()?,
    };
    cluster.web = start_web(cluster, &addr)?;
    if let Some(w) = &cluster.web {
        println!(
            "web gateway: http://{}/ (sign in as admin or any user; log: {})",
            w.addr,
            w.log.display()
        );
    }
    std::fs::write(state_file(&cluster.dir), serde_json::to_vec_pretty(cluster)?)?;
    Ok(())
}

/// Starts `BIN serve ARGS --data-dir DIR/ROLEID --tls-dir CERTS` in the
/// background, logging to `DIR/ROLEID.log`.
fn spawn(
    bin: &Path,
    role: &str,
    id: u64,
    addr: &str,
    dir: &Path,
    certs: &Path,
    args: &[&str],
) -> anyhow::Result<DevProcess> {
    let data_dir = dir.join(format!("{role}{id}"));
    let log = dir.join(format!("{role}{id}.log"));
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let child = Command::new(bin)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--tls-dir")
        .arg(certs)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: a Ctrl-C in this terminal must not stop it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(DevProcess {
        role: role.into(),
        id,
        pid: child.id(),
        addr: addr.to_owned(),
        data_dir,
        log,
    })
}

/// Starts a dev cluster in `dir` (or reports the one running there), and
/// with `mount`, mounts it there.
pub async fn up(dir: &Path, mount: Option<&Path>, profile: &str) -> anyhow::Result<()> {
    if let Some(mut c) = load(dir)? {
        if c.meta.iter().any(|p| alive(p.pid)) {
            println!(
                "a dev cluster is already running in {} (nimbus dev status)",
                dir.display()
            );
            if let Some(path) = mount {
                if c.mount.as_ref().is_some_and(|m| alive(m.pid) && mounted(&m.path)) {
                    println!("and it is mounted already");
                } else {
                    if nimbus_client::profile::load(profile)?.is_none() {
                        sign_in_admin(&c.client()?, &c.dir, profile, Duration::from_secs(30)).await?;
                    }
                    let m = start_mount(&c, path, profile)?;
                    println!("mounted at {}", m.path.display());
                    c.mount = Some(m);
                    std::fs::write(state_file(dir), serde_json::to_vec_pretty(&c)?)?;
                }
            }
            ensure_web(&mut c)?;
            return Ok(());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let certs = dir.join("certs");
    if !certs.join("ca.key").exists() {
        tls::create_ca(&certs)?;
        tls::issue(&certs, "admin", &[])?;
        for id in 1..=META_NODES {
            tls::issue(&certs, &format!("meta{id}"), &[])?;
        }
    }
    // A dev cluster made before encryption at rest has no master key yet.
    nimbus_common::encryption::create_master_key(&certs.join("master.key"))?;
    for id in 1..=DATA_NODES {
        if !certs.join(format!("data{id}.pem")).exists() {
            tls::issue(&certs, &format!("data{id}"), &[])?;
        }
    }
    let password_file = admin_password_file(&dir)?;
    let meta_bin = sibling_binary("nimbus-meta")?;
    let data_bin = sibling_binary("nimbus-data")?;
    // Reuse the ports of an earlier run: the Raft membership and the data
    // servers' registrations stored in the state directory name them.
    let old = load(&dir)?;
    let addrs: Vec<String> = match &old {
        Some(old) if old.meta.len() == META_NODES as usize => old.meta.iter().map(|p| p.addr.clone()).collect(),
        _ => (0..META_NODES).map(|_| free_addr()).collect::<anyhow::Result<_>>()?,
    };
    let data_addrs: Vec<String> = match &old {
        Some(old) if old.data.len() == DATA_NODES as usize => old.data.iter().map(|p| p.addr.clone()).collect(),
        _ => (0..DATA_NODES).map(|_| free_addr()).collect::<anyhow::Result<_>>()?,
    };
    let members = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let meta_list = addrs.join(",");
    let mut meta = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let pw = password_file.to_string_lossy();
        let args = [
            "--id",
            &id.to_string(),
            "--listen",
            addr,
            "--initial-members",
            &members,
            "--admin-password-file",
            &pw,
        ];
        meta.push(spawn(&meta_bin, "meta", id, addr, &dir, &certs, &args)?);
    }
    let mut data = Vec::new();
    for (i, addr) in data_addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let (zone, name) = (format!("zone{id}"), format!("data{id}"));
        let args = [
            "--listen",
            addr,
            "--meta",
            &meta_list,
            "--zone",
            &zone,
            "--tls-name",
            &name,
        ];
        data.push(spawn(&data_bin, "data", id, addr, &dir, &certs, &args)?);
    }
    let mut cluster = DevCluster {
        dir: dir.clone(),
        certs,
        meta,
        data,
        mount: None,
        web: old.as_ref().and_then(|o| o.web.clone()),
    };
    std::fs::write(state_file(&dir), serde_json::to_vec_pretty(&cluster)?)?;

    print!(
        "starting {META_NODES} meta and {DATA_NODES} data servers in {} ",
        dir.display()
    );
    std::io::stdout().flush()?;
    let client = cluster.client()?;
    let started = Instant::now();
    loop {
        let mut leader = None;
        for p in &cluster.meta {
            if let Ok(s) = client.node_status(&p.addr).await {
                if s.role == "leader" {
                    leader = Some(s.id);
                }
            }
        }
        if let Some(l) = leader {
            let token = sign_in_admin(&client, &dir, profile, Duration::from_secs(30)).await?;
            client.set_token(Some(token));
            // The first write creates the root directory.
            client.getattr(nimbus_common::Ino::ROOT).await?;
            let active = client
                .data_health()
                .await
                .map(|h| {
                    h.servers
                        .iter()
                        .filter(|s| s.state == "active" && s.capacity > 0)
                        .count()
                })
                .unwrap_or(0);
            if active >= DATA_NODES as usize {
                println!(
                    "\nready in {:.1} s; meta leader is node {l}; {active} data servers active",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
        }
        if let Some(dead) = cluster.meta.iter().chain(&cluster.data).find(|p| !alive(p.pid)) {
            bail!("\nnimbus-{} {} exited; see {}", dead.role, dead.id, dead.log.display());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("\nno leader after 60 s; see the logs in {}", dir.display());
        }
        print!(".");
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(path) = mount {
        let m = start_mount(&cluster, path, profile)?;
        println!("mounted at {} (log: {})", m.path.display(), m.log.display());
        cluster.mount = Some(m);
        std::fs::write(state_file(&dir), serde_json::to_vec_pretty(&cluster)?)?;
    }
    ensure_web(&mut cluster)?;
    let password = std::fs::read_to_string(&password_file)?;
    println!(
        "administrator: admin, password {} (kept in {}, mode 0600)\n\
         signed in as admin in profile {profile}; add users with: nimbus user add NAME --quota-bytes 10G",
        password.trim(),
        password_file.display()
    );
    println!("try: nimbus status   nimbus whoami   nimbus dev status   nimbus dev down");
    Ok(())
}

/// The first administrator's password file of the dev cluster in `dir`,
/// made (random, 0600) on the first start.
fn admin_password_file(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("admin.password");
    if path.exists() {
        return Ok(path);
    }
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let password: String = (0..20)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{password}")?;
    f.sync_all()?;
    Ok(path)
}

/// Signs in as the dev cluster's administrator into `profile`, retrying
/// while the new cluster has yet to create the account; returns the token.
async fn sign_in_admin(client: &MetaClient, dir: &Path, profile: &str, patience: Duration) -> anyhow::Result<String> {
    let password = std::fs::read_to_string(dir.join("admin.password")).context("reading admin.password")?;
    let started = Instant::now();
    loop {
        match client.login("admin", password.trim(), 0).await {
            Ok(granted) => {
                nimbus_client::profile::save(
                    profile,
                    &nimbus_client::profile::Profile {
                        user: "admin".into(),
                        token: granted.token.clone(),
                        expires_ms: granted.expires_ms,
                        ..Default::default()
                    },
                )?;
                return Ok(granted.token);
            }
            Err(e) if started.elapsed() > patience => bail!("signing in as admin: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// Stops every process of the dev cluster in `dir`; with `purge`, deletes
/// its state too.
pub fn down(dir: &Path, purge: bool) -> anyhow::Result<()> {
    let Some(c) = load(dir)? else {
        println!("no dev cluster in {}", dir.display());
        return Ok(());
    };
    if let Some(m) = c.mount.as_ref().filter(|m| alive(m.pid)) {
        // The mount first: it commits buffered writes to the servers.
        let _ = Command::new("kill").args(["-TERM", &m.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(m.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(m.pid) || mounted(&m.path) {
            eprintln!("the mount at {} did not end; unmounting lazily", m.path.display());
            let _ = Command::new("umount").arg("-l").arg(&m.path).status();
        } else {
            println!("unmounted {}", m.path.display());
        }
    }
    if let Some(w) = c.web.as_ref().filter(|w| alive(w.pid)) {
        // Before the servers: uploads under way finish or fail cleanly.
        let _ = Command::new("kill").args(["-TERM", &w.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while alive(w.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(w.pid) {
            let _ = Command::new("kill").args(["-KILL", &w.pid.to_string()]).status();
        }
        println!("stopped the web gateway");
    }
    let all: Vec<&DevProcess> = c.data.iter().chain(&c.meta).collect();
    for p in all.iter().filter(|p| alive(p.pid)) {
        let _ = Command::new("kill").args(["-TERM", &p.pid.to_string()]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while all.iter().any(|p| alive(p.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in all.iter().filter(|p| alive(p.pid)) {
        eprintln!("nimbus-{} {} (pid {}) ignored SIGTERM; killing it", p.role, p.id, p.pid);
        let _ = Command::new("kill").args(["-KILL", &p.pid.to_string()]).status();
    }
    println!("stopped {} meta and {} data servers", c.meta.len(), c.data.len());
    if purge {
        std::fs::remove_dir_all(&c.dir).with_context(|| format!("removing {}", c.dir.display()))?;
        println!("deleted {}", c.dir.display());
    }
    Ok(())
}

/// What `dev status --json` says of every process, whatever its role.
fn process_row(p: &DevProcess) -> serde_json::Value {
    serde_json::json!({
        "role": p.role,
        "id": p.id,
        "pid": p.pid,
        "running": alive(p.pid),
        "address": p.addr,
        "data_dir": p.data_dir,
        "log": p.log,
    })
}

/// Prints the processes of the dev cluster in `dir`.
pub async fn status(dir: &Path, json: bool) -> anyhow::Result<()> {
    let Some(c) = load(dir)? else {
        bail!("no dev cluster in {} (start one with `nimbus dev up`)", dir.display());
    };
    let client = c.client()?;
    let health = client.data_health().await.ok();
    let mut rows = Vec::new();
    for p in &c.data {
        let state = health
            .as_ref()
            .and_then(|h| h.servers.iter().find(|s| s.addr == p.addr))
            .map(|s| s.state.clone());
        let mut row = process_row(p);
        row["state"] = serde_json::json!(state);
        row["leader"] = serde_json::json!(false);
        rows.push(row);
    }
    for p in &c.meta {
        let s = if alive(p.pid) {
            client.node_status(&p.addr).await.ok()
        } else {
            None
        };
        let mut row = process_row(p);
        row["raft_role"] = serde_json::json!(s.as_ref().map(|s| s.role.clone()));
        row["leader"] = serde_json::json!(s.as_ref().is_some_and(|s| s.role == "leader"));
        rows.push(row);
    }
    if json {
        let mount = c.mount.as_ref().map(|m| {
            serde_json::json!({
                "path": m.path, "pid": m.pid, "running": alive(m.pid), "mounted": mounted(&m.path), "log": m.log,
                "metrics": m.metrics.as_ref().map(|a| format!("http://{a}/metrics")),
            })
        });
        let web = c.web.as_ref().map(|w| {
            serde_json::json!({
                "url": format!("http://{}/", w.addr), "pid": w.pid, "running": alive(w.pid), "log": w.log,
            })
        });
        let doc = serde_json::json!({
            "dir": c.dir, "certs": c.certs, "processes": rows, "mount": mount, "web": web,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("dev cluster in {}", c.dir.display());
    println!(
        "{:<6} {:>3} {:>8} {:<22} {:<10}",
        "ROLE", "ID", "PID", "ADDRESS", "STATE"
    );
    for (p, r) in c.data.iter().chain(&c.meta).zip(&rows) {
        let state = r["raft_role"]
            .as_str()
            .or(r["state"].as_str())
            .unwrap_or(if alive(p.pid) { "no answer" } else { "stopped" });
        println!("{:<6} {:>3} {:>8} {:<22} {:<10}", p.role, p.id, p.pid, p.addr, state);
    }
    if let Some(m) = &c.mount {
        let state = if mounted(&m.path) { "mounted" } else { "not mounted" };
        println!(
            "{:<6} {:>3} {:>8} {:<22} {:<10}",
            "mount",
            "",
            m.pid,
            m.path.display(),
            state
        );
    }
    if let Some(w) = &c.web {
        let state = if alive(w.pid) { "serving" } else { "stopped" };
        println!(
            "{:<6} {:>3} {:>8} {:<22} {:<10} http://{}/",
            "web", "", w.pid, w.addr, state, w.addr
        );
    }
    Ok(())
}
