//! What the meta leader does for the data servers: registration and
//! heartbeats, block placement with signed tokens, block locations, reports
//! of bad replicas, drain, and (in [`repair`]) re-replication, garbage
//! collection and rebalancing.
//!
//! Durable facts (servers, blocks, replicas, deletions owed) live in the
//! replicated state; what changes every second (capacity, load, last
//! heartbeat, copies in progress) lives only in the leader's memory. A new
//! leader starts with none of it and waits one dead-server timeout before it
//! declares anyone dead.

pub mod placement;
mod repair;

use crate::commit::{Committer, ReadBarrier};
use crate::keys::Keys;
use crate::namespace::blocks::{self, ServerRecord, ServerState, DEFAULT_REPLICATION, MAX_REPLICATION, SLOT_SIZE};
use crate::namespace::{Caller, Command, NsError, Op, Txn};
use crate::store::Store;
use nimbus_common::token::{Access, Signer};
use nimbus_common::{BlockId, ServerId};
use nimbus_proto as pb;
use placement::Candidate;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Tunables of the data side.
#[derive(Clone, Debug)]
pub struct DataSettings {
    /// A server silent this long is dead: its replicas stop counting.
    pub dead_after: Duration,
    /// How often data servers send heartbeats.
    pub heartbeat_interval: Duration,
    /// Most block copies (repair, drain, rebalance) in flight at once.
    pub max_copies: usize,
    /// Most copies in flight to or from one server.
    pub max_copies_per_server: usize,
    /// How long block tokens stay valid.
    pub token_ttl: Duration,
}

/// What the leader last heard from a data server.
#[derive(Clone, Debug)]
struct Live {
    capacity: u64,
    used: u64,
    blocks: u64,
    load: u32,
    seen: Instant,
}

/// A block copy the leader asked for.
#[derive(Clone, Debug)]
struct Copy {
    source: ServerId,
    target: ServerId,
    /// Rebalance and drain: the replica to drop once the copy exists.
    then_remove: Option<ServerId>,
    started: Instant,
    sent: bool,
}

/// Figures of the last repair pass, for `nimbus status` and metrics.
#[derive(Clone, Debug, Default)]
struct Health {
    blocks: u64,
    /// Blocks stored in the clear (from before encryption at rest).
    clear: u64,
    under_replicated: u64,
    pending_deletes: u64,
    /// Blocks by the copies they should have.
    by_replication: std::collections::BTreeMap<u32, u64>,
    /// Blocks and bytes the state records per server.
    recorded: HashMap<ServerId, (u64, u64)>,
}

#[derive(Default)]
struct Soft {
    live: HashMap<ServerId, Live>,
    copies: HashMap<BlockId, Copy>,
    /// When this node last became leader; None while it is not.
    leader_since: Option<Instant>,
    repaired_total: u64,
    health: Health,
}

impl Soft {
    /// Whether `id` is alive as far as this leader can tell: heard from within
    /// `dead_after`, or not yet due to be (this leader is new).
    fn alive(&self, id: ServerId, dead_after: Duration) -> bool {
        match self.live.get(&id) {
            Some(l) => l.seen.elapsed() < dead_after,
            None => self.leader_since.is_some_and(|t| t.elapsed() < dead_after),
        }
    }

    fn copies_involving(&self, id: ServerId) -> usize {
        self.copies
            .values()
            .filter(|c| c.source == id || c.target == id)
            .count()
    }
}

/// What the data service signs block tokens and derives block keys with.
pub struct Secrets {
    /// None: no token key, so no block tokens from this node.
    pub signer: Option<Arc<Signer>>,
    pub keys: Arc<Keys>,
}

/// The meta leader's service for data servers and clients.
#[derive(Clone)]
pub struct DataService {
    store: Arc<dyn Store>,
    committer: Committer,
    barrier: ReadBarrier,
    raft: crate::raft::Raft,
    signer: Option<Arc<Signer>>,
    settings: DataSettings,
    soft: Arc<Mutex<Soft>>,
    /// Clients must be signed in to get block tokens; changing servers
    /// takes an administrator.
    auth: Arc<crate::service::auth::Auth>,
    /// A new block's key comes with its allocation.
    keys: Arc<Keys>,
}

fn ns_status(e: NsError) -> Status {
    match e {
        NsError::Errno(e) => Status::failed_precondition(e.to_string()),
        NsError::Store(e) => {
            tracing::error!("storage failure: {e}");
            Status::internal("meta server storage failure")
        }
    }
}

