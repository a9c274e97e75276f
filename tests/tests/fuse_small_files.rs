//! What `cp` and `tar` cost, and the rules that come with folding it: a small
//! file's data and the attributes set on it while open reach the cluster in
//! the one commit of its close (counted through the mount's `--metrics`),
//! inside the namespace rather than on data servers; another mount sees data
//! and attributes together after that close; files grow out of and shrink
//! back into the namespace intact; a write after a future utimens moves
//! mtime to the write's time; a write by a non-owner drops set-id bits.
//! A file created through a mount reaches the cluster with its first
//! commit: this mount sees it at once, another at the close (or sooner, if
//! this mount lists its folder), and a name another mount took meanwhile
//! fails the close with EEXIST.

use anyhow::ensure;
use nimbus_tests::free_port;
use nimbus_tests::mount::{delta, metrics, Mount, Mounted};

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
    // One commit per file: its create goes with its close (and two
    // directories, and a reservation of inode numbers), nothing else.
    ensure!(commits <= 200 + 10, "{commits} commits for 200 files");
    ensure!(
        delta(&before, &after, "create_at_commit") == 200,
        "not every file was created with its close"
    );
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

/// A perl one-liner (perl-base is in every Debian): creates `$1`, writes
/// `$2`, waits `$3` seconds, closes; exits with the errno the close met.
const HOLD_NEW: &str = r#"
my ($path, $text, $wait) = @ARGV;
open(my $f, '>', $path) or exit($! + 0);
syswrite($f, $text) or exit($! + 0);
sleep($wait);
close($f) or exit($! + 0);
exit 0;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_created_here_reaches_the_cluster_with_its_first_commit() -> anyhow::Result<()> {
    let b = Mounted::start().await?;
    // On a, nothing asks for d's attributes meanwhile, which would commit
    // the creates in it first (for d's times): a long TTL, and the
    // cluster's permission checks rather than the kernel's (whose checks
    // read d's attributes again after every create in it).
    let a = Mount::start_as(&b.cluster, "a", b.scratch.path(), "admin", &["--attr-ttl-ms", "60000"])?;
    std::fs::write(b.scratch.path().join("hold.pl"), HOLD_NEW)?;
    a.sh("mkdir d")?;
    let hold = |m: &Mount, args: &str| m.command(&["-c", &format!("exec perl $S/hold.pl {args}")]).spawn();

    // Open on a: the cluster does not have it yet, so b does not list it;
    // a itself sees it with what was written.
    let mut writer = hold(&a, "d/held early 3")?;
    a.sh("for i in $(seq 100); do [ -e d/held ] && break; sleep 0.05; done")?;
    assert_eq!(b.sh("ls d")?, "");
    assert_eq!(a.sh("stat -c %s d/held")?, "5");
    // Listing the folder on a commits the create: b sees it (after its
    // TTL), empty until the writer's close commits the data.
    assert_eq!(a.sh("ls d")?, "held");
    assert_eq!(b.sh("sleep 1.1; ls d")?, "held");
    let status = writer.wait()?;
    ensure!(status.success(), "the writer's close failed: {status}");
    assert_eq!(b.sh("cat d/held")?, "early");

    // Two mounts create the same name: the first close wins, the other
    // close fails with EEXIST and nothing of its data shows.
    let mut loser = hold(&a, "d/x mine 2")?;
    a.sh("for i in $(seq 100); do [ -e d/x ] && break; sleep 0.05; done")?;
    b.sh("echo theirs > d/x")?;
    let status = loser.wait()?;
    assert_eq!(status.code(), Some(17), "the losing close: {status}");
    assert_eq!(b.sh("cat d/x")?, "theirs");

    // A file created and fsync'ed is in the cluster before its close.
    let mut synced = a
        .command(&["-c", "exec 3>d/s; echo s >&3; sync d/s; sleep 2"])
        .spawn()?;
    a.sh("for i in $(seq 100); do [ -e d/s ] && break; sleep 0.05; done; sleep 0.5")?;
    assert_eq!(b.sh("sleep 1.1; cat d/s")?, "s");
    synced.wait()?;
    Ok(())
}
