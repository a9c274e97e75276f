//! A real FUSE mount of a test cluster: `nimbus mount` as a child process,
//! driven with bash scripts of standard Unix tools, stopped by pid.

use crate::{bin_dir, MetaCluster, Options};
use anyhow::{bail, ensure, Context};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// Whether `path` is a mount point now, per /proc/mounts.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether `tool` is on PATH.
pub fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One `nimbus mount` process and its mount point.
pub struct Mount {
    /// The mount point.
    pub mnt: PathBuf,
    /// Where the mount process logs.
    pub log: PathBuf,
    scratch: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Mounts `cluster` at `<cluster dir>/<name>`, with `$S` in scripts set to
    /// `scratch`, and waits until the kernel shows the mount.
    ///
    /// The mount is the administrator's, acting as local users
    /// (`--as-local-users`): tests drive it as root and as other local uids.
    pub fn start(cluster: &MetaCluster, name: &str, scratch: &Path, extra: &[&str]) -> anyhow::Result<Mount> {
        if !cluster.config_dir().join("profiles").join("admin").exists() {
            cluster.login("admin", crate::ADMIN_PASSWORD, &[])?;
        }
        let mut args = vec!["--as-local-users"];
        args.extend_from_slice(extra);
        Mount::start_as(cluster, name, scratch, "admin", &args)
    }

    /// Mounts `cluster` as the user signed in to `profile` (see
    /// [`MetaCluster::login`]).
    pub fn start_as(
        cluster: &MetaCluster,
        name: &str,
        scratch: &Path,
        profile: &str,
        extra: &[&str],
    ) -> anyhow::Result<Mount> {
        let mnt = cluster.dir.join(name);
        std::fs::create_dir_all(&mnt)?;
        let bin = bin_dir().join("nimbus");
        ensure!(
            bin.exists(),
            "{} not found: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let mut command = cluster.nimbus(profile);
        command.arg("mount").args(extra).arg(&mnt);
        Mount::spawn(command, &mnt, &cluster.dir.join(format!("{name}.log")), scratch)
    }

    /// Runs `command` (a `nimbus ... mount ... MNT`, run as whoever it
    /// says) with its output appended to `log`, and waits until the kernel
    /// shows `mnt` mounted.
    pub fn spawn(mut command: Command, mnt: &Path, log: &Path, scratch: &Path) -> anyhow::Result<Mount> {
        let mut m = Mount {
            log: log.to_path_buf(),
            mnt: mnt.to_path_buf(),
            scratch: scratch.to_path_buf(),
            child: None,
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning nimbus mount")?;
        m.child = Some(child);
        let deadline = Instant::now() + 20 * SECOND;
        while !is_mounted(&m.mnt) {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("nimbus mount exited with {status} before mounting:\n{}", m.log());
            }
            ensure!(Instant::now() < deadline, "not mounted within 20 s:\n{}", m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(m)
    }

    /// The mount process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The mount's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a bash script in the mount (with $S the scratch directory and $M
    /// the mount point) and returns its trimmed standard output; fails with
    /// its stderr and the tail of the mount's log.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self.command(&["-euo", "pipefail", "-c", script]).output()?;
        if !out.status.success() {
            bail!(
                "script failed ({}):\n{script}\nstderr: {}\nmount log (tail):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), 30)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `sh`, expecting the script to fail; returns its stderr.
    pub fn sh_fails(&self, script: &str) -> anyhow::Result<String> {
        let out = self.command(&["-c", script]).output()?;
        ensure!(!out.status.success(), "expected a failure from:\n{script}");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A bash command set up as `sh` runs it, for callers that need to spawn
    /// it in the background.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.args(args)
            .current_dir(&self.mnt)
            .env("S", &self.scratch)
            .env("M", &self.mnt)
            .env("TZ", "UTC")
            .env("LC_ALL", "C");
        c
    }

    /// Stops the mount by pid with SIGTERM and checks that it exits 0 and
    /// leaves nothing mounted.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_ref() else {
            bail!("not mounted");
        };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        ensure!(status.success(), "kill -TERM failed");
        self.wait_exit()
    }

    /// Kills the mount process with SIGKILL, as a crashed workstation, and
    /// lazily unmounts the dead mount it leaves behind.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        if is_mounted(&self.mnt) {
            Command::new("umount").arg("-l").arg(&self.mnt).status()?;
        }
        Ok(())
    }

    /// Waits for the mount process to exit 0 (after a signal or an external
    /// umount) and checks that nothing stays mounted.
    pub fn wait_exit(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("not mounted");
        };
        let deadline = Instant::now() + 20 * SECOND;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nimbus mount still running 20 s after being stopped:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(status.success(), "nimbus mount exited with {status}:\n{}", self.log());
        ensure!(
            !is_mounted(&self.mnt),
            "{} still mounted after exit",
            self.mnt.display()
        );
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A failed test: never leave a mount (or a process) behind.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// A cluster (3 meta, 3 data servers in three zones) mounted at `mnt`, and
/// a scratch directory on local disk for reference copies. Dereferences to
/// its first mount.
pub struct Mounted {
    /// The first mount (declared first: it is unmounted before the servers stop).
    pub mount: Mount,
    /// Local scratch directory (`$S` in scripts).
    pub scratch: tempfile::TempDir,
    /// The servers.
    pub cluster: MetaCluster,
}

impl Mounted {
    /// Starts a cluster and mounts it.
    pub async fn start() -> anyhow::Result<Mounted> {
        // No skipping: a machine without FUSE cannot vouch for the mount.
        ensure!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: these tests need the fuse kernel module (`modprobe fuse`) or, in a container, \
             the device passed in (--device /dev/fuse --cap-add SYS_ADMIN)"
        );
        let mut cluster = MetaCluster::start(Options::default())?;
        cluster.wait_leader(20 * SECOND).await?;
        for i in 1..=3 {
            cluster.add_data(i, &format!("zone{i}"), None)?;
        }
        cluster.wait_data(3, 20 * SECOND).await?;
        let scratch = tempfile::Builder::new().prefix("nimbus-scratch-").tempdir()?;
        let mount = Mount::start(&cluster, "mnt", scratch.path(), &[])?;
        Ok(Mounted {
            mount,
            scratch,
            cluster,
        })
    }

    /// Another mount of the same cluster, at `<cluster dir>/<name>`.
    pub fn mount_again(&self, name: &str, extra: &[&str]) -> anyhow::Result<Mount> {
        Mount::start(&self.cluster, name, self.scratch.path(), extra)
    }
}

impl std::ops::Deref for Mounted {
    type Target = Mount;
    fn deref(&self) -> &Mount {
        &self.mount
    }
}

impl std::ops::DerefMut for Mounted {
    fn deref_mut(&mut self) -> &mut Mount {
        &mut self.mount
    }
}

/// A mount's counters from its `--metrics` address, by label
/// (`nimbus_mount_..._total{label="name"} value`).
pub fn metrics(addr: &str) -> anyhow::Result<HashMap<String, u64>> {
    let mut conn = std::net::TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("nimbus_mount_")) {
        let (Some(open), Some(close)) = (line.find("=\""), line.find("\"}")) else {
            continue;
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        out.insert(line[open + 2..close].to_owned(), value as u64);
    }
    Ok(out)
}

/// How much counter `key` grew from `before` to `after`.
pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, key: &str) -> u64 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}
