//! Two workstations on one store: two `nimbus mount`s of the same cluster.
//! Data closed on one is what the other reads when it next opens the file
//! (close-to-open); names and attributes changed on one show on the other
//! within the attribute TTL; flock and fcntl locks taken through one mount
//! exclude the other, are released on close, and outlive neither an unmount
//! nor, past the lease, a mount killed with SIGKILL.

use nimbus_tests::mount::Mounted;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A perl one-liner (perl-base is in every Debian) that takes an fcntl
/// write lock on `$1` bytes `$2`..`$2+$3-1` without waiting; exits 0 if
/// granted (then holds it `$4` seconds), 11 (EAGAIN) if refused.
const FCNTL_LOCK: &str = r#"
use Fcntl qw(F_SETLK F_WRLCK SEEK_SET);
my ($path, $start, $len, $hold) = @ARGV;
open(my $fh, '+<', $path) or die "open $path: $!";
my $lk = pack('s s x4 q q l x4', F_WRLCK, SEEK_SET, $start, $len, 0);
fcntl($fh, F_SETLK, $lk) or exit($! + 0);
sleep($hold);
exit 0;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_share_data_names_and_locks() -> anyhow::Result<()> {
    let mut a = Mounted::start().await?;
    let mut b = a.mount_again("mnt2", &[])?;

    // Close-to-open: written and closed on a, read exact on b.
    a.sh("dd if=/dev/urandom of=$S/src bs=1M count=9 status=none && cp $S/src shared")?;
    let want = a.sh("sha256sum < $S/src")?;
    assert_eq!(b.sh("sha256sum < shared")?, want);
    // Rewritten in place on a (same size, so only the data says it changed):
    // b's next open reads the new bytes, whatever b cached.
    a.sh("dd if=/dev/urandom of=$S/src2 bs=1M count=9 status=none && dd if=$S/src2 of=shared conv=notrunc bs=1M status=none")?;
    let want2 = a.sh("sha256sum < $S/src2")?;
    assert_eq!(b.sh("sha256sum < shared")?, want2);
    // And back the other way, with an append.
    b.sh("echo tail >> shared")?;
    assert_eq!(a.sh("tail -c 5 shared")?, "tail");

    // Names and attributes: seen on the other mount within the TTL (1 s).
    a.sh("mkdir d && echo x > d/f && chmod 600 d/f")?;
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(b.sh("ls d && stat -c %a d/f")?, "f\n600");
    b.sh("mv d/f d/g && chmod 644 d/g")?;
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(a.sh("ls d && stat -c %a d/g")?, "g\n644");

    // flock: held on a, b cannot take it without waiting...
    a.sh("touch lockfile")?;
    let mut holder = a
        .command(&[
            "-c",
            "exec flock -x lockfile -c 'echo locked > $S/held; sleep 3; echo done > $S/released'",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.scratch.path().join("held").exists() {
        anyhow::ensure!(Instant::now() < deadline, "the flock holder never got its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = b.sh_fails("flock -n -x lockfile true")?;
    assert!(refused.is_empty(), "flock -n fails quietly: {refused}");
    b.sh_fails("flock -n -s lockfile true")?;
    // ...and a blocking flock on b gets it once a's holder lets go.
    b.sh("flock -x -w 30 lockfile test -e $S/released")?;
    let status = holder.wait()?;
    assert!(status.success(), "flock holder: {status}");
    // Shared locks are shared across mounts.
    let mut reader = a
        .command(&["-c", "exec flock -s lockfile -c 'sleep 2'"])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    b.sh("flock -n -s lockfile true")?;
    b.sh_fails("flock -n -x lockfile true")?;
    reader.wait()?;

    // fcntl byte ranges: a's lock on bytes 0..99 refuses b there, not past it.
    a.sh("head -c 1000 /dev/zero > ranged")?;
    std::fs::write(a.scratch.path().join("lock.pl"), FCNTL_LOCK)?;
    let perl = |m: &nimbus_tests::mount::Mount, args: &str| {
        m.command(&["-c", &format!("perl $S/lock.pl ranged {args}")]).status()
    };
    let mut range_holder = a.command(&["-c", "perl $S/lock.pl ranged 0 100 3"]).spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(perl(&b, "50 10 0")?.code(), Some(11), "overlapping fcntl lock granted");
    assert_eq!(perl(&b, "100 10 0")?.code(), Some(0), "disjoint fcntl lock refused");
    range_holder.wait()?;
    // The holder's exit closed the file, which released its lock.
    assert_eq!(perl(&b, "0 1000 0")?.code(), Some(0), "lock not released on close");

    // A mount killed with SIGKILL: its lock lapses with its lease (15 s).
    let mut c = a.mount_again("mnt3", &[])?;
    let mut doomed = c
        .command(&["-c", "exec flock -x lockfile -c 'sleep 600'"])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    b.sh_fails("flock -n lockfile true")?;
    c.kill()?;
    let _ = doomed.kill();
    let _ = doomed.wait();
    b.sh("flock -x -w 40 lockfile true")?;
    drop(c);

    b.stop()?;
    a.stop()
}
