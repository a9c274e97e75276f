//! What the gateway tests share: a `nimbus-web` process, an HTTP client
//! (curl with a cookie jar and the CSRF token), users, files, waiting.

use anyhow::{bail, ensure, Context};
use nimbus_tests::mount::{tail, Mounted};
use nimbus_tests::{bin_dir, free_port, MetaCluster};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nimbus-web` process, stopped by pid when dropped.
pub(crate) struct Gateway {
    pub(crate) base: String,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
}

impl Gateway {
    /// Starts a gateway for `cluster` on a free loopback port and waits
    /// until it accepts connections.
    pub(crate) fn start(cluster: &MetaCluster) -> anyhow::Result<Gateway> {
        Gateway::start_with(cluster, &[], "http")
    }

    /// A gateway with `extra` arguments, reached at `scheme://localhost:PORT`
    /// for https (its certificate names localhost), else 127.0.0.1.
    pub(crate) fn start_with(cluster: &MetaCluster, extra: &[&str], scheme: &str) -> anyhow::Result<Gateway> {
        Gateway::launch(cluster, extra, scheme, &format!("127.0.0.1:{}", free_port()))
    }

    /// A plain-HTTP gateway on `addr` (a port chosen beforehand, e.g. for
    /// links the cluster puts in mail).
    pub(crate) fn start_on(cluster: &MetaCluster, addr: &str) -> anyhow::Result<Gateway> {
        Gateway::launch(cluster, &[], "http", addr)
    }

    fn launch(cluster: &MetaCluster, extra: &[&str], scheme: &str, addr: &str) -> anyhow::Result<Gateway> {
        let addr = addr.to_owned();
        let bin = bin_dir().join("nimbus-web");
        ensure!(
            bin.exists(),
            "{} not found: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let log = cluster.dir.join("web.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["--listen", &addr, "--meta", &cluster.addrs().join(",")])
            .arg("--tls-dir")
            .arg(&cluster.certs)
            .args(extra)
            .env("RUST_LOG", "info,nimbus_web=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning nimbus-web")?;
        let host = if scheme == "https" {
            addr.replace("127.0.0.1", "localhost")
        } else {
            addr.clone()
        };
        let mut g = Gateway {
            base: format!("{scheme}://{host}"),
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            if let Some(status) = g.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("nimbus-web exited with {status}:\n{}", g.log());
            }
            ensure!(Instant::now() < deadline, "nimbus-web not listening within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(g)
    }

    pub(crate) fn log(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }

    pub(crate) fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// curl options that make it trust the cluster CA.
    pub(crate) fn trust(cluster: &MetaCluster) -> String {
        cluster.certs.join("ca.pem").display().to_string()
    }

    /// The gateway's peak resident memory so far (VmHWM), in bytes.
    pub(crate) fn peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.as_ref().map(Child::id).context("not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM")?;
        Ok(kib * 1024)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
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
}

/// What curl got back.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTP client (a browser, in effect): its own cookie jar and CSRF token.
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) csrf: Option<String>,
}

impl Client {
    pub(crate) fn new(g: &Gateway) -> anyhow::Result<Client> {
        Ok(Client {
            base: g.base.clone(),
            dir: tempfile::Builder::new().prefix("nimbus-web-client-").tempdir()?,
            csrf: None,
        })
    }

