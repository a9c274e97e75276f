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

/// gRPC metadata key of a refusal's [`Reason`].
pub const REASON_KEY: &str = "nimbus-reason";
/// gRPC metadata key naming the data server (its id) whose failure failed a
/// block write.
pub const FAILED_SERVER_KEY: &str = "nimbus-failed-server";

/// Why a server refused a request, carried beside the gRPC code in the
/// metadata (like the leader's id), so that clients act on it without
/// reading messages written for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// This meta server does not lead; [`LEADER_ID_KEY`] and
    /// [`LEADER_ADDR_KEY`] name the leader when it is known.
    NotLeader,
    /// A user's quota would be exceeded.
    Quota,
    /// The data servers have no room for another block.
    NoSpace,
    /// A data server failed the request; [`FAILED_SERVER_KEY`] names it
    /// when known.
    ServerFailed,
    /// The meta cluster has no record of the block asked for.
    UnknownBlock,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::NotLeader,
        Reason::Quota,
        Reason::NoSpace,
        Reason::ServerFailed,
        Reason::UnknownBlock,
    ];

    /// The value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotLeader => "not-leader",
            Reason::Quota => "quota",
            Reason::NoSpace => "no-space",
            Reason::ServerFailed => "server-failed",
            Reason::UnknownBlock => "unknown-block",
        }
    }

    /// The reason `status` carries, if any (and known to this version).
    pub fn of(status: &tonic::Status) -> Option<Reason> {
        let value = status.metadata().get(REASON_KEY)?.to_str().ok()?;
        Reason::ALL.into_iter().find(|r| r.as_str() == value)
    }

    /// `status`, carrying this reason.
    pub fn tag(self, mut status: tonic::Status) -> tonic::Status {
        status
            .metadata_mut()
            .insert(REASON_KEY, tonic::metadata::MetadataValue::from_static(self.as_str()));
        status
    }
}

/// `status` as a failure of data server `server` ([`Reason::ServerFailed`]).
pub fn server_failed(server: u64, status: tonic::Status) -> tonic::Status {
    let mut status = Reason::ServerFailed.tag(status);
    status
        .metadata_mut()
        .insert(FAILED_SERVER_KEY, tonic::metadata::MetadataValue::from(server));
    status
}

/// The data server `status` says failed, if it names one.
pub fn failed_server(status: &tonic::Status) -> Option<u64> {
    status.metadata().get(FAILED_SERVER_KEY)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_failed_servers_survive_the_metadata() {
        for r in Reason::ALL {
            assert_eq!(Reason::of(&r.tag(tonic::Status::internal("x"))), Some(r));
        }
        let s = server_failed(42, tonic::Status::unavailable("down"));
        assert_eq!(
            (Reason::of(&s), failed_server(&s)),
            (Some(Reason::ServerFailed), Some(42))
        );
        assert_eq!(Reason::of(&tonic::Status::internal("quota")), None);
    }
}
