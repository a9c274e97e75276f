//! Between the wire types of nimbus-proto and the namespace's own types.
//! Every field from the network is checked here or in the namespace; a bad
//! one is an `INVALID_ARGUMENT`, never a panic.

use crate::namespace::{Attr, AttrChanges, Caller, FileKind, TimeSet};
use nimbus_common::{Gid, Timestamp, Uid};
use nimbus_proto as pb;
use tonic::Status;

/// Most supplementary groups a caller may carry.
const MAX_GROUPS: usize = 256;

pub fn kind_to_pb(k: FileKind) -> pb::FileKind {
    match k {
        FileKind::Regular => pb::FileKind::Regular,
        FileKind::Directory => pb::FileKind::Directory,
        FileKind::Symlink => pb::FileKind::Symlink,
        FileKind::Fifo => pb::FileKind::Fifo,
        FileKind::Socket => pb::FileKind::Socket,
        FileKind::CharDevice => pb::FileKind::CharDevice,
        FileKind::BlockDevice => pb::FileKind::BlockDevice,
    }
}

pub fn kind_from_pb(k: i32) -> Result<FileKind, Status> {
    Ok(match pb::FileKind::try_from(k) {
        Ok(pb::FileKind::Regular) => FileKind::Regular,
        Ok(pb::FileKind::Directory) => FileKind::Directory,
        Ok(pb::FileKind::Symlink) => FileKind::Symlink,
        Ok(pb::FileKind::Fifo) => FileKind::Fifo,
        Ok(pb::FileKind::Socket) => FileKind::Socket,
        Ok(pb::FileKind::CharDevice) => FileKind::CharDevice,
        Ok(pb::FileKind::BlockDevice) => FileKind::BlockDevice,
        _ => return Err(Status::invalid_argument(format!("unknown file kind {k}"))),
    })
}

pub fn attr_to_pb(a: &Attr) -> pb::Attr {
    pb::Attr {
        ino: a.ino.0,
        kind: kind_to_pb(a.kind) as i32,
        perm: u32::from(a.perm),
        uid: a.uid.0,
        gid: a.gid.0,
        size: a.size,
        nlink: a.nlink,
        atime_ns: a.atime.0,
        mtime_ns: a.mtime.0,
        ctime_ns: a.ctime.0,
        rdev: a.rdev,
        // Filled in by getattr alone (see the namespace service).
        replication: 0,
    }
}

pub fn caller_from_pb(c: Option<pb::Caller>) -> Result<Caller, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("request names no caller"))?;
    if c.gids.len() > MAX_GROUPS {
        return Err(Status::invalid_argument(format!("more than {MAX_GROUPS} groups")));
    }
    Ok(Caller {
        uid: Uid(c.uid),
        gids: c.gids.into_iter().map(Gid).collect(),
        superuser: c.uid == 0,
    })
}

/// Permission bits: only 07777 means anything.
pub fn perm_from_pb(p: u32) -> Result<u16, Status> {
    if p > 0o7777 {
        return Err(Status::invalid_argument(format!("mode {p:o} has bits beyond 07777")));
    }
    Ok(p as u16)
}

fn time_from_pb(t: Option<pb::TimeSpec>) -> Option<TimeSet> {
    match t?.value? {
        pb::time_spec::Value::AtNs(ns) => Some(TimeSet::At(Timestamp(ns))),
        pb::time_spec::Value::Now(true) => Some(TimeSet::Now),
        pb::time_spec::Value::Now(false) => None,
    }
}

pub fn changes_from_pb(s: &pb::SetAttr) -> Result<AttrChanges, Status> {
    Ok(AttrChanges {
        perm: s.perm.map(perm_from_pb).transpose()?,
        uid: s.uid.map(Uid),
        gid: s.gid.map(Gid),
        size: s.size,
        atime: time_from_pb(s.atime),
        mtime: time_from_pb(s.mtime),
        through_writer: s.through_writer,
    })
}
