//! Encryption at rest, end to end on real processes: file contents never
//! reach a data server's or a meta server's disk in the clear; a block file
//! a data server swaps for another's is never served as that block; a master
//! key rotation under a write load keeps every file and retires the old key;
//! a meta server refuses to start without its key or with the wrong one; a
//! user without rights to a file cannot get its keys.

use anyhow::{ensure, Context};
use nimbus_common::encryption::Key;
use nimbus_common::{BlockId, Ino};
use nimbus_proto as pb;
use nimbus_tests::mount::Mounted;
use nimbus_tests::{bin_dir, MetaCluster, Options, ADMIN_PASSWORD};
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MARKER: &[u8] = b"NIMBUS-PLAINTEXT-MARKER-5e1d07c2";

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// The files under `dir` that hold `needle` anywhere.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_contents_never_reach_a_disk_in_the_clear() -> anyhow::Result<()> {
    let mut m = Mounted::start().await?;
    let marker = String::from_utf8_lossy(MARKER).into_owned();
    // A big file (blocks on data servers) and a small one (kept by the meta
    // servers), both nothing but the marker.
    m.sh(&format!(
        "{{ yes {marker} || true; }} | head -c 9000000 > $S/big && {{ yes {marker} || true; }} | head -c 3000 > $S/small \
         && cp $S/big $S/small . && sync && cmp big $S/big && cmp small $S/small"
    ))?;
    ensure!(
        !holding(m.scratch.path(), MARKER).is_empty(),
        "the search finds the marker where it is (the scratch copies)"
    );
    // Everything written out: the mount gone, snapshots taken, every server
    // stopped (a meta server flushes its state when it stops).
    m.mount.stop()?;
    let client = m.cluster.client()?;
    for n in m.cluster.nodes.values() {
        snapshot(&client, &n.addr).await?;
    }
    let ids: Vec<u64> = m.cluster.nodes.keys().copied().collect();
    for id in ids {
        m.cluster.stop(id);
    }
    let data: Vec<usize> = m.cluster.data.keys().copied().collect();
    for i in data {
        m.cluster.kill_data(i);
    }
    let found = holding(&m.cluster.dir, MARKER);
    ensure!(
        found.is_empty(),
        "file contents in the clear on a server's disk: {found:?}"
    );
    let blocks: usize = m.cluster.data.values().map(|d| d.block_files().len()).sum();
    ensure!(
        blocks >= 4,
        "the big file's blocks are on the data servers ({blocks} block files)"
    );
    Ok(())
}

/// Asks a meta server to take a snapshot (flushes its state to disk).
async fn snapshot(client: &nimbus_client::MetaClient, addr: &str) -> anyhow::Result<()> {
    let ch = client.channel(addr)?;
    nimbus_client::MetaClient::admin(ch)
        .trigger_snapshot(pb::SnapshotRequest {})
        .await
        .with_context(|| format!("snapshot on {addr}"))?;
    Ok(())
}

async fn data_cluster() -> anyhow::Result<MetaCluster> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    for i in 1..=3 {
        cluster.add_data(i, &format!("zone{i}"), None)?;
    }
    cluster.wait_data(3, Duration::from_secs(20)).await?;
    Ok(cluster)
}

/// A file of one 4 MiB block of random bytes with `replication` copies.
async fn one_block_file(
    client: &nimbus_client::MetaClient,
    name: &str,
    replication: u32,
) -> anyhow::Result<(BlockId, Key, Vec<u8>)> {
    let mut data = vec![0u8; 4 << 20];
    rand::rng().fill_bytes(&mut data);
    let ino = Ino(client.create(Ino::ROOT, name.as_bytes(), 0o644).await?.ino);
    let b = client.write_block(&data, replication, true).await?;
    client.commit_write(ino, &[(0, &b)], data.len() as u64).await?;
    let key = b.key.context("a written block has its key")?;
    Ok((b.id, key, data))
}

/// The block file of `block` on data server `index`, if it holds one.
fn block_file(cluster: &MetaCluster, index: usize, block: BlockId) -> Option<PathBuf> {
    cluster.data[&index]
        .block_files()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&block.to_string()))
}

