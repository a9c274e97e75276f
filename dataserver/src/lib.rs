//! The Nimbus data server: replicated, checksummed, immutable block storage.
//!
//! Reserved for the issue "Data servers"; the crate exists so that the
//! workspace has its final shape and the meta server's TLS module and client
//! are shared with it from the start.
