//! Configuration files: TOML read into a struct whose keys flags may override.

use serde::de::DeserializeOwned;
use std::path::Path;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration in {path}: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
}

/// Reads a TOML file into `T`. Unknown keys are errors (serde's
/// `deny_unknown_fields` on `T`), so a typo never silently keeps a default.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source: Box::new(source),
    })
}
