//! Data servers as real processes beside a real meta cluster on 127.0.0.1:
//! replication, failure and repair, corruption, tokens, rebalancing and
//! drain, full disks, and garbage collection.

use nimbus_client::blocks::{fetch_block, send_block, WrittenBlock};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::token::{self, Access, Claims, Signer};
use nimbus_common::{BlockId, Ino};
use nimbus_proto as pb;
use nimbus_tests::{MetaCluster, Options};
use rand::{RngCore, SeedableRng};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const BLOCK: usize = 256 << 10;

/// A file written through the data path: its inode and the bytes of each slot.
struct File {
    ino: Ino,
    slots: Vec<(BlockId, Vec<u8>)>,
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
async fn write_files(client: &MetaClient, name: &str, files: usize, slots: usize, seed: u64) -> anyhow::Result<Vec<File>> {
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
        client.commit_write(ino, &refs, (slots * BLOCK) as u64).await?;
        out.push(File {
            ino,
            slots: written.iter().map(|(_, w)| w.id).zip(datas).collect(),
        });
    }
    Ok(out)
}

/// Reads every block of every file back and compares it.
async fn check_files(client: &MetaClient, files: &[File]) -> anyhow::Result<()> {
    for f in files {
        let layout = match client.call(pb::ns_request::Op::GetLayout(pb::GetLayout { ino: f.ino.0 })).await? {
            pb::ns_reply::Result::Layout(l) => l,
            other => anyhow::bail!("unexpected {other:?}"),
        };
        assert_eq!(layout.slots.len(), f.slots.len());
        for (slot, (id, data)) in layout.slots.iter().zip(&f.slots) {
            assert_eq!(slot.block_id, id.0.to_vec());
            let got = client.read_block(*id, 0, slot.length).await?;
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
    assert_eq!(total_blocks(&cluster), 400, "200 blocks, 2 replicas each");

    cluster.kill_data(2);
    let killed = std::time::Instant::now();
    check_files(&client, &files).await?;
    println!("200 blocks read back exact with data server 2 dead");

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
    let live: usize = [1, 3].iter().map(|i| cluster.data[i].block_files().len()).sum();
    assert_eq!(live, 400, "the two survivors hold 2 copies of every block");
    check_files(&client, &files).await?;
    Ok(())
}
