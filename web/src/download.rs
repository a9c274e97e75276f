//! Serving file contents: one file, whole or a byte range, and a folder as
//! a zip stream. The bytes come through [`crate::files`].

use crate::api::{url_path, AppState, Flags};
use crate::error::ApiError;
use crate::files;
use crate::store::{self, is_dir, resolve};
use crate::zip::ZipWriter;
use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use nimbus_client::MetaClient;
use nimbus_common::Ino;
use nimbus_proto as pb;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A `Range: bytes=...` header as `[start, end)` within `size`; `None` for
/// the whole file (no header, or several ranges, which may be ignored).
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ApiError::Range { size })?;
    let spec = v.trim().strip_prefix("bytes=").ok_or(ApiError::Range { size })?;
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(ApiError::Range { size })?;
    let (a, b) = (a.trim(), b.trim());
    let parse = |t: &str| t.parse::<u64>().map_err(|_| ApiError::Range { size });
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Err(ApiError::Range { size }),
        // The last n bytes.
        (true, false) => {
            let n = parse(b)?;
            if n == 0 {
                return Err(ApiError::Range { size });
            }
            (size.saturating_sub(n), size)
        }
        (false, true) => (parse(a)?, size),
        (false, false) => {
            let (s, e) = (parse(a)?, parse(b)?);
            if e < s {
                return Err(ApiError::Range { size });
            }
            (s, e.saturating_add(1).min(size))
        }
    };
    if start >= size {
        return Err(ApiError::Range { size });
    }
    Ok(Some((start, end)))
}

/// A content type for a file name; text that a browser would run (HTML,
/// SVG, XML) is served as plain text.
fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mov" => "video/quicktime",
        "txt" | "md" | "rs" | "py" | "c" | "h" | "cpp" | "go" | "java" | "js" | "ts" | "sh" | "toml" | "yaml"
        | "yml" | "json" | "csv" | "log" | "html" | "htm" | "svg" | "xml" | "css" | "ini" | "conf" | "proto" => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

/// Downloads a file, whole or one byte range (206; 416 outside it).
pub async fn download(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, false)?;
    let path = url_path(&uri, "/api/file")?;
    let shown = path.to_string();
    let a = resolve(&s.client, &path).await?;
    if is_dir(&a) {
        return Err(ApiError::WrongKind(format!(
            "{shown}: is a folder (download it as a zip: /api/zip{shown})"
        )));
    }
    let layout = files::layout(&s.client, Ino(a.ino), &shown).await?;
    let size = layout.size;
    let (status, start, end) = match range(&headers, size)? {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, size),
    };
    let rx = files::read_range(s.client.clone(), &layout, start, end)?;
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let name = path.names().last().cloned().unwrap_or_default();
    let ctype = content_type(&name);
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // Whatever a stored file contains, it runs nothing on this origin. (A
    // PDF needs the browser's viewer, which a sandbox would block; it runs
    // no script of the page's origin either.)
    if ctype != "application/pdf" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end.saturating_sub(1))) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    let disposition = if flags.download { "attachment" } else { "inline" };
    if let Some(v) = content_disposition(disposition, &name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// `Content-Disposition` naming `name` in UTF-8 (RFC 6266).
fn content_disposition(disposition: &str, name: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{disposition}; filename*=UTF-8''{}",
        crate::paths::percent_encode(name)
    ))
    .ok()
}

