//! The mount at the sizes users bring: a tree of more than 5,000 files
//! copied with `cp -a` and compared with `diff -r`, a 1 GiB file written
//! with `dd` and checked with `sha256sum`, everything removed with `rm -rf`
//! and the data servers' blocks collected; and a `cp -a` that keeps going,
//! without an error, while the meta leader is killed with SIGKILL.

use anyhow::ensure;
use nimbus_tests::mount::Mounted;
use std::time::{Duration, Instant};

/// Files the copied tree holds at least.
const TREE_FILES: usize = 5_000;

/// Builds `$S/tree`: /usr/share/doc (real names, symlinks, modes), topped
/// up with generated files of varied sizes to `TREE_FILES` files.
fn make_tree(m: &Mounted) -> anyhow::Result<usize> {
    m.sh("mkdir -p $S/tree && cp -a /usr/share/doc $S/tree/doc 2>/dev/null || true")?;
    let have: usize = m.sh("find $S/tree -type f | wc -l")?.parse()?;
    let more = TREE_FILES.saturating_sub(have);
    m.sh(&format!(
        "mkdir -p $S/tree/gen && cd $S/tree/gen
         for i in $(seq 1 {more}); do
           d=d$((i % 50)); mkdir -p $d
           head -c $(( (i * 7919) % 20000 )) /dev/urandom > $d/f$i
         done"
    ))?;
    Ok(m.sh("find $S/tree -type f | wc -l")?.parse()?)
}

/// Blocks on every data server.
fn blocks(m: &Mounted) -> usize {
    m.cluster.data.values().map(|d| d.block_files().len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_files_and_a_gigabyte() -> anyhow::Result<()> {
    let mut m = Mounted::start().await?;
    let files = make_tree(&m)?;
    ensure!(files >= TREE_FILES, "the source tree has only {files} files");
    let entries = m.sh("cd $S/tree && find . | wc -l")?;

    let t = Instant::now();
    m.sh("cp -a $S/tree copy")?;
    println!("cp -a of {files} files: {:.1} s", t.elapsed().as_secs_f64());
    m.sh("diff -r --no-dereference $S/tree copy")?;
    assert_eq!(m.sh("cd copy && find . | wc -l")?, entries);
    // tar c | tar x out of the mount: every file's sha256sum equal. (tar
    // into the mount is what cp -a above did, file for file; the trees
    // test in fuse_mount.rs runs tar x into the mount too.)
    let t = Instant::now();
    m.sh("mkdir $S/untar && tar -C copy -cf - . | tar -C $S/untar -xf -")?;
    println!("tar c of the copy out of the mount: {:.1} s", t.elapsed().as_secs_f64());
    let sums = |dir: &str| {
        m.sh(&format!(
            "cd {dir} && find . -type f -print0 | xargs -0 sha256sum | sort"
        ))
    };
    assert_eq!(sums("$S/untar")?, sums("$S/tree")?);

    let t = Instant::now();
    m.sh("dd if=/dev/urandom of=$S/gig bs=1M count=1024 status=none")?;
    m.sh("dd if=$S/gig of=gig bs=1M status=none")?;
    println!("dd of 1 GiB: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(m.sh("sha256sum < gig")?, m.sh("sha256sum < $S/gig")?);
    m.sh("rm $S/gig")?;
    ensure!(blocks(&m) > 0, "no blocks on the data servers");

    m.sh("rm -rf copy gig")?;
    assert_eq!(m.sh("ls -A")?, "");
    // Removed data leaves the data servers at their next heartbeats.
    let deadline = Instant::now() + Duration::from_secs(60);
    while blocks(&m) > 0 {
        ensure!(
            Instant::now() < deadline,
            "{} blocks still on the data servers 60 s after rm -rf",
            blocks(&m)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    m.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_survives_the_meta_leader_being_killed() -> anyhow::Result<()> {
    let mut m = Mounted::start().await?;
    m.sh("mkdir -p $S/tree && cd $S/tree
         for i in $(seq 1 700); do
           d=d$((i % 30)); mkdir -p $d
           head -c $(( (i * 104729) % 300000 )) /dev/urandom > $d/f$i
         done")?;
    let mut cp = m.command(&["-c", "cp -a $S/tree copy"]).spawn()?;
    // Let the copy get going, then kill the leader under it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while m
        .sh("{ find copy -type f 2>/dev/null || true; } | wc -l")?
        .parse::<usize>()?
        < 200
    {
        ensure!(Instant::now() < deadline, "the copy did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let leader = m.cluster.wait_leader(Duration::from_secs(10)).await?;
    m.cluster.kill(leader);
    println!("killed meta leader {leader} during cp -a");
    let status = cp.wait()?;
    ensure!(
        status.success(),
        "cp -a failed after the leader was killed: {status}\nmount log (tail):\n{}",
        nimbus_tests::mount::tail(&m.log(), 30)
    );
    m.sh("diff -r $S/tree copy")?;
    assert_eq!(m.sh("find copy -type f | wc -l")?, "700");
    m.stop()
}
