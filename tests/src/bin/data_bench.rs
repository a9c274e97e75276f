//! `nimbus-data-bench`: block write and read throughput at R=1, 2 and 3 on a
//! local cluster (3 meta, 3 data servers on 127.0.0.1, TLS), and repair
//! throughput after a data server dies.

use clap::Parser;
use nimbus_client::blocks::WrittenBlock;
use nimbus_client::MetaClient;
use nimbus_common::Ino;
use nimbus_tests::{MetaCluster, Options};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Measures block write, read and repair throughput on a local cluster")]
struct Args {
    /// MiB written per replication factor.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Concurrent block transfers.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

const BLOCK: usize = 4 << 20;

async fn write_all(
    client: &Arc<MetaClient>,
    blocks: usize,
    replication: u32,
    durable: bool,
    parallel: usize,
) -> anyhow::Result<(Vec<WrittenBlock>, Duration)> {
    let data = Arc::new((0..BLOCK).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let started = Instant::now();
    let mut out = Vec::new();
    for chunk in (0..blocks).collect::<Vec<_>>().chunks(parallel) {
        let mut tasks = Vec::new();
        for _ in chunk {
            let (client, data) = (client.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                client.write_block(&data, replication, durable).await
            }));
        }
        for t in tasks {
            out.push(t.await??);
        }
    }
    Ok((out, started.elapsed()))
}

async fn read_all(client: &Arc<MetaClient>, written: &[WrittenBlock], parallel: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in written.chunks(parallel) {
        let mut tasks = Vec::new();
        for b in chunk {
            let (client, id, key) = (client.clone(), b.id, b.key);
            tasks.push(tokio::spawn(
                async move { client.read_block(id, key.as_ref(), 0, 0).await },
            ));
        }
        for t in tasks {
            anyhow::ensure!(t.await??.len() == BLOCK, "short read");
        }
    }
    Ok(started.elapsed())
}

/// Records blocks in a file so that the cluster tracks (and repairs) them.
async fn commit(client: &MetaClient, name: &str, blocks: &[WrittenBlock]) -> anyhow::Result<()> {
    let ino = Ino(client.create(Ino::ROOT, name.as_bytes(), 0o644).await?.ino);
    for (i, chunk) in blocks.chunks(64).enumerate() {
        let slots: Vec<(u64, &WrittenBlock)> = chunk
            .iter()
            .enumerate()
            .map(|(j, b)| ((i * 64 + j) as u64, b))
            .collect();
        let size = ((i * 64 + chunk.len()) * BLOCK) as u64;
        client.commit_write(ino, &slots, size).await?;
    }
    Ok(())
}

