//! `nimbus-meta-bench`: creates and reads per second, their latency, and the
//! meta servers' CPU time per operation on a 3-node meta cluster on
//! 127.0.0.1, from 1 and from many concurrent clients, next to this disk's
//! fdatasync latency measured in the same run: the floor a commit stands on.

use clap::Parser;
use nimbus_common::Ino;
use nimbus_tests::{MetaCluster, Options};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Measures metadata create and read throughput, latency and CPU on a local 3-node cluster")]
struct Args {
    /// Concurrent clients of each run.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    clients: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of `fdatasync` after a 4 KiB write, in a file next to the
/// meta servers' data: what one durable log append costs on this disk.
fn fdatasync_floor(dir: &Path) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join("fdatasync-probe");
    let file = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 4096];
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    let mut offset = 0u64;
    while Instant::now() < until || lat.len() < 200 {
        file.write_all_at(&block, offset)?;
        offset = (offset + 4096) % (16 << 20);
        let t = Instant::now();
        file.sync_data()?;
        lat.push(t.elapsed());
    }
    std::fs::remove_file(&path)?;
    lat.sort();
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// Clock ticks of CPU (user + system) the processes `pids` have used.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesised command name, which may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the whole line.
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum()
}

fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[derive(Clone, Copy)]
enum Work {
    Create,
    Getattr,
}

struct Run {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Duration,
}

async fn run(cluster: &MetaCluster, work: Work, clients: usize, seconds: u64, dir: Ino) -> anyhow::Result<Run> {
    let pids: Vec<u32> = cluster.nodes.values().filter_map(|n| n.pid()).collect();
    let hz = ticks_per_second();
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for c in 0..clients {
        let client = Arc::new(cluster.client()?);
        // Sign in and learn the leader before the clock starts.
        let target = client
            .create(dir, format!("{clients}-{c}-target").as_bytes(), 0o644)
            .await?;
        ready.push((client, Ino(target.ino)));
    }
    let cpu_before = cpu_ticks(&pids);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    for (c, (client, target)) in ready.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < until {
                let t = Instant::now();
                match work {
                    Work::Create => {
                        client
                            .create(dir, format!("c{clients}-{c}-{i}").as_bytes(), 0o644)
                            .await?;
                    }
                    Work::Getattr => {
                        client.getattr(target).await?;
                    }
                }
                lat.push(t.elapsed());
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let cpu_ticks_used = cpu_ticks(&pids).saturating_sub(cpu_before);
    latencies.sort();
    Ok(Run {
        ops: latencies.len(),
        elapsed,
        latencies,
        cpu: Duration::from_secs_f64(cpu_ticks_used as f64 / hz as f64),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    let (floor, floor99) = fdatasync_floor(&cluster.dir)?;
    println!("3 nimbus-meta nodes on 127.0.0.1, TLS on every connection; a write counts once it is");
    println!("fsynced on a majority (every node fdatasyncs each Raft log append before acknowledging it).");
    println!(
        "floor: fdatasync of a 4 KiB write on this disk, same run: p50 {:.0} us, p99 {:.0} us",
        floor.as_secs_f64() * 1e6,
        floor99.as_secs_f64() * 1e6
    );
    println!("latency is what a client sees (one gRPC call to the leader, TLS); 'x floor' = latency / fdatasync p50;");
    println!("CPU = user+system time of the three meta processes (/proc/PID/stat) per 1,000 operations.");
    println!(
        "{:<8} {:>7} {:>8} {:>9} {:>8} {:>8} {:>9} {:>9} {:>12}",
        "op", "clients", "ops", "ops/s", "p50 ms", "p99 ms", "p50 x fl", "p99 x fl", "CPU ms/1k op"
    );
    let client = cluster.client()?;
    for (work, name) in [(Work::Create, "create"), (Work::Getattr, "getattr")] {
        for &clients in &args.clients {
            let dir = client
                .mkdir(Ino::ROOT, format!("bench-{name}-{clients}").as_bytes(), 0o755)
                .await?;
            let r = run(&cluster, work, clients, args.seconds, Ino(dir.ino)).await?;
            let (p50, p99) = (percentile(&r.latencies, 0.50), percentile(&r.latencies, 0.99));
            println!(
                "{:<8} {:>7} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>9.1} {:>9.1} {:>12.1}",
                name,
                clients,
                r.ops,
                r.ops as f64 / r.elapsed.as_secs_f64(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                p50.as_secs_f64() / floor.as_secs_f64(),
                p99.as_secs_f64() / floor.as_secs_f64(),
                r.cpu.as_secs_f64() * 1e3 * 1000.0 / r.ops.max(1) as f64,
            );
        }
    }
    Ok(())
}
