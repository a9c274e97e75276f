//! `nimbus-meta-fill`: fills a local 3-node meta cluster with millions of
//! inodes (directories of 1,000 files, created through the client library by
//! many concurrent clients) and prints, as it goes, the inode count, the
//! create rate and each node's resident memory, store size and snapshot
//! times; then times a fourth node's catch-up and a restarted node's
//! recovery, and compares stat and readdir of a cold directory with the same
//! directory measured when the namespace was small.

use clap::Parser;
use nimbus_client::MetaClient;
use nimbus_common::Ino;
use nimbus_proto as pb;
use nimbus_tests::{MetaCluster, Options};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Fills a local 3-node meta cluster with inodes and reports memory, store size, snapshots and rates")]
struct Args {
    /// Inodes to create (files and their directories).
    #[arg(long, default_value_t = 10_000_000)]
    inodes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Files per directory.
    #[arg(long, default_value_t = 1000)]
    files_per_dir: u64,
    /// Each meta node's cache bound (--cache-mib).
    #[arg(long, default_value_t = 512)]
    cache_mib: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 30)]
    report_seconds: u64,
    /// Drop the kernel's page cache before each cold measurement (needs root).
    #[arg(long)]
    drop_caches: bool,
}

const MIB: f64 = (1u64 << 20) as f64;

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / MIB)
}

/// The status of every running node, by id.
async fn statuses(client: &MetaClient, cluster: &MetaCluster) -> BTreeMap<u64, pb::NodeStatus> {
    let mut out = BTreeMap::new();
    for (id, node) in &cluster.nodes {
        if node.pid().is_none() {
            continue;
        }
        if let Ok(s) = client.node_status(&node.addr).await {
            out.insert(*id, s);
        }
    }
    out
}

fn node_line(s: &pb::NodeStatus) -> String {
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1e3));
    format!(
        "n{} {:<8} mem {:>9} store {:>10} snap {:>9} built {} ({}) installed {} ({})",
        s.id,
        s.role,
        mib(s.resident_bytes),
        mib(s.store_bytes),
        mib(s.snapshot_bytes),
        s.snapshots_built,
        ms(s.snapshot_build_ms),
        s.snapshots_installed,
        ms(s.snapshot_install_ms),
    )
}

