//! Data servers as real processes beside a real meta cluster on 127.0.0.1:
//! replication, failure and repair, corruption, tokens, rebalancing and
//! drain, full disks, and garbage collection.

use nimbus_client::blocks::{fetch_block, send_block, WrittenBlock};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::encryption::Key;
use nimbus_common::token::{self, Access, Claims, Signer};
use nimbus_common::{BlockId, Ino};
use nimbus_proto as pb;
use nimbus_tests::{MetaCluster, Options};
use rand::{RngCore, SeedableRng};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const BLOCK: usize = 256 << 10;
/// Bytes per slot of a file.
const SLOT: u64 = 4 << 20;

/// A file written through the data path: its inode and the bytes of each slot.
struct File {
    ino: Ino,
    slots: Vec<(BlockId, Vec<u8>)>,
    /// Each slot's block key.
    keys: Vec<Option<Key>>,
}

async fn cluster_with_data(servers: usize, capacity: Option<u64>) -> anyhow::Result<MetaCluster> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    for i in 1..=servers {
        cluster.add_data(i, &format!("zone{i}"), capacity)?;
    }
    cluster.wait_data(servers, 20 * SECOND).await?;
    Ok(cluster)
}

/// Writes `files` files of `slots` blocks each under a new directory.
async fn write_files(
    client: &MetaClient,
    name: &str,
    files: usize,
    slots: usize,
    seed: u64,
) -> anyhow::Result<Vec<File>> {
    let dir = Ino(client.mkdir(Ino::ROOT, name.as_bytes(), 0o755).await?.ino);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for f in 0..files {
        let ino = Ino(client.create(dir, format!("f{f}").as_bytes(), 0o644).await?.ino);
        let mut written: Vec<(u64, WrittenBlock)> = Vec::new();
        let mut datas = Vec::new();
        for slot in 0..slots {
            let mut data = vec![0u8; BLOCK];
            rng.fill_bytes(&mut data);
            written.push((slot as u64, client.write_block(&data, 0, false).await?));
            datas.push(data);
        }
        let refs: Vec<(u64, &WrittenBlock)> = written.iter().map(|(s, w)| (*s, w)).collect();
        // Slot i starts at i × 4 MiB: a sparse file ending with the last block.
        let size = (slots as u64 - 1) * SLOT + BLOCK as u64;
        client.commit_write(ino, &refs, size).await?;
        out.push(File {
            ino,
            slots: written.iter().map(|(_, w)| w.id).zip(datas).collect(),
            keys: written.iter().map(|(_, w)| w.key).collect(),
        });
    }
    Ok(out)
}

/// Reads every block of every file back and compares it.
async fn check_files(client: &MetaClient, files: &[File]) -> anyhow::Result<()> {
    for f in files {
        let layout = match client
            .call(pb::ns_request::Op::GetLayout(pb::GetLayout {
                ino: f.ino.0,
                access: 0,
            }))
            .await?
        {
            pb::ns_reply::Result::Layout(l) => l,
            other => anyhow::bail!("unexpected {other:?}"),
        };
        assert_eq!(layout.slots.len(), f.slots.len());
        for (slot, (id, data)) in layout.slots.iter().zip(&f.slots) {
            assert_eq!(slot.block_id, id.0.to_vec());
            let key = nimbus_common::encryption::Key::from_bytes(&slot.key);
            anyhow::ensure!(key.is_some(), "block {id} has no key in the layout");
            let got = client.read_block(*id, key.as_ref(), 0, slot.length).await?;
            assert!(got == *data, "block {id} read back different bytes");
        }
    }
    Ok(())
}

fn total_blocks(cluster: &MetaCluster) -> usize {
    cluster.data.values().map(|d| d.block_files().len()).sum()
}

