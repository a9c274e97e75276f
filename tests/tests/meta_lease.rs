//! Reads under the leader lease, against a leader that is paused: stopped
//! with SIGSTOP while the others elect a new leader and commit a write, the
//! old leader, once resumed, must not answer a read with the namespace from
//! before that write (its lease ran out while it was stopped).

use anyhow::Context;
use nimbus_client::MetaClient;
use nimbus_common::{Errno, Ino};
use nimbus_proto as pb;
use nimbus_proto::namespace_client::NamespaceClient;
use nimbus_tests::{MetaCluster, Options, ADMIN_PASSWORD};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// How one node answered a lookup of the name the write creates.
#[derive(Debug, PartialEq)]
enum Answer {
    Present,
    /// The namespace from before the write.
    Absent,
    /// Not the leader, unavailable, no answer in time: not a read at all.
    Refused,
}

/// Looks `name` up in the root on node `addr` only, without following a
/// redirect to the leader.
async fn lookup_on(client: &MetaClient, addr: &str, name: &[u8]) -> Answer {
    let Ok(channel) = client.channel(addr) else {
        return Answer::Refused;
    };
    let request = client.request(pb::NsRequest {
        caller: Some(pb::Caller { uid: 0, gids: vec![0] }),
        act_as_caller: true,
        op: Some(pb::ns_request::Op::Lookup(pb::Lookup {
            parent: Ino::ROOT.0,
            name: name.to_vec(),
        })),
        request_id: Vec::new(),
    });
    let mut namespace = NamespaceClient::new(channel);
    match tokio::time::timeout(5 * SECOND, namespace.call(request)).await {
        Ok(Ok(reply)) => match reply.into_inner().result {
            Some(pb::ns_reply::Result::Attr(_)) => Answer::Present,
            Some(pb::ns_reply::Result::Failure(f)) if Errno(f.errno) == Errno::ENOENT => Answer::Absent,
            _ => Answer::Refused,
        },
        _ => Answer::Refused,
    }
}

/// A process stopped with SIGSTOP, continued when this is dropped (also
/// when the test fails half-way).
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> anyhow::Result<Paused> {
        signal("-STOP", pid)?;
        Ok(Paused(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill").args([which, &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill {which} {pid} failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_resumed_from_sigstop_never_answers_from_before_a_newer_write() -> anyhow::Result<()> {
    let cluster = MetaCluster::start(Options::default())?;
    let old = cluster.wait_leader(20 * SECOND).await?;
    let old_addr = cluster.nodes[&old].addr.clone();
    let old_pid = cluster.nodes[&old].pid().context("the leader is not running")?;
    let reader = Arc::new(cluster.client()?);
    reader.getattr(Ino::ROOT).await?; // signs in

    // The leader answers reads itself, under its lease, before the pause.
    for _ in 0..50 {
        assert_eq!(lookup_on(&reader, &old_addr, b"after").await, Answer::Absent);
    }

    let paused = Paused::new(old_pid)?;
    let paused_at = Instant::now();
    let others: Vec<String> = cluster
        .nodes
        .values()
        .filter(|n| n.id != old)
        .map(|n| n.addr.clone())
        .collect();
    let writer = MetaClient::new(cluster.security()?, others.clone(), 30 * SECOND)?
        .with_password("admin", ADMIN_PASSWORD)
        .with_caller(0, vec![0]);
    writer.create(Ino::ROOT, b"after", 0o644).await?;
    println!(
        "leader {old} paused: a new leader committed the write after {} ms",
        paused_at.elapsed().as_millis()
    );
    let mut new_leader = None;
    for addr in &others {
        if let Ok(s) = writer.node_status(addr).await {
            if s.role == "leader" {
                new_leader = Some(s.id);
            }
        }
    }
    assert!(
        new_leader.is_some_and(|id| id != old),
        "no other node leads: {new_leader:?}"
    );

    // Reads begun now, after the write was acknowledged, wait in the paused
    // leader's socket and are served first thing when it resumes.
    let queued: Vec<_> = (0..8)
        .map(|_| {
            let (reader, addr) = (reader.clone(), old_addr.clone());
            tokio::spawn(async move { lookup_on(&reader, &addr, b"after").await })
        })
        .collect();
    tokio::time::sleep(SECOND / 2).await;
    drop(paused);

    let mut answers = Vec::new();
    for q in queued {
        answers.push(q.await?);
    }
    let until = Instant::now() + 3 * SECOND;
    while Instant::now() < until {
        answers.push(lookup_on(&reader, &old_addr, b"after").await);
    }
    let stale = answers.iter().filter(|a| **a == Answer::Absent).count();
    let fresh = answers.iter().filter(|a| **a == Answer::Present).count();
    println!(
        "after the resume the old leader answered {} reads: {stale} stale, {fresh} fresh, {} refused",
        answers.len(),
        answers.len() - stale - fresh
    );
    assert_eq!(
        stale,
        0,
        "the resumed old leader answered from before the write\n{}",
        cluster.log(old)
    );

    // It has noticed the new term by now.
    let status = reader.node_status(&old_addr).await?;
    assert_ne!(status.role, "leader", "node {old} still believes it leads");
    Ok(())
}
