//! `Namespace.Call`: reads after a read barrier, writes through group commit.

use super::auth::Auth;
use super::convert::{attr_to_pb, caller_from_pb, changes_from_pb, kind_from_pb, kind_to_pb, perm_from_pb};
use crate::commit::{Committer, ReadBarrier};
use crate::keys::Keys;
use crate::namespace::tables::Inline;
use crate::namespace::{self as ns, AttrChanges, Caller, Command, NsError, Op, Reply, Txn};
use crate::store::Store;
use nimbus_common::{BlockId, Errno, Ino, ServerId, Timestamp};
use nimbus_proto as pb;
use nimbus_proto::ns_reply::Result as R;
use nimbus_proto::ns_request::Op as P;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Largest readdir page a client may ask for.
const READDIR_PAGE_MAX: u32 = 4096;

/// The namespace service of one meta server.
pub struct NamespaceService {
    store: Arc<dyn Store>,
    committer: Committer,
    barrier: ReadBarrier,
    auth: Arc<Auth>,
    keys: Arc<Keys>,
    /// --allow-clear-blocks.
    allow_clear: bool,
    /// The namespace's root exists (the first commit of a cluster makes it).
    rooted: AtomicBool,
}

/// A key this node cannot produce: logged, and EIO to the caller.
fn key_failure(e: impl std::fmt::Display) -> NsError {
    tracing::error!("encryption keys: {e}");
    Errno::EIO.into()
}

impl NamespaceService {
    /// Serves reads from `store` and writes through `committer`, for the
    /// users `auth` recognises; `keys` open and seal what files keep here.
    pub fn new(
        store: Arc<dyn Store>,
        committer: Committer,
        barrier: ReadBarrier,
        auth: Arc<Auth>,
        keys: Arc<Keys>,
    ) -> Self {
        NamespaceService {
            store,
            committer,
            barrier,
            auth,
            keys,
            allow_clear: false,
            rooted: AtomicBool::new(false),
        }
    }

    /// Accepts commits of blocks stored in the clear (benchmarks).
    pub fn allow_clear_blocks(mut self, yes: bool) -> Self {
        self.allow_clear = yes;
        self
    }

    /// A layout as the client gets it: each sealed block with its key (the
    /// caller passed the access check that led here), inline contents
    /// opened.
    fn layout_reply(&self, ino: Ino, attr: Option<pb::Attr>, layout: ns::blocks::FileLayout) -> Result<R, NsError> {
        let inline_data = match layout.inline {
            None => Vec::new(),
            Some(Inline::Clear(d)) => d,
            Some(Inline::Sealed(s)) => {
                let mut plain = self.keys.open_inline(ino.0, &s.sealed).map_err(key_failure)?;
                plain.truncate(s.len.min(plain.len() as u64) as usize);
                plain
            }
        };
        let mut slots = Vec::with_capacity(layout.slots.len());
        for (slot, s) in layout.slots {
            let key = match layout.sealed.contains(&s.block) {
                true => self
                    .keys
                    .block_key(&s.block.0)
                    .map_err(key_failure)?
                    .as_bytes()
                    .to_vec(),
                false => Vec::new(),
            };
            slots.push(pb::SlotBlock {
                slot,
                block_id: s.block.0.to_vec(),
                length: s.len,
                crc32c: s.crc,
                key,
            });
        }
        Ok(R::Layout(pb::Layout {
            attr,
            size: layout.size,
            slot_size: ns::blocks::SLOT_SIZE,
            inline_data,
            slots,
        }))
    }