/// 3 data servers, R=2, 200 blocks; one server killed: every block still
/// reads back exact, and after the timeout every block has 2 replicas again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_server_is_read_around_and_repaired() -> anyhow::Result<()> {
    let mut cluster = cluster_with_data(3, None).await?;
    let client = cluster.client()?;
    let files = write_files(&client, "d", 20, 10, 1).await?;
    // At least: a rebalance copy may exist before its source is deleted.
    assert!(total_blocks(&cluster) >= 400, "200 blocks, 2 replicas each");

    cluster.kill_data(2);
    let killed = std::time::Instant::now();
    check_files(&client, &files).await?;
    println!("200 blocks read back exact with data server 2 dead");

    // The repair pass must first notice (health from a pass before the
    // death still says all is well), then finish.
    cluster
        .wait_health("dead server noticed", 30 * SECOND, |h| h.under_replicated > 0)
        .await?;
    let h = cluster
        .wait_health("re-replication", 60 * SECOND, |h| {
            h.blocks == 200 && h.under_replicated == 0 && h.servers.iter().any(|s| s.state == "dead")
        })
        .await?;
    println!(
        "every block has 2 live replicas again {:.1} s after the kill ({} copies made)",
        killed.elapsed().as_secs_f64(),
        h.repaired_total
    );
    let dead = cluster.data[&2].addr.clone();
    for f in &files {
        for (id, _) in &f.slots {
            let loc = client.locate(*id).await?;
            let live = loc.replicas.iter().filter(|r| **r != dead).count();
            assert!(live >= 2, "block {id} has {live} live replicas");
        }
    }
    check_files(&client, &files).await?;

    // The dead server comes back: its given-up copies are orphans, collected
    // once older than the harness's 30 s grace.
    cluster.launch_data(2)?;
    let deadline = std::time::Instant::now() + 60 * SECOND;
    loop {
        let h = client.data_health().await?;
        let recorded = h
            .servers
            .iter()
            .find(|s| s.addr == cluster.data[&2].addr)
            .map(|s| s.recorded_blocks);
        let on_disk = cluster.data[&2].block_files().len() as u64;
        if h.servers.iter().all(|s| s.state == "active") && recorded == Some(on_disk) {
            println!("server 2 back: {on_disk} block files, as many as recorded on it");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "orphans not collected: {on_disk} on disk, {recorded:?} recorded"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    check_files(&client, &files).await?;
    Ok(())
}

/// The plaintext of a stored block (empty if it does not open).
fn plain(key: Option<&Key>, block: BlockId, stored: &[u8]) -> Vec<u8> {
    match key {
        None => stored.to_vec(),
        Some(k) => nimbus_common::encryption::open_range(k, &block.0, 0, 0, stored).unwrap_or_default(),
    }
}

/// The data server and node index holding replica `addr`.
fn node_at(cluster: &MetaCluster, addr: &str) -> usize {
    cluster
        .data
        .iter()
        .find(|(_, d)| d.addr == addr)
        .map(|(i, _)| *i)
        .unwrap_or(0)
}

/// Flips one byte in the data part of a stored block file.
fn flip_byte(path: &std::path::Path) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(path)?;
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Waits until `block` has at least 2 replicas and every one returns `data`:
/// the corrupt copy on `bad` is gone (a later rebalance may put a good copy
/// back on that server, which is fine).
async fn wait_recreated(
    client: &MetaClient,
    block: BlockId,
    key: Option<&Key>,
    bad: &str,
    data: &[u8],
) -> anyhow::Result<pb::Location> {
    let deadline = std::time::Instant::now() + 30 * SECOND;
    loop {
        let loc = client.locate(block).await?;
        let mut all_good = loc.replicas.len() >= 2;
        for addr in &loc.replicas {
            let got = fetch_block(client.channel(addr)?, block, loc.read_token.clone(), 0, 0).await;
            all_good &= got.is_ok_and(|g| plain(key, block, &g) == data);
        }
        if all_good {
            return Ok(loc);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "block {block} not re-created after corruption on {bad}: {:?}",
            loc.replicas
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A flipped byte in a stored block: reads still return the right bytes, the
/// corruption is reported (by the read path and by the scrubber), and the bad
/// replica is re-created from a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_replica_is_detected_reported_and_recreated() -> anyhow::Result<()> {
    let cluster = cluster_with_data(3, None).await?;
    let client = cluster.client()?;
    let files = write_files(&client, "c", 1, 4, 2).await?;
    let (block, data) = files[0].slots[0].clone();

    // Found on the read path.
    let loc = client.locate(block).await?;
    let bad = loc.replicas[0].clone();
    let node = &cluster.data[&node_at(&cluster, &bad)];
    let path = node
        .block_files()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&block.to_string()))
        .ok_or_else(|| anyhow::anyhow!("block file of {block} not on {bad}"))?;
    flip_byte(&path)?;
    let direct = fetch_block(client.channel(&bad)?, block, loc.read_token.clone(), 0, 0).await;
    assert_eq!(
        direct.unwrap_err().code(),
        tonic::Code::DataLoss,
        "corrupt bytes are never served"
    );
    assert!(
        client.read_block(block, files[0].keys[0].as_ref(), 0, 0).await? == data,
        "the read falls back to a good replica"
    );
    let loc = wait_recreated(&client, block, files[0].keys[0].as_ref(), &bad, &data).await?;
    println!(
        "read path: corrupt replica on {bad} reported and re-created on {:?}",
        loc.replicas
    );

    // Found by the scrubber, with nobody reading.
    let (block2, data2) = files[0].slots[1].clone();
    let loc2 = client.locate(block2).await?;
    let bad2 = loc2.replicas[1].clone();
    let node2 = &cluster.data[&node_at(&cluster, &bad2)];
    let path2 = node2
        .block_files()
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&block2.to_string()))
        .ok_or_else(|| anyhow::anyhow!("block file of {block2} not on {bad2}"))?;
    flip_byte(&path2)?;
    let loc2 = wait_recreated(&client, block2, files[0].keys[1].as_ref(), &bad2, &data2).await?;
    println!(
        "scrubber: corrupt replica on {bad2} reported and re-created on {:?}",
        loc2.replicas
    );
    check_files(&client, &files).await?;
    Ok(())
}

