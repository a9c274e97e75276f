//! Names in the store, as the signed-in user sees them: paths walked from
//! the root, folder listings, removal of whole trees. Shared by the JSON
//! API and WebDAV; file data lives in [`crate::files`].

use crate::error::ApiError;
use crate::files::UPLOAD_PREFIX;
use crate::paths::StorePath;
use nimbus_client::MetaClient;
use nimbus_common::Ino;
use nimbus_proto as pb;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op;
use serde::Serialize;

/// One entry of a folder, or a stat, as the API shows it.
#[derive(Serialize, Clone, Debug)]
pub struct Entry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub mtime: i64,
    /// Permission bits in octal, e.g. "644".
    pub mode: String,
}

fn kind_name(kind: i32) -> &'static str {
    match pb::FileKind::try_from(kind) {
        Ok(pb::FileKind::Regular) => "file",
        Ok(pb::FileKind::Directory) => "dir",
        Ok(pb::FileKind::Symlink) => "symlink",
        _ => "other",
    }
}

/// The entry named `name` with attributes `a`.
pub fn entry(name: &str, a: &pb::Attr) -> Entry {
    Entry {
        name: name.to_owned(),
        kind: kind_name(a.kind),
        size: a.size,
        mtime: a.mtime_ns / 1_000_000,
        mode: format!("{:o}", a.perm & 0o7777),
    }
}

/// Whether `a` is a folder.
pub fn is_dir(a: &pb::Attr) -> bool {
    a.kind == pb::FileKind::Directory as i32
}

/// Walks `path` from the root as the user: any refusal on the way is a 404.
pub async fn resolve(client: &MetaClient, path: &StorePath) -> Result<pb::Attr, ApiError> {
    let shown = path.to_string();
    let mut attr = client
        .getattr(Ino::ROOT)
        .await
        .map_err(|e| ApiError::from_lookup(&shown, e))?;
    for name in path.names() {
        attr = client
            .lookup(Ino(attr.ino), name.as_bytes())
            .await
            .map_err(|e| ApiError::from_lookup(&shown, e))?;
    }
    Ok(attr)
}

/// The folder holding `path` and its last name.
pub async fn resolve_parent<'a>(client: &MetaClient, path: &'a StorePath) -> Result<(pb::Attr, &'a str), ApiError> {
    let (parent, name) = path
        .split_last()
        .ok_or_else(|| ApiError::BadPath("the root folder cannot be changed".into()))?;
    let dir = resolve(client, &parent).await?;
    if !is_dir(&dir) {
        return Err(ApiError::NotFound(path.to_string()));
    }
    Ok((dir, name))
}

/// The entries of folder `dir` (named `shown` in errors), with their
/// attributes where the user may see them; uploads in progress and names
/// that are not UTF-8 are left out.
pub async fn list(client: &MetaClient, dir: Ino, shown: &str) -> Result<Vec<(Entry, pb::Attr)>, ApiError> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .call(Op::Readdir(pb::ReadDir {
                ino: dir.0,
                after,
                limit: 1024,
                plus: true,
            }))
            .await
            // Not allowed to read it: as if absent (see from_lookup).
            .map_err(|e| ApiError::from_lookup(shown, e))?;
        let R::Dir(page) = page else {
            return Err(ApiError::Unavailable("readdir answered oddly".into()));
        };
        for e in &page.entries {
            after = after.max(e.cookie);
            // A name written through a mount in another encoding: the API
            // could not name it back.
            let Ok(name) = std::str::from_utf8(&e.name) else {
                continue;
            };
            if name == "." || name == ".." || name.starts_with(UPLOAD_PREFIX) {
                continue;
            }
            let attr = e.attr.unwrap_or(pb::Attr {
                ino: e.ino,
                kind: e.kind,
                ..pb::Attr::default()
            });
            entries.push((entry(name, &attr), attr));
        }
        if !page.more {
            return Ok(entries);
        }
    }
}

/// Removes the empty folder `name` in `parent`.
pub async fn rmdir(client: &MetaClient, parent: Ino, name: &[u8], shown: &str) -> Result<(), ApiError> {
    client
        .call(Op::Rmdir(pb::Rmdir {
            parent: parent.0,
            name: name.to_vec(),
        }))
        .await
        .map(|_| ())
        .map_err(|e| ApiError::from_client(shown, e))
}

/// Removes everything inside folder `dir`, depth first.
pub async fn remove_contents(client: &MetaClient, dir: Ino, shown: &str) -> Result<(), ApiError> {
    let entries = client
        .readdir_all(dir)
        .await
        .map_err(|e| ApiError::from_client(shown, e))?;
    for e in entries {
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let child = format!("{shown}/{}", String::from_utf8_lossy(&e.name));
        if e.kind == pb::FileKind::Directory as i32 {
            Box::pin(remove_contents(client, Ino(e.ino), &child)).await?;
            rmdir(client, dir, &e.name, &child).await?;
        } else {
            client
                .unlink(dir, &e.name)
                .await
                .map_err(|err| ApiError::from_client(&child, err))?;
        }
    }
    Ok(())
}

/// Removes `path`: a file, an empty folder, or with `recursive` a folder
/// and everything in it.
pub async fn remove(client: &MetaClient, path: &StorePath, recursive: bool) -> Result<(), ApiError> {
    let shown = path.to_string();
    let (dir, name) = resolve_parent(client, path).await?;
    let target = client
        .lookup(Ino(dir.ino), name.as_bytes())
        .await
        .map_err(|e| ApiError::from_lookup(&shown, e))?;
    if is_dir(&target) {
        if recursive {
            remove_contents(client, Ino(target.ino), &shown).await?;
        }
        rmdir(client, Ino(dir.ino), name.as_bytes(), &shown).await
    } else {
        client
            .unlink(Ino(dir.ino), name.as_bytes())
            .await
            .map_err(|e| ApiError::from_client(&shown, e))
    }
}

/// Renames `from` to `to` (both visible to the user); with `replace` an
/// existing target is replaced, else the rename fails with 409.
pub async fn rename(client: &MetaClient, from: &StorePath, to: &StorePath, replace: bool) -> Result<(), ApiError> {
    let (src_dir, src_name) = resolve_parent(client, from).await?;
    // The source must be visible to the user before anything is said about
    // the target.
    client
        .lookup(Ino(src_dir.ino), src_name.as_bytes())
        .await
        .map_err(|e| ApiError::from_lookup(&from.to_string(), e))?;
    let (dst_dir, dst_name) = resolve_parent(client, to).await?;
    let flags = if replace { 0 } else { crate::files::RENAME_NOREPLACE };
    client
        .rename(
            Ino(src_dir.ino),
            src_name.as_bytes(),
            Ino(dst_dir.ino),
            dst_name.as_bytes(),
            flags,
        )
        .await
        .map_err(|e| ApiError::from_client(&format!("{from} -> {to}"), e))
}
