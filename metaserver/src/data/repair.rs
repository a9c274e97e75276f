//! The leader's repair pass, four times a second: copies under-replicated blocks
//! from a surviving replica, retires replicas on dead and draining servers
//! once enough others exist, and moves blocks from full servers to empty ones
//! until usage is within 10%. Copies in flight are bounded, overall and per
//! server, which bounds the repair rate.

use super::{Copy, DataService, Health};
use crate::namespace::blocks::{self, BlockInfo, ServerState, DEFAULT_REPLICATION};
use crate::namespace::{Op, Txn};
use nimbus_common::{BlockId, ServerId};
use openraft::ServerState as RaftState;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the pass runs.
const PERIOD: Duration = Duration::from_millis(250);
/// How often the leader ends mount sessions whose lease ran out (their
/// locks already stopped counting; this frees their removed-but-open files).
const EXPIRE_SESSIONS_EVERY: u32 = 120;
/// A copy not reported done within this long is given up and retried.
const COPY_TIMEOUT: Duration = Duration::from_secs(60);
/// Rebalancing stops when the fullest and emptiest servers' usage (as a
/// share of capacity) differ by at most this much of the fullest's.
const BALANCE_TOLERANCE: f64 = 0.10;

impl DataService {
    /// Runs the repair pass on this node whenever it leads.
    pub async fn run_repair(self) {
        let mut ticker = tokio::time::interval(PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        loop {
            ticker.tick().await;
            ticks = ticks.wrapping_add(1);
            let leading = self.raft.metrics().borrow().state == RaftState::Leader;
            {
                let mut soft = self.soft();
                match (leading, soft.leader_since) {
                    (true, None) => soft.leader_since = Some(Instant::now()),
                    (false, Some(_)) => {
                        // What this node knew as leader goes stale from now:
                        // forget it, so that a later term starts clean.
                        soft.leader_since = None;
                        soft.live.clear();
                        soft.copies.clear();
                    }
                    _ => {}
                }
            }
            if !leading {
                continue;
            }
            if let Err(e) = self.repair_pass().await {
                tracing::warn!("repair pass: {e}");
            }
            if ticks.is_multiple_of(EXPIRE_SESSIONS_EVERY) {
                if let Err(e) = self.commit(Op::ExpireSessions).await {
                    tracing::warn!("expiring mount sessions: {e}");
                }
            }
        }
    }

    async fn repair_pass(&self) -> Result<(), String> {
        let txn = Txn::new(self.store.as_ref());
        let servers = blocks::servers(&txn).map_err(|e| e.to_string())?;
        let all = blocks::all_blocks(&txn).map_err(|e| e.to_string())?;
        let sealed = blocks::sealed_blocks(&txn).map_err(|e| e.to_string())?;
        let pending_deletes = blocks::garbage_count(&txn).map_err(|e| e.to_string())?;
        let dead_after = self.settings.dead_after;

        let mut recorded: HashMap<ServerId, (u64, u64)> = HashMap::new();
        for (_, b) in &all {
            for s in &b.replicas {
                let e = recorded.entry(*s).or_default();
                e.0 += 1;
                e.1 += b.len;
            }
        }
        let state_of = |id: ServerId| servers.iter().find(|r| r.id == id).map(|r| r.state);

        let mut retire = Vec::new();
        let mut under = 0;
        let mut by_replication = std::collections::BTreeMap::new();
        {
            let mut soft = self.soft();
            // A copy from or to a server that died will never be reported:
            // drop it now rather than at the timeout, so the block is
            // scheduled again from a live replica.
            let dead: Vec<ServerId> = soft
                .copies
                .values()
                .flat_map(|c| [c.source, c.target])
                .filter(|s| !soft.alive(*s, dead_after))
                .collect();
            soft.copies.retain(|_, c| {
                c.started.elapsed() < COPY_TIMEOUT && !dead.contains(&c.source) && !dead.contains(&c.target)
            });
            let candidates = self.candidates(&soft, &servers);
            for (id, info) in &all {
                let want = usize::from(if info.replication == 0 {
                    DEFAULT_REPLICATION
                } else {
                    info.replication
                });
                *by_replication.entry(want as u32).or_insert(0) += 1;
                let alive = |s: &ServerId| soft.alive(*s, dead_after);
                let counting: Vec<ServerId> = info
                    .replicas
                    .iter()
                    .copied()
                    .filter(|s| alive(s) && state_of(*s) == Some(ServerState::Active))
                    .collect();
                if counting.len() < want {
                    under += 1;
                    if !soft.copies.contains_key(id) {
                        let sources: Vec<ServerId> = info.replicas.iter().copied().filter(alive).collect();
                        // A server still owing the deletion of an old copy
                        // (a bad replica) must not receive the new one.
                        let owing: Vec<ServerId> = candidates
                            .iter()
                            .map(|c| c.id)
                            .filter(|s| blocks::owes_deletion(&txn, *s, *id).unwrap_or(true))
                            .collect();
                        schedule(&mut soft, &self.settings, &candidates, *id, info, &sources, &owing);
                    }
                    continue;
                }
                // Enough good copies: those on dead or draining servers go.
                for s in &info.replicas {
                    match state_of(*s) {
                        Some(ServerState::Draining) => retire.push((*id, *s, true)),
                        _ if !alive(s) => retire.push((*id, *s, false)),
                        _ => {}
                    }
                }
            }
            if under == 0 && soft.copies.is_empty() && retire.is_empty() {
                rebalance(&mut soft, &self.settings, &candidates, &all, &recorded);
            }
            soft.health = Health {
                blocks: all.len() as u64,
                clear: (all.len() as u64).saturating_sub(sealed),
                under_replicated: under,
                pending_deletes,
                by_replication,
                recorded,
            };
        }
        for (block, server, delete) in retire {
            if let Err(e) = self.commit(Op::RemoveReplica { block, server, delete }).await {
                return Err(format!("retiring replica of {block} on {server}: {e}"));
            }
        }
        Ok(())
    }
}

/// Schedules one copy of `block` from one of `sources` to a new server.
fn schedule(
    soft: &mut super::Soft,
    settings: &super::DataSettings,
    candidates: &[super::placement::Candidate],
    block: BlockId,
    info: &BlockInfo,
    sources: &[ServerId],
    avoid: &[ServerId],
) -> bool {
    if soft.copies.len() >= settings.max_copies {
        return false;
    }
    let Some(source) = sources
        .iter()
        .copied()
        .find(|s| soft.copies_involving(*s) < settings.max_copies_per_server)
    else {
        return false;
    };
    let busy: Vec<ServerId> = candidates
        .iter()
        .filter(|c| soft.copies_involving(c.id) >= settings.max_copies_per_server)
        .map(|c| c.id)
        .collect();
    let mut exclude = info.replicas.clone();
    exclude.extend(busy);
    exclude.extend_from_slice(avoid);
    let zones: Vec<String> = candidates
        .iter()
        .filter(|c| info.replicas.contains(&c.id))
        .map(|c| c.zone.clone())
        .collect();
    let Some(target) = super::placement::choose(candidates, 1, info.len, &exclude, &zones, &mut rand::rng())
        .into_iter()
        .next()
    else {
        return false;
    };
    soft.copies.insert(
        block,
        Copy {
            source,
            target: target.id,
            then_remove: None,
            started: Instant::now(),
            sent: false,
        },
    );
    true
}

/// Moves blocks from the fullest live server to the emptiest one.
fn rebalance(
    soft: &mut super::Soft,
    settings: &super::DataSettings,
    candidates: &[super::placement::Candidate],
    all: &[(BlockId, BlockInfo)],
    recorded: &HashMap<ServerId, (u64, u64)>,
) {
    let share = |id: ServerId| -> Option<f64> {
        let cap = soft.live.get(&id)?.capacity;
        (cap > 0).then(|| recorded.get(&id).map(|r| r.1).unwrap_or(0) as f64 / cap as f64)
    };
    let mut shares: Vec<(ServerId, f64)> = candidates.iter().filter_map(|c| Some((c.id, share(c.id)?))).collect();
    if shares.len() < 2 {
        return;
    }
    shares.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (emptiest, low) = shares[0];
    let (fullest, high) = shares[shares.len() - 1];
    if high <= 0.0 || (high - low) <= BALANCE_TOLERANCE * high {
        return;
    }
    let Some(target) = candidates.iter().find(|c| c.id == emptiest) else {
        return;
    };
    let mut planned = 0;
    for (id, info) in all {
        if planned >= settings.max_copies_per_server || soft.copies.len() >= settings.max_copies {
            break;
        }
        if !info.replicas.contains(&fullest) || info.replicas.contains(&emptiest) || soft.copies.contains_key(id) {
            continue;
        }
        soft.copies.insert(
            *id,
            Copy {
                source: fullest,
                target: target.id,
                then_remove: Some(fullest),
                started: Instant::now(),
                sent: false,
            },
        );
        planned += 1;
    }
}