/// Reads and writes with no token, an expired token, a token for another
/// block, or a forged signature are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_servers_refuse_requests_without_a_valid_token() -> anyhow::Result<()> {
    let cluster = cluster_with_data(2, None).await?;
    let client = cluster.client()?;
    let files = write_files(&client, "t", 1, 1, 3).await?;
    let (block, data) = files[0].slots[0].clone();
    let server = client.locate(block).await?.replicas[0].clone();
    let signer = Signer::load(&cluster.certs)?;
    let forger_dir = tempfile::tempdir()?;
    token::create_keys(forger_dir.path())?;
    let forger = Signer::load(forger_dir.path())?;
    let other = BlockId([9; 16]);
    let expired = |access| {
        signer.sign_claims(&Claims {
            block,
            access,
            expires_ms: token::now_ms() - 1000,
        })
    };

    let bad_tokens = |access| {
        vec![
            ("no token", Vec::new()),
            ("expired", expired(access)),
            ("another block's", signer.sign(other, access, 60_000)),
            ("forged", forger.sign(block, access, 60_000)),
            (
                "wrong access",
                signer.sign(
                    block,
                    if access == Access::Read {
                        Access::Write
                    } else {
                        Access::Read
                    },
                    60_000,
                ),
            ),
        ]
    };
    for (what, t) in bad_tokens(Access::Read) {
        let r = fetch_block(client.channel(&server)?, block, t, 0, 0).await;
        assert_eq!(
            r.unwrap_err().code(),
            tonic::Code::PermissionDenied,
            "read with {what} token"
        );
    }
    for (what, t) in bad_tokens(Access::Write) {
        let header = pb::WriteHeader {
            block_id: block.0.to_vec(),
            token: t,
            length: 4,
            chain: vec![],
            chain_ids: vec![],
            durable: false,
        };
        let r = send_block(client.channel(&server)?, header, b"evil").await;
        assert_eq!(
            r.unwrap_err().code(),
            tonic::Code::PermissionDenied,
            "write with {what} token"
        );
    }
    // The block is untouched and a valid token still works.
    let good = signer.sign(block, Access::Read, 60_000);
    let stored = fetch_block(client.channel(&server)?, block, good, 0, 0).await?;
    assert!(plain(files[0].keys[0].as_ref(), block, &stored) == data);
    Ok(())
}

