//! WebDAV at `/dav/` (the `dav-server` crate), so that file managers
//! (GNOME Files, macOS Finder, Windows), rclone and davfs2 reach the store
//! without FUSE. Clients sign in with HTTP Basic and a Nimbus account,
//! accepted only over HTTPS or on loopback (a reverse proxy on the same
//! host); every request acts as that user, through the same [`crate::store`]
//! and [`crate::files`] as the JSON API.
//!
//! Basic sends the password with every request: the gateway verifies it
//! with the cluster once, then remembers the resulting sign-in against a
//! keyed hash of the name and password for a few minutes.

use crate::api::AppState;
use crate::error::ApiError;
use crate::files::{self, StagedUpload, SLOT};
use crate::paths::{check_name, StorePath};
use crate::store;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, FsError, FsFuture, FsResult, FsStream, GuardedFileSystem, OpenOptions,
    ReadDirMeta,
};
use dav_server::{fakels::FakeLs, DavHandler};
use nimbus_client::MetaClient;
use nimbus_common::Ino;
use nimbus_proto as pb;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who a WebDAV request acts as: a client carrying that user's token.
#[derive(Clone)]
pub struct DavUser {
    client: Arc<MetaClient>,
}

/// The store as a WebDAV file system.
#[derive(Clone)]
pub struct NimbusFs;

/// The WebDAV handler for `/dav/`.
pub fn handler() -> DavHandler<DavUser> {
    DavHandler::builder()
        .filesystem(Box::new(NimbusFs))
        // Finder and Windows insist on locks; the store has no WebDAV
        // locks, so they are granted and not enforced (as many servers do).
        .locksystem(FakeLs::new())
        .strip_prefix("/dav")
        .build_handler()
}

/// `user:password` from an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let text = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 (RFC 4648, with padding), as Basic uses it.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// 401 asking for Basic credentials.
fn challenge(why: &str) -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Nimbus\", charset=\"UTF-8\""),
    );
    r
}

/// Every request under `/dav`.
pub async fn handle(State(app): State<AppState>, req: Request) -> Response {
    if !app.sessions.access().basic_auth_allowed {
        return (
            StatusCode::FORBIDDEN,
            "WebDAV needs HTTPS (--cert/--key) or a loopback address behind a reverse proxy\n",
        )
            .into_response();
    }
    // WebDAV never uses POST; refusing it keeps cross-site forms (which a
    // browser may send with remembered Basic credentials) from changing
    // anything. Every other changing method needs a CORS preflight, which
    // this server never grants.
    if req.method() == Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some((user, password)) = basic_credentials(req.headers()) else {
        return challenge("sign in with your Nimbus user name and password");
    };
    let session = match app.sessions.basic(&user, &password).await {
        Ok(s) => s,
        Err(ApiError::SignInRefused(_)) | Err(ApiError::BadRequest(_)) => {
            return challenge("wrong user name or password");
        }
        Err(e) => return e.into_response(),
    };
    let who = DavUser {
        client: session.client.clone(),
    };
    let r = app.dav.handle_guarded(req, session.user.clone(), who).await;
    r.map(Body::new)
}

/// The store path of a WebDAV path; hostile names are refused as the API
/// refuses them.
fn store_path(path: &DavPath) -> FsResult<StorePath> {
    let bytes = path.as_bytes();
    let text = std::str::from_utf8(bytes).map_err(|_| FsError::Forbidden)?;
    for name in text.split('/').filter(|n| !n.is_empty()) {
        check_name(name.as_bytes()).map_err(|_| FsError::Forbidden)?;
    }
    StorePath::parse(text).map_err(|_| FsError::Forbidden)
}

/// The WebDAV result code for an API error.
fn fs_error(e: ApiError) -> FsError {
    match e {
        ApiError::NotFound(_) => FsError::NotFound,
        ApiError::Forbidden(_) | ApiError::BadPath(_) | ApiError::Csrf | ApiError::WrongKind(_) => FsError::Forbidden,
        ApiError::NotEmpty(_) => FsError::Forbidden,
        ApiError::Exists(_) => FsError::Exists,
        ApiError::Quota(_) | ApiError::NoSpace(_) => FsError::InsufficientStorage,
        // The cluster ended the sign-in (account disabled or removed); the
        // cached sign-in is checked again within minutes.
        ApiError::Unauthenticated(_) => FsError::Forbidden,
        other => {
            tracing::warn!("webdav: {other}");
            FsError::GeneralFailure
        }
    }
}

/// Attributes as WebDAV wants them.
#[derive(Clone, Debug)]
struct Meta {
    size: u64,
    mtime_ns: i64,
    dir: bool,
}

