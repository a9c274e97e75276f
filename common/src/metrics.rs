//! Metrics in the Prometheus text format, served over plain HTTP on an
//! operator-chosen port. A few gauges per process do not justify an HTTP
//! stack: this answers every request with the current text and closes.

use std::fmt::Write;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Renders the current metrics text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Builds a metrics page.
#[derive(Default)]
pub struct Page(String);

impl Page {
    /// Adds a gauge (or counter, by `kind`) with one sample per label set.
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) -> &mut Page {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.0
    }
}

/// Serves `render` on `addr` until the process ends.
pub async fn serve(addr: String, render: Render) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics: {e}");
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            // The request itself does not matter; read what arrived and answer.
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.read(&mut buf)).await;
            let body = render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}