/// A 4th server gets blocks until usage is within 10%; a drained server
/// empties without any block dropping below 2 replicas, then is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_servers_fill_and_drained_servers_empty() -> anyhow::Result<()> {
    const CAP: u64 = 256 << 20;
    let mut cluster = cluster_with_data(3, Some(CAP)).await?;
    let client = cluster.client()?;
    let files = write_files(&client, "b", 12, 10, 4).await?;

    cluster.add_data(4, "zone4", Some(CAP))?;
    let h = cluster
        .wait_health("rebalance onto the 4th server", 90 * SECOND, |h| {
            let counts: Vec<u64> = h.servers.iter().map(|s| s.recorded_blocks).collect();
            let (min, max) = (
                counts.iter().min().copied().unwrap_or(0),
                counts.iter().max().copied().unwrap_or(0),
            );
            counts.len() == 4 && min > 0 && (max - min) as f64 <= 0.10 * max as f64 && h.repairs_in_flight == 0
        })
        .await?;
    let counts: Vec<u64> = h.servers.iter().map(|s| s.recorded_blocks).collect();
    println!("after adding a 4th server, blocks per server: {counts:?}");

    let victim = h
        .servers
        .iter()
        .find(|s| s.addr == cluster.data[&1].addr)
        .map(|s| s.id)
        .unwrap_or(0);
    client.set_server_state(victim, "draining").await?;
    let refused = client.set_server_state(victim, "removed").await;
    assert!(refused.is_err(), "a server holding blocks cannot be removed");

    let ids: Vec<BlockId> = files.iter().flat_map(|f| f.slots.iter().map(|(b, _)| *b)).collect();
    let deadline = std::time::Instant::now() + 90 * SECOND;
    let mut min_replicas = usize::MAX;
    loop {
        for b in &ids {
            min_replicas = min_replicas.min(client.locate(*b).await?.replicas.len());
        }
        assert!(min_replicas >= 2, "a block dropped below 2 replicas during the drain");
        let h = client.data_health().await?;
        if h.servers.iter().any(|s| s.id == victim && s.state == "drained") && h.under_replicated == 0 {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "drain did not finish: {h:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster
        .wait_health("drained server emptied on disk", 30 * SECOND, |h| {
            h.pending_deletes == 0
        })
        .await?;
    assert_eq!(
        cluster.data[&1].block_files().len(),
        0,
        "the drained server's disk is empty"
    );
    client.set_server_state(victim, "removed").await?;
    check_files(&client, &files).await?;
    println!("drained server emptied (never fewer than {min_replicas} replicas per block) and removed");
    Ok(())
}

/// A full server gets no new blocks; with no room anywhere a write fails with
/// a clear ENOSPC-class error and leaves no block behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disks_are_avoided_and_no_room_is_enospc() -> anyhow::Result<()> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    cluster.add_data(1, "z1", None)?;
    cluster.add_data(2, "z2", None)?;
    // Room for four blocks.
    cluster.add_data(3, "z3", Some(4 * BLOCK as u64 + 4096))?;
    cluster.wait_data(3, 20 * SECOND).await?;
    let client = cluster.client()?;
    write_files(&client, "full", 4, 5, 5).await?;
    let on_small = cluster.data[&3].block_files().len();
    assert!(on_small <= 4, "the small server holds {on_small} blocks");
    println!("20 blocks written, {on_small} on the full server");

    let mut tiny = MetaCluster::start(Options::default())?;
    tiny.wait_leader(20 * SECOND).await?;
    for i in 1..=2 {
        tiny.add_data(i, &format!("z{i}"), Some(3 * BLOCK as u64 + 4096))?;
    }
    tiny.wait_data(2, 20 * SECOND).await?;
    let client = tiny.client()?;
    let mut ok = 0;
    let err = loop {
        let data = vec![ok as u8; BLOCK];
        match client.write_block(&data, 2, true).await {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        anyhow::ensure!(ok < 10, "10 blocks fit in room for 3");
    };
    assert!(matches!(err, ClientError::NoSpace(_)), "{err:?}");
    assert_eq!(err.errno(), nimbus_common::Errno::ENOSPC);
    println!("after {ok} blocks: {err}");
    for d in tiny.data.values() {
        assert_eq!(
            d.block_files().len(),
            ok,
            "{} holds exactly the acknowledged blocks",
            d.name
        );
        assert_eq!(d.temp_files(), 0, "{} left a half-written block", d.name);
    }
    Ok(())
}

/// Deleting files that reference 100 blocks removes the block files from
/// every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_of_deleted_files_are_collected() -> anyhow::Result<()> {
    let cluster = cluster_with_data(3, None).await?;
    let client = cluster.client()?;
    let files = write_files(&client, "g", 10, 10, 6).await?;
    assert!(total_blocks(&cluster) >= 200);
    let dir = Ino(client.lookup(Ino::ROOT, b"g").await?.ino);
    for i in 0..10 {
        client.unlink(dir, format!("f{i}").as_bytes()).await?;
    }
    drop(files);
    let deadline = std::time::Instant::now() + 30 * SECOND;
    while total_blocks(&cluster) > 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} block files left",
            total_blocks(&cluster)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster
        .wait_health("no deletions pending", 10 * SECOND, |h| {
            h.pending_deletes == 0 && h.blocks == 0
        })
        .await?;
    println!("100 blocks (200 files) collected from every server");
    Ok(())
}

/// Replication is set per directory: files created under it get that many
/// replicas per block, and repair keeps that many.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_is_set_per_directory() -> anyhow::Result<()> {
    let cluster = cluster_with_data(3, None).await?;
    let client = cluster.client()?;
    let triple = Ino(client.mkdir(Ino::ROOT, b"triple", 0o755).await?.ino);
    client
        .call(pb::ns_request::Op::SetReplication(pb::SetReplication {
            ino: triple.0,
            replication: 3,
        }))
        .await?;
    let bad = client
        .call(pb::ns_request::Op::SetReplication(pb::SetReplication {
            ino: triple.0,
            replication: 9,
        }))
        .await;
    assert!(
        matches!(bad, Err(ClientError::Errno(nimbus_common::Errno::EINVAL))),
        "{bad:?}"
    );
    for (dir, want) in [(triple, 3), (Ino::ROOT, 2)] {
        let f = Ino(client.create(dir, b"f", 0o644).await?.ino);
        let b = client.write_file_block(f, &[7u8; 4096], false).await?;
        client.commit_write(f, &[(0, &b)], 4096).await?;
        assert_eq!(client.locate(b.id).await?.replicas.len(), want);
    }
    Ok(())
}
