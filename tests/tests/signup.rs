//! Self-service sign-up and password reset against a real SMTP server
//! (Python's aiosmtpd, delivering into a Maildir the test reads): sign up,
//! follow the mailed link, sign in, find the home folder and the default
//! quota; then every refusal the issue names, each with a clear message and
//! nothing created; and a password reset that ends every session.

use anyhow::{bail, ensure};
use nimbus_tests::mail::{token_in, Smtp};
use nimbus_tests::{MetaCluster, Options, ADMIN_PASSWORD};
use std::time::Duration;

/// Runs `nimbus` with `profile`, feeding `stdin`; (success, stdout + stderr).
fn run(cluster: &MetaCluster, profile: &str, args: &[&str], stdin: &str) -> anyhow::Result<(bool, String)> {
    cluster.run_nimbus(profile, args, stdin)
}

fn ok(cluster: &MetaCluster, profile: &str, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let (success, out) = run(cluster, profile, args, stdin)?;
    ensure!(success, "nimbus {args:?} failed:\n{out}");
    Ok(out)
}

fn refused(cluster: &MetaCluster, profile: &str, args: &[&str], stdin: &str, why: &str) -> anyhow::Result<String> {
    let (success, out) = run(cluster, profile, args, stdin)?;
    ensure!(!success, "nimbus {args:?} should have been refused:\n{out}");
    ensure!(
        out.contains(why),
        "nimbus {args:?} refused without saying {why:?}:\n{out}"
    );
    Ok(out)
}

