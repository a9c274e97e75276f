//! The web gateway as people and scripts use it: a real `nimbus-web`
//! process in front of a real cluster (3 meta, 3 data servers), driven with
//! `curl` (and a raw socket to cut an upload off), checked against a FUSE
//! mount of the same cluster.

mod browser;
mod support;

use anyhow::{bail, ensure, Context};
use browser::{whoami_line, Browser};
use nimbus_tests::mount::Mounted;
use nimbus_tests::{bin_dir, MetaCluster, Options, ADMIN_PASSWORD};
use std::process::Command;
use std::time::Duration;
use support::{add_user, cut_off_upload, eventually, make_file, mount_shows, Client, Gateway, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_through_the_gateway_are_the_mounts_files() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let c = &m.cluster;
    add_user(c, "alice", &["--quota-bytes", "48M"])?;
    add_user(c, "bob", &[])?;
    let g = Gateway::start(c)?;
    let s = m.scratch.path();

    // Sign-in: a wrong password is refused; the cookie is HttpOnly and
    // SameSite=Strict, and the page gets a CSRF token.
    let mut alice = Client::new(&g)?;
    assert_eq!(alice.sign_in("alice", "wrong")?.status, 401);
    let r = alice.sign_in("alice", "alice-password")?;
    ensure!(r.status == 200, "sign-in: {} {}\n{}", r.status, r.text(), g.log());
    let cookie = r.header("set-cookie").unwrap_or_default();
    ensure!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let me = alice.get("/api/me")?.json()?;
    assert_eq!(me["user"], "alice");
    assert_eq!(me["home"], "/home/alice");
    assert_eq!(me["quota"]["bytes_limit"], 48 << 20);

    // An upload over three slots (4 MiB blocks), and a small (inline) one:
    // listed with their sizes, and the same bytes in the mount.
    let big = make_file(&s.join("big"), 10 * (1 << 20) + 123, 1)?;
    make_file(&s.join("small"), 1000, 2)?;
    let r = alice.upload("/api/file/home/alice/big.bin", &s.join("big"), &[])?;
    ensure!(r.status == 201, "upload: {} {}\n{}", r.status, r.text(), g.log());
    assert_eq!(r.json()?["size"], big.len());
    assert_eq!(
        alice
            .upload("/api/file/home/alice/small.txt", &s.join("small"), &[])?
            .status,
        201
    );
    let list = alice.get("/api/list/home/alice")?.json()?;
    let entries = list["entries"].as_array().context("entries")?;
    let size_of = |name: &str| entries.iter().find(|e| e["name"] == name).map(|e| e["size"].clone());
    assert_eq!(size_of("big.bin"), Some(serde_json::json!(big.len())));
    assert_eq!(size_of("small.txt"), Some(serde_json::json!(1000)));
    m.sh("cmp $S/big home/alice/big.bin && cmp $S/small home/alice/small.txt")?;
    // And what the mount writes, the gateway serves, whole and in ranges.
    m.sh("cp $S/big home/alice/from-mount.bin")?;
    let r = alice.get("/api/file/home/alice/from-mount.bin")?;
    assert_eq!(r.status, 200);
    ensure!(r.body == big, "downloaded bytes differ");
    let r = alice.request(
        "GET",
        "/api/file/home/alice/big.bin",
        &["-H", "Range: bytes=4194300-4194310"],
        false,
    )?;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, big[4_194_300..=4_194_310]);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some(format!("bytes 4194300-4194310/{}", big.len()).as_str())
    );
    let r = alice.request("GET", "/api/file/home/alice/big.bin", &["-H", "Range: bytes=-5"], false)?;
    assert_eq!((r.status, r.body.as_slice()), (206, &big[big.len() - 5..]));
    let r = alice.request(
        "GET",
        "/api/file/home/alice/small.txt",
        &["-H", "Range: bytes=5000-"],
        false,
    )?;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */1000"));

    // No silent replacement; with ?overwrite=true the new bytes win.
    assert_eq!(
        alice
            .upload("/api/file/home/alice/small.txt", &s.join("big"), &[])?
            .status,
        409
    );
    assert_eq!(
        alice
            .upload("/api/file/home/alice/small.txt?overwrite=true", &s.join("big"), &[])?
            .status,
        201
    );
    mount_shows(&m, "cmp $S/big home/alice/small.txt")?;

    // Folders: create, move into, rename, delete (recursive on request).
    assert_eq!(
        alice.request("POST", "/api/mkdir/home/alice/proj", &[], true)?.status,
        201
    );
    let r = alice.post_json(
        "/api/rename",
        serde_json::json!({ "from": "/home/alice/small.txt", "to": "/home/alice/proj/moved.txt" }),
    )?;
    ensure!(r.status == 200, "rename: {}", r.text());
    mount_shows(
        &m,
        "test -d home/alice/proj && cmp $S/big home/alice/proj/moved.txt && test ! -e home/alice/small.txt",
    )?;
    assert_eq!(
        alice.request("DELETE", "/api/file/home/alice/proj", &[], true)?.status,
        409
    );
    assert_eq!(
        alice
            .request("DELETE", "/api/file/home/alice/from-mount.bin", &[], true)?
            .status,
        200
    );
    mount_shows(&m, "test ! -e home/alice/from-mount.bin")?;

    // A folder downloads as a zip of what is in it.
    m.sh("mkdir -p home/alice/tree/sub/deeper && cp $S/big home/alice/tree/sub/ && echo hi > home/alice/tree/a.txt")?;
    let r = alice.get("/api/zip/home/alice/tree")?;
    ensure!(r.status == 200, "zip: {} {}", r.status, r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/zip"));
    std::fs::write(s.join("tree.zip"), &r.body)?;
    m.sh("cd $S && unzip -tq tree.zip && unzip -q tree.zip -d unzipped && diff -r unzipped/tree $M/home/alice/tree")?;
    assert_eq!(alice.get("/api/file/home/alice/tree")?.status, 409);

    // An upload cut off half way leaves no file under its name, and its
    // temporary file goes too.
    cut_off_upload(&g, &alice, "/api/file/home/alice/cut.bin", 12 << 20, 6 << 20)?;
    eventually("the unfinished upload removed", || {
        Ok(m.sh("ls -A home/alice")?
            .lines()
            .all(|n| !n.starts_with(".nimbus-upload-")))
    })?;
    m.sh("test ! -e home/alice/cut.bin")?;
    assert_eq!(alice.get("/api/stat/home/alice/cut.bin")?.status, 404);

    // Shares: bob sees nothing of alice's until she shares a folder with
    // him, read-only; then he reads in it but cannot write; revoked, gone.
    let mut bob = Client::new(&g)?;
    assert_eq!(bob.sign_in("bob", "bob-password")?.status, 200);
    for path in [
        "/api/file/home/alice/big.bin",
        "/api/list/home/alice",
        "/api/stat/home/alice/nothing-here",
        "/api/zip/home/alice/tree",
    ] {
        assert_eq!(bob.get(path)?.status, 404, "{path}");
    }
    let r = alice.post_json(
        "/api/shares",
        serde_json::json!({ "path": "/home/alice/proj", "grantee": "bob", "rw": false }),
    )?;
    ensure!(r.status == 200, "share: {}", r.text());
    let shared = bob.get("/api/shares")?.json()?;
    ensure!(shared["shares"].to_string().contains("/home/alice/proj"), "{shared}");
    let r = bob.get("/api/file/home/alice/proj/moved.txt")?;
    ensure!(
        r.status == 200 && r.body == big,
        "bob reads the shared file: {}",
        r.status
    );
    assert_eq!(
        bob.upload("/api/file/home/alice/proj/bob.txt", &s.join("small"), &[])?
            .status,
        403
    );
    assert_eq!(bob.get("/api/file/home/alice/big.bin")?.status, 404);
    let r = alice.post_json(
        "/api/shares/revoke",
        serde_json::json!({ "path": "/home/alice/proj", "grantee": "bob" }),
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(bob.get("/api/file/home/alice/proj/moved.txt")?.status, 404);

    // WebDAV, as a file manager or rclone uses it, with Basic and the same
    // accounts: PUT, GET, PROPFIND, MKCOL, MOVE, DELETE, seen in the mount.
    let dav = |user: &str, method: &str, path: &str, extra: &[&str]| -> anyhow::Result<Reply> {
        let creds = format!("{user}:{user}-password");
        let mut args = vec!["-u", creds.as_str()];
        args.extend_from_slice(extra);
        Client::new(&g)?.request(method, path, &args, false)
    };
    let big_path = s.join("big").display().to_string();
    assert_eq!(Client::new(&g)?.get("/dav/home/alice/")?.status, 401);
    assert_eq!(dav("alice", "MKCOL", "/dav/home/alice/dav", &[])?.status, 201);
    assert_eq!(
        dav("alice", "PUT", "/dav/home/alice/dav/big.bin", &["-T", &big_path])?.status,
        201
    );
    mount_shows(&m, "cmp $S/big home/alice/dav/big.bin")?;
    let r = dav("alice", "GET", "/dav/home/alice/dav/big.bin", &[])?;
    ensure!(r.status == 200 && r.body == big, "WebDAV GET: {}", r.status);
    let r = dav("alice", "PROPFIND", "/dav/home/alice/dav/", &["-H", "Depth: 1"])?;
    ensure!(
        r.status == 207
            && r.text().contains("/dav/home/alice/dav/big.bin")
            && r.text().contains(&big.len().to_string()),
        "PROPFIND: {} {}",
        r.status,
        r.text()
    );
    let dest = format!("Destination: {}/dav/home/alice/dav/renamed.bin", g.base);
    assert_eq!(
        dav("alice", "MOVE", "/dav/home/alice/dav/big.bin", &["-H", &dest])?.status,
        201
    );
    mount_shows(
        &m,
        "cmp $S/big home/alice/dav/renamed.bin && test ! -e home/alice/dav/big.bin",
    )?;
    // Bob, over WebDAV too, cannot see alice's files.
    assert_eq!(dav("bob", "GET", "/dav/home/alice/dav/renamed.bin", &[])?.status, 404);
    // A PUT into a folder he may not see answers as one into a folder that
    // does not exist (409, as RFC 4918 says for a missing parent).
    let hidden = dav("bob", "PUT", "/dav/home/alice/dav/x", &["-T", &big_path])?.status;
    let missing = dav("bob", "PUT", "/dav/home/bob/no-such-folder/x", &["-T", &big_path])?.status;
    assert_eq!((hidden, missing), (409, 409));
    assert_eq!(dav("alice", "DELETE", "/dav/home/alice/dav", &[])?.status, 204);
    mount_shows(&m, "test ! -e home/alice/dav")?;
    assert_eq!(
        dav("alice", "GET", "/dav/home/alice/", &["-u", "alice:wrong"])?.status,
        401
    );

    // Over quota: refused at once when the length is announced, and during
    // the stream when it is not (chunked); either way no file is left.
    let huge = s.join("huge");
    make_file(&huge, 80 << 20, 3)?;
    let r = alice.upload("/api/file/home/alice/huge.bin", &huge, &[])?;
    assert_eq!(r.status, 507);
    ensure!(
        r.json()?["error"].as_str().unwrap_or_default().contains("quota"),
        "{}",
        r.text()
    );
    let r = alice.upload(
        "/api/file/home/alice/huge.bin",
        &huge,
        &["-H", "Transfer-Encoding: chunked"],
    )?;
    ensure!(r.status == 507, "chunked over-quota upload: {} {}", r.status, r.text());
    m.sh("test ! -e home/alice/huge.bin && ! ls -A home/alice | grep -q nimbus-upload")?;
    let huge_path = huge.display().to_string();
    assert_eq!(
        dav("alice", "PUT", "/dav/home/alice/huge.bin", &["-T", &huge_path])?.status,
        507
    );
    m.sh("test ! -e home/alice/huge.bin")?;
    let used = alice.get("/api/me")?.json()?["quota"]["bytes_used"]
        .as_u64()
        .unwrap_or(u64::MAX);
    ensure!(used < 48 << 20, "usage after refused uploads: {used}");

    // Sign-out ends the session, here and on the cluster.
    assert_eq!(alice.request("POST", "/api/logout", &[], true)?.status, 200);
    assert_eq!(alice.get("/api/me")?.status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_clear_4xx_and_change_nothing() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let c = &m.cluster;
    add_user(c, "carol", &[])?;
    let g = Gateway::start(c)?;
    let mut carol = Client::new(&g)?;
    assert_eq!(carol.sign_in("carol", "carol-password")?.status, 200);
    m.sh("echo private > home/carol/notes")?;

    // CSRF: a change without the token, or with a wrong one, is refused.
    let r = carol.request("POST", "/api/mkdir/home/carol/a", &[], false)?;
    assert_eq!(r.status, 403);
    ensure!(r.text().contains("CSRF"), "{}", r.text());
    let r = carol.request(
        "POST",
        "/api/mkdir/home/carol/b",
        &["-H", "X-CSRF-Token: forged"],
        false,
    )?;
    assert_eq!(r.status, 403);
    assert_eq!(
        carol
            .request("DELETE", "/api/file/home/carol/notes", &[], false)?
            .status,
        403
    );
    let body = m.scratch.path().join("x");
    std::fs::write(&body, b"x")?;
    assert_eq!(
        carol
            .request(
                "PUT",
                "/api/file/home/carol/c",
                &["--data-binary", &format!("@{}", body.display())],
                false
            )?
            .status,
        403
    );
    assert_eq!(m.sh("ls -A home/carol")?, "notes");

    // Paths: traversal, encoded slashes, NUL, bad escapes, invalid UTF-8,
    // names over 255 bytes: 400, nothing created.
    let long = "n".repeat(256);
    for (method, path) in [
        ("GET", "/api/list/home/carol/../../etc".to_owned()),
        ("GET", "/api/list/home/%2e%2e/carol".to_owned()),
        ("GET", "/api/file/home/carol/..%2fcarol/notes".to_owned()),
        ("POST", "/api/mkdir/home/carol/a%2Fb".to_owned()),
        ("POST", "/api/mkdir/home/carol/a%00b".to_owned()),
        ("POST", "/api/mkdir/home/carol/%ff%fe".to_owned()),
        ("POST", "/api/mkdir/home/carol/%zz".to_owned()),
        ("POST", format!("/api/mkdir/home/carol/{long}")),
        ("DELETE", "/api/file/home/carol/x/..".to_owned()),
    ] {
        let r = carol.request(method, &path, &[], true)?;
        ensure!(r.status == 400, "{path}: {} {}", r.status, r.text());
        ensure!(
            r.json()?["error"].as_str().is_some_and(|e| e.starts_with("bad path")),
            "{}",
            r.text()
        );
    }
    let r = carol.post_json(
        "/api/rename",
        serde_json::json!({ "from": "/home/carol/notes", "to": "/home/carol/../notes" }),
    )?;
    assert_eq!(r.status, 400);
    assert_eq!(m.sh("ls -A home/carol")?, "notes");

    // Cookies are Secure over HTTPS, and behind a proxy that says the
    // browser spoke HTTPS, only when the gateway is told to trust it.
    nimbus_common::tls::issue(&c.certs, "web", &[])?;
    let (cert, key) = (c.certs.join("web.pem"), c.certs.join("web.key"));
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let https = Gateway::start_with(c, &["--cert", &cert, "--key", &key], "https")?;
    let ca = Gateway::trust(c);
    let mut tls_client = Client::new(&https)?;
    let r = tls_client.request(
        "POST",
        "/api/login",
        &[
            "--cacert",
            &ca,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"user":"carol","password":"carol-password"}"#,
        ],
        false,
    )?;
    ensure!(
        r.status == 200,
        "HTTPS sign-in: {} {}\n{}",
        r.status,
        r.text(),
        https.log()
    );
    ensure!(
        r.header("set-cookie").is_some_and(|c| c.contains("; Secure")),
        "{:?}",
        r.header("set-cookie")
    );
    tls_client.csrf = r.json()?["csrf"].as_str().map(str::to_owned);
    assert_eq!(
        tls_client
            .request("GET", "/api/list/home/carol", &["--cacert", &ca], false)?
            .status,
        200
    );
    let proxied = Gateway::start_with(c, &["--behind-proxy"], "http")?;
    let forwarded = ["-H", "X-Forwarded-Proto: https"];
    let r = Client::new(&proxied)?.request(
        "POST",
        "/api/login",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"user":"carol","password":"carol-password"}"#,
            forwarded[0],
            forwarded[1],
        ],
        false,
    )?;
    ensure!(
        r.header("set-cookie").is_some_and(|c| c.contains("; Secure")),
        "{:?}",
        r.header("set-cookie")
    );
    let r = Client::new(&g)?.request(
        "POST",
        "/api/login",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"user":"carol","password":"carol-password"}"#,
            forwarded[0],
            forwarded[1],
        ],
        false,
    )?;
    ensure!(
        r.header("set-cookie").is_some_and(|c| !c.contains("Secure")),
        "{:?}",
        r.header("set-cookie")
    );

    // Sessions: none, forged or signed out: 401.
    let stranger = Client::new(&g)?;
    assert_eq!(stranger.get("/api/list/home/carol")?.status, 401);
    let r = stranger.request(
        "GET",
        "/api/me",
        &["-H", &format!("Cookie: nimbus_session={}", "0".repeat(64))],
        false,
    )?;
    assert_eq!(r.status, 401);
    // A session the cluster ended (the account disabled) is refused at
    // its next request, and a new sign-in too.
    let mut dora = Client::new(&g)?;
    add_user(c, "dora", &[])?;
    assert_eq!(dora.sign_in("dora", "dora-password")?.status, 200);
    assert_eq!(dora.get("/api/list/home/dora")?.status, 200);
    support::admin(c, &["user", "disable", "dora"], "")?;
    assert_eq!(dora.get("/api/list/home/dora")?.status, 401);
    assert_eq!(dora.sign_in("dora", "dora-password")?.status, 401);

    // A JSON sign-in only: a cross-site form cannot post one.
    let r = stranger.request(
        "POST",
        "/api/login",
        &["--data", "user=carol&password=carol-password"],
        false,
    )?;
    ensure!(r.status == 415, "form sign-in: {}", r.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_uploads_and_shares() -> anyhow::Result<()> {
    let m = Mounted::start().await?;
    let c = &m.cluster;
    add_user(c, "alice", &["--quota-bytes", "48M", "--quota-inodes", "100"])?;
    add_user(c, "bob", &[])?;
    let g = Gateway::start(c)?;
    let browser = Browser::start()?;

    // Sign in through the form.
    browser.goto(&format!("{}/", g.base))?;
    browser.wait_for("!document.getElementById('signin').hidden")?;
    browser.type_into("#signin-user", "alice")?;
    browser.type_into("#signin-password", "alice-password")?;
    browser.click("#signin-button")?;
    browser.wait_for("!document.getElementById('app').hidden && location.hash === '#/home/alice'")?;

    // Upload through the file input, three files at once (chromedriver
    // takes several paths, one a line): listed with their sizes, the same
    // bytes in the mount.
    let file = m.scratch.path().join("hello.txt");
    make_file(&file, 3000, 5)?;
    let notes = m.scratch.path().join("notes.txt");
    std::fs::write(&notes, "Meeting notes\nline two\n")?;
    // A 1x1 PNG.
    let png = m.scratch.path().join("dot.png");
    let decoded = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg== | base64 -d > {}",
            png.display()
        ))
        .status()?;
    ensure!(decoded.success(), "writing a PNG");
    let paths = format!("{}\n{}\n{}", file.display(), notes.display(), png.display());
    browser.type_into("#upload-input", &paths)?;
    browser.wait_for(
        "[...document.querySelectorAll('#uploads li')].filter(l => l.textContent.endsWith('done')).length === 3",
    )?;
    browser.wait_for("document.querySelector('tr[data-name=\"hello.txt\"] .size')?.title === '3000 bytes'")?;
    m.sh("cmp $S/hello.txt home/alice/hello.txt && cmp $S/notes.txt home/alice/notes.txt")?;
    // A text file previews in the page.
    browser.click("tr[data-name=\"notes.txt\"] a.entry-name")?;
    browser.wait_for("document.getElementById('preview').open && document.querySelector('#preview-body pre')?.textContent === 'Meeting notes\\nline two\\n'")?;
    browser.click("#preview-close")?;
    // And an image, loaded from the download URL.
    browser.click("tr[data-name=\"dot.png\"] a.entry-name")?;
    browser.wait_for(
        "document.querySelector('#preview-body img')?.complete && document.querySelector('#preview-body img').naturalWidth === 1",
    )?;
    browser.click("#preview-close")?;

    // A folder, shared read-only with bob through the dialog; bob then
    // sees it.
    browser.click("#mkdir-button")?;
    browser.answer_prompt("shared-docs")?;
    browser.wait_for("!!document.querySelector('tr[data-name=\"shared-docs\"]')")?;
    browser.click("tr[data-name=\"shared-docs\"] button[data-action=\"share\"]")?;
    browser.type_into("#share-grantee", "bob")?;
    browser.click("#share-submit")?;
    browser.wait_for("document.getElementById('share-list').textContent.includes('bob (read-only)')")?;
    browser.click("#share-cancel")?;
    let mut bob = Client::new(&g)?;
    assert_eq!(bob.sign_in("bob", "bob-password")?.status, 200);
    assert_eq!(bob.get("/api/list/home/alice/shared-docs")?.status, 200);

    // The quota bar says what `nimbus whoami` says.
    c.login("alice", "alice-password", &[])?;
    let out = c.nimbus("alice").arg("whoami").output()?;
    let who = String::from_utf8_lossy(&out.stdout).into_owned();
    let (space, inodes) = (whoami_line(&who, "space:")?, whoami_line(&who, "inodes:")?);
    browser.click("#home-button")?;
    let expr = format!(
        "document.getElementById('quota-text').textContent === {}",
        serde_json::json!(format!("{space} · files: {inodes}"))
    );
    if let Err(e) = browser.wait_for(&expr) {
        bail!(
            "{e}: the page shows {:?}, nimbus whoami:\n{who}",
            browser.eval("document.getElementById('quota-text').textContent")?
        );
    }

    // The file list, kept for people to look at.
    let shot = bin_dir().join("test-artifacts").join("web-file-list.png");
    browser.screenshot(&shot)?;
    eprintln!("screenshot of the file list: {}", shot.display());
    Ok(())
}

