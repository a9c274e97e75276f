//! Stored sign-ins ("profiles"): the session token `nimbus login` got, kept
//! readable only by the local user, so that later commands and mounts act
//! as that Nimbus user. One local account may keep several, by name.
//!
//! Files live in `$NIMBUS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/nimbus`, else
//! `~/.config/nimbus`, as `profiles/NAME` (directory 0700, file 0600):
//!
//! ```text
//! user=alice
//! expires_ms=1795000000000
//! token=nimbus1.0a1b...
//! meta=10.0.0.1:7100,10.0.0.2:7100
//! ```
//!
//! `meta` (and `insecure=true` for a cluster without TLS) records which
//! cluster the sign-in belongs to, so that later commands need no flags; the
//! CA certificate the sign-in verified the cluster with is kept beside it as
//! `cas/NAME.pem`. Sign-ins to the dev cluster record neither.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// The profile used when none is named.
pub const DEFAULT: &str = "default";

/// One stored sign-in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub user: String,
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// The meta servers the sign-in was granted by (empty: not recorded).
    pub meta: Vec<String>,
    /// That cluster speaks without TLS.
    pub insecure: bool,
}

/// Why a profile could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile name {0:?}: use letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("no configuration directory: set NIMBUS_CONFIG_DIR or HOME")]
    NoDir,
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a Nimbus profile (sign in again with `nimbus login`)")]
    Malformed(String),
}

/// The directory holding profiles.
pub fn dir() -> Result<PathBuf, ProfileError> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("NIMBUS_CONFIG_DIR") {
        return Ok(d.join("profiles"));
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(d.join("nimbus").join("profiles"));
    }
    var("HOME")
        .map(|h| h.join(".config").join("nimbus").join("profiles"))
        .ok_or(ProfileError::NoDir)
}

/// Where profile `name` is stored.
pub fn path(name: &str) -> Result<PathBuf, ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(ProfileError::BadName(name.to_owned()));
    }
    Ok(dir()?.join(name))
}

/// Profile `name`, if stored.
pub fn load(name: &str) -> Result<Option<Profile>, ProfileError> {
    let p = path(name)?;
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ProfileError::Io(p.display().to_string(), e)),
    };
    parse(&text)
        .map(Some)
        .ok_or_else(|| ProfileError::Malformed(p.display().to_string()))
}

fn parse(text: &str) -> Option<Profile> {
    let (mut user, mut token, mut expires_ms) = (None, None, None);
    let (mut meta, mut insecure) = (Vec::new(), false);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("user", v)) => user = Some(v.to_owned()),
            Some(("token", v)) => token = Some(v.to_owned()),
            Some(("expires_ms", v)) => expires_ms = v.parse().ok(),
            Some(("meta", v)) => meta = v.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
            Some(("insecure", v)) => insecure = v == "true",
            _ => {}
        }
    }
    Some(Profile {
        user: user?,
        token: token?,
        expires_ms: expires_ms?,
        meta,
        insecure,
    })
}

fn format(p: &Profile) -> String {
    let mut text = format!("user={}\nexpires_ms={}\ntoken={}\n", p.user, p.expires_ms, p.token);
    if !p.meta.is_empty() {
        text.push_str(&format!("meta={}\n", p.meta.join(",")));
    }
    if p.insecure {
        text.push_str("insecure=true\n");
    }
    text
}

/// Where the CA certificate of profile `name`'s cluster is kept.
pub fn ca_path(name: &str) -> Result<PathBuf, ProfileError> {
    let p = path(name)?;
    let config = p.parent().and_then(|d| d.parent()).ok_or(ProfileError::NoDir)?;
    Ok(config.join("cas").join(format!("{name}.pem")))
}

/// Keeps `pem` as the CA certificate of profile `name`'s cluster (or
/// forgets it, with None).
pub fn save_ca(name: &str, pem: Option<&[u8]>) -> Result<(), ProfileError> {
    let p = ca_path(name)?;
    let io = |e| ProfileError::Io(p.display().to_string(), e);
    let Some(pem) = pem else {
        return match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    };
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    write_atomically(&p, pem, 0o644).map_err(io)
}

fn write_atomically(p: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = p.with_file_name(format!(".{name}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, p)
}

/// Stores profile `name`, replacing it atomically; only the local user may
/// read it.
pub fn save(name: &str, profile: &Profile) -> Result<PathBuf, ProfileError> {
    let p = path(name)?;
    let io = |e| ProfileError::Io(p.display().to_string(), e);
    let d = dir()?;
    std::fs::create_dir_all(&d).map_err(io)?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    write_atomically(&p, format(profile).as_bytes(), 0o600).map_err(io)?;
    Ok(p)
}

/// Deletes profile `name`; nothing if there is none.
pub fn remove(name: &str) -> Result<(), ProfileError> {
    let p = path(name)?;
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProfileError::Io(p.display().to_string(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_format() {
        assert!(path("../x").is_err());
        assert!(path("").is_err());
        assert!(path(".hidden").is_err());
        let mut p = Profile {
            user: "alice".into(),
            token: "nimbus1.00".into(),
            expires_ms: 42,
            ..Profile::default()
        };
        assert_eq!(parse(&format(&p)), Some(p.clone()));
        p.meta = vec!["10.0.0.1:7100".into(), "10.0.0.2:7100".into()];
        p.insecure = true;
        assert_eq!(parse(&format(&p)), Some(p));
        assert_eq!(parse("user=a\n"), None);
    }
}