    /// `curl` with this client's cookies and, unless `csrf` is false, its
    /// CSRF token; `path` is sent as is (no `..` folding).
    pub(crate) fn request(&self, method: &str, path: &str, extra: &[&str], csrf: bool) -> anyhow::Result<Reply> {
        let jar = self.dir.path().join("cookies");
        let body = self.dir.path().join("body");
        let headers = self.dir.path().join("headers");
        let mut c = Command::new("curl");
        c.args(["-s", "-S", "--path-as-is", "-X", method, "-w", "%{http_code}"])
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .arg("-o")
            .arg(&body)
            .arg("-D")
            .arg(&headers)
            .args(extra);
        if let (true, Some(t)) = (csrf, &self.csrf) {
            c.args(["-H", &format!("X-CSRF-Token: {t}")]);
        }
        c.arg(format!("{}{path}", self.base));
        let out = c.output().context("running curl")?;
        ensure!(
            out.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        Ok(Reply {
            status,
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
            body: std::fs::read(&body).unwrap_or_default(),
        })
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request("GET", path, &[], false)
    }

    /// A state-changing request with a JSON body.
    pub(crate) fn post_json(&self, path: &str, json: serde_json::Value) -> anyhow::Result<Reply> {
        let body = json.to_string();
        self.request(
            "POST",
            path,
            &["-H", "Content-Type: application/json", "--data-binary", &body],
            true,
        )
    }

    /// Uploads local file `file` to store path `path`.
    pub(crate) fn upload(&self, path: &str, file: &Path, extra: &[&str]) -> anyhow::Result<Reply> {
        // -T streams the file (--data-binary would read it into memory).
        let at = file.display().to_string();
        let mut args = vec!["-T", at.as_str(), "-H", "Content-Type: application/octet-stream"];
        args.extend_from_slice(extra);
        self.request("PUT", path, &args, true)
    }

    pub(crate) fn sign_in(&mut self, user: &str, password: &str) -> anyhow::Result<Reply> {
        let r = self.post_json("/api/login", serde_json::json!({ "user": user, "password": password }))?;
        if r.status == 200 {
            self.csrf = r.json()?["csrf"].as_str().map(str::to_owned);
        }
        Ok(r)
    }
}

/// Runs `nimbus` as the administrator, with `stdin`.
pub(crate) fn admin(cluster: &MetaCluster, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let mut child = cluster
        .nimbus("admin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nimbus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn add_user(cluster: &MetaCluster, name: &str, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["user", "add", name, "--password-stdin"];
    args.extend_from_slice(extra);
    admin(cluster, &args, &format!("{name}-password\n")).map(|_| ())
}

/// `n` bytes of varied content.
pub(crate) fn make_file(path: &Path, n: usize, seed: u8) -> anyhow::Result<Vec<u8>> {
    let data: Vec<u8> = (0..n)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    std::fs::write(path, &data)?;
    Ok(data)
}

/// Waits until `check` holds (for a cleanup that follows a dropped
/// connection); fails with `what` after 20 s.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check()? {
        ensure!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits until `script` succeeds in the mount: a change made through the
/// gateway shows there once the kernel's cached names expire (1 s TTL).
pub(crate) fn mount_shows(m: &Mounted, script: &str) -> anyhow::Result<()> {
    let guarded = format!("if {script}; then echo yes; fi");
    eventually(script, || Ok(m.sh(&guarded)? == "yes"))
}

/// Sends a PUT announcing `announced` bytes, writes `sent` of them, and
/// closes the connection: a browser tab closed mid-upload.
pub(crate) fn cut_off_upload(g: &Gateway, c: &Client, path: &str, announced: usize, sent: usize) -> anyhow::Result<()> {
    let jar = std::fs::read_to_string(c.dir.path().join("cookies"))?;
    let session = jar
        .lines()
        .find_map(|l| {
            l.split('\t')
                .collect::<Vec<_>>()
                .get(5..7)
                .filter(|kv| kv[0] == "nimbus_session")
                .map(|kv| kv[1].to_owned())
        })
        .context("no session cookie in the jar")?;
    let mut s = std::net::TcpStream::connect(g.addr())?;
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nCookie: nimbus_session={session}\r\nX-CSRF-Token: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {announced}\r\n\r\n",
        g.addr(),
        c.csrf.as_deref().unwrap_or_default()
    )?;
    let chunk = vec![7u8; 1 << 20];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.flush()?;
    drop(s);
    Ok(())
}
