//! People on one store: accounts, sign-in, homes, permissions decided by the
//! meta servers from the signed-in identity, shares, ACLs and quotas.
//!
//! Every mount here but the administrator's runs as local root and is
//! signed in as an ordinary Nimbus user: local root must count for nothing.

use anyhow::{bail, ensure, Context};
use nimbus_tests::mount::{Mount, Mounted};
use nimbus_tests::MetaCluster;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

/// Runs `nimbus --profile PROFILE ARGS` with `stdin`; its stdout, or an
/// error with its stderr.
fn nimbus(cluster: &MetaCluster, profile: &str, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let (ok, out, err) = run(cluster, profile, args, stdin)?;
    if !ok {
        bail!("nimbus {args:?} failed: {err}");
    }
    Ok(out)
}

/// `nimbus`, expecting a refusal: its stderr.
fn nimbus_fails(cluster: &MetaCluster, profile: &str, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let (ok, out, err) = run(cluster, profile, args, stdin)?;
    ensure!(!ok, "nimbus {args:?} should have failed, said: {out}");
    Ok(err)
}

fn run(cluster: &MetaCluster, profile: &str, args: &[&str], stdin: &str) -> anyhow::Result<(bool, String, String)> {
    let mut child = cluster
        .nimbus(profile)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nimbus")?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Creates `name` (password NAME-password) with `extra` options, signs them
/// in to profile `name`, and returns their uid.
fn add_user(cluster: &MetaCluster, name: &str, extra: &[&str]) -> anyhow::Result<u32> {
    let password = format!("{name}-password\n");
    let mut args = vec!["user", "add", name, "--password-stdin"];
    args.extend_from_slice(extra);
    nimbus(cluster, "admin", &args, &password)?;
    cluster.login(name, &format!("{name}-password"), &[])?;
    let who = nimbus(cluster, name, &["whoami"], "")?;
    let uid = who
        .split("(uid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no uid in {who}"))?;
    Ok(uid)
}

