//! Reads the configuration file. The schema, its validation and the mapping to the core's
//! config live in [`skyvine_core::config`]; this is the one step that touches the disk.

use std::path::Path;

pub use skyvine_core::config::*;

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Config::parse(&text, path)
}
