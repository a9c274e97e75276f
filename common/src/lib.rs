//! Types, POSIX errno mapping, configuration loading and the TLS transport
//! shared by every Nimbus process.

pub mod config;
pub mod encryption;
pub mod errno;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod tls;
pub mod token;
pub mod types;

pub use errno::Errno;
pub use types::{BlockId, Gid, Ino, NodeId, ServerId, Timestamp, Uid};
