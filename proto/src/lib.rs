//! The gRPC API of Nimbus (tonic and prost code generated from `proto/`):
//! namespace operations, cluster administration and the Raft transport.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("nimbus.v1");
}

pub use v1::*;
