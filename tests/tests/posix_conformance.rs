//! POSIX conformance of the FUSE mount: the pjdfstest suite (0.2.2, the Rust
//! rewrite: about 400 cases over chmod, chown, link, mkdir, mkfifo, mknod,
//! open, rename, rmdir, symlink, truncate, ftruncate, unlink, utimensat,
//! posix_fallocate and their errors) run as root against a real cluster (3
//! meta and 3 data servers on 127.0.0.1) mounted with `--allow-other`, so the
//! cases that switch to other users reach Nimbus instead of being refused by
//! the kernel. A local directory is the second file system of the EXDEV cases.
//!
//! The test fails if any case fails that is not listed, with its reason, in
//! tests/pjdfstest-known-failures.txt, and prints the listed cases that now
//! pass. It needs `pjdfstest` on PATH or in ~/.cargo/bin (.ci/run installs it)
//! and fails, never skips, without it. It takes 30-50 s (the suite itself).

use anyhow::{bail, ensure, Context};
use nimbus_tests::mount::{tail, Mounted};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The suite takes 30-50 s here; a hung mount must not hang the test.
const SUITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The pjdfstest executable: on PATH, else in ~/.cargo/bin.
fn pjdfstest() -> anyhow::Result<PathBuf> {
    let out = Command::new("sh").args(["-c", "command -v pjdfstest"]).output()?;
    let on_path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !on_path.is_empty() {
        return Ok(PathBuf::from(on_path));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let in_cargo = home.join(".cargo/bin/pjdfstest");
    ensure!(
        in_cargo.exists(),
        "pjdfstest is not on PATH nor in {}: install it with \
         `apt-get install -y libacl1-dev && cargo install pjdfstest --version 0.2.2 --locked` (or run .ci/run)",
        in_cargo.display()
    );
    Ok(in_cargo)
}

/// The primary group name of `user`, if the user exists.
fn primary_group(user: &str) -> Option<String> {
    let out = Command::new("id")
        .args(["-gn", user])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let group = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !group.is_empty()).then_some(group)
}

/// Two unprivileged users with their primary groups, for the cases that
/// switch users: nobody (group nogroup on Debian) and the first of a few
/// users every Debian has.
fn dummy_users() -> anyhow::Result<Vec<(String, String)>> {
    let mut users = Vec::new();
    for user in ["nobody", "tests", "daemon", "bin"] {
        if let Some(group) = primary_group(user) {
            users.push((user.to_owned(), group));
        }
        if users.len() == 2 {
            return Ok(users);
        }
    }
    bail!("pjdfstest needs two unprivileged users with their own groups; found only {users:?}")
}

/// How one case ended, from pjdfstest's output.
#[derive(Debug, PartialEq)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// Each case's outcome, by name, and the summary line. Result lines are
/// `NAME <padding> ok|FAILED|skipped`; the lines after one that start with
/// white space are its message (a failure's assertion, a skip's reason).
fn parse(output: &str) -> anyhow::Result<(BTreeMap<String, Outcome>, String)> {
    let mut cases: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut summary = None;
    let mut current: Option<String> = None;
    for line in output.lines() {
        if line.starts_with("Summary:") {
            summary = Some(line.to_owned());
            current = None;
        } else if line.starts_with(char::is_whitespace) {
            let Some(name) = &current else { continue };
            if let Some(Outcome::Failed(m) | Outcome::Skipped(m)) = cases.get_mut(name) {
                if !m.is_empty() {
                    m.push('\n');
                }
                m.push_str(line.trim());
            }
        } else if let Some((name, result)) = line.trim_end().split_once(char::is_whitespace) {
            let outcome = match result.trim() {
                "ok" => Outcome::Passed,
                "FAILED" => Outcome::Failed(String::new()),
                "skipped" => Outcome::Skipped(String::new()),
                _ => {
                    current = None;
                    continue;
                }
            };
            cases.insert(name.to_owned(), outcome);
            current = Some(name.to_owned());
        } else {
            current = None;
        }
    }
    let summary = summary.context("no Summary line: pjdfstest did not finish")?;
    Ok((cases, summary))
}

/// Test names listed in the known-failures file, with their reasons.
fn known_failures() -> anyhow::Result<BTreeMap<String, String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pjdfstest-known-failures.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, reason) = l.split_once('#').unwrap_or((l, ""));
            (name.trim().to_owned(), reason.trim().to_owned())
        })
        .collect())
}

