//! The gRPC API of Nimbus (tonic and prost code generated from `proto/`):
//! namespace operations, cluster administration and the Raft transport.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("nimbus.v1");
}

pub use v1::*;

/// gRPC metadata key naming the leader's address when a node answers
/// `FAILED_PRECONDITION` because it is not the leader.
pub const LEADER_ADDR_KEY: &str = "nimbus-leader-addr";
/// gRPC metadata key naming the leader's Raft id, beside [`LEADER_ADDR_KEY`].
pub const LEADER_ID_KEY: &str = "nimbus-leader-id";
/// gRPC metadata key of the session token a request acts under.
pub const TOKEN_KEY: &str = "nimbus-token";