/// Seal and open MiB/s of 4 MiB blocks on one core.
fn cipher_speed() -> anyhow::Result<(f64, f64)> {
    use nimbus_common::encryption::{open_range, seal_block, Key};
    let key = Key::random()?;
    let plain = vec![7u8; BLOCK];
    let rounds = 32;
    let t = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..rounds {
        sealed = seal_block(&key, &[1; 16], &plain)?;
    }
    let seal = t.elapsed();
    let t = Instant::now();
    for _ in 0..rounds {
        open_range(&key, &[1; 16], 0, 0, &sealed)?;
    }
    let open = t.elapsed();
    Ok((mib_s(rounds * BLOCK, seal), mib_s(rounds * BLOCK, open)))
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let blocks = (args.mib << 20).div_ceil(BLOCK);
    let mut cluster = MetaCluster::start(Options {
        meta_args: vec!["--allow-clear-blocks".into()],
        ..Options::default()
    })?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    for i in 1..=3 {
        cluster.add_data(i, &format!("zone{i}"), None)?;
    }
    cluster.wait_data(3, Duration::from_secs(30)).await?;
    let client = Arc::new(cluster.client()?);
    let clear_client = Arc::new(cluster.client()?.with_clear_blocks(true));
    let bytes = blocks * BLOCK;
    println!(
        "3 meta + 3 data servers on 127.0.0.1, TLS; {blocks} blocks of 4 MiB per run, {} in parallel",
        args.parallel
    );
    println!("{:<28} {:>12} {:>12}", "run", "write MiB/s", "read MiB/s");
    let mut kept = Vec::new();
    // Encryption on (every block sealed by the client, as always) and, for
    // comparison in the same run, off (--allow-clear-blocks on this bench's
    // cluster only).
    // The R=2 pair runs three times, alternating, so that drift of this
    // shared machine lands on both sides; medians are printed after.
    let mut pairs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for (run, r, durable, sealed) in [
        (1, false, true),
        (2, false, true),
        (2, false, false),
        (2, false, true),
        (2, false, false),
        (2, false, true),
        (2, false, false),
        (3, false, true),
        (2, true, true),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (r, d, s))| (i, r, d, s))
    {
        let c = if sealed { &client } else { &clear_client };
        let (written, wt) = write_all(c, blocks, r, durable, args.parallel).await?;
        // Only committed blocks are readable: the leader gives read tokens for
        // blocks some file references.
        commit(c, &format!("run{run}-r{r}"), &written).await?;
        let rt = read_all(c, &written, args.parallel).await?;
        let label = format!(
            "R={r}{}{}",
            if durable { ", fsync on every replica" } else { "" },
            if sealed { ", encrypted" } else { ", NOT encrypted" }
        );
        println!("{label:<28} {:>12.1} {:>12.1}", mib_s(bytes, wt), mib_s(bytes, rt));
        if r == 2 && !durable {
            pairs[usize::from(sealed)].push((mib_s(bytes, wt), mib_s(bytes, rt)));
        }
        if r == 2 && !durable && sealed {
            kept = written;
        }
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let mut m = [(0.0, 0.0); 2];
    for (i, runs) in pairs.iter().enumerate() {
        m[i] = (
            median(&mut runs.iter().map(|r| r.0).collect()),
            median(&mut runs.iter().map(|r| r.1).collect()),
        );
    }
    println!(
        "R=2 medians of 3: encrypted {:.1} / {:.1} MiB/s, not encrypted {:.1} / {:.1} (write / read): \
         encryption costs {:.0}% of writes, {:.0}% of reads",
        m[1].0,
        m[1].1,
        m[0].0,
        m[0].1,
        100.0 * (1.0 - m[1].0 / m[0].0.max(f64::MIN_POSITIVE)),
        100.0 * (1.0 - m[1].1 / m[0].1.max(f64::MIN_POSITIVE)),
    );
    let (seal, open) = cipher_speed()?;
    println!(
        "AES-256-GCM on one core of this machine: seal {seal:.0} MiB/s, open {open:.0} MiB/s \
         (at the encrypted R=2 rates: {:.1}% of one core)",
        100.0 * (m[1].0 / seal + m[1].1 / open)
    );

    // Repair: the R=2 blocks are recorded; one data server dies.
    drop(kept);
    cluster.kill_data(2);
    let killed = Instant::now();
    let before = client.data_health().await?.repaired_total;
    // First the repair pass must notice (health from an earlier pass still
    // says all is well), then finish.
    cluster
        .wait_health("dead server noticed", Duration::from_secs(60), |h| {
            h.under_replicated > 0
        })
        .await?;
    let h = cluster
        .wait_health("repair", Duration::from_secs(600), |h| {
            h.under_replicated == 0 && h.servers.iter().any(|s| s.state == "dead")
        })
        .await?;
    // Copying starts once the server is declared dead.
    let copying = killed
        .elapsed()
        .saturating_sub(Duration::from_millis(Options::default().dead_after_ms));
    let copied = (h.repaired_total - before) as usize * BLOCK;
    println!(
        "repair after a data server died: {} blocks ({:.0} MiB) re-replicated at {:.1} MiB/s (dead-server timeout {} ms not counted)",
        h.repaired_total - before,
        copied as f64 / (1 << 20) as f64,
        mib_s(copied, copying),
        Options::default().dead_after_ms
    );
    Ok(())
}
