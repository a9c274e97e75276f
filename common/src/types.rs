//! Identifier types: an inode number is not a user id is not a node id.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An inode number. [`Ino::ROOT`] is the root directory.
    Ino(u64)
);
id_type!(
    /// A Nimbus user id, as the file system shows it.
    Uid(u32)
);
id_type!(
    /// A Nimbus group id.
    Gid(u32)
);
id_type!(
    /// The Raft id of a meta server. Never reused.
    NodeId(u64)
);

impl Ino {
    /// The root directory of the namespace.
    pub const ROOT: Ino = Ino(1);
}

impl Uid {
    /// The file-system superuser.
    pub const ROOT: Uid = Uid(0);
}

/// An instant as nanoseconds since the Unix epoch (negative before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now. Only the Raft leader reads it; the state machine
    /// gets time inside the command so that every replica applies the same.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A block of file data: 16 random bytes chosen by the meta leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct BlockId(pub [u8; 16]);

impl BlockId {
    /// Parses the wire form; None unless exactly 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<BlockId> {
        Some(BlockId(b.try_into().ok()?))
    }

    /// A new random id.
    pub fn random() -> BlockId {
        let mut b = [0u8; 16];
        // SystemRandom only fails if the OS has no entropy source at all.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        BlockId(b)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

id_type!(
    /// A data server's id: random, chosen on its first start, never reused.
    ServerId(u64)
);