/// Waits until every replica of `block` opens to `data` again.
async fn wait_all_good(
    cluster: &MetaCluster,
    client: &nimbus_client::MetaClient,
    block: BlockId,
    key: &Key,
    data: &[u8],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let loc = client.locate(block).await?;
        let mut good = loc.replicas.len() >= 2;
        for addr in &loc.replicas {
            let stored =
                nimbus_client::blocks::fetch_block(client.channel(addr)?, block, loc.read_token.clone(), 0, 0).await;
            good &= stored
                .is_ok_and(|s| nimbus_common::encryption::open_range(key, &block.0, 0, 0, &s).is_ok_and(|p| p == data));
        }
        if good {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "block {block} still has a bad replica: {:?}\n{}",
            loc.replicas,
            cluster.log(1)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_file_swapped_for_another_is_never_served_as_it() -> anyhow::Result<()> {
    let cluster = data_cluster().await?;
    let client = cluster.client()?;
    let (a, a_key, a_data) = one_block_file(&client, "a", 2).await?;
    let (b, _, _) = one_block_file(&client, "b", 2).await?;
    let (c, c_key, c_data) = one_block_file(&client, "c", 2).await?;
    let (d, d_key, d_data) = one_block_file(&client, "d", 2).await?;
    // b's stored bytes, taken from a copy the cluster records: a failed
    // chain write may leave a stray copy that orphan collection deletes
    // while the test runs.
    let b_holder = recorded_holders(&cluster, &client, b).await?[0];
    let b_bytes = std::fs::read(block_file(&cluster, b_holder, b).context("b's file")?)?;

    // Read path: a's copy on one server becomes b's bytes (same size). The
    // read gets a's bytes from the other replica, and the bad one is
    // reported and replaced.
    let a_holder = recorded_holders(&cluster, &client, a).await?[0];
    std::fs::write(block_file(&cluster, a_holder, a).context("a's file")?, &b_bytes)?;
    for _ in 0..3 {
        let got = client.read_block(a, Some(&a_key), 0, 0).await?;
        ensure!(got == a_data, "block {a} read back other bytes");
    }
    wait_all_good(&cluster, &client, a, &a_key, &a_data).await?;

    // Every copy swapped: the read fails, never with b's bytes. The files
    // are found first and written back to back, so that the scrubber has no
    // time to have one copy re-created from the other in between.
    let c_files: Vec<PathBuf> = recorded_holders(&cluster, &client, c)
        .await?
        .into_iter()
        .filter_map(|i| block_file(&cluster, i, c))
        .collect();
    ensure!(c_files.len() >= 2, "c has {} copies", c_files.len());
    for f in &c_files {
        std::fs::write(f, &b_bytes)?;
    }
    match client.read_block(c, Some(&c_key), 0, 0).await {
        // Only a repair that still found a good copy may answer, and then
        // with c's own bytes.
        Ok(bytes) => {
            ensure!(bytes == c_data, "a swapped copy was served ({} bytes)", bytes.len());
            println!("a repair raced the swap; c read back exact");
        }
        Err(e) => println!("every copy swapped: refused: {e}"),
    }

    // Nobody reads d: the scrubber finds the swap and the copy is replaced.
    let d_holder = recorded_holders(&cluster, &client, d).await?[0];
    std::fs::write(block_file(&cluster, d_holder, d).context("d's file")?, &b_bytes)?;
    wait_all_good(&cluster, &client, d, &d_key, &d_data).await?;
    Ok(())
}

/// The data servers (by index) the cluster records as holding `block`.
async fn recorded_holders(
    cluster: &MetaCluster,
    client: &nimbus_client::MetaClient,
    block: BlockId,
) -> anyhow::Result<Vec<usize>> {
    let loc = client.locate(block).await?;
    let holders: Vec<usize> = cluster
        .data
        .iter()
        .filter(|(_, d)| loc.replicas.contains(&d.addr))
        .map(|(i, _)| *i)
        .collect();
    ensure!(!holders.is_empty(), "no recorded holder of {block}: {:?}", loc.replicas);
    Ok(holders)
}

/// Runs `nimbus ARGS` as the operator (admin.pem, profile admin).
fn nimbus(cluster: &MetaCluster, args: &[&str]) -> anyhow::Result<String> {
    let out = cluster.nimbus("admin").args(args).stdin(Stdio::null()).output()?;
    ensure!(
        out.status.success(),
        "nimbus {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nimbus-meta serve` of node `id` with `key` as its master key: its exit
/// and output, expecting it to refuse within 20 s.
fn start_refused(cluster: &MetaCluster, id: u64, key: &Path) -> anyhow::Result<String> {
    let node = &cluster.nodes[&id];
    let mut child = std::process::Command::new(bin_dir().join("nimbus-meta"))
        .args(["serve", "--id", &id.to_string(), "--listen", &node.addr])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--tls-dir")
        .arg(&cluster.certs)
        .arg("--master-key")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            let out = child.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            ensure!(!status.success(), "nimbus-meta with {} started: {text}", key.display());
            return Ok(text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("nimbus-meta with master key {} did not refuse to start", key.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_under_load_keeps_every_file_and_retires_the_old_key() -> anyhow::Result<()> {
    let mut m = Mounted::start().await?;
    m.cluster.login("admin", ADMIN_PASSWORD, &[])?;
    let old_key = m.scratch.path().join("old-master.key");
    std::fs::copy(m.cluster.certs.join("master.key"), &old_key)?;
    m.sh("mkdir src && for i in $(seq 60); do head -c $((i * 3001 + (i % 3) * 300000)) /dev/urandom > $S/f$i; done")?;
    m.sh("mkdir $S/src && mv $S/f* $S/src/")?;
    // A writer copies files in while the key rotates.
    let mut writer = m.command(&["-c", "for f in $S/src/*; do cp $f src/; done"]).spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let out = nimbus(&m.cluster, &["key", "rotate"])?;
    ensure!(out.contains("committed"), "rotate said: {out}");
    ensure!(writer.wait()?.success(), "the writer failed during the rotation");
    m.sh("diff -r $S/src src")?;
    let status = nimbus(&m.cluster, &["key", "status"])?;
    println!("{out}{status}");

    // The old key no longer starts a meta server; a missing key neither.
    m.cluster.stop(3);
    let refused = start_refused(&m.cluster, 3, &old_key)?;
    ensure!(refused.contains("not the one"), "refusal: {refused}");
    let missing = start_refused(&m.cluster, 3, &m.scratch.path().join("no-such.key"))?;
    ensure!(missing.contains("master key"), "refusal: {missing}");
    // With the current key it comes back and catches up.
    m.cluster.launch(3)?;
    m.cluster.wait_converged(Duration::from_secs(30)).await?;
    m.sh("echo after > src/after && cat src/after && diff -r $S/src src -x after")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_only_to_who_may_read_or_write() -> anyhow::Result<()> {
    let cluster = data_cluster().await?;
    cluster.login("admin", ADMIN_PASSWORD, &[])?;
    for user in ["keyalice", "keybob"] {
        let mut child = cluster
            .nimbus("admin")
            .args(["user", "add", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        if let Some(mut s) = child.stdin.take() {
            use std::io::Write;
            writeln!(s, "{user}-password")?;
        }
        ensure!(child.wait()?.success(), "user add {user}");
    }
    let alice = cluster.client_as("keyalice", "keyalice-password")?;
    let bob = cluster.client_as("keybob", "keybob-password")?;
    let home = Ino(alice.lookup(Ino::ROOT, b"home").await?.ino);
    let dir = Ino(alice.lookup(home, b"keyalice").await?.ino);
    let ino = Ino(alice.create(dir, b"private", 0o600).await?.ino);
    let b = alice.write_file_block(ino, b"alice's secret", true).await?;
    alice.commit_write(ino, &[(0, &b)], 14).await?;
    let layout = |access| pb::ns_request::Op::GetLayout(pb::GetLayout { ino: ino.0, access });
    match alice.call(layout(4)).await? {
        pb::ns_reply::Result::Layout(l) => {
            ensure!(l.slots.first().is_some_and(|s| s.key.len() == 32), "alice gets the key")
        }
        other => anyhow::bail!("alice's layout: {other:?}"),
    }
    for access in [0, 2, 4] {
        match bob.call(layout(access)).await {
            Ok(pb::ns_reply::Result::Layout(l)) => anyhow::bail!("bob got alice's layout with keys: {l:?}"),
            Ok(other) => println!("bob refused (access {access}): {other:?}"),
            Err(e) => println!("bob refused (access {access}): {e}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_from_before_encryption_stay_readable_and_are_counted() -> anyhow::Result<()> {
    // A client writing in the clear, as clients did before encryption at
    // rest (accepted only with --allow-clear-blocks), and one that seals.
    let mut cluster = MetaCluster::start(Options {
        meta_args: vec!["--allow-clear-blocks".into()],
        ..Options::default()
    })?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    for i in 1..=3 {
        cluster.add_data(i, &format!("zone{i}"), None)?;
    }
    cluster.wait_data(3, Duration::from_secs(20)).await?;
    let old = cluster.client()?.with_clear_blocks(true);
    let data = MARKER.repeat(10_000);
    let ino = Ino(old.create(Ino::ROOT, b"old", 0o644).await?.ino);
    let b = old.write_block(&data, 0, true).await?;
    ensure!(b.key.is_none(), "a clear block has no key");
    old.commit_write(ino, &[(0, &b)], data.len() as u64).await?;
    let stored = cluster.data.values().flat_map(|d| d.block_files()).collect::<Vec<_>>();
    ensure!(
        stored
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|s| s.windows(MARKER.len()).any(|w| w == MARKER))),
        "the clear block is on disk in the clear"
    );
    let client = cluster.client()?;
    let layout = match client
        .call(pb::ns_request::Op::GetLayout(pb::GetLayout { ino: ino.0, access: 4 }))
        .await?
    {
        pb::ns_reply::Result::Layout(l) => l,
        other => anyhow::bail!("layout: {other:?}"),
    };
    ensure!(layout.slots[0].key.is_empty(), "a clear block's layout carries no key");
    ensure!(
        client.read_block(b.id, None, 0, 0).await? == data,
        "the clear block reads back"
    );
    one_block_file(&client, "new", 2).await?;
    let h = cluster
        .wait_health("clear blocks counted", Duration::from_secs(30), |h| {
            h.blocks == 2 && h.clear_blocks == 1
        })
        .await?;
    println!("{} blocks, {} in the clear", h.blocks, h.clear_blocks);
    cluster.login("admin", ADMIN_PASSWORD, &[])?;
    let status = nimbus(&cluster, &["status"])?;
    ensure!(status.contains("1 blocks are stored in the clear"), "status: {status}");
    ensure!(status.contains("encryption at rest: on"), "status: {status}");
    Ok(())
}