fn block_id(bytes: &[u8]) -> Result<BlockId, Status> {
    BlockId::from_bytes(bytes).ok_or_else(|| Status::invalid_argument("a block id is 16 bytes"))
}

fn state_name(r: &ServerRecord, alive: bool, recorded_blocks: u64) -> &'static str {
    match r.state {
        ServerState::Removed => "removed",
        _ if !alive => "dead",
        ServerState::Draining if recorded_blocks == 0 => "drained",
        ServerState::Draining => "draining",
        ServerState::Active => "active",
    }
}

impl DataService {
    /// The data side of a meta server; `signer` None disables allocation and
    /// location (no token key configured).
    pub fn new(
        raft: crate::raft::Raft,
        store: Arc<dyn Store>,
        committer: Committer,
        barrier: ReadBarrier,
        secrets: Secrets,
        settings: DataSettings,
        auth: Arc<crate::service::auth::Auth>,
    ) -> DataService {
        let Secrets { signer, keys } = secrets;
        DataService {
            auth,
            keys,
            store,
            committer,
            barrier,
            raft,
            signer,
            settings,
            soft: Arc::default(),
        }
    }

    fn soft(&self) -> std::sync::MutexGuard<'_, Soft> {
        self.soft.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn signer(&self) -> Result<&Signer, Status> {
        self.signer
            .as_deref()
            .ok_or_else(|| Status::failed_precondition("this meta server has no block-token key (token.key)"))
    }

    /// Commits a command the leader issues on its own behalf.
    async fn commit(&self, op: Op) -> Result<(), Status> {
        match self
            .committer
            .submit(Command {
                request: None,
                caller: Caller::root(),
                op,
            })
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }

    /// Servers that may take new replicas now. Takes the soft state already
    /// locked: the mutex is not reentrant.
    fn candidates(&self, soft: &Soft, servers: &[ServerRecord]) -> Vec<Candidate> {
        servers
            .iter()
            .filter(|r| r.state == ServerState::Active && soft.alive(r.id, self.settings.dead_after))
            .filter_map(|r| {
                let l = soft.live.get(&r.id)?;
                Some(Candidate {
                    id: r.id,
                    addr: r.addr.clone(),
                    zone: r.zone.clone(),
                    free: l.capacity.saturating_sub(l.used),
                })
            })
            .collect()
    }

    /// Whether this leader is new and some active server has not yet
    /// reported to it (within the dead-after timeout).
    ///
    /// Asked only after a barrier proved leadership: no `leader_since` then
    /// means the repair loop has yet to notice (it ticks every 250 ms), so
    /// the leader is as new as can be. Counting that as "not new" answered
    /// ENOSPC to the first allocations after a fail-over.
    fn still_hearing_from(&self, servers: &[ServerRecord]) -> bool {
        let soft = self.soft();
        soft.leader_since.is_none_or(|t| t.elapsed() < self.settings.dead_after)
            && servers
                .iter()
                .any(|r| r.state == ServerState::Active && !soft.live.contains_key(&r.id))
    }

    fn servers(&self) -> Result<Vec<ServerRecord>, Status> {
        blocks::servers(&Txn::new(self.store.as_ref())).map_err(ns_status)
    }
}

