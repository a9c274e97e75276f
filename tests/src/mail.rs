//! A real SMTP server for tests of mail the cluster sends: Python's
//! aiosmtpd on 127.0.0.1, delivering into a Maildir the test reads.

use crate::free_port;
use anyhow::{ensure, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An aiosmtpd process on 127.0.0.1 delivering into a Maildir; stopped by
/// pid when dropped.
pub struct Smtp {
    child: Child,
    maildir: PathBuf,
    pub port: u16,
}

impl Smtp {
    /// Starts aiosmtpd on a free loopback port, delivering into `dir`/maildir.
    pub fn start(dir: &Path) -> anyhow::Result<Smtp> {
        let maildir = dir.join("maildir");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting aiosmtpd (python3 -m pip install aiosmtpd)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "aiosmtpd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Smtp { child, maildir, port })
    }

    /// Every message delivered so far, decoded to text (headers and body).
    pub fn messages(&self) -> anyhow::Result<Vec<String>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let mut out = Vec::new();
        for f in files {
            let text = Command::new("python3")
                .arg("-c")
                .arg(
                    "import email,sys\nm=email.message_from_binary_file(open(sys.argv[1],'rb'))\n\
                     print('To:', m['To']); print('Subject:', m['Subject'])\n\
                     print(m.get_payload(decode=True).decode())",
                )
                .arg(&f)
                .output()?;
            out.push(String::from_utf8_lossy(&text.stdout).into_owned());
        }
        Ok(out)
    }

    /// Waits for message number `n` (from 1) and returns it.
    pub fn wait_message(&self, n: usize) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.messages()?;
            if all.len() >= n {
                return Ok(all[n - 1].clone());
            }
            ensure!(Instant::now() < deadline, "no mail number {n} ({} so far)", all.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Smtp {
    /// The `nimbus-meta serve` flags that send mail through this server,
    /// with links under `public_url`.
    pub fn meta_args(&self, public_url: &str) -> Vec<String> {
        vec![
            "--smtp-url".into(),
            format!("smtp://127.0.0.1:{}", self.port),
            "--mail-from".into(),
            "Nimbus <nimbus@cluster.test>".into(),
            "--public-url".into(),
            public_url.into(),
        ]
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The token of the command line a mail gives (`nimbus ... TOKEN`).
pub fn token_in(mail: &str) -> anyhow::Result<String> {
    mail.split_whitespace()
        .find(|w| w.starts_with("nm1."))
        .map(str::to_owned)
        .with_context(|| format!("no token in the mail:\n{mail}"))
}