    /// A file commit as the log will hold it: inline contents sealed, and
    /// only blocks the client sealed.
    fn seal_commit(&self, op: Op, blocks_sealed: bool) -> Result<Op, Status> {
        if let Op::CreateFile(mut c) = op {
            let (f, sealed) = match self.seal_commit(Op::CommitFile(Box::new(c.commit)), blocks_sealed)? {
                Op::CommitSealed(f) => (f, true),
                Op::CommitFile(f) => (f, false),
                _ => return Err(Status::internal("a file commit sealed into another command")),
            };
            c.commit = *f;
            c.sealed = sealed;
            return Ok(Op::CreateFile(c));
        }
        let Op::CommitFile(mut f) = op else {
            return Ok(op);
        };
        if !blocks_sealed && self.allow_clear {
            if f.inline.is_some() {
                return Err(Status::failed_precondition(
                    "blocks in the clear and inline contents cannot be committed together",
                ));
            }
            return Ok(Op::CommitFile(f));
        }
        if !blocks_sealed && !f.slots.is_empty() {
            return Err(Status::failed_precondition(
                "this client writes blocks unencrypted, and the cluster keeps data encrypted at rest: \
                 upgrade nimbus on this machine",
            ));
        }
        if let Some(plain) = f.inline.take() {
            let sealed = self.keys.seal_inline(f.ino.0, &plain).map_err(|e| {
                tracing::error!("sealing inline contents: {e}");
                Status::unavailable(format!("this meta server cannot seal file contents yet: {e}"))
            })?;
            f.inline = Some(sealed);
        }
        Ok(Op::CommitSealed(f))
    }

    /// The identity `request` acts as: its signed-in user, or, from an
    /// administrator who asks for it, the caller it names.
    async fn caller(&self, request: &Request<pb::NsRequest>) -> Result<Caller, Status> {
        let id = self.auth.identify(request).await?;
        let req = request.get_ref();
        if !req.act_as_caller {
            return Ok(id.caller);
        }
        if !id.user.admin {
            return Err(Status::permission_denied(format!(
                "{} is not an administrator and may act only as themselves (mount without --as-local-users)",
                id.user.name
            )));
        }
        // A trusted client's local root is the file-system superuser
        // (caller_from_pb says so).
        caller_from_pb(req.caller.clone())
    }

