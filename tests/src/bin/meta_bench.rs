//! `nimbus-meta-bench`: creates per second and commit latency of a 3-node
//! meta cluster on 127.0.0.1, from 1 and from many concurrent clients.

use clap::Parser;
use nimbus_common::Ino;
use nimbus_tests::{MetaCluster, Options};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Measures metadata create throughput and latency on a local 3-node cluster")]
struct Args {
    /// Concurrent clients of each run.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    clients: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

struct Run {
    clients: usize,
    creates: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(cluster: &MetaCluster, clients: usize, seconds: u64) -> anyhow::Result<Run> {
    let dir = cluster
        .client()?
        .mkdir(Ino::ROOT, format!("bench-{clients}").as_bytes(), 0o755)
        .await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = Arc::new(cluster.client()?);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < until {
                let t = Instant::now();
                client
                    .create(Ino(dir.ino), format!("c{c}-{i}").as_bytes(), 0o644)
                    .await?;
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
    latencies.sort();
    Ok(Run {
        clients,
        creates: latencies.len(),
        elapsed,
        latencies,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = MetaCluster::start(Options {
        heartbeat_ms: 100,
        election_timeout_min_ms: 500,
        election_timeout_max_ms: 1000,
        ..Options::default()
    })?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    println!("3 nimbus-meta nodes on 127.0.0.1, TLS on every connection;");
    println!("fsync: every Raft log append is flushed (sled flush = fsync) before it counts, on every node.");
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>10}",
        "clients", "creates", "creates/s", "p50 ms", "p99 ms"
    );
    for clients in args.clients {
        let r = run(&cluster, clients, args.seconds).await?;
        println!(
            "{:>8} {:>10} {:>12.0} {:>10.2} {:>10.2}",
            r.clients,
            r.creates,
            r.creates as f64 / r.elapsed.as_secs_f64(),
            percentile(&r.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&r.latencies, 0.99).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
