//! The Nimbus metadata server: the namespace state machine, replicated with
//! openraft over sled, served over gRPC.

pub mod commit;
pub mod data;
pub mod keys;
pub mod mail;
pub mod namespace;
pub mod raft;
pub mod service;
pub mod store;