    /// A read. With `walk` (a signed-in user's request, whose kernel may
    /// have used cached names), handing out data also checks the path.
    async fn read(&self, caller: &Caller, op: P, walk: bool) -> Result<R, Status> {
        self.barrier.wait().await?;
        // A new cluster: the first committed batch creates the root. Once
        // there it stays, so the check is skipped from then on.
        if !self.rooted.load(Ordering::Relaxed) {
            if Txn::new(self.store.as_ref()).superblock().map_err(internal)?.next_ino == 0 {
                self.committer.sync().await?;
            }
            self.rooted.store(true, Ordering::Relaxed);
        }
        let txn = Txn::new(self.store.as_ref());
        if walk {
            let ino = match &op {
                P::Access(r) => Some(r.ino),
                P::Readdir(r) => Some(r.ino),
                P::GetLayout(r) => Some(r.ino),
                _ => None,
            };
            if let Some(ino) = ino {
                let reached = match txn.inode(Ino(ino)) {
                    Ok(Some(inode)) => ns::perm::reachable(&txn, &inode, caller),
                    Ok(None) => Ok(()),
                    Err(e) => return Err(internal(e)),
                };
                match reached {
                    Ok(()) => {}
                    Err(NsError::Errno(e)) => return Ok(failure(e)),
                    Err(NsError::Store(e)) => return Err(internal(e)),
                }
            }
        }
        let outcome = match op {
            P::Lookup(r) => ns::lookup(&txn, caller, Ino(r.parent), &r.name).map(|a| R::Attr(attr_to_pb(&a))),
            // Only getattr reports replication: it is not part of the
            // namespace's Attr, whose encoding is recorded in request outcomes.
            P::Getattr(r) => ns::getattr_with_replication(&txn, Ino(r.ino)).map(|(a, replication)| {
                R::Attr(pb::Attr {
                    replication: u32::from(replication),
                    ..attr_to_pb(&a)
                })
            }),
            P::Readlink(r) => ns::readlink(&txn, Ino(r.ino)).map(R::Data),
            P::Readdir(r) => {
                let limit = r.limit.clamp(1, READDIR_PAGE_MAX) as usize;
                let page = if r.plus {
                    ns::readdir_plus(&txn, caller, Ino(r.ino), r.after, limit)
                } else {
                    ns::readdir(&txn, caller, Ino(r.ino), r.after, limit)
                        .map(|(entries, more)| (entries.into_iter().map(|e| (e, None)).collect(), more))
                };
                page.map(|(entries, more)| {
                    R::Dir(pb::DirPage {
                        entries: entries
                            .into_iter()
                            .map(|(e, attr)| pb::DirEntry {
                                name: e.name,
                                ino: e.ino.0,
                                kind: kind_to_pb(e.kind) as i32,
                                cookie: e.cookie,
                                attr: attr.as_ref().map(attr_to_pb),
                            })
                            .collect(),
                        more,
                    })
                })
            }
            P::Statfs(_) => ns::statfs(&txn, caller).map(|s| {
                R::Stats(pb::FsStats {
                    inodes: s.inodes,
                    bytes: s.bytes,
                    name_max: ns::NAME_MAX as u32,
                    quota_bytes: s.quota_bytes,
                    used_bytes: s.used_bytes,
                    quota_inodes: s.quota_inodes,
                    used_inodes: s.used_inodes,
                })
            }),
            P::Access(r) => {
                let mask = u16::try_from(r.mask & 7).unwrap_or(0);
                ns::access(&txn, caller, Ino(r.ino), mask).map(|a| R::Attr(attr_to_pb(&a)))
            }
            P::Getxattr(r) => ns::getxattr(&txn, caller, Ino(r.ino), &r.name).map(R::Data),
            P::Listxattr(r) => ns::listxattr(&txn, caller, Ino(r.ino)).map(|names| R::Names(pb::XattrNames { names })),
            P::PlanMakeNode(r) => {
                let node = make_node_from_pb(&r)?;
                ns::plan_make_node(self.store.as_ref(), Timestamp::now(), caller, &node)
                    .map(|a| R::Attr(attr_to_pb(&a)))
            }
            P::GetLayout(r) => {
                let opened = match u16::try_from(r.access & 7).unwrap_or(0) {
                    0 => ns::readable_layout(&txn, caller, Ino(r.ino)).map(|l| (None, l)),
                    mask => ns::open_layout(&txn, caller, Ino(r.ino), mask).map(|(a, l)| (Some(a), l)),
                };
                opened.and_then(|(attr, layout)| self.layout_reply(Ino(r.ino), attr.as_ref().map(attr_to_pb), layout))
            }
            _ => return Err(Status::internal("write routed as a read")),
        };
        match outcome {
            Ok(r) => Ok(r),
            Err(NsError::Errno(e)) => Ok(failure(e)),
            Err(NsError::Store(e)) => Err(internal(e)),
        }
    }

    /// The attributes of `ino` if `changes` would leave it as it is (see
    /// [`ns::setattr_changes_nothing`]), decided on state that holds every
    /// write acknowledged before this request (the read barrier): answered
    /// like a commit that changed nothing. None when that is not certain
    /// (a follower, a failing store): then the commit path decides.
    async fn unchanged_by(&self, caller: &Caller, ino: Ino, changes: &AttrChanges) -> Option<ns::Attr> {
        // A size or a time always changes something: no barrier for those.
        if !changes.owner_or_mode_only() {
            return None;
        }
        self.barrier.wait().await.ok()?;
        ns::setattr_changes_nothing(self.store.as_ref(), caller, ino, changes)
            .ok()
            .flatten()
    }