/// Runs `pjdfstest` in `dir` with `conf`, `secondary` as the other file
/// system; returns its output.
fn run_suite(pjdfstest: &Path, conf: &Path, dir: &Path, secondary: &Path, out: &Path) -> anyhow::Result<String> {
    let mut child = Command::new(pjdfstest)
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(dir)
        .arg("-s")
        .arg(secondary)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out)?)
        .stderr(std::fs::File::options().append(true).open(out)?)
        .spawn()
        .with_context(|| format!("starting {}", pjdfstest.display()))?;
    let deadline = Instant::now() + SUITE_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = std::fs::read_to_string(out).unwrap_or_default();
            bail!(
                "pjdfstest still running after {SUITE_TIMEOUT:?}:\n{}",
                tail(&output, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its exit status only says whether something failed: the output decides.
    Ok(std::fs::read_to_string(out)?)
}

/// Every pjdfstest case passes on the mount, except the known failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjdfstest_passes_except_known_failures() -> anyhow::Result<()> {
    let started = Instant::now();
    let pjdfstest = pjdfstest()?;
    let known = known_failures()?;
    let users = dummy_users()?;

    let mut m = Mounted::start().await?;
    // The unprivileged users must reach the mount point through the cluster
    // directory (0700 by default); its keys stay 0600.
    std::fs::set_permissions(&m.cluster.dir, std::fs::Permissions::from_mode(0o711))?;
    let mut pjd = m.mount_again("pjd", &["--allow-other"])?;

    let scratch = m.scratch.path();
    let secondary = scratch.join("other-fs");
    std::fs::create_dir(&secondary)?;
    let conf = scratch.join("pjdfstest.toml");
    let entries = users
        .iter()
        .map(|(u, g)| format!("[\"{u}\", \"{g}\"]"))
        .collect::<Vec<_>>()
        .join(", ");
    // Every Linux feature Nimbus claims; naptime well above its nanosecond
    // timestamps; no remounting (the EROFS cases are skipped).
    std::fs::write(
        &conf,
        format!(
            "[features]\nutimensat = {{}}\nutime_now = {{}}\nposix_fallocate = {{}}\nrename_ctime = {{}}\n\n\
             [settings]\nnaptime = 0.01\nallow_remount = false\n\n\
             [dummy_auth]\nentries = [{entries}]\n"
        ),
    )?;
    let dir = pjd.mnt.join("pjdfstest");
    std::fs::create_dir(&dir)?;

    let suite_started = Instant::now();
    let output = run_suite(&pjdfstest, &conf, &dir, &secondary, &scratch.join("pjdfstest.out"))?;
    let suite_time = suite_started.elapsed();
    let (cases, summary) = parse(&output)?;

    let count = |want: fn(&Outcome) -> bool| cases.values().filter(|o| want(o)).count();
    let passed = count(|o| *o == Outcome::Passed);
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    println!(
        "pjdfstest {}: {passed} passed, {failed} failed ({} known), {skipped} skipped, in {:.0?}",
        pjdfstest.display(),
        known
            .keys()
            .filter(|k| matches!(cases.get(*k), Some(Outcome::Failed(_))))
            .count(),
        suite_time
    );
    println!("{summary}");
    ensure!(
        passed >= 300,
        "only {passed} cases passed: pjdfstest did not run properly:\n{}",
        tail(&output, 40)
    );

    let mut unexpected = Vec::new();
    let mut skips: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, outcome) in &cases {
        match outcome {
            Outcome::Failed(msg) if !known.contains_key(name) => unexpected.push(format!("{name}\n{msg}")),
            Outcome::Failed(_) => println!("known failure: {name} ({})", known[name]),
            Outcome::Skipped(reason) => skips.entry(reason).or_default().push(name),
            Outcome::Passed => {}
        }
    }
    for (reason, names) in skips {
        println!(
            "skipped ({}): {}: {}",
            names.len(),
            reason.replace('\n', " "),
            names.join(" ")
        );
    }
    for name in known.keys() {
        match cases.get(name) {
            Some(Outcome::Passed) => {
                println!("NOW PASSES: {name}: remove it from tests/pjdfstest-known-failures.txt")
            }
            None => println!("listed in tests/pjdfstest-known-failures.txt but not run by pjdfstest: {name}"),
            _ => {}
        }
    }

    let mount_log = tail(&pjd.log(), 20);
    pjd.stop()?;
    m.stop()?;
    println!("whole test: {:.0?}", started.elapsed());
    ensure!(
        unexpected.is_empty(),
        "{} pjdfstest case(s) failed that tests/pjdfstest-known-failures.txt does not list:\n\n{}\n\n\
         rerun one on a mount with: pjdfstest -c CONF -p MOUNT/DIR -s OTHER_FS_DIR -e NAME\n\
         mount log (tail):\n{mount_log}",
        unexpected.len(),
        unexpected.join("\n\n")
    );
    Ok(())
}
