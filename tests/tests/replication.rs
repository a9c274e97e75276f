//! Replication per directory for operators, on real processes: `nimbus
//! replication set` changes how many data servers hold the blocks of files
//! made in a directory afterwards, `get` and `stat` show the setting, and
//! settings the meta servers would refuse are refused with a clear message;
//! `nimbus status` counts blocks by replication level.

use anyhow::{ensure, Context};
use nimbus_common::Ino;
use nimbus_tests::{MetaCluster, Options, ADMIN_PASSWORD};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

/// Runs `nimbus ARGS` as the signed-in admin; (success, stdout, stderr).
fn nimbus(cluster: &MetaCluster, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = cluster
        .nimbus("admin")
        .args(args)
        .output()
        .with_context(|| format!("running nimbus {}", args.join(" ")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `nimbus ARGS` must succeed; its stdout.
fn ok(cluster: &MetaCluster, args: &[&str]) -> anyhow::Result<String> {
    let (success, stdout, stderr) = nimbus(cluster, args)?;
    ensure!(success, "nimbus {} failed: {stderr}", args.join(" "));
    Ok(stdout)
}

/// How many data servers hold the one block of a new file `dir/name`,
/// written with the replication its directory decides.
async fn copies_of_new_file(client: &nimbus_client::MetaClient, dir: Ino, name: &str) -> anyhow::Result<usize> {
    let ino = Ino(client.create(dir, name.as_bytes(), 0o644).await?.ino);
    let data = vec![7u8; 100_000];
    let b = client.write_file_block(ino, &data, true).await?;
    client.commit_write(ino, &[(0, &b)], data.len() as u64).await?;
    Ok(client.locate(b.id).await?.replicas.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_set_per_directory_decides_copies_of_new_blocks() -> anyhow::Result<()> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    for i in 1..=3 {
        cluster.add_data(i, &format!("zone{i}"), None)?;
    }
    cluster.wait_data(3, Duration::from_secs(20)).await?;
    cluster.login("admin", ADMIN_PASSWORD, &[])?;
    let client = cluster.client()?;

    ok(&cluster, &["mkdir", "/hot"])?;
    ok(&cluster, &["mkdir", "/cold"])?;
    let got = ok(&cluster, &["replication", "get", "/hot"])?;
    ensure!(
        got.contains("cluster default"),
        "a new directory has the default: {got}"
    );

    ok(&cluster, &["replication", "set", "/hot", "3"])?;
    ok(&cluster, &["replication", "set", "/cold", "1"])?;
    let got = ok(&cluster, &["replication", "get", "/hot"])?;
    ensure!(got.contains("3 copies"), "get shows the setting: {got}");
    let stat = ok(&cluster, &["stat", "/cold"])?;
    ensure!(stat.contains("replication: 1 copy"), "stat shows the setting: {stat}");

    // Out of range: refused before reaching the cluster, and saying why.
    for bad in ["0", "6"] {
        let (success, _, stderr) = nimbus(&cluster, &["replication", "set", "/hot", bad])?;
        ensure!(!success, "replication {bad} was accepted");
        ensure!(stderr.contains("1 to 5"), "the refusal says the range: {stderr}");
    }
    let (success, _, stderr) = nimbus(&cluster, &["replication", "set", "/missing", "2"])?;
    ensure!(
        !success && stderr.contains("/missing"),
        "a missing path names it: {stderr}"
    );

    // The blocks of new files follow their directory; files made before the
    // change keep what they had, and a subdirectory inherits the setting.
    let hot = Ino(client.lookup(Ino::ROOT, b"hot").await?.ino);
    let cold = Ino(client.lookup(Ino::ROOT, b"cold").await?.ino);
    ensure!(copies_of_new_file(&client, hot, "a").await? == 3, "/hot/a has 3 copies");
    ensure!(copies_of_new_file(&client, cold, "a").await? == 1, "/cold/a has 1 copy");
    ensure!(
        copies_of_new_file(&client, Ino::ROOT, "a").await? == 2,
        "/a has the default 2 copies"
    );
    ok(&cluster, &["mkdir", "/cold/deeper"])?;
    let got = ok(&cluster, &["replication", "get", "/cold/deeper"])?;
    ensure!(got.contains("1 copy"), "a subdirectory inherits: {got}");
    let deeper = Ino(client.lookup(cold, b"deeper").await?.ino);
    ensure!(
        copies_of_new_file(&client, deeper, "b").await? == 1,
        "/cold/deeper/b has 1 copy"
    );

    // `nimbus status` counts blocks by replication level once the leader's
    // next repair pass has seen them: 2 with 1 copy, 1 with 2, 1 with 3.
    let want = serde_json::json!({ "1": 2, "2": 1, "3": 1 });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value = serde_json::from_str(&ok(&cluster, &["status", "--json"])?)?;
        let levels = &status["data"]["blocks_by_replication"];
        if *levels == want {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "status never counted blocks by replication as {want}: {levels}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let table = ok(&cluster, &["status"])?;
    ensure!(
        table.contains("blocks by replication: 2 with 1 copy, 1 with 2 copies, 1 with 3 copies"),
        "the status table lists the levels: {table}"
    );

    // Only a directory's owner (or an administrator) may change it.
    let mut child = cluster
        .nimbus("admin")
        .args(["user", "add", "repl", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "repl-password")?;
    }
    ensure!(child.wait()?.success(), "nimbus user add repl failed");
    cluster.login("repl", "repl-password", &[])?;
    let as_repl = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = cluster.nimbus("repl").args(args).output()?;
        Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
    };
    let (success, stderr) = as_repl(&["replication", "set", "/hot", "2"])?;
    ensure!(!success, "a user changed the replication of a directory of admin's");
    ensure!(
        stderr.contains("owner or an administrator"),
        "the refusal says who may: {stderr}"
    );
    let (success, stderr) = as_repl(&["replication", "set", "/home/repl", "3"])?;
    ensure!(success, "a user may set the replication of their home: {stderr}");
    let got = ok(&cluster, &["replication", "get", "/hot"])?;
    ensure!(
        got.contains("3 copies"),
        "the refused change left /hot as it was: {got}"
    );
    Ok(())
}