    async fn write(&self, caller: Caller, op: Op, request: Option<ns::RequestId>) -> Result<R, Status> {
        // Names are checked again in apply; checking here spares Raft the
        // obviously hopeless requests.
        let name_ok = match &op {
            Op::MakeNode(ns::MakeNode { name, .. }) | Op::Unlink { name, .. } | Op::Rmdir { name, .. } => {
                ns::validate_name(name)
            }
            Op::CreateFile(c) => ns::validate_name(&c.node.name),
            // A value too big for any inode is refused before the log
            // carries (and three disks sync) a megabyte for nothing.
            Op::SetXattr(x) if x.value.len() > ns::XATTR_VALUE_MAX => Err(Errno::E2BIG),
            Op::Rename(ns::Rename { name, new_name, .. }) => ns::validate_name(name).and(ns::validate_name(new_name)),
            Op::Link { new_name, .. } => ns::validate_name(new_name),
            _ => Ok(()),
        };
        if let Err(e) = name_ok {
            return Ok(failure(e));
        }
        if let Op::SetAttr { ino, changes } = &op {
            if let Some(attr) = self.unchanged_by(&caller, *ino, changes).await {
                return Ok(R::Attr(attr_to_pb(&attr)));
            }
        }
        Ok(match self.committer.submit(Command { caller, op, request }).await? {
            Ok(Reply::Attr(a)) => R::Attr(attr_to_pb(&a)),
            Ok(Reply::Done | Reply::Id(_) | Reply::Usage(_)) => R::Done(pb::Done {}),
            Ok(Reply::Inodes { first, count }) => R::Inodes(pb::InodeRange { first: first.0, count }),
            Ok(Reply::Conflict(held)) => R::Conflict(match held {
                Some(l) => pb::LockConflict {
                    held: true,
                    kind: u32::from(l.write),
                    start: l.start,
                    end: l.end,
                    pid: l.pid,
                },
                None => pb::LockConflict::default(),
            }),
            Err(e) => failure(e),
        })
    }
}

fn failure(e: Errno) -> R {
    R::Failure(pb::Failure {
        errno: e.0,
        detail: e.to_string(),
    })
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!("storage failure serving a request: {e}");
    Status::internal("meta server storage failure")
}

/// A wire MakeNode as the namespace takes it.
fn make_node_from_pb(r: &pb::MakeNode) -> Result<ns::MakeNode, Status> {
    Ok(ns::MakeNode {
        parent: Ino(r.parent),
        name: r.name.clone(),
        kind: kind_from_pb(r.kind)?,
        perm: perm_from_pb(r.perm)?,
        rdev: r.rdev,
        target: r.symlink_target.clone(),
        umask: r.umask.map(|m| (m & 0o777) as u16),
    })
}

/// A wire CommitWrite's contents and attributes.
fn file_commit_from_pb(r: &pb::CommitWrite) -> Result<ns::FileCommit, Status> {
    Ok(ns::FileCommit {
        ino: Ino(r.ino),
        slots: r
            .slots
            .iter()
            .map(|w| {
                Ok(ns::blocks::SlotWrite {
                    slot: w.slot,
                    block: BlockId::from_bytes(&w.block_id)
                        .ok_or_else(|| Status::invalid_argument("a block id is 16 bytes"))?,
                    len: w.length,
                    crc: w.crc32c,
                    servers: w.server_ids.iter().map(|s| ServerId(*s)).collect(),
                })
            })
            .collect::<Result<_, Status>>()?,
        size: r.size,
        inline: r.inline_data.clone(),
        attrs: r
            .attrs
            .as_ref()
            .map(|a| {
                changes_from_pb(a).map(|c| AttrChanges {
                    size: None,
                    through_writer: false,
                    ..c
                })
            })
            .transpose()?,
    })
}