/// Runs `script` against mount `mnt` from outside it (the mount point itself
/// may refuse a chdir), expecting a refusal; returns its stderr.
fn refused(mnt: &Mount, script: &str) -> anyhow::Result<String> {
    let out = mnt.command(&["-c", script]).current_dir("/").output()?;
    ensure!(!out.status.success(), "expected a failure from:\n{script}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn mount_as(m: &Mounted, profile: &str, extra: &[&str]) -> anyhow::Result<Mount> {
    Mount::start_as(&m.cluster, profile, m.scratch.path(), profile, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_shares_and_acls_follow_the_signed_in_user() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let c = &m.cluster;
    let bob_uid = add_user(c, "bob", &[])?;
    add_user(c, "alice", &[])?;
    // Nimbus ids as they are (no local accounts here to map them by name:
    // tests/tests/workstation.rs covers that), so ACL entries name bob's
    // Nimbus uid.
    let alice = mount_as(&m, "alice", &["--idmap", "none"])?;
    // Bob's mount lets every local user in, to show that a local uid
    // (here alice's number) buys nothing.
    let bob = mount_as(&m, "bob", &["--allow-other"])?;

    // Homes: 0700, owned by their user.
    assert_eq!(m.sh("stat -c '%a %u' home/alice")?, format!("700 {}", bob_uid + 1));
    alice.sh("echo private > home/alice/notes && mkdir home/alice/proj && echo plan > home/alice/proj/plan")?;
    assert_eq!(alice.sh("cat home/alice/notes")?, "private");

    // Bob: no listing, reading or writing in alice's home, as local root...
    for script in [
        "ls home/alice",
        "cat home/alice/notes",
        "echo x > home/alice/new",
        "cat home/alice/proj/plan",
    ] {
        let err = bob.sh_fails(script)?;
        ensure!(err.contains("Permission denied"), "{script}: {err}");
    }
    // ... or as a local process with alice's uid.
    let err = bob.sh_fails(&format!(
        "setpriv --reuid={} --regid={} --clear-groups cat home/alice/notes",
        bob_uid + 1,
        bob_uid + 1
    ))?;
    ensure!(err.contains("Permission denied"), "{err}");
    // Nor may his mount claim to act as local users: only administrators'.
    let refused = Mount::start_as(c, "bob-local", m.scratch.path(), "bob", &["--as-local-users"]);
    ensure!(
        refused.is_err(),
        "a non-administrator's --as-local-users mount was allowed"
    );

    // Shared read-write: bob creates and edits there, through the path.
    nimbus(c, "alice", &["share", "/home/alice/proj", "bob", "--rw"], "")?;
    assert!(nimbus(c, "bob", &["share", "list"], "")?.contains("/home/alice/proj  rw  by alice with bob"));
    bob.sh("cat home/alice/proj/plan && echo from-bob > home/alice/proj/bob.txt && echo more >> home/alice/proj/plan")?;
    assert_eq!(alice.sh("cat home/alice/proj/bob.txt")?, "from-bob");
    assert_eq!(alice.sh("cat home/alice/proj/plan")?, "plan\nmore");
    // The share opens the way to the folder, not the rest of the home.
    ensure!(bob.sh_fails("cat home/alice/notes")?.contains("Permission denied"));
    ensure!(bob.sh_fails("ls home/alice")?.contains("Permission denied"));

    // Read-only: reads work, writes fail.
    nimbus(c, "alice", &["share", "/home/alice/proj", "bob", "--ro"], "")?;
    assert_eq!(bob.sh("cat home/alice/proj/bob.txt")?, "from-bob");
    for script in [
        "echo x >> home/alice/proj/plan",
        "echo x > home/alice/proj/new",
        "rm home/alice/proj/bob.txt",
    ] {
        let err = bob.sh_fails(script)?;
        ensure!(err.contains("Permission denied"), "{script}: {err}");
    }

    // Revoked: refused at once, even through names bob's kernel has cached.
    bob.sh("ls home/alice/proj >/dev/null && cat home/alice/proj/plan >/dev/null")?;
    nimbus(c, "alice", &["share", "revoke", "/home/alice/proj", "bob"], "")?;
    for script in ["cat home/alice/proj/plan", "ls home/alice/proj"] {
        let err = bob.sh_fails(script)?;
        ensure!(err.contains("Permission denied"), "{script}: {err}");
    }

    // A share with a group reaches its members.
    nimbus(c, "admin", &["group", "add", "team"], "")?;
    nimbus(c, "admin", &["group", "adduser", "team", "bob"], "")?;
    nimbus(c, "alice", &["share", "/home/alice/proj", "@team", "--ro"], "")?;
    assert_eq!(bob.sh("cat home/alice/proj/bob.txt")?, "from-bob");
    nimbus(c, "admin", &["group", "deluser", "team", "bob"], "")?;
    ensure!(bob
        .sh_fails("cat home/alice/proj/bob.txt")?
        .contains("Permission denied"));

    // ACLs: through a search-only entry on the home and a read entry on one
    // file, bob reads that file and nothing more.
    alice.sh(&format!(
        "echo shared-by-acl > home/alice/acl.txt && chmod 600 home/alice/acl.txt home/alice/notes \
         && setfacl -m u:{bob_uid}:x home/alice && setfacl -m u:{bob_uid}:rx home/alice/acl.txt"
    ))?;
    let acl = alice.sh("getfacl -n home/alice/acl.txt")?;
    ensure!(acl.contains(&format!("user:{bob_uid}:r-x")), "{acl}");
    assert_eq!(bob.sh("cat home/alice/acl.txt")?, "shared-by-acl");
    for script in [
        "echo x >> home/alice/acl.txt",
        "cat home/alice/notes",
        "ls home/alice",
        "rm home/alice/acl.txt",
    ] {
        let err = bob.sh_fails(script)?;
        ensure!(err.contains("Permission denied"), "{script}: {err}");
    }
    // chmod narrows the ACL's mask, and with it bob's entry.
    alice.sh("chmod 600 home/alice/acl.txt")?;
    ensure!(bob.sh_fails("cat home/alice/acl.txt")?.contains("Permission denied"));

    // The administrator's mount is the superuser, whatever the modes.
    assert_eq!(m.sh("cat home/alice/notes")?, "private");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_exactly() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let c = &m.cluster;
    add_user(c, "carol", &["--quota-bytes", "10M"])?;
    let carol = mount_as(&m, "carol", &[])?;
    let used = || -> anyhow::Result<u64> { Ok(carol.sh("df -B1 --output=used . | tail -1")?.trim().parse()?) };

    // df shows her quota as the size of the file system.
    assert_eq!(carol.sh("df -B1 --output=size . | tail -1")?.trim(), "10485760");
    // A 20 MiB file does not fit: dd fails with EDQUOT and the file keeps
    // its committed content (none).
    let err = carol.sh_fails("dd if=/dev/zero of=home/carol/big bs=1M count=20")?;
    ensure!(err.contains("Disk quota exceeded"), "{err}");
    // (After the attribute TTL: the kernel may show the refused size a moment.)
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(carol.sh("stat -c %s home/carol/big")?, "0");
    assert_eq!(used()?, 0);

    // Usage follows sizes exactly, both ways.
    carol.sh("for i in 1 2 3; do dd if=/dev/zero of=home/carol/f$i bs=1M count=1 status=none; done")?;
    assert_eq!(used()?, 3 << 20);
    carol.sh("rm home/carol/f2")?;
    assert_eq!(used()?, 2 << 20);
    carol.sh("truncate -s 100K home/carol/f1")?;
    assert_eq!(used()?, (1 << 20) + 100 * 1024);

    // 32 writers at once cannot push usage past the limit; what was
    // committed is exactly what is used.
    carol.sh(
        "for i in $(seq 32); do (dd if=/dev/zero of=home/carol/p$i bs=1M count=1 status=none 2>/dev/null || true) & done; wait",
    )?;
    // The kernel keeps the size a refused writer reached until the
    // attribute TTL (1 s) passes; then it asks the cluster again.
    std::thread::sleep(Duration::from_millis(1500));
    let total: u64 = carol
        .sh("stat -c %s home/carol/* | awk '{ s += $1 } END { print s }'")?
        .trim()
        .parse()?;
    let now = used()?;
    ensure!(now <= 10 << 20, "usage {now} passed the 10 MiB limit");
    ensure!(now > 8 << 20, "usage {now}: the writers should have filled the quota");
    // df rounds up to 4 KiB blocks; the sizes here are multiples of it.
    assert_eq!(now, total);
    // The recorded usage agrees with a recount of the namespace.
    let check = nimbus(c, "admin", &["quota", "check"], "")?;
    ensure!(check.contains("agrees"), "{check}");

    // An inode limit: dan may hold 5 (his home is one of them).
    add_user(c, "dan", &["--quota-inodes", "5"])?;
    let dan = mount_as(&m, "dan", &[])?;
    dan.sh("touch home/dan/a home/dan/b && mkdir home/dan/c && ln -s a home/dan/d")?;
    let err = dan.sh_fails("touch home/dan/e")?;
    ensure!(err.contains("Disk quota exceeded"), "{err}");
    assert_eq!(
        dan.sh("df --output=iused,itotal . | tail -1")?
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["5", "5"]
    );
    dan.sh("rm home/dan/a && touch home/dan/e")?;

    // Raising the limit lets her write again.
    nimbus(c, "admin", &["quota", "set", "carol", "--bytes", "30M"], "")?;
    carol.sh("dd if=/dev/zero of=home/carol/big bs=1M count=20 status=none")?;
    assert_eq!(carol.sh("stat -c %s home/carol/big")?, (20u64 << 20).to_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_refused_clearly() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let c = &m.cluster;
    add_user(c, "dave", &[])?;
    add_user(c, "erin", &[])?;

    // Wrong password.
    let err = nimbus_fails(
        c,
        "dave",
        &["login", "--user", "dave", "--password-stdin"],
        "nope-nope\n",
    )?;
    ensure!(err.contains("wrong user name or password"), "{err}");
    let err = nimbus_fails(
        c,
        "x",
        &["login", "--user", "nobody", "--password-stdin"],
        "whatever1\n",
    )?;
    ensure!(err.contains("wrong user name or password"), "{err}");

    // Not an administrator.
    for args in [
        &["user", "add", "mallory", "--password-stdin"][..],
        &["user", "list"][..],
        &["quota", "set", "dave", "--bytes", "1G"][..],
        &["user", "disable", "erin"][..],
        &["group", "add", "g"][..],
    ] {
        let err = nimbus_fails(c, "dave", args, "mallory-password\n")?;
        ensure!(err.contains("only an administrator"), "{args:?}: {err}");
    }

    // A tampered token.
    let profile = c.config_dir().join("profiles").join("dave");
    let text = std::fs::read_to_string(&profile).context("reading the profile")?;
    let (head, token) = text.split_once("token=nimbus1.").context("no token in profile")?;
    let mut t: Vec<u8> = token.trim().bytes().collect();
    t[40] = if t[40] == b'0' { b'1' } else { b'0' };
    std::fs::write(&profile, format!("{head}token=nimbus1.{}\n", String::from_utf8(t)?))
        .context("writing the profile")?;
    let err = nimbus_fails(c, "dave", &["whoami"], "")?;
    ensure!(err.contains("altered"), "{err}");

    // An expired token: commands and the mount refuse until a new sign-in,
    // which the running mount picks up.
    c.login("erin", "erin-password", &["--ttl", "3s"])?;
    let erin = mount_as(&m, "erin", &[]).context("mounting as erin")?;
    erin.sh("echo hello > home/erin/f")?;
    std::thread::sleep(Duration::from_secs(4));
    let err = refused(&erin, "cat $M/home/erin/f")?;
    ensure!(err.contains("Permission denied"), "{err}");
    ensure!(erin.log().contains("expired"), "mount log says nothing: {}", erin.log());
    ensure!(nimbus_fails(c, "erin", &["whoami"], "")?.contains("expired"));
    c.login("erin", "erin-password", &[])?;
    assert_eq!(erin.sh("cat home/erin/f")?, "hello");

    // Logout ends the session for everything that used it.
    nimbus(c, "erin", &["logout"], "")?;
    ensure!(refused(&erin, "cat $M/home/erin/f")?.contains("Permission denied"));

    // A disabled user: sessions end, sign-in is refused.
    c.login("dave", "dave-password", &[])?;
    let dave = mount_as(&m, "dave", &[])?;
    dave.sh("ls home/dave")?;
    nimbus(c, "admin", &["user", "disable", "dave"], "")?;
    ensure!(refused(&dave, "ls $M/home/dave")?.contains("Permission denied"));
    let err = nimbus_fails(
        c,
        "dave",
        &["login", "--user", "dave", "--password-stdin"],
        "dave-password\n",
    )?;
    ensure!(err.contains("disabled"), "{err}");
    nimbus(c, "admin", &["user", "enable", "dave"], "")?;
    c.login("dave", "dave-password", &[])?;
    dave.sh("ls home/dave")?;

    // Password change: self-service needs the old one; an administrator
    // resets without it.
    nimbus(
        c,
        "dave",
        &["user", "passwd", "--password-stdin"],
        "dave-password\ndave-new-password\n",
    )?;
    nimbus_fails(
        c,
        "x",
        &["login", "--user", "dave", "--password-stdin"],
        "dave-password\n",
    )?;
    c.login("dave", "dave-new-password", &[])?;
    nimbus(
        c,
        "admin",
        &["user", "passwd", "dave", "--password-stdin"],
        "reset-password\n",
    )?;
    c.login("dave", "reset-password", &[])?;

    // Removing a user keeps their files, out of the way.
    nimbus(c, "admin", &["user", "remove", "erin"], "")?;
    assert_eq!(m.sh("cat home/erin.removed-*/f")?, "hello");
    Ok(())
}