/// Downloads a folder and everything in it the user may read, as a zip
/// stream (stored, ZIP64 when needed). Files the user may not read are left
/// out; the archive is made as it is sent, so its length is not known
/// beforehand.
pub async fn zip(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    let s = app.sessions.check(&headers, false)?;
    let path = url_path(&uri, "/api/zip")?;
    let shown = path.to_string();
    let dir = resolve(&s.client, &path).await?;
    if !is_dir(&dir) {
        return Err(ApiError::WrongKind(format!("{shown}: not a folder")));
    }
    let top = path.names().last().cloned().unwrap_or_else(|| "files".into());
    let entries = walk(&s.client, &dir, &top, &shown).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let client = s.client.clone();
    tokio::spawn(async move {
        if let Err(e) = send_zip(&client, entries, &tx).await {
            tracing::warn!("zip of {shown}: {e}");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let mut r = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Some(v) = content_disposition("attachment", &format!("{top}.zip")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Every folder and file under `dir`, depth first, with paths starting at
/// `top`; folders the user may not list are left out (with their contents).
async fn walk(
    client: &MetaClient,
    dir: &pb::Attr,
    top: &str,
    shown: &str,
) -> Result<Vec<(String, pb::Attr)>, ApiError> {
    let mut out = vec![(format!("{top}/"), *dir)];
    let mut stack = vec![(Ino(dir.ino), top.to_owned())];
    while let Some((ino, rel)) = stack.pop() {
        let listed = match store::list(client, ino, &format!("{shown}/{rel}")).await {
            Ok(l) => l,
            Err(ApiError::NotFound(_)) if ino.0 != dir.ino => continue,
            Err(e) => return Err(e),
        };
        for (e, a) in listed {
            let child = format!("{rel}/{}", e.name);
            if is_dir(&a) {
                out.push((format!("{child}/"), a));
                stack.push((Ino(a.ino), child));
            } else if a.kind == pb::FileKind::Regular as i32 {
                out.push((child, a));
            }
        }
    }
    Ok(out)
}

/// Sends the zip of `entries` into `tx`.
async fn send_zip(
    client: &Arc<MetaClient>,
    entries: Vec<(String, pb::Attr)>,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ApiError> {
    let gone = || ApiError::Interrupted("the client went away".into());
    let mut z = ZipWriter::new();
    for (name, a) in entries {
        let mtime = a.mtime_ns / 1_000_000;
        if is_dir(&a) {
            tx.send(Ok(Bytes::from(z.dir(&name, mtime, a.perm))))
                .await
                .map_err(|_| gone())?;
            continue;
        }
        let layout = match files::layout(client, Ino(a.ino), &name).await {
            Ok(l) => l,
            // Not readable by this user: left out.
            Err(ApiError::NotFound(_)) | Err(ApiError::Forbidden(_)) => continue,
            Err(e) => return Err(e),
        };
        tx.send(Ok(Bytes::from(z.begin_file(&name, mtime, a.perm))))
            .await
            .map_err(|_| gone())?;
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        let mut data = files::read_range(client.clone(), &layout, 0, layout.size)?;
        while let Some(chunk) = data.recv().await {
            let chunk = chunk.map_err(|e| ApiError::Unavailable(format!("{name}: {e}")))?;
            crc.update(&chunk);
            size += chunk.len() as u64;
            z.data(chunk.len() as u64);
            tx.send(Ok(chunk)).await.map_err(|_| gone())?;
        }
        tx.send(Ok(Bytes::from(z.end_file(crc.finalize(), size))))
            .await
            .map_err(|_| gone())?;
    }
    tx.send(Ok(Bytes::from(z.finish()))).await.map_err(|_| gone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(range(&HeaderMap::new(), 10).ok(), Some(None));
        assert_eq!(range(&with_range("bytes=0-4"), 10).ok(), Some(Some((0, 5))));
        assert_eq!(range(&with_range("bytes=5-"), 10).ok(), Some(Some((5, 10))));
        assert_eq!(range(&with_range("bytes=-3"), 10).ok(), Some(Some((7, 10))));
        assert_eq!(range(&with_range("bytes=8-100"), 10).ok(), Some(Some((8, 10))));
        assert_eq!(range(&with_range("bytes=0-1,3-4"), 10).ok(), Some(None));
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=x-1",
            "items=0-1",
            "bytes=-0",
            "bytes=-",
        ] {
            assert!(
                matches!(range(&with_range(bad), 10), Err(ApiError::Range { size: 10 })),
                "{bad}"
            );
        }
    }

    #[test]
    fn active_content_is_served_as_text() {
        assert_eq!(content_type("x.html"), "text/plain; charset=utf-8");
        assert_eq!(content_type("x.SVG"), "text/plain; charset=utf-8");
        assert_eq!(content_type("a.PNG"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