/// Sign-up through the page's form, verification by the link in the mail
/// (a real SMTP server), then sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_up_and_verifies_by_mail() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let smtp = nimbus_tests::mail::Smtp::start(scratch.path())?;
    // The links in mail point at the gateway: its port is chosen first.
    let port = nimbus_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cluster = nimbus_tests::MetaCluster::start(nimbus_tests::Options {
        meta_args: smtp.meta_args(&base),
        ..nimbus_tests::Options::default()
    })?;
    cluster.wait_leader(std::time::Duration::from_secs(20)).await?;
    for i in 1..=3 {
        cluster.add_data(i, &format!("zone{i}"), None)?;
    }
    cluster.wait_data(3, std::time::Duration::from_secs(20)).await?;
    cluster.login("admin", nimbus_tests::ADMIN_PASSWORD, &[])?;
    let set = cluster
        .nimbus("admin")
        .args(["signup", "policy", "--mode", "open"])
        .output()?;
    ensure!(set.status.success(), "policy: {}", String::from_utf8_lossy(&set.stderr));
    let g = Gateway::start_on(&cluster, &format!("127.0.0.1:{port}"))?;
    let browser = Browser::start()?;

    browser.goto(&format!("{}/", g.base))?;
    browser.wait_for("!document.getElementById('show-signup').hidden")?;
    browser.click("#show-signup")?;
    browser.type_into("#signup-name", "gina")?;
    browser.type_into("#signup-email", "gina@example.org")?;
    browser.type_into("#signup-password", "a long enough secret")?;
    browser.click("#signup-button")?;
    browser.wait_for("document.getElementById('signup-message').textContent.includes('we sent a link')")?;
    let mail = smtp.wait_message(1)?;
    let link = mail
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{base}/signup/verify?token=")))
        .with_context(|| format!("no link in the mail:\n{mail}"))?
        .to_owned();
    browser.goto(&link)?;
    browser.click("#verify-button")?;
    browser.wait_for("document.getElementById('link-message').textContent.includes('verified')")?;
    browser.goto(&format!("{}/", g.base))?;
    browser.wait_for("!document.getElementById('signin').hidden")?;
    browser.type_into("#signin-user", "gina")?;
    browser.type_into("#signin-password", "a long enough secret")?;
    browser.click("#signin-button")?;
    browser.wait_for("!document.getElementById('app').hidden && location.hash === '#/home/gina'")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_round_trips_in_bounded_memory() -> anyhow::Result<()> {
    let mut c = MetaCluster::start(Options::default())?;
    c.wait_leader(Duration::from_secs(20)).await?;
    for i in 1..=3 {
        c.add_data(i, &format!("zone{i}"), None)?;
    }
    c.wait_data(3, Duration::from_secs(20)).await?;
    let g = Gateway::start(&c)?;
    let mut admin = Client::new(&g)?;
    // A new cluster creates the administrator shortly after electing its
    // first leader: wait for the account.
    eventually("the administrator's account", || {
        Ok(admin.sign_in("admin", ADMIN_PASSWORD)?.status == 200)
    })?;
    let dir = tempfile::Builder::new().prefix("nimbus-web-gib-").tempdir()?;
    let (src, back) = (dir.path().join("src"), dir.path().join("back"));
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 1073741824 /dev/urandom > {}", src.display()))
        .status()?;
    ensure!(ok.success(), "making 1 GiB of random bytes");
    let r = admin.upload("/api/file/gib.bin", &src, &[])?;
    ensure!(r.status == 201, "upload: {} {}\n{}", r.status, r.text(), g.log());
    let out = Command::new("curl")
        .args(["-s", "-S", "-f", "-b"])
        .arg(admin.dir.path().join("cookies"))
        .arg("-o")
        .arg(&back)
        .arg(format!("{}/api/file/gib.bin", g.base))
        .output()?;
    ensure!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same = Command::new("cmp").arg(&src).arg(&back).status()?;
    ensure!(same.success(), "the downloaded GiB differs from the uploaded one");
    let peak = g.peak_rss()?;
    eprintln!(
        "nimbus-web peak resident memory over a 1 GiB round trip: {} MiB",
        peak >> 20
    );
    ensure!(peak < 256 << 20, "the gateway peaked at {} MiB", peak >> 20);
    Ok(())
}
