//! Crashes of the whole meta cluster: every node killed with SIGKILL at the
//! same moment, in the middle of a create storm, and started again. The Raft
//! log's segment files must recover by themselves (a torn final append is
//! cut off), and nothing a client saw acknowledged may be missing. A log
//! damaged in the middle must stop the node with a clear error instead.
//! And a commit must wait for the leader's own copy on disk, which the
//! leader writes while its entries replicate.

use nimbus_client::ClientError;
use nimbus_common::{Errno, Ino};
use nimbus_tests::{MetaCluster, Options};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// SIGKILL to every running meta node before any of them is reaped, so that
/// no node outlives another by more than a few microseconds.
fn kill_all_at_once(cluster: &mut MetaCluster) {
    let pids: Vec<u32> = cluster.nodes.values().filter_map(|n| n.pid()).collect();
    for pid in pids {
        // SAFETY: kill(2) with a pid this test started and has not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.kill(id);
    }
}

/// A create storm from `writers` clients into `dir`; returns the names that
/// were acknowledged once `stop` is set (unacknowledged ones are abandoned).
struct Storm {
    acked: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Storm {
    fn start(cluster: &MetaCluster, dir: Ino, round: usize, writers: usize) -> anyhow::Result<Storm> {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = cluster.client()?;
            let (acked, count, stop) = (acked.clone(), count.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("r{round}-w{w}-{i}");
                    i += 1;
                    match client.create(dir, name.as_bytes(), 0o644).await {
                        Ok(_) => {
                            acked.lock().unwrap().push(name);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ClientError::Errno(Errno::EEXIST)) => panic!("create {name} applied twice"),
                        // The cluster is down: nothing more to acknowledge.
                        Err(_) => return,
                    }
                }
            }));
        }
        Ok(Storm {
            acked,
            count,
            stop,
            tasks,
        })
    }

    async fn wait_for(&self, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + 60 * SECOND;
        while self.count.load(Ordering::Relaxed) < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} creates in 60 s",
                self.count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops the writers (those stuck retrying against a dead cluster are
    /// abandoned) and returns every acknowledged name.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

async fn assert_all_present(cluster: &MetaCluster, dir: Ino, acked: &[String]) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let listed: BTreeSet<Vec<u8>> = client.readdir_all(dir).await?.into_iter().map(|e| e.name).collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !listed.contains(n.as_bytes())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates are missing after the crash, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

/// Twice: a storm from 16 clients, all three nodes SIGKILLed together in the
/// middle of it, all three started again. Every acknowledged create is
/// there, the nodes agree, and the next storm runs on the recovered logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_meta_nodes_killed_at_once_lose_no_acknowledged_create() -> anyhow::Result<()> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    let dir = Ino(cluster.client()?.mkdir(Ino::ROOT, b"storm", 0o755).await?.ino);
    let mut all_acked = Vec::new();
    for round in 0..2 {
        let storm = Storm::start(&cluster, dir, round, 16)?;
        storm.wait_for(400).await?;
        kill_all_at_once(&mut cluster);
        let acked = storm.finish();
        println!(
            "round {round}: all three nodes killed after {} acknowledged creates",
            acked.len()
        );
        all_acked.extend(acked);

        for id in [1, 2, 3] {
            cluster.launch(id)?;
        }
        cluster
            .wait_leader(30 * SECOND)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\nnode 1 log:\n{}", cluster.log(1)))?;
        assert_all_present(&cluster, dir, &all_acked).await?;
        let (applied, inodes) = cluster.wait_converged(30 * SECOND).await?;
        println!("round {round}: recovered, converged at index {applied} with {inodes} inodes");
    }
    // The cluster still takes writes after two crashes.
    cluster.client()?.create(dir, b"after", 0o644).await?;
    Ok(())
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir.join("raft-log"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "seg"));
    v.sort();
    v
}

/// A byte flipped in the middle of a node's log (not a torn final write):
/// the node refuses to start and says which file is damaged and where; the
/// other two keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_damaged_in_the_middle_stops_the_node_with_a_clear_error() -> anyhow::Result<()> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    let client = cluster.client()?;
    let dir = Ino(client.mkdir(Ino::ROOT, b"d", 0o755).await?.ino);
    for i in 0..200 {
        client.create(dir, format!("f{i}").as_bytes(), 0o644).await?;
    }
    cluster.wait_converged(20 * SECOND).await?;
    let victim = 3;
    cluster.kill(victim);
    let data_dir = cluster.nodes[&victim].data_dir.clone();
    let seg = segments(&data_dir)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no segment files"))?;
    let mut bytes = std::fs::read(&seg)?;
    // Segments are preallocated: the records are followed by zeros.
    let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let middle = written / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&seg, &bytes)?;

    let log_before = cluster.log(victim).len();
    cluster.launch(victim)?;
    let deadline = Instant::now() + 20 * SECOND;
    let complaint = loop {
        let log = cluster.log(victim);
        let new = &log[log_before.min(log.len())..];
        if new.contains("corrupt") {
            break new.to_owned();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {victim} did not refuse its damaged log:\n{new}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let name = seg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        complaint.contains(&name),
        "the error names the damaged file: {complaint}"
    );
    // The damaged file is left as it was, for the operator.
    assert_eq!(std::fs::read(&seg)?, bytes);
    // The rest of the cluster serves on.
    cluster.kill(victim);
    client.create(dir, b"still-serving", 0o644).await?;
    Ok(())
}

/// The leader answers openraft before its own fdatasync, so that entries
/// replicate while it runs; a commit must still wait for it. With every
/// fdatasync of the leader's own entries held back 400 ms, a create is not
/// visible to another client (nor acknowledged) sooner, although the
/// followers have it on disk within a millisecond or two; a single voter
/// waits the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waits_for_the_leaders_own_copy_on_disk() -> anyhow::Result<()> {
    let delay = Duration::from_millis(400);
    for nodes in [3, 1] {
        let mut cluster = MetaCluster::start(Options {
            nodes,
            meta_args: vec!["--test-log-sync-delay-ms".into(), delay.as_millis().to_string()],
            ..Options::default()
        })?;
        cluster.wait_leader(20 * SECOND).await?;
        let writer = Arc::new(cluster.client()?);
        let reader = cluster.client()?;
        let dir = Ino(writer.mkdir(Ino::ROOT, b"d", 0o755).await?.ino);
        for i in 0..3 {
            let name = format!("f{i}");
            let started = Instant::now();
            let create = {
                let (writer, name) = (writer.clone(), name.clone());
                tokio::spawn(async move { writer.create(dir, name.as_bytes(), 0o644).await })
            };
            tokio::time::sleep(delay / 3).await;
            match reader.lookup(dir, name.as_bytes()).await {
                Err(ClientError::Errno(Errno::ENOENT)) => {}
                other => {
                    anyhow::ensure!(
                        started.elapsed() >= delay,
                        "{nodes} node(s): create {i} visible after {:?}, before the leader's log was on disk: {other:?}",
                        started.elapsed()
                    );
                }
            }
            create.await??;
            let took = started.elapsed();
            anyhow::ensure!(
                took >= delay,
                "{nodes} node(s): create {i} acknowledged after {took:?}, before the leader's log was on disk"
            );
            reader.lookup(dir, name.as_bytes()).await?;
        }
        for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
            cluster.kill(id);
        }
    }
    Ok(())
}