/// Converts a wire write into a namespace command; None for reads.
fn write_op(op: &P) -> Result<Option<Op>, Status> {
    Ok(Some(match op {
        P::Setattr(r) => Op::SetAttr {
            ino: Ino(r.ino),
            changes: changes_from_pb(r)?,
        },
        P::MakeNode(r) => {
            if r.ino != 0 {
                return Err(Status::invalid_argument(
                    "a reserved inode number is used only by CommitWrite.create",
                ));
            }
            Op::MakeNode(make_node_from_pb(r)?)
        }
        P::Unlink(r) => Op::Unlink {
            parent: Ino(r.parent),
            name: r.name.clone(),
            keep_for: r.keep_for_session,
        },
        P::Rmdir(r) => Op::Rmdir {
            parent: Ino(r.parent),
            name: r.name.clone(),
        },
        P::Rename(r) => Op::Rename(ns::Rename {
            parent: Ino(r.parent),
            name: r.name.clone(),
            new_parent: Ino(r.new_parent),
            new_name: r.new_name.clone(),
            flags: r.flags,
            keep_for: r.keep_for_session,
        }),
        P::Link(r) => Op::Link {
            ino: Ino(r.ino),
            new_parent: Ino(r.new_parent),
            new_name: r.new_name.clone(),
        },
        P::Setxattr(r) => Op::SetXattr(ns::SetXattr {
            ino: Ino(r.ino),
            name: r.name.clone(),
            value: r.value.clone(),
            flags: r.flags,
        }),
        P::Removexattr(r) => Op::RemoveXattr {
            ino: Ino(r.ino),
            name: r.name.clone(),
        },
        P::CommitWrite(r) => {
            let commit = file_commit_from_pb(r)?;
            match &r.create {
                None => Op::CommitFile(Box::new(commit)),
                Some(m) => {
                    if m.ino == 0 || m.ino != r.ino {
                        return Err(Status::invalid_argument(
                            "CommitWrite.create names the reserved inode number the commit is for",
                        ));
                    }
                    Op::CreateFile(Box::new(ns::CreateFile {
                        node: make_node_from_pb(m)?,
                        session: m.session,
                        commit,
                        sealed: false,
                        born: Timestamp(m.born_ns),
                    }))
                }
            }
        }
        P::ReserveInodes(r) => Op::ReserveInodes {
            session: r.session,
            count: r.count,
        },
        P::SetReplication(r) => Op::SetReplication {
            ino: Ino(r.ino),
            replication: u8::try_from(r.replication).unwrap_or(u8::MAX),
        },
        P::Lock(r) => Op::Lock {
            ino: Ino(r.ino),
            request: ns::sessions::LockRequest {
                owner: ns::sessions::LockOwner {
                    session: r.session,
                    owner: r.owner,
                },
                kind: match r.kind {
                    0 => ns::sessions::LockKind::Read,
                    1 => ns::sessions::LockKind::Write,
                    2 => ns::sessions::LockKind::Unlock,
                    _ => {
                        return Err(Status::invalid_argument(
                            "lock kind is 0 (read), 1 (write) or 2 (unlock)",
                        ))
                    }
                },
                start: r.start,
                end: r.end,
                pid: r.pid,
                test: r.test,
            },
        },
        P::RenewSession(r) => Op::RenewSession { session: r.session },
        P::EndSession(r) => Op::EndSession { session: r.session },
        P::Forget(r) => Op::Forget {
            ino: Ino(r.ino),
            session: r.session,
        },
        _ => return Ok(None),
    }))
}

#[tonic::async_trait]
impl pb::namespace_server::Namespace for NamespaceService {
    async fn call(&self, request: Request<pb::NsRequest>) -> Result<Response<pb::NsReply>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let op = req
            .op
            .ok_or_else(|| Status::invalid_argument("request names no operation"))?;
        let result = match write_op(&op)? {
            Some(w) => {
                let sealed = matches!(&op, P::CommitWrite(c) if c.sealed);
                let w = self.seal_commit(w, sealed)?;
                let request = match req.request_id.len() {
                    0 => None,
                    16 => req.request_id.as_slice().try_into().ok(),
                    _ => return Err(Status::invalid_argument("a request id is 16 bytes")),
                };
                self.write(caller, w, request).await?
            }
            None => self.read(&caller, op, !req.act_as_caller).await?,
        };
        Ok(Response::new(pb::NsReply { result: Some(result) }))
    }
}
