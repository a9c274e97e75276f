//! Lookups answered from a folder's listing (fuse-client's listing.rs): a
//! process that stats many names of one folder costs the mount a few reads
//! of the meta cluster, not one per name (counted through `--metrics`); this
//! mount's own changes show at once, even to a lookup the listing could
//! have answered; creates here take no read per file (the listing answers
//! that the name is free and keeps the create's plan); another mount's
//! changes show within the attribute TTL; `--no-folder-listings` asks for
//! every name.

use nimbus_tests::free_port;
use nimbus_tests::mount::{delta, metrics, Mount, Mounted};
use std::time::Duration;

/// The attribute TTL of the counted mount: long enough that its listing
/// is still fresh when the script checks what it answers.
const TTL_MS: u64 = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_in_one_folder_cost_a_few_reads_and_never_hide_a_change() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let addr = format!("127.0.0.1:{}", free_port());
    let ttl = TTL_MS.to_string();
    let mut counted = Mount::start(
        &m.cluster,
        "counted",
        m.scratch.path(),
        &["--metrics", &addr, "--attr-ttl-ms", &ttl, "--missing-from-listings"],
    )?;
    // Made through the other mount: the counted one's kernel has never
    // seen these names, so each stat below is a LOOKUP.
    m.sh("mkdir many && for i in $(seq 300); do echo $i > many/f$i; done")?;

    let before = metrics(&addr)?;
    let total = counted.sh("stat -c %s many/f{1..300} | awk '{ s += $1 } END { print s }'")?;
    let after = metrics(&addr)?;
    assert_eq!(total, "1092", "the sizes of `echo 1` .. `echo 300`");
    let (lookups, reads) = (delta(&before, &after, "lookup"), delta(&before, &after, "ns_reads"));
    println!("stat of 300 names in one folder: {lookups} lookups, {reads} namespace reads");
    assert!(lookups >= 300, "{lookups} lookups: the kernel had the names cached");
    assert!(reads <= 30, "{reads} namespace reads for {lookups} lookups");

    // This mount's own changes, each right after the listing was read:
    // the kernel forgets its names (drop_caches) and looks them up again.
    let mode = counted.sh("{ stat many/f{1..300} >/dev/null 2>&1 || true; } && chmod 600 many/f5 \
         && echo 2 > /proc/sys/vm/drop_caches && stat -c %a many/f5")?;
    assert_eq!(mode, "600", "a chmod made here, after the listing");
    let gone = counted.sh("{ stat many/f{1..300} >/dev/null 2>&1 || true; } && rm many/f6 \
         && echo 2 > /proc/sys/vm/drop_caches && stat -c %s many/f7 && ! stat many/f6 2>/dev/null && echo gone")?;
    assert_eq!(gone, "2\ngone", "an unlink made here, after the listing");
    let size = counted.sh(
        "{ stat many/f{1..300} >/dev/null 2>&1 || true; } && echo longer > many/f9 \
         && echo 2 > /proc/sys/vm/drop_caches && stat -c %s many/f9",
    )?;
    assert_eq!(size, "7", "a write made here, after the listing");

    // Another mount's change: seen once the TTL has passed.
    counted.sh("stat many/f{1..300} >/dev/null 2>&1 || true")?;
    m.sh("chmod 604 many/f8 && rm many/f10 && echo x > many/new")?;
    std::thread::sleep(Duration::from_millis(TTL_MS + 200));
    assert_eq!(
        counted.sh("stat -c %a many/f8 && ! stat many/f10 2>/dev/null && cat many/new")?,
        "604\nx"
    );

    // Creates here: the lookups of the new names are answered by the
    // folder's listing (missing), which takes each new file in, and the
    // create's plan is kept with it: no read per file. (This mount lets
    // the kernel check permissions, which asks for the folder's attributes
    // after each create in it: those getattrs are the kernel's.)
    let before = metrics(&addr)?;
    counted.sh("mkdir made && python3 -c \"
for i in range(1, 201):
    with open(f'made/n{i}', 'w') as f:
        f.write(f'{i}\\n')
\"")?;
    let after = metrics(&addr)?;
    let (reads, writes) = (delta(&before, &after, "ns_reads"), delta(&before, &after, "ns_writes"));
    let getattrs = delta(&before, &after, "getattr");
    println!("200 creates in a new folder: {reads} namespace reads ({getattrs} getattrs), {writes} commits");
    assert!(reads <= getattrs + 20, "{reads} namespace reads for 200 creates");
    assert!(writes <= 205, "{writes} commits for 200 creates");
    // What the listing took in is what the cluster has, here and elsewhere.
    let here = counted.sh("echo 2 > /proc/sys/vm/drop_caches && stat -c %s made/n7 made/n150 \
         && ! stat made/n201 2>/dev/null && cat made/n200")?;
    assert_eq!(here, "2\n4\n200");
    let there = m.sh("ls made | wc -l && cat made/n1 made/n199")?;
    assert_eq!(there, "200\n1\n199", "close-to-open: another mount sees every file");
    // Changes after the creates: an append, a removed and remade folder.
    let changed = counted.sh(
        "echo more >> made/n7 && rm made/n8 && mkdir made/d && rmdir made/d && mkdir made/d \
         && echo in > made/d/f && echo 2 > /proc/sys/vm/drop_caches \
         && stat -c %s made/n7 && ! stat made/n8 2>/dev/null && cat made/d/f && ls made | wc -l",
    )?;
    assert_eq!(changed, "7\nin\n200");
    // A name another mount made in a listed folder: seen after the TTL.
    counted.sh("stat made/n1 made/n2 made/n3 made/late >/dev/null 2>&1 || true")?;
    m.sh("echo late > made/late")?;
    std::thread::sleep(Duration::from_millis(TTL_MS + 200));
    assert_eq!(counted.sh("cat made/late")?, "late");

    // Off: one read per lookup.
    counted.stop()?;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut strict = Mount::start(
        &m.cluster,
        "strict",
        m.scratch.path(),
        &["--metrics", &addr, "--no-folder-listings"],
    )?;
    let before = metrics(&addr)?;
    strict.sh("stat many/f{11..110} >/dev/null")?;
    let after = metrics(&addr)?;
    let (lookups, reads) = (delta(&before, &after, "lookup"), delta(&before, &after, "ns_reads"));
    assert!(
        reads >= lookups && lookups >= 100,
        "{reads} reads for {lookups} lookups"
    );
    strict.stop()?;
    Ok(())
}