fn valid_addr(addr: &str) -> bool {
    matches!(addr.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
}

#[tonic::async_trait]
impl pb::data_cluster_server::DataCluster for DataService {
    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        self.barrier.wait().await?;
        let r = request.into_inner();
        if r.server_id == 0 || !valid_addr(&r.addr) || r.zone.len() > 64 {
            return Err(Status::invalid_argument(
                "heartbeat needs a server id, a host:port and a zone of at most 64 bytes",
            ));
        }
        let id = ServerId(r.server_id);
        let known = Txn::new(self.store.as_ref())
            .server(id)
            .map_err(|e| ns_status(e.into()))?;
        match known {
            Some(k) if k.state == ServerState::Removed => {
                return Err(Status::permission_denied(format!(
                    "data server {id} was removed from the cluster"
                )))
            }
            Some(k) if k.addr == r.addr && k.zone == r.zone => {}
            _ => {
                self.commit(Op::RegisterServer {
                    id,
                    addr: r.addr.clone(),
                    zone: r.zone.clone(),
                })
                .await?;
                tracing::info!(server = %id, addr = %r.addr, zone = %r.zone, "data server registered");
            }
        }
        let deleted: Vec<BlockId> = r.deleted.iter().filter_map(|b| BlockId::from_bytes(b)).collect();
        if !deleted.is_empty() {
            self.commit(Op::GarbageDone {
                server: id,
                blocks: deleted,
            })
            .await?;
        }
        let mut done = Vec::new();
        {
            let mut soft = self.soft();
            // The barrier above proved leadership; the repair pass may not
            // have noticed yet.
            soft.leader_since.get_or_insert_with(Instant::now);
            for b in r.replicated.iter().filter_map(|b| BlockId::from_bytes(b)) {
                if let Some(c) = soft.copies.get(&b).filter(|c| c.target == id).cloned() {
                    soft.copies.remove(&b);
                    soft.repaired_total += 1;
                    done.push((b, c.then_remove));
                }
            }
            for b in r.replicate_failed.iter().filter_map(|b| BlockId::from_bytes(b)) {
                if soft.copies.get(&b).is_some_and(|c| c.target == id) {
                    soft.copies.remove(&b);
                }
            }
            soft.live.insert(
                id,
                Live {
                    capacity: r.capacity,
                    used: r.used,
                    blocks: r.blocks,
                    load: r.load,
                    seen: Instant::now(),
                },
            );
        }
        for (block, then_remove) in done {
            self.commit(Op::AddReplica { block, server: id }).await?;
            if let Some(old) = then_remove {
                self.commit(Op::RemoveReplica {
                    block,
                    server: old,
                    delete: true,
                })
                .await?;
            }
        }

        let delete = blocks::garbage(&Txn::new(self.store.as_ref()), id, 512).map_err(ns_status)?;
        let servers = self.servers()?;
        let addr_of = |s: ServerId| servers.iter().find(|r| r.id == s).map(|r| r.addr.clone());
        let mut replicate = Vec::new();
        if let Some(signer) = self.signer.as_deref() {
            let mut soft = self.soft();
            for (block, c) in soft.copies.iter_mut().filter(|(_, c)| c.target == id && !c.sent) {
                let Some(source) = addr_of(c.source) else { continue };
                c.sent = true;
                replicate.push(pb::ReplicateTask {
                    block_id: block.0.to_vec(),
                    source,
                    read_token: signer.sign(*block, Access::Read, self.settings.token_ttl.as_millis() as u64),
                });
            }
        }
        Ok(Response::new(pb::HeartbeatReply {
            delete: delete.iter().map(|b| b.0.to_vec()).collect(),
            replicate,
            interval_ms: self.settings.heartbeat_interval.as_millis() as u32,
        }))
    }

    async fn allocate(&self, request: Request<pb::AllocateRequest>) -> Result<Response<pb::Allocation>, Status> {
        self.barrier.wait().await?;
        self.auth.identify(&request).await?;
        let r = request.into_inner();
        let signer = self.signer()?;
        let inherited = match r.ino {
            0 => 0,
            ino => Txn::new(self.store.as_ref())
                .inode(nimbus_common::Ino(ino))
                .map_err(|e| ns_status(e.into()))?
                .map(|i| i.replication)
                .unwrap_or(0),
        };
        let replication = match r.replication {
            0 if inherited > 0 => inherited,
            0 => DEFAULT_REPLICATION,
            n if n <= u32::from(MAX_REPLICATION) => n as u8,
            n => {
                return Err(Status::invalid_argument(format!(
                    "at most {MAX_REPLICATION} replicas, not {n}"
                )))
            }
        };
        // A sealed block is a little longer than the slot it holds.
        let max = nimbus_common::encryption::sealed_len(SLOT_SIZE);
        if r.length > max {
            return Err(Status::invalid_argument(format!("blocks are at most {max} bytes")));
        }
        let exclude: Vec<ServerId> = r.exclude.iter().map(|s| ServerId(*s)).collect();
        let servers = self.servers()?;
        let candidates = self.candidates(&self.soft(), &servers);
        let picked = placement::choose(
            &candidates,
            usize::from(replication),
            r.length,
            &exclude,
            &[],
            &mut rand::rng(),
        );
        if picked.len() < usize::from(replication) {
            if self.still_hearing_from(&servers) {
                // A new leader knows no server's free space until each
                // heartbeats (every second): not full, just not known yet.
                return Err(Status::unavailable(
                    "this meta leader is new and still waiting for data server heartbeats",
                ));
            }
            return Err(pb::Reason::NoSpace.tag(Status::resource_exhausted(format!(
                "no space: {replication} replicas of {} bytes wanted, {} data servers can take one (ENOSPC)",
                r.length,
                picked.len()
            ))));
        }
        let id = BlockId::random();
        // Nothing is written without a key: until the cluster's key ring is
        // set up (a moment after a new cluster elects its first leader), or
        // on a node that cannot unwrap it, the client waits or goes elsewhere.
        let key = self
            .keys
            .block_key(&id.0)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::Allocation {
            key: key.as_bytes().to_vec(),
            block_id: id.0.to_vec(),
            replicas: picked.iter().map(|c| c.addr.clone()).collect(),
            server_ids: picked.iter().map(|c| c.id.0).collect(),
            write_token: signer.sign(id, Access::Write, self.settings.token_ttl.as_millis() as u64),
        }))
    }

    async fn locate(&self, request: Request<pb::LocateRequest>) -> Result<Response<pb::Location>, Status> {
        self.barrier.wait().await?;
        self.auth.identify(&request).await?;
        let id = block_id(&request.into_inner().block_id)?;
        let signer = self.signer()?;
        let info = Txn::new(self.store.as_ref())
            .block(id)
            .map_err(|e| ns_status(e.into()))?
            .ok_or_else(|| pb::Reason::UnknownBlock.tag(Status::not_found(format!("block {id} is not recorded"))))?;
        let servers = self.servers()?;
        let mut replicas: Vec<(bool, ServerId, String)> = {
            let soft = self.soft();
            info.replicas
                .iter()
                .filter_map(|s| servers.iter().find(|r| r.id == *s))
                .map(|r| (soft.alive(r.id, self.settings.dead_after), r.id, r.addr.clone()))
                .collect()
        };
        // Live replicas first; among them, no preference.
        replicas.sort_by_key(|(alive, _, _)| !alive);
        Ok(Response::new(pb::Location {
            block_id: id.0.to_vec(),
            replicas: replicas.iter().map(|r| r.2.clone()).collect(),
            server_ids: replicas.iter().map(|r| r.1 .0).collect(),
            read_token: signer.sign(id, Access::Read, self.settings.token_ttl.as_millis() as u64),
            length: info.len,
        }))
    }

    async fn report_bad_replica(&self, request: Request<pb::BadReplicaReport>) -> Result<Response<pb::Empty>, Status> {
        self.barrier.wait().await?;
        let r = request.into_inner();
        let id = block_id(&r.block_id)?;
        let server = ServerId(r.server_id);
        let info = Txn::new(self.store.as_ref())
            .block(id)
            .map_err(|e| ns_status(e.into()))?;
        let Some(info) = info else {
            return Ok(Response::new(pb::Empty {}));
        };
        tracing::warn!(block = %id, %server, detail = %r.detail, "bad replica reported");
        // The last copy stays recorded: a damaged block may still be partly
        // readable, and forgetting it would not bring it back.
        if info.replicas.contains(&server) && info.replicas.len() > 1 {
            self.commit(Op::RemoveReplica {
                block: id,
                server,
                delete: true,
            })
            .await?;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn health(&self, _: Request<pb::ListServersRequest>) -> Result<Response<pb::DataHealth>, Status> {
        self.barrier.wait().await?;
        let servers = self.servers()?;
        let soft = self.soft();
        let list = servers
            .iter()
            .map(|r| {
                let live = soft.live.get(&r.id);
                let (recorded, _) = soft.health.recorded.get(&r.id).copied().unwrap_or_default();
                let alive = soft.alive(r.id, self.settings.dead_after);
                pb::ServerInfo {
                    id: r.id.0,
                    addr: r.addr.clone(),
                    zone: r.zone.clone(),
                    state: state_name(r, alive, recorded).into(),
                    capacity: live.map(|l| l.capacity).unwrap_or(0),
                    used: live.map(|l| l.used).unwrap_or(0),
                    blocks: live.map(|l| l.blocks).unwrap_or(0),
                    load: live.map(|l| l.load).unwrap_or(0),
                    last_seen_ms: live.map(|l| l.seen.elapsed().as_millis() as u64).unwrap_or(u64::MAX),
                    recorded_blocks: recorded,
                }
            })
            .collect();
        Ok(Response::new(pb::DataHealth {
            servers: list,
            blocks: soft.health.blocks,
            under_replicated: soft.health.under_replicated,
            repairs_in_flight: soft.copies.len() as u64,
            repaired_total: soft.repaired_total,
            pending_deletes: soft.health.pending_deletes,
            clear_blocks: soft.health.clear,
            blocks_by_replication: soft.health.by_replication.clone().into_iter().collect(),
        }))
    }

    async fn inventory(&self, request: Request<pb::InventoryRequest>) -> Result<Response<pb::InventoryReply>, Status> {
        self.barrier.wait().await?;
        let r = request.into_inner();
        if r.blocks.len() > 10_000 {
            return Err(Status::invalid_argument("at most 10,000 blocks per inventory message"));
        }
        let server = ServerId(r.server_id);
        let txn = Txn::new(self.store.as_ref());
        let mut orphans = Vec::new();
        for raw in &r.blocks {
            let id = block_id(raw)?;
            let recorded = txn
                .block(id)
                .map_err(|e| ns_status(e.into()))?
                .is_some_and(|b| b.replicas.contains(&server));
            let arriving = self.soft().copies.get(&id).is_some_and(|c| c.target == server);
            if !recorded && !arriving {
                orphans.push(raw.clone());
            }
        }
        Ok(Response::new(pb::InventoryReply { orphans }))
    }

    async fn set_server_state(&self, request: Request<pb::ServerStateRequest>) -> Result<Response<pb::Empty>, Status> {
        self.barrier.wait().await?;
        let who = self.auth.identify(&request).await?;
        if !who.user.admin {
            return Err(Status::permission_denied(format!(
                "only an administrator may change data servers, and {} is not one",
                who.user.name
            )));
        }
        let r = request.into_inner();
        let id = ServerId(r.server_id);
        let state = match r.state.as_str() {
            "active" => ServerState::Active,
            "draining" => ServerState::Draining,
            "removed" => ServerState::Removed,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown state {other:?} (active, draining, removed)"
                )))
            }
        };
        if state == ServerState::Removed {
            let all = blocks::all_blocks(&Txn::new(self.store.as_ref())).map_err(ns_status)?;
            let held = all.iter().filter(|(_, b)| b.replicas.contains(&id)).count();
            if held > 0 {
                return Err(Status::failed_precondition(format!(
                    "data server {id} still holds {held} block replicas: drain it first"
                )));
            }
        }
        self.commit(Op::SetServerState { id, state }).await?;
        tracing::info!(server = %id, state = %r.state, "data server state changed");
        Ok(Response::new(pb::Empty {}))
    }
}

