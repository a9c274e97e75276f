//! The Nimbus data server: replicated, checksummed, immutable block storage,
//! served against block tokens from the meta leader.

pub mod block_store;
pub mod heartbeat;
pub mod orphans;
pub mod scrub;
pub mod service;
