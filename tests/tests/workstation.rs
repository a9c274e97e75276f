//! A workstation user as they really are: a local account whose uid is not
//! their Nimbus uid, given only the cluster's `ca.pem` and the meta
//! addresses, signs in and mounts without root (`fusermount3`), and the
//! everyday tools that preserve owners and modes (`cp -a`, `cp -p`,
//! `rsync -a`, `tar -xpf`, `install -m`, `chown $USER`, `setfacl`) exit 0.
//! Owners show by name: theirs, a colleague's who has a local account, and
//! the fallback (`nobody`) for one who has none.

use anyhow::{bail, ensure, Context};
use nimbus_tests::mount::{tail, Mount, Mounted};
use nimbus_tests::{bin_dir, MetaCluster};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Local accounts the test creates (and removes), with uids far from the
/// cluster's (which start at 1000).
const CAROL: (&str, u32) = ("nbcarol", 23_001);
const DAVE: (&str, u32) = ("nbdave", 23_002);
/// A Nimbus user with no local account.
const GHOST: &str = "nbghost";

/// Local accounts made for the test, removed when dropped.
struct LocalUsers(Vec<String>);

impl LocalUsers {
    fn create(users: &[(&str, u32)]) -> anyhow::Result<LocalUsers> {
        let mut made = LocalUsers(Vec::new());
        for &(name, uid) in users {
            // Left behind by an interrupted run: start afresh.
            let _ = Command::new("userdel").arg(name).output();
            let out = Command::new("useradd")
                .args(["--no-create-home", "--user-group", "--shell", "/bin/bash", "--uid"])
                .arg(uid.to_string())
                .arg(name)
                .output()
                .context("running useradd (Debian package passwd)")?;
            ensure!(
                out.status.success(),
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            made.0.push(name.to_owned());
        }
        Ok(made)
    }
}

impl Drop for LocalUsers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").arg(name).output();
        }
    }
}

/// /dev/fuse opened to everyone (Debian's default; 0600 on some machines)
/// while the test runs, as it was afterwards.
struct FuseDevice(u32);

impl FuseDevice {
    fn open_to_all() -> anyhow::Result<FuseDevice> {
        let mode = std::fs::metadata("/dev/fuse")?.permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))?;
        Ok(FuseDevice(mode))
    }
}

impl Drop for FuseDevice {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

/// Runs `nimbus --profile admin ARGS` with `stdin`: its stdout.
fn admin(cluster: &MetaCluster, args: &[&str], stdin: &str) -> anyhow::Result<String> {
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

/// Nimbus user `name`'s uid, from `nimbus user list` (administrators).
fn nimbus_uid(cluster: &MetaCluster, name: &str) -> anyhow::Result<u32> {
    let list = admin(cluster, &["user", "list"], "")?;
    list.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name))
                .then(|| w.next().and_then(|u| u.parse().ok()))
                .flatten()
        })
        .with_context(|| format!("{name} not in `nimbus user list`:\n{list}"))
}

/// One local user's workstation: their own directory with the nimbus
/// binary, the CA certificate alone, a configuration directory and a mount
/// point, all theirs.
struct Workstation {
    user: &'static str,
    uid: u32,
    dir: PathBuf,
    meta: String,
    /// Stopped (and unmounted) when dropped.
    mount: Option<Mount>,
}

impl Workstation {
    fn new(root: &Path, user: (&'static str, u32), cluster: &MetaCluster) -> anyhow::Result<Workstation> {
        let dir = root.join(user.0);
        for sub in ["tls", "config", "mnt", "src"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::copy(cluster.certs.join("ca.pem"), dir.join("tls/ca.pem"))?;
        let status = Command::new("chown")
            .args(["-R", &format!("{}:{}", user.0, user.0)])
            .arg(&dir)
            .status()?;
        ensure!(status.success(), "chown of {}", dir.display());
        Ok(Workstation {
            user: user.0,
            uid: user.1,
            dir,
            meta: cluster.addrs().join(","),
            mount: None,
        })
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// A command run as this user (same pid: setpriv execs), in their
    /// environment.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    self.dir.join("bin").display()
                ),
            )
            .env("HOME", &self.dir)
            .env("USER", self.user)
            .env("LOGNAME", self.user)
            .env("NIMBUS_CONFIG_DIR", self.dir.join("config"))
            .env("NIMBUS_CLIENT_CONFIG", self.dir.join("no-system-config.toml"))
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .current_dir(&self.dir);
        c
    }

