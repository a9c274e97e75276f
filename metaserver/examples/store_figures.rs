//! How long and how much memory the meta server's store takes for a million
//! records: an install (snapshot), a full read (checkpoint), a million
//! random-key writes, and writes during checkpoint reads (as while a
//! snapshot is built). `bench/store.sh` runs it; figures, not assertions.

use nimbus_meta::store::{DiskStore, Store, Tree};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let rss = || {
        let pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
            .unwrap_or(0);
        (pages * 4096) >> 20
    };
    let dir = tempfile::tempdir()?;
    let s = DiskStore::open(&dir.path().join("ns.redb"), 256 << 20, None)?;
    let n = 1_000_000u64;
    let t = Instant::now();
    let mut pairs = (0..n).map(|i| Ok((format!("i{i:016x}").into_bytes(), vec![7u8; 100])));
    s.replace_state(&mut pairs)?;
    println!("install of {n} sorted pairs: {:?}, rss {} MiB", t.elapsed(), rss());
    let t = Instant::now();
    let c = s.checkpoint()?.count();
    println!("checkpoint read of {c} pairs: {:?}, rss {} MiB", t.elapsed(), rss());
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let writes = chunk
            .iter()
            .map(|i| {
                (
                    format!("r{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes(),
                    Some(vec![9u8; 100]),
                )
            })
            .collect();
        s.apply(Tree::State, writes)?;
    }
    s.flush()?;
    println!(
        "apply of {n} random keys in batches of 1,000: {:?}, rss {} MiB",
        t.elapsed(),
        rss()
    );
    // Writes go on while a checkpoint is read, as while a snapshot is built.
    for round in 0..3u64 {
        let t = Instant::now();
        let mut checkpoint = s.checkpoint()?;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let writes = chunk
                .iter()
                .map(|i| {
                    let k = format!("w{round}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    (k.into_bytes(), Some(vec![9u8; 100]))
                })
                .collect();
            s.apply(Tree::State, writes)?;
            for _ in 0..3000 {
                checkpoint.next();
            }
        }
        drop(checkpoint);
        s.flush()?;
        println!(
            "round {round}: {n} writes during a checkpoint read: {:?}, rss {} MiB",
            t.elapsed(),
            rss()
        );
    }
    Ok(())
}
