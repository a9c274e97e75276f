//! Store paths as the gateway accepts them: read from the raw request URL
//! (so that an encoded slash cannot pass for a separator) or from JSON, and
//! refused with a clear message when hostile or malformed.

use crate::error::ApiError;

/// Longest name the store keeps (bytes, as Linux's NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Longest whole path accepted (bytes, as Linux's PATH_MAX).
pub const PATH_MAX: usize = 4096;

/// A validated absolute path in the store: its names, root first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePath {
    names: Vec<String>,
}

impl StorePath {
    /// The root folder.
    pub fn root() -> StorePath {
        StorePath { names: Vec::new() }
    }

    /// The names from the root down.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The parent folder and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(StorePath, &str)> {
        let (last, parent) = self.names.split_last()?;
        Some((StorePath { names: parent.to_vec() }, last.as_str()))
    }

    /// This path with `name` (already validated) appended.
    pub fn join(&self, name: &str) -> Result<StorePath, ApiError> {
        check_name(name.as_bytes())?;
        let mut names = self.names.clone();
        names.push(name.to_owned());
        Ok(StorePath { names })
    }

    /// The path from an already-decoded string such as `/home/alice/a.txt`
    /// (JSON bodies, query strings): `/` separates names; `.` and `..` are
    /// refused rather than resolved, so that no path climbs out of where it
    /// says it is.
    pub fn parse(text: &str) -> Result<StorePath, ApiError> {
        if text.len() > PATH_MAX {
            return Err(ApiError::BadPath(format!("longer than {PATH_MAX} bytes")));
        }
        let mut names = Vec::new();
        for part in text.split('/').filter(|p| !p.is_empty()) {
            check_name(part.as_bytes())?;
            names.push(part.to_owned());
        }
        Ok(StorePath { names })
    }

    /// The path from the raw (still percent-encoded) rest of a request URL:
    /// each segment is decoded on its own, and a decoded `/` (from `%2F`) is
    /// refused as a name character instead of becoming a separator.
    pub fn from_url(raw: &str) -> Result<StorePath, ApiError> {
        if raw.len() > PATH_MAX * 3 {
            return Err(ApiError::BadPath(format!("longer than {PATH_MAX} bytes")));
        }
        let mut names = Vec::new();
        for segment in raw.split('/').filter(|s| !s.is_empty()) {
            let bytes = percent_decode(segment)?;
            check_name(&bytes)?;
            let name = String::from_utf8(bytes).map_err(|_| ApiError::BadPath("a name is not valid UTF-8".into()))?;
            names.push(name);
        }
        let path = StorePath { names };
        if path.to_string().len() > PATH_MAX {
            return Err(ApiError::BadPath(format!("longer than {PATH_MAX} bytes")));
        }
        Ok(path)
    }
}

impl std::fmt::Display for StorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.names.is_empty() {
            return f.write_str("/");
        }
        for n in &self.names {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

/// Refuses names the store must never be asked for.
pub fn check_name(name: &[u8]) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::BadPath("an empty name".into()));
    }
    if name == b"." || name == b".." {
        return Err(ApiError::BadPath("`.` and `..` are not allowed in paths".into()));
    }
    if name.len() > NAME_MAX {
        return Err(ApiError::BadPath(format!("a name is longer than {NAME_MAX} bytes")));
    }
    if name.contains(&0) {
        return Err(ApiError::BadPath("a name contains a NUL byte".into()));
    }
    if name.contains(&b'/') {
        return Err(ApiError::BadPath(
            "a name contains a slash (e.g. an encoded %2F)".into(),
        ));
    }
    if name.contains(&b'\\') {
        // Windows clients would read it as a separator.
        return Err(ApiError::BadPath("a name contains a backslash".into()));
    }
    if std::str::from_utf8(name).is_err() {
        return Err(ApiError::BadPath("a name is not valid UTF-8".into()));
    }
    Ok(())
}

/// `%XX` decoding of one URL segment; a malformed escape is an error.
fn percent_decode(s: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::BadPath("a malformed %-escape".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// `name` percent-encoded for use in a URL segment.
pub fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_decode_per_segment() {
        let p = StorePath::from_url("/home/alice/a%20b.txt").map(|p| p.to_string());
        assert_eq!(p.ok().as_deref(), Some("/home/alice/a b.txt"));
        assert!(StorePath::from_url("/home//alice/").is_ok());
        assert_eq!(StorePath::from_url("").map(|p| p.names().len()).ok(), Some(0));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "/home/../etc",
            "/home/%2e%2e/etc",
            "/home/alice%2Fx",
            "/home/a%00b",
            "/home/%ff%fe",
            "/home/%zz",
            "/home/.",
            "/a\\b",
        ] {
            assert!(StorePath::from_url(bad).is_err(), "{bad} was accepted");
        }
        let long = format!("/home/{}", "x".repeat(256));
        assert!(StorePath::from_url(&long).is_err());
        assert!(StorePath::from_url(&format!("/home/{}", "x".repeat(255))).is_ok());
        assert!(StorePath::parse("/home/alice/../bob").is_err());
        assert!(StorePath::parse("/home/alice/x").is_ok());
    }

    #[test]
    fn encoding_round_trips() {
        let name = "a b/ü%?#";
        let enc = percent_encode(name);
        assert_eq!(percent_decode(&enc).ok(), Some(name.as_bytes().to_vec()));
    }
}