    /// Runs a bash script as this user (cwd: their directory, $M the
    /// mount); its trimmed stdout.
    fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self
            .command(Path::new("/bin/bash"))
            .args(["-euo", "pipefail", "-c", script])
            .env("M", self.mnt())
            .output()?;
        if !out.status.success() {
            bail!(
                "as {}: script failed ({}):\n{script}\nstderr: {}\nmount log:\n{}",
                self.user,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), 20)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs a script expected to fail: its stderr.
    fn sh_fails(&self, script: &str) -> anyhow::Result<String> {
        let out = self
            .command(Path::new("/bin/bash"))
            .args(["-c", script])
            .env("M", self.mnt())
            .output()?;
        ensure!(
            !out.status.success(),
            "as {}: expected a failure from:\n{script}",
            self.user
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mount.log")).unwrap_or_default()
    }

    /// `nimbus login` with the meta addresses and a TLS directory holding
    /// only ca.pem.
    fn login(&self, password: &str) -> anyhow::Result<String> {
        let mut child = self
            .command(&self.dir.join("bin/nimbus"))
            .args(["--meta", &self.meta, "--tls-dir"])
            .arg(self.dir.join("tls"))
            .args(["login", "--user", self.user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut s) = child.stdin.take() {
            writeln!(s, "{password}")?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "login as {}: {}",
            self.user,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nimbus mount ~/mnt` with no flags at all, as this user.
    fn mount(&mut self) -> anyhow::Result<()> {
        let mut command = self.command(&self.dir.join("bin/nimbus"));
        command.arg("mount").arg(self.mnt());
        let mnt = self.mnt();
        self.mount = Some(Mount::spawn(command, &mnt, &self.dir.join("mount.log"), &self.dir)?);
        Ok(())
    }

    /// Stops the mount by pid (SIGTERM) and checks it unmounted cleanly.
    fn unmount(&mut self) -> anyhow::Result<()> {
        match self.mount.as_mut() {
            Some(m) => m.stop(),
            None => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workstation_user_signs_in_with_the_ca_alone_and_cp_a_just_works() -> anyhow::Result<()> {
    for tool in ["useradd", "setpriv", "fusermount3", "rsync", "setfacl"] {
        ensure!(nimbus_tests::mount::which(tool), "{tool} is missing (see .ci/run)");
    }
    let m = Mounted::start().await?;
    let c = &m.cluster;
    let _users = LocalUsers::create(&[CAROL, DAVE])?;
    let _fuse = FuseDevice::open_to_all()?;
    for name in [CAROL.0, DAVE.0, GHOST] {
        admin(
            c,
            &["user", "add", name, "--quota-bytes", "1G", "--password-stdin"],
            &format!("{name}-password\n"),
        )?;
    }
    let (carol_id, dave_id, ghost_id) = (nimbus_uid(c, CAROL.0)?, nimbus_uid(c, DAVE.0)?, nimbus_uid(c, GHOST)?);
    ensure!(
        carol_id != CAROL.1,
        "the test needs a local uid that differs from the Nimbus one"
    );

    // Each workstation gets the binary, ca.pem and nothing else.
    let root = tempfile::Builder::new().prefix("nimbus-workstation-").tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut carol = Workstation::new(root.path(), CAROL, c)?;
    let dave = Workstation::new(root.path(), DAVE, c)?;
    for ws in [&carol, &dave] {
        std::fs::create_dir_all(ws.dir.join("bin"))?;
        std::fs::copy(bin_dir().join("nimbus"), ws.dir.join("bin/nimbus"))?;
        ensure!(!ws.dir.join("tls/admin.pem").exists());
    }

    // Sign in once with the addresses and the CA; afterwards no flags.
    let said = carol.login("nbcarol-password")?;
    ensure!(said.contains("signed in as nbcarol"), "{said}");
    let who = carol.sh("nimbus whoami")?;
    ensure!(who.contains(&format!("(uid {carol_id})")), "{who}");
    dave.login("nbdave-password")?;

    // Dave shares a folder; a file in carol's home belongs to a Nimbus user
    // with no local account. (The administrator's mount shows Nimbus ids.)
    m.sh(&format!(
        "mkdir home/{d}/shared && echo from-dave > home/{d}/shared/d.txt \
         && chown -R {dave_id}:{dave_id} home/{d}/shared \
         && echo ghostly > home/{cr}/ghost.txt && chown {ghost_id}:{ghost_id} home/{cr}/ghost.txt \
         && chmod 644 home/{cr}/ghost.txt",
        d = DAVE.0,
        cr = CAROL.0
    ))?;
    dave.sh(&format!(
        "nimbus share /home/{d}/shared {cr} --ro",
        d = DAVE.0,
        cr = CAROL.0
    ))?;

    carol.mount()?;
    let home = format!("$M/home/{}", CAROL.0);
    // Her files are hers, by name and by number; the others' by their names.
    assert_eq!(
        carol.sh(&format!("stat -c '%U:%G %u' {home}"))?,
        format!("nbcarol:nbcarol {}", CAROL.1)
    );
    let listing = carol.sh(&format!("ls -l $M/home/{}/shared", DAVE.0))?;
    ensure!(listing.contains(" nbdave nbdave "), "{listing}");
    assert_eq!(
        carol.sh(&format!("stat -c '%U:%G' {home}/ghost.txt"))?,
        "nobody:nogroup"
    );
    let df = carol.sh("df -B1 --output=size $M | tail -1")?;
    assert_eq!(df.trim(), (1u64 << 30).to_string());

    // The tools that preserve owners, modes and times.
    carol.sh(
        "mkdir -p src/sub && echo alpha > src/a.txt && echo beta > src/sub/b.txt && ln -s a.txt src/link \
         && chmod 640 src/a.txt && chmod 750 src/sub && touch -d 2020-01-02 src/a.txt src/sub/b.txt",
    )?;
    carol.sh(&format!(
        "cd {home} && cp -a ~/src a && cp -p ~/src/a.txt p.txt && rsync -a ~/src/ r/ \
         && tar -C ~/src -cf ~/src.tar . && mkdir t && tar -xpf ~/src.tar -C t \
         && install -m 640 ~/src/sub/b.txt inst.txt && chmod 600 a/a.txt && chown $USER a/a.txt \
         && chown $USER:$USER p.txt && chgrp $USER inst.txt"
    ))?;
    for copy in ["a", "r", "t"] {
        carol.sh(&format!("diff -r ~/src {home}/{copy}"))?;
    }
    assert_eq!(
        carol.sh(&format!("stat -c '%a %U %y' {home}/p.txt"))?,
        "640 nbcarol 2020-01-02 00:00:00.000000000 +0000"
    );
    assert_eq!(
        carol.sh(&format!("stat -c '%a %U:%G' {home}/inst.txt"))?,
        "640 nbcarol:nbcarol"
    );
    assert_eq!(
        carol.sh(&format!("stat -c '%a %U:%G' {home}/a/a.txt {home}/a/sub"))?,
        "600 nbcarol:nbcarol\n750 nbcarol:nbcarol"
    );
    // An ACL naming a colleague by name: stored as his Nimbus uid, shown
    // with his name.
    carol.sh(&format!("setfacl -m u:{}:r {home}/a/sub/b.txt", DAVE.0))?;
    let acl = carol.sh(&format!("getfacl {home}/a/sub/b.txt"))?;
    ensure!(acl.contains("user:nbdave:r--"), "{acl}");
    let raw = m.sh(&format!("getfacl -n home/{}/a/sub/b.txt", CAROL.0))?;
    ensure!(raw.contains(&format!("user:{dave_id}:r--")), "{raw}");
    // Files are not given away, and names without a Nimbus account are
    // refused clearly.
    let err = carol.sh_fails(&format!("chown {} {home}/p.txt", DAVE.0))?;
    ensure!(err.contains("Operation not permitted"), "{err}");
    let err = carol.sh_fails(&format!("chown daemon {home}/p.txt"))?;
    ensure!(err.contains("Invalid argument"), "{err}");
    let err = carol.sh_fails(&format!("setfacl -m u:daemon:r {home}/p.txt"))?;
    ensure!(err.contains("Invalid argument"), "{err}");
    // The cluster stored her Nimbus ids, not her local ones.
    assert_eq!(
        m.sh(&format!("stat -c '%u:%g' home/{}/a/a.txt", CAROL.0))?,
        format!("{carol_id}:{carol_id}")
    );

    carol.unmount()?;
    drop(root);
    Ok(())
}
