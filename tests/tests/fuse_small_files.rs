//! What `cp` and `tar` cost, and the rules that come with folding it: a small
//! file's data and the attributes set on it while open reach the cluster in
//! the one commit of its close (counted through the mount's `--metrics`),
//! inside the namespace rather than on data servers; another mount sees data
//! and attributes together after that close; files grow out of and shrink
//! back into the namespace intact; a write after a future utimens moves
//! mtime to the write's time; a write by a non-owner drops set-id bits.

use anyhow::{ensure, Context};
use nimbus_tests::free_port;
use nimbus_tests::mount::{Mount, Mounted};
use std::collections::HashMap;
use std::io::{Read, Write};

/// The mount's counters (`nimbus_mount_..._total{label="name"} value`).
fn metrics(addr: &str) -> anyhow::Result<HashMap<String, u64>> {
    let mut conn = std::net::TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("nimbus_mount_")) {
        let (Some(open), Some(close)) = (line.find("=\""), line.find("\"}")) else {
            continue;
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        out.insert(line[open + 2..close].to_owned(), value as u64);
    }
    Ok(out)
}

fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, key: &str) -> u64 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_costs_one_commit_at_close_and_keeps_posix_rules() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let addr = format!("127.0.0.1:{}", free_port());
    let counted = Mount::start(
        &m.cluster,
        "counted",
        m.scratch.path(),
        &["--metrics", &addr, "--allow-other"],
    )?;

    // 200 small files with modes and times, as tar leaves them.
    m.sh(
        "mkdir -p $S/tree/d && for i in $(seq 200); do head -c $((i * 97)) /dev/urandom > $S/tree/d/f$i; done \
         && chmod 640 $S/tree/d/f1* && touch -d 2021-03-04 $S/tree/d/* && tar -C $S -cf $S/tree.tar tree",
    )?;
    let before = metrics(&addr)?;
    counted.sh("tar -xpf $S/tree.tar")?;
    let after = metrics(&addr)?;
    counted.sh("diff -r $S/tree tree")?;
    assert_eq!(
        counted.sh("stat -c '%a %y' tree/d/f1 tree/d/f2")?,
        "640 2021-03-04 00:00:00.000000000 +0000\n644 2021-03-04 00:00:00.000000000 +0000"
    );
    let (commits, blocks, inline) = (
        delta(&before, &after, "ns_writes"),
        delta(&before, &after, "block_writes"),
        delta(&before, &after, "inline_commits"),
    );
    println!(
        "tar -x of 200 small files: {commits} namespace commits, {} reads, {blocks} block uploads, {inline} inline commits, {} setattrs folded",
        delta(&before, &after, "ns_reads"),
        delta(&before, &after, "setattr_folded")
    );
    let mut kinds: Vec<_> = after.keys().filter(|k| delta(&before, &after, k) > 0).collect();
    kinds.sort();
    for k in kinds {
        println!("  {k}: {}", delta(&before, &after, k));
    }
    // A create and a close per file (and two directories), nothing else.
    ensure!(commits <= 2 * 200 + 10, "{commits} commits for 200 files");
    ensure!(blocks == 0, "{blocks} block uploads for files under 64 KiB");
    ensure!(inline == 200, "{inline} inline commits for 200 files");

    // Close-to-open: attributes set on the open file show with the data.
    let other = m.mount_again("other", &[])?;
    counted.sh("exec 3>late; printf data >&3; chmod 600 late; touch -d 2020-02-02 late; exec 3>&-")?;
    assert_eq!(
        other.sh("cat late; stat -c ' %a %y' late")?,
        "data 600 2020-02-02 00:00:00.000000000 +0000"
    );

    // Growing out of the namespace and back keeps every byte.
    counted.sh("head -c 50000 /dev/urandom > $S/a && cp $S/a g && cmp $S/a g \
         && head -c 100000 /dev/urandom >> $S/a && cat $S/a > g && cmp $S/a g \
         && head -c 5000000 /dev/urandom >> $S/a && cp $S/a g && cmp $S/a g \
         && truncate -s 1000 g && truncate -s 1000 $S/a && cmp $S/a g \
         && printf xyz | dd of=g bs=1 seek=10 conv=notrunc status=none \
         && printf xyz | dd of=$S/a bs=1 seek=10 conv=notrunc status=none && cmp $S/a g")?;
    other.sh("sleep 1.1; cmp $S/a g")?;

    // A write moves mtime to its own time, even back from the future.
    counted.sh("echo x > fut && touch -d 2035-01-01 fut && echo y >> fut")?;
    let mtime: i64 = counted.sh("stat -c %Y fut")?.parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    ensure!(
        (now - mtime).abs() < 60,
        "mtime {mtime} is not the write's time ({now})"
    );

    // A write by someone other than the owner drops set-user-ID and
    // set-group-ID (of a group-executable file), even through an
    // open-for-writing descriptor.
    counted.sh("echo x > suid && chown 1000:1000 suid && chmod 6777 suid")?;
    counted.sh("setpriv --reuid=2000 --regid=2000 --clear-groups bash -c 'echo more >> suid'")?;
    assert_eq!(other.sh("sleep 1.1; stat -c %a suid")?, "777");
    Ok(())
}