impl DataService {
    /// This node's metrics in the Prometheus text format. Data figures are
    /// the leader's; followers report zeros for them.
    pub fn metrics(&self) -> String {
        use nimbus_common::metrics::Page;
        let m = self.raft.metrics().borrow().clone();
        let leader = matches!(m.state, openraft::ServerState::Leader);
        let mut page = Page::default();
        page.metric(
            "nimbus_meta_is_leader",
            "gauge",
            "1 on the Raft leader",
            &[("", f64::from(u8::from(leader)))],
        )
        .metric(
            "nimbus_meta_term",
            "gauge",
            "current Raft term",
            &[("", m.current_term as f64)],
        )
        .metric(
            "nimbus_meta_last_applied",
            "gauge",
            "index of the last applied log entry",
            &[("", m.last_applied.map(|l| l.index as f64).unwrap_or(0.0))],
        );
        let soft = self.soft();
        let h = &soft.health;
        let states = ["active", "draining", "drained", "dead", "removed"];
        let servers = self.servers().unwrap_or_default();
        let mut by_state: Vec<(String, f64)> = states.iter().map(|s| (format!("state=\"{s}\""), 0.0)).collect();
        for r in &servers {
            let recorded = h.recorded.get(&r.id).map(|r| r.0).unwrap_or(0);
            let name = state_name(r, soft.alive(r.id, self.settings.dead_after), recorded);
            if let Some(e) = by_state.iter_mut().find(|(l, _)| l.contains(&format!("\"{name}\""))) {
                e.1 += 1.0;
            }
        }
        let by_state: Vec<(&str, f64)> = if leader {
            by_state.iter().map(|(l, v)| (l.as_str(), *v)).collect()
        } else {
            Vec::new()
        };
        page.metric("nimbus_blocks", "gauge", "blocks recorded", &[("", h.blocks as f64)])
            .metric(
                "nimbus_blocks_under_replicated",
                "gauge",
                "blocks with fewer live replicas on active servers than wanted",
                &[("", h.under_replicated as f64)],
            )
            .metric(
                "nimbus_block_copies_in_flight",
                "gauge",
                "repair, drain and rebalance copies under way",
                &[("", soft.copies.len() as f64)],
            )
            .metric(
                "nimbus_block_copies_total",
                "counter",
                "copies completed since this node became leader",
                &[("", soft.repaired_total as f64)],
            )
            .metric(
                "nimbus_block_deletes_pending",
                "gauge",
                "replicas data servers still have to delete",
                &[("", h.pending_deletes as f64)],
            )
            .metric("nimbus_data_servers", "gauge", "data servers by state", &by_state);
        page.finish()
    }
}