/// Whether user `name` exists (administrator's view).
fn user_exists(cluster: &MetaCluster, name: &str) -> anyhow::Result<bool> {
    let list = ok(cluster, "admin", &["user", "list"], "")?;
    // Accounts come first; pending sign-ups follow their own heading.
    Ok(list
        .lines()
        .take_while(|l| !l.contains("sign-ups"))
        .any(|l| l.split_whitespace().next() == Some(name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_up_verify_by_mail_and_reset_their_password() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let smtp = Smtp::start(scratch.path())?;
    let cluster = MetaCluster::start(Options {
        meta_args: smtp.meta_args("https://files.example.test"),
        ..Options::default()
    })?;
    cluster.wait_leader(Duration::from_secs(20)).await?;
    cluster.login("admin", ADMIN_PASSWORD, &[])?;
    let pw = "correct horse battery\n";

    // Closed by default: refused, nothing made, no mail.
    refused(
        &cluster,
        "anon",
        &["signup", "carla", "--email", "carla@example.org", "--password-stdin"],
        pw,
        "sign-up is closed",
    )?;
    ensure!(!user_exists(&cluster, "carla")?, "a refused sign-up made an account");

    // Open to one domain, 2 GiB for new accounts.
    ok(
        &cluster,
        "admin",
        &["signup", "policy", "--domains", "example.org", "--quota-bytes", "2G"],
        "",
    )?;
    refused(
        &cluster,
        "anon",
        &["signup", "mallory", "--email", "m@elsewhere.net", "--password-stdin"],
        pw,
        "may not sign up here",
    )?;
    refused(
        &cluster,
        "anon",
        &["signup", "carla", "--email", "carla@example.org", "--password-stdin"],
        "short\n",
        "password",
    )?;
    ensure!(smtp.messages()?.is_empty(), "refused sign-ups sent mail");

    // Sign up: the account waits, unverified, and cannot sign in.
    ok(
        &cluster,
        "anon",
        &["signup", "carla", "--email", "Carla@Example.org", "--password-stdin"],
        pw,
    )?;
    let mail = smtp.wait_message(1)?;
    ensure!(mail.contains("To: carla@example.org"), "mail to the address:\n{mail}");
    ensure!(
        mail.contains("https://files.example.test/signup/verify?token=nm1."),
        "link:\n{mail}"
    );
    let token = token_in(&mail)?;
    ensure!(!user_exists(&cluster, "carla")?, "an unverified sign-up is an account");
    let pending = ok(&cluster, "admin", &["signup", "list"], "")?;
    ensure!(
        pending.contains("carla") && pending.contains("carla@example.org"),
        "pending list:\n{pending}"
    );
    let (signed_in, out) = run(&cluster, "carla", &["login", "--user", "carla", "--password-stdin"], pw)?;
    ensure!(!signed_in, "an unverified sign-up signed in:\n{out}");
    // The name and the address are taken meanwhile.
    refused(
        &cluster,
        "anon",
        &["signup", "carla", "--email", "c2@example.org", "--password-stdin"],
        pw,
        "taken",
    )?;
    // Too many resends: one a minute.
    refused(&cluster, "anon", &["signup", "resend", "carla"], "", "wait a minute")?;
    // A forged token.
    let mut forged = token.clone();
    let last = forged.pop().map(|c| if c == '0' { '1' } else { '0' }).unwrap_or('0');
    forged.push(last);
    refused(
        &cluster,
        "anon",
        &["signup", "verify", &forged],
        "",
        "not one the cluster sent",
    )?;

    // Follow the link: account, home folder (0700) and quota, in one command.
    ok(&cluster, "anon", &["signup", "verify", &token], "")?;
    refused(&cluster, "anon", &["signup", "verify", &token], "", "no sign-up waits")?;
    cluster.login("carla", "correct horse battery", &[])?;
    let who = ok(&cluster, "carla", &["whoami"], "")?;
    ensure!(who.contains("carla") && who.contains("2.0 GiB"), "whoami:\n{who}");
    let home = ok(&cluster, "carla", &["stat", "/home/carla"], "")?;
    ensure!(home.contains("700"), "home folder:\n{home}");

    // An expired link: unverified sign-ups last 1 s under this policy.
    ok(&cluster, "admin", &["signup", "policy", "--max-age", "1s"], "")?;
    ok(
        &cluster,
        "anon",
        &["signup", "dmitri", "--email", "dmitri@example.org", "--password-stdin"],
        pw,
    )?;
    let late = token_in(&smtp.wait_message(2)?)?;
    std::thread::sleep(Duration::from_millis(1500));
    refused(&cluster, "anon", &["signup", "verify", &late], "", "expired")?;
    ensure!(!user_exists(&cluster, "dmitri")?, "an expired sign-up made an account");
    // And the leader removes it (it sweeps every 30 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    while ok(&cluster, "admin", &["signup", "list"], "")?.contains("dmitri") {
        ensure!(
            std::time::Instant::now() < deadline,
            "the expired sign-up was not removed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Administrators approve or remove pending sign-ups.
    ok(&cluster, "admin", &["signup", "policy", "--max-age", "7d"], "")?;
    ok(
        &cluster,
        "anon",
        &["signup", "erin", "--email", "erin@example.org", "--password-stdin"],
        pw,
    )?;
    ok(
        &cluster,
        "anon",
        &["signup", "frank", "--email", "frank@example.org", "--password-stdin"],
        pw,
    )?;
    ok(&cluster, "admin", &["signup", "approve", "erin"], "")?;
    ok(&cluster, "admin", &["signup", "remove", "frank"], "")?;
    ensure!(
        user_exists(&cluster, "erin")? && !user_exists(&cluster, "frank")?,
        "approve/remove"
    );
    let mails_before_reset = smtp.messages()?.len();

    // Password reset: an unknown address gets the same answer and no mail.
    let unknown = ok(
        &cluster,
        "anon",
        &["password-reset", "request", "nobody@example.org"],
        "",
    )?;
    let known = ok(
        &cluster,
        "anon",
        &["password-reset", "request", "carla@example.org"],
        "",
    )?;
    ensure!(
        unknown.replace("nobody@example.org", "X") == known.replace("carla@example.org", "X"),
        "the answers differ:\n{unknown}\n{known}"
    );
    let reset_mail = smtp.wait_message(mails_before_reset + 1)?;
    ensure!(
        reset_mail.contains("To: carla@example.org"),
        "reset mail:\n{reset_mail}"
    );
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        smtp.messages()?.len() == mails_before_reset + 1,
        "the unknown address got mail"
    );
    let reset = token_in(&reset_mail)?;
    ok(
        &cluster,
        "anon",
        &["password-reset", "set", &reset, "--password-stdin"],
        "a much better secret\n",
    )?;
    // Every session of carla ended; the old password no longer works.
    let (still, out) = run(&cluster, "carla", &["whoami"], "")?;
    ensure!(!still, "carla's session outlived the reset:\n{out}");
    refused(
        &cluster,
        "anon",
        &["password-reset", "set", &reset, "--password-stdin"],
        "another secret here\n",
        "already used",
    )?;
    cluster.login("carla", "a much better secret", &[])?;

    // A new address counts once the link mailed to it is followed; resets
    // then go there.
    let before = smtp.messages()?.len();
    refused(
        &cluster,
        "carla",
        &["user", "email", "erin@example.org"],
        "",
        "another account",
    )?;
    ok(&cluster, "carla", &["user", "email", "carla.new@example.org"], "")?;
    let confirm = smtp.wait_message(before + 1)?;
    ensure!(
        confirm.contains("To: carla.new@example.org"),
        "confirmation:\n{confirm}"
    );
    ok(&cluster, "anon", &["signup", "verify", &token_in(&confirm)?], "")?;
    ok(
        &cluster,
        "anon",
        &["password-reset", "request", "carla@example.org"],
        "",
    )?;
    ok(
        &cluster,
        "anon",
        &["password-reset", "request", "carla.new@example.org"],
        "",
    )?;
    let to_new = smtp.wait_message(before + 2)?;
    ensure!(
        to_new.contains("To: carla.new@example.org"),
        "reset after the change:\n{to_new}"
    );
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        smtp.messages()?.len() == before + 2,
        "the old address still gets reset mail"
    );
    if ok(&cluster, "carla", &["whoami"], "")?.contains("carla") {
        return Ok(());
    }
    bail!("carla cannot sign in with the new password")
}