impl Meta {
    fn of(a: &pb::Attr) -> Meta {
        Meta {
            size: a.size,
            mtime_ns: a.mtime_ns,
            dir: store::is_dir(a),
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.size
    }

    fn modified(&self) -> FsResult<SystemTime> {
        let ns = u64::try_from(self.mtime_ns).unwrap_or(0);
        Ok(UNIX_EPOCH + Duration::from_nanos(ns))
    }

    fn is_dir(&self) -> bool {
        self.dir
    }
}

struct Entry {
    name: String,
    meta: Meta,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        Box::pin(async move { Ok(m) })
    }
}

/// A file open for reading: one slot at a time is fetched and kept, since
/// dav-server asks for small pieces.
struct ReadFile {
    client: Arc<MetaClient>,
    layout: pb::Layout,
    meta: Meta,
    pos: u64,
    cached: Option<(u64, Bytes)>,
}

impl std::fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadFile(size {}, at {})", self.layout.size, self.pos)
    }
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        Box::pin(async move { Ok(m) })
    }

    fn write_buf(&mut self, _: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(async { Err(FsError::Forbidden) })
    }

    fn write_bytes(&mut self, _: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async { Err(FsError::Forbidden) })
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        Box::pin(async move {
            let size = self.layout.size;
            if self.pos >= size || count == 0 {
                return Ok(Bytes::new());
            }
            let slot = self.pos / SLOT;
            if self.cached.as_ref().map(|(s, _)| *s) != Some(slot) {
                let start = slot * SLOT;
                let end = (start + SLOT).min(size);
                let data = files::read_at(&self.client, &self.layout, start, end)
                    .await
                    .map_err(fs_error)?;
                self.cached = Some((slot, data));
            }
            let Some((_, data)) = &self.cached else {
                return Err(FsError::GeneralFailure);
            };
            let from = (self.pos - slot * SLOT) as usize;
            let to = (from + count).min(data.len());
            let out = data.slice(from.min(to)..to);
            self.pos += out.len() as u64;
            Ok(out)
        })
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        Box::pin(async move {
            let size = self.layout.size as i128;
            let to = match pos {
                SeekFrom::Start(n) => n as i128,
                SeekFrom::End(d) => size + d as i128,
                SeekFrom::Current(d) => self.pos as i128 + d as i128,
            };
            if to < 0 {
                return Err(FsError::GeneralFailure);
            }
            self.pos = to as u64;
            Ok(self.pos)
        })
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// A file being PUT: a staged upload, renamed into place at flush.
struct WriteFile {
    staged: Option<StagedUpload>,
    written: u64,
}

impl std::fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteFile({} bytes)", self.written)
    }
}

impl WriteFile {
    async fn push(&mut self, data: &[u8]) -> FsResult<()> {
        let staged = self.staged.as_mut().ok_or(FsError::GeneralFailure)?;
        staged.push(data).await.map_err(fs_error)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

impl DavFile for WriteFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta {
            size: self.written,
            mtime_ns: 0,
            dir: false,
        });
        Box::pin(async move { Ok(m) })
    }

    fn write_buf(&mut self, mut buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(async move {
            while buf.has_remaining() {
                let chunk = buf.chunk().to_vec();
                buf.advance(chunk.len());
                self.push(&chunk).await?;
            }
            Ok(())
        })
    }

    fn write_bytes(&mut self, data: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async move { self.push(&data).await })
    }

    fn read_bytes(&mut self, _: usize) -> FsFuture<'_, Bytes> {
        Box::pin(async { Err(FsError::Forbidden) })
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // Only sequential writes: a partial PUT (Content-Range) is refused.
        let here = self.written;
        Box::pin(async move {
            match pos {
                SeekFrom::Start(n) if n == here => Ok(here),
                SeekFrom::Current(0) => Ok(here),
                _ => Err(FsError::NotImplemented),
            }
        })
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut staged) = self.staged.take() {
                staged.finish().await.map_err(fs_error)?;
            }
            Ok(())
        })
    }
}

