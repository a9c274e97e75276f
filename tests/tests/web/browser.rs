//! A real browser for the gateway tests: Debian's `chromium` driven by
//! `chromedriver` over the W3C WebDriver protocol (JSON over HTTP, with
//! curl).

use crate::support::eventually;
use anyhow::{bail, ensure, Context};
use nimbus_tests::free_port;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `chromedriver` process and one headless Chromium session, driven over
/// the W3C WebDriver protocol (JSON over HTTP, sent with curl).
pub(crate) struct Browser {
    pub(crate) base: String,
    pub(crate) session: String,
    pub(crate) child: Option<Child>,
    pub(crate) _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn start() -> anyhow::Result<Browser> {
        for tool in ["chromium", "chromedriver"] {
            ensure!(
                nimbus_tests::mount::which(tool),
                "{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning chromedriver")?;
        let profile = tempfile::Builder::new().prefix("nimbus-chromium-").tempdir()?;
        let mut b = Browser {
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            child: Some(child),
            _profile: profile,
        };
        eventually("chromedriver ready", || {
            Ok(b.call("GET", "/status", None)
                .is_ok_and(|v| v["value"]["ready"] == true))
        })?;
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--window-size=1280,900",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {v}"))?
            .to_owned();
        Ok(b)
    }

    /// One WebDriver command; an error reply is an error.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut c = Command::new("curl");
        c.args(["-s", "-S", "-X", method, "-H", "Content-Type: application/json"]);
        if let Some(b) = body {
            c.args(["--data-binary", &b.to_string()]);
        } else if method == "POST" {
            c.args(["--data-binary", "{}"]);
        }
        let out = c.arg(format!("{}{path}", self.base)).output()?;
        ensure!(
            out.status.success(),
            "webdriver {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("webdriver {path}: {}", String::from_utf8_lossy(&out.stdout)))?;
        if v["value"]["error"].is_string() {
            bail!("webdriver {method} {path}: {}", v["value"]);
        }
        Ok(v)
    }

    pub(crate) fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub(crate) fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_call("POST", "/url", Some(serde_json::json!({ "url": url })))
            .map(|_| ())
    }

    /// The element matching CSS `selector`.
    pub(crate) fn find(&self, selector: &str) -> anyhow::Result<String> {
        let v = self.session_call(
            "POST",
            "/element",
            Some(serde_json::json!({ "using": "css selector", "value": selector })),
        )?;
        v["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|id| id.as_str())
            .map(str::to_owned)
            .with_context(|| format!("no element {selector}"))
    }

    pub(crate) fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(selector)?;
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(serde_json::json!({ "text": text })),
        )
        .map(|_| ())
    }

    pub(crate) fn click(&self, selector: &str) -> anyhow::Result<()> {
        let e = self.find(selector)?;
        self.session_call("POST", &format!("/element/{e}/click"), None)
            .map(|_| ())
    }

    /// The value of a JavaScript expression in the page.
    pub(crate) fn eval(&self, expr: &str) -> anyhow::Result<serde_json::Value> {
        let v = self.session_call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": format!("return ({expr});"), "args": [] })),
        )?;
        Ok(v["value"].clone())
    }

    /// Waits until `expr` is true in the page.
    pub(crate) fn wait_for(&self, expr: &str) -> anyhow::Result<()> {
        eventually(expr, || Ok(self.eval(expr)? == serde_json::json!(true)))
    }

    /// Answers the page's prompt() with `text`.
    pub(crate) fn answer_prompt(&self, text: &str) -> anyhow::Result<()> {
        eventually("a prompt", || Ok(self.session_call("GET", "/alert/text", None).is_ok()))?;
        self.session_call("POST", "/alert/text", Some(serde_json::json!({ "text": text })))?;
        self.session_call("POST", "/alert/accept", None).map(|_| ())
    }

    /// A PNG of the page, stored at `path`.
    pub(crate) fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.session_call("GET", "/screenshot", None)?;
        let b64 = v["value"].as_str().context("no screenshot")?;
        let mut child = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        if let Some(mut s) = child.stdin.take() {
            s.write_all(b64.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(out.status.success() && out.stdout.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, out.stdout)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// "X used of Y" from a line `label:   X used of Y` of `nimbus whoami`.
pub(crate) fn whoami_line(out: &str, label: &str) -> anyhow::Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .with_context(|| format!("no {label} in {out}"))
}