/// Readdir of `dir` and a getattr of each entry, one client, one at a time:
/// the readdir's time and the getattrs' p50.
async fn probe(client: &MetaClient, dir: Ino, drop_caches: bool) -> anyhow::Result<(Duration, Duration, usize)> {
    if drop_caches {
        std::fs::write("/proc/sys/vm/drop_caches", "3\n")?;
    }
    let t = Instant::now();
    let entries = client.readdir_all(dir).await?;
    let readdir = t.elapsed();
    let mut lat = Vec::with_capacity(entries.len());
    for e in &entries {
        let t = Instant::now();
        client.getattr(Ino(e.ino)).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or_default();
    Ok((readdir, p50, entries.len()))
}

/// Creates directories of `per_dir` files until `target` inodes exist.
async fn fill_worker(
    client: MetaClient,
    next_dir: Arc<AtomicU64>,
    created: Arc<AtomicU64>,
    target: u64,
    per_dir: u64,
) -> anyhow::Result<()> {
    loop {
        let k = next_dir.fetch_add(1, Ordering::Relaxed);
        if k * (per_dir + 1) >= target {
            return Ok(());
        }
        let dir = Ino(client.mkdir(Ino::ROOT, format!("d{k}").as_bytes(), 0o755).await?.ino);
        created.fetch_add(1, Ordering::Relaxed);
        for i in 0..per_dir {
            client.create(dir, format!("f{i}").as_bytes(), 0o644).await?;
            created.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Polls every node's memory until `done`, keeping each one's largest.
fn watch_memory(
    client: MetaClient,
    addrs: BTreeMap<u64, String>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<u64, u64>> {
    tokio::spawn(async move {
        let mut max = BTreeMap::new();
        while !done.load(Ordering::Relaxed) {
            for (id, addr) in &addrs {
                if let Ok(s) = client.node_status(addr).await {
                    let m = max.entry(*id).or_insert(0);
                    *m = (*m).max(s.resident_bytes);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        max
    })
}

/// Waits until node `addr` has applied `index`; how long it took.
async fn wait_applied(client: &MetaClient, addr: &str, index: u64, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(s) = client.node_status(addr).await {
            if s.last_applied.is_some_and(|a| a >= index) {
                return Ok(started.elapsed());
            }
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{addr} did not reach index {index} in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The namespace's inode count.
async fn inodes(client: &MetaClient) -> anyhow::Result<u64> {
    match client.call(pb::ns_request::Op::Statfs(pb::StatFs {})).await? {
        pb::ns_reply::Result::Stats(st) => Ok(st.inodes),
        other => anyhow::bail!("unexpected statfs reply {other:?}"),
    }
}

async fn leader_applied(client: &MetaClient) -> anyhow::Result<u64> {
    let s = client
        .on_leader(|ch| async move { MetaClient::admin(ch).status(pb::StatusRequest {}).await })
        .await?;
    Ok(s.last_applied.unwrap_or(0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        meta_args: vec!["--cache-mib".into(), args.cache_mib.to_string()],
        ..Options::default()
    };
    let mut cluster = MetaCluster::start(opts)?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    let client = cluster.client()?;
    println!(
        "3 nimbus-meta nodes on 127.0.0.1 (TLS, --cache-mib {}), data in {}",
        args.cache_mib,
        cluster.dir.display()
    );
    println!(
        "filling to {} inodes: directories of {} files, {} concurrent clients",
        args.inodes, args.files_per_dir, args.clients
    );

    // The probe directory: filled first, measured now and at the end.
    let probe_dir = Ino(client.mkdir(Ino::ROOT, b"probe", 0o755).await?.ino);
    for i in 0..args.files_per_dir {
        client.create(probe_dir, format!("p{i}").as_bytes(), 0o644).await?;
    }
    let small = inodes(&client).await?;
    let (rd0, st0, n0) = probe(&client, probe_dir, args.drop_caches).await?;
    println!(
        "cold directory at {small} inodes: readdir of {n0} entries {:.1} ms, getattr p50 {:.0} us",
        rd0.as_secs_f64() * 1e3,
        st0.as_secs_f64() * 1e6
    );

    let next_dir = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(small));
    let mut workers = Vec::new();
    for _ in 0..args.clients {
        let c = cluster.client()?;
        workers.push(tokio::spawn(fill_worker(
            c,
            next_dir.clone(),
            created.clone(),
            args.inodes,
            args.files_per_dir,
        )));
    }
    let started = Instant::now();
    let mut last = (Instant::now(), created.load(Ordering::Relaxed));
    let mut rates = Vec::new();
    let mut max_mem: BTreeMap<u64, u64> = BTreeMap::new();
    let mut max_snapshot = (0u64, 0u64);
    while workers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if last.0.elapsed() < Duration::from_secs(args.report_seconds) && workers.iter().any(|w| !w.is_finished()) {
            continue;
        }
        let now = created.load(Ordering::Relaxed);
        let rate = (now - last.1) as f64 / last.0.elapsed().as_secs_f64();
        rates.push((now, rate));
        last = (Instant::now(), now);
        println!(
            "t {:>5} s  inodes {:>10}  creates/s {:>7.0}",
            started.elapsed().as_secs(),
            now,
            rate
        );
        for s in statuses(&client, &cluster).await.values() {
            let m = max_mem.entry(s.id).or_insert(0);
            *m = (*m).max(s.resident_bytes);
            max_snapshot.0 = max_snapshot.0.max(s.snapshot_build_ms.unwrap_or(0));
            max_snapshot.1 = max_snapshot.1.max(s.snapshot_bytes);
            println!("    {}", node_line(s));
        }
    }
    for w in workers {
        w.await??;
    }
    let fill_time = started.elapsed();
    let total = inodes(&client).await?;
    println!(
        "filled: {total} inodes in {:.0} s ({:.0} creates/s on average)",
        fill_time.as_secs_f64(),
        (total - small) as f64 / fill_time.as_secs_f64()
    );
    // The rate at the start and at the end: the first and last full intervals.
    let full: Vec<_> = rates.iter().filter(|(n, _)| *n < total).collect();
    if let (Some(first), Some(last)) = (full.first(), full.last()) {
        println!(
            "create rate: {:.0}/s at {} inodes, {:.0}/s at {} inodes ({:.0}% of the start)",
            first.1,
            first.0,
            last.1,
            last.0,
            100.0 * last.1 / first.1.max(1.0)
        );
    }
    let (rd1, st1, n1) = probe(&client, probe_dir, args.drop_caches).await?;
    println!(
        "cold directory at {total} inodes: readdir of {n1} entries {:.1} ms (was {:.1}), getattr p50 {:.0} us (was {:.0})",
        rd1.as_secs_f64() * 1e3,
        rd0.as_secs_f64() * 1e3,
        st1.as_secs_f64() * 1e6,
        st0.as_secs_f64() * 1e6
    );
    let untouched = client.lookup(Ino::ROOT, b"d1").await?;
    let (rd2, st2, n2) = probe(&client, Ino(untouched.ino), args.drop_caches).await?;
    println!(
        "an early directory never read since: readdir of {n2} entries {:.1} ms, getattr p50 {:.0} us",
        rd2.as_secs_f64() * 1e3,
        st2.as_secs_f64() * 1e6
    );

    // A fresh snapshot on every node, then a fourth node that can only catch
    // up from one.
    let mut addrs: BTreeMap<u64, String> = cluster.nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect();
    for (id, addr) in &addrs {
        let t = Instant::now();
        let mut admin = pb::admin_client::AdminClient::new(client.channel(addr)?);
        let mut request = tonic::Request::new(pb::SnapshotRequest {});
        request.set_timeout(Duration::from_secs(600));
        match admin.trigger_snapshot(request).await {
            Ok(r) => println!(
                "snapshot on n{id}: {:.1} s, {}",
                t.elapsed().as_secs_f64(),
                mib(r.into_inner().snapshot_bytes)
            ),
            Err(e) => println!("snapshot on n{id}: {}", e.message()),
        }
    }
    let addr4 = cluster.spawn_joiner(4)?;
    addrs.insert(4, addr4.clone());
    let done = Arc::new(AtomicBool::new(false));
    let watcher = watch_memory(cluster.client()?, addrs.clone(), done.clone());
    let target = leader_applied(&client).await?;
    let t = Instant::now();
    let adder = {
        let c = cluster.client()?;
        let addr4 = addr4.clone();
        tokio::spawn(async move {
            c.on_leader(|ch| {
                let req = pb::AddMemberRequest {
                    id: 4,
                    addr: addr4.clone(),
                };
                async move {
                    let mut request = tonic::Request::new(req);
                    request.set_timeout(Duration::from_secs(1800));
                    MetaClient::admin(ch).add_member(request).await
                }
            })
            .await
        })
    };
    let caught_up = wait_applied(&client, &addr4, target, Duration::from_secs(1800)).await?;
    match adder.await? {
        Ok(_) => {}
        Err(e) => println!("adding node 4: {e}"),
    }
    let s4 = client.node_status(&addr4).await?;
    println!(
        "node 4 caught up in {:.1} s (snapshot install {:.1} s, {}); a voter after {:.1} s",
        caught_up.as_secs_f64(),
        s4.snapshot_install_ms.unwrap_or(0) as f64 / 1e3,
        mib(s4.snapshot_bytes),
        t.elapsed().as_secs_f64()
    );

    // A follower restarted: how long until it serves again and caught up.
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let victim = [1u64, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(2);
    cluster.stop(victim);
    let target = leader_applied(&client).await?;
    let t = Instant::now();
    cluster.launch(victim)?;
    let recovered = wait_applied(&client, &addrs[&victim], target, Duration::from_secs(1800)).await?;
    println!(
        "node {victim} restarted: caught up {:.1} s after its start",
        recovered
            .as_secs_f64()
            .max(t.elapsed().as_secs_f64().min(recovered.as_secs_f64()))
    );
    done.store(true, Ordering::Relaxed);
    let during = watcher.await?;

    println!("largest resident memory (cache bound {} MiB):", args.cache_mib);
    for (id, m) in &during {
        let fill = max_mem.get(id).copied().unwrap_or(0);
        println!(
            "    n{id}: during the fill {}, during catch-up and restart {}",
            mib(fill),
            mib(*m)
        );
    }
    println!(
        "largest snapshot: {}, built in {:.1} s at most",
        mib(max_snapshot.1),
        max_snapshot.0 as f64 / 1e3
    );
    for s in statuses(&client, &cluster).await.values() {
        println!("    {}", node_line(s));
    }
    Ok(())
}