impl GuardedFileSystem<DavUser> for NimbusFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions, who: &'a DavUser) -> FsFuture<'a, Box<dyn DavFile>> {
        Box::pin(async move {
            let p = store_path(path)?;
            let shown = p.to_string();
            let client = &who.client;
            if !options.write && !options.append {
                let a = store::resolve(client, &p).await.map_err(fs_error)?;
                if store::is_dir(&a) {
                    return Err(FsError::Forbidden);
                }
                let layout = files::layout(client, Ino(a.ino), &shown).await.map_err(fs_error)?;
                let f: Box<dyn DavFile> = Box::new(ReadFile {
                    client: client.clone(),
                    meta: Meta::of(&a),
                    layout,
                    pos: 0,
                    cached: None,
                });
                return Ok(f);
            }
            if options.append || !options.truncate && !options.create_new {
                // Appending or writing into a file in place (a partial PUT):
                // uploads here always make a whole new file.
                return Err(FsError::NotImplemented);
            }
            let (dir, name) = store::resolve_parent(client, &p).await.map_err(fs_error)?;
            let existing = match client.lookup(Ino(dir.ino), name.as_bytes()).await {
                Ok(a) => Some(a),
                Err(e) if e.errno() == nimbus_common::Errno::ENOENT => None,
                Err(e) => return Err(fs_error(ApiError::from_lookup(&shown, e))),
            };
            match &existing {
                Some(a) if store::is_dir(a) => return Err(FsError::Forbidden),
                Some(_) if options.create_new => return Err(FsError::Exists),
                None if !options.create && !options.create_new => return Err(FsError::NotFound),
                _ => {}
            }
            if let Some(size) = options.size {
                check_quota(client, size, existing.as_ref().map(|a| a.size).unwrap_or(0)).await?;
            }
            let staged = StagedUpload::begin(client.clone(), Ino(dir.ino), name, !options.create_new, shown)
                .await
                .map_err(fs_error)?;
            let f: Box<dyn DavFile> = Box::new(WriteFile {
                staged: Some(staged),
                written: 0,
            });
            Ok(f)
        })
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        who: &'a DavUser,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        Box::pin(async move {
            let p = store_path(path)?;
            let shown = p.to_string();
            let dir = store::resolve(&who.client, &p).await.map_err(fs_error)?;
            if !store::is_dir(&dir) {
                return Err(FsError::Forbidden);
            }
            let entries = store::list(&who.client, Ino(dir.ino), &shown).await.map_err(fs_error)?;
            let items: Vec<FsResult<Box<dyn DavDirEntry>>> = entries
                .into_iter()
                .map(|(e, a)| {
                    let d: Box<dyn DavDirEntry> = Box::new(Entry {
                        name: e.name,
                        meta: Meta::of(&a),
                    });
                    Ok(d)
                })
                .collect();
            let s: FsStream<Box<dyn DavDirEntry>> = Box::pin(tokio_stream::iter(items));
            Ok(s)
        })
    }

    fn metadata<'a>(&'a self, path: &'a DavPath, who: &'a DavUser) -> FsFuture<'a, Box<dyn DavMetaData>> {
        Box::pin(async move {
            let p = store_path(path)?;
            let a = store::resolve(&who.client, &p).await.map_err(fs_error)?;
            let m: Box<dyn DavMetaData> = Box::new(Meta::of(&a));
            Ok(m)
        })
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, who: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let p = store_path(path)?;
            let (dir, name) = store::resolve_parent(&who.client, &p).await.map_err(fs_error)?;
            who.client
                .mkdir(Ino(dir.ino), name.as_bytes(), 0o755)
                .await
                .map(|_| ())
                .map_err(|e| fs_error(ApiError::from_client(&p.to_string(), e)))
        })
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, who: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let p = store_path(path)?;
            store::remove(&who.client, &p, false).await.map_err(fs_error)
        })
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, who: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let p = store_path(path)?;
            store::remove(&who.client, &p, false).await.map_err(fs_error)
        })
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, who: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let (from, to) = (store_path(from)?, store_path(to)?);
            // dav-server removes an existing target first when the client
            // allows overwriting (Overwrite: T).
            store::rename(&who.client, &from, &to, false).await.map_err(fs_error)
        })
    }

    fn get_quota<'a>(&'a self, who: &'a DavUser) -> FsFuture<'a, (u64, Option<u64>)> {
        Box::pin(async move {
            let a = who
                .client
                .whoami()
                .await
                .map_err(|e| fs_error(ApiError::from_client("whoami", e)))?;
            Ok((a.used_bytes, (a.quota_bytes > 0).then_some(a.quota_bytes)))
        })
    }
}

/// Refuses at once a PUT whose announced size cannot fit the user's quota
/// (the cluster checks every commit regardless).
async fn check_quota(client: &MetaClient, len: u64, replaced: u64) -> FsResult<()> {
    let a = client
        .whoami()
        .await
        .map_err(|e| fs_error(ApiError::from_client("whoami", e)))?;
    if a.quota_bytes > 0 && a.used_bytes.saturating_sub(replaced).saturating_add(len) > a.quota_bytes {
        return Err(FsError::InsufficientStorage);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(base64_decode("YWxpY2U6c2VjcmV0").as_deref(), Some(&b"alice:secret"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("*"), None);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic Ym9iOnA6dw=="));
        assert_eq!(basic_credentials(&h), Some(("bob".into(), "p:w".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
    }
}
