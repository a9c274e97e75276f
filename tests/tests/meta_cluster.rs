//! The metadata service as a cluster of real `nimbus-meta` processes on
//! 127.0.0.1: replication, leader failure, restart, membership change, and
//! hostile requests.

use nimbus_client::{ClientError, MetaClient};
use nimbus_common::{Errno, Ino};
use nimbus_proto as pb;
use nimbus_proto::ns_request::Op;
use nimbus_tests::{MetaCluster, Options, ADMIN_PASSWORD};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn names(entries: &[pb::DirEntry]) -> BTreeSet<Vec<u8>> {
    entries.iter().map(|e| e.name.clone()).collect()
}

/// Three nodes, 1,000 creates from 8 concurrent clients: every node ends with
/// the same namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_replicate_to_every_node() -> anyhow::Result<()> {
    let cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    let dir = cluster.client()?.mkdir(Ino::ROOT, b"d", 0o755).await?;

    let mut tasks = Vec::new();
    for c in 0..8 {
        let client = cluster.client()?;
        tasks.push(tokio::spawn(async move {
            for i in 0..125 {
                client
                    .create(Ino(dir.ino), format!("c{c}-f{i}").as_bytes(), 0o644)
                    .await?;
            }
            Ok::<_, ClientError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let listing = cluster.client()?.readdir_all(Ino(dir.ino)).await?;
    assert_eq!(listing.len(), 1000);
    let (applied, inodes) = cluster.wait_converged(20 * SECOND).await?;
    assert_eq!(inodes, 1002, "root, d and 1,000 files on every node");
    println!("3 nodes converged at log index {applied} with {inodes} inodes");
    Ok(())
}

/// `kill -9` of the leader during a stream of creates: a new leader serves
/// within 3 s, no acknowledged create is lost, none is applied twice (retries
/// carry request ids), and every unacknowledged one is wholly there or wholly
/// absent.
///
/// A follower campaigns only after openraft's leader lease (the longest
/// election timeout) plus an election timeout without a heartbeat, and a
/// first candidate with the shorter log is refused, which costs another
/// round: with the defaults (500-1000 ms) that is 1.7-2.1 s, and about one
/// run in ten 3.1 s. Election timeouts of 300-600 ms keep the same sequence
/// well inside the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_stream_loses_no_acknowledged_create() -> anyhow::Result<()> {
    let mut cluster = MetaCluster::start(Options {
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..Options::default()
    })?;
    let leader = cluster.wait_leader(20 * SECOND).await?;
    let dir = Ino(cluster.client()?.mkdir(Ino::ROOT, b"stream", 0o755).await?.ino);

    // (started, acknowledged, name) of every acknowledged create.
    let acked = Arc::new(Mutex::new(Vec::<(Instant, Instant, String)>::new()));
    let unacked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let client = cluster.client()?;
        let (acked, unacked, stop, count) = (acked.clone(), unacked.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{c}-{i}");
                i += 1;
                let started = Instant::now();
                match client.create(dir, name.as_bytes(), 0o644).await {
                    Ok(_) => acked.lock().unwrap().push((started, Instant::now(), name)),
                    // Names are unique: EEXIST would mean a retry applied twice.
                    Err(ClientError::Errno(Errno::EEXIST)) => panic!("create {name} applied twice"),
                    Err(_) => unacked.lock().unwrap().push(name),
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while count.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    cluster.kill(leader);
    // Keep writing until well after the failover.
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + 20 * SECOND;
    while acked.lock().unwrap().len() < before + 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }

    let acked = acked.lock().unwrap().clone();
    // Only creates begun after the kill show when a new leader served; one
    // committed just before it may be acknowledged just after.
    let first_after = acked
        .iter()
        .filter(|(started, _, _)| *started >= killed_at)
        .map(|(_, done, _)| *done)
        .min()
        .ok_or_else(|| anyhow::anyhow!("no create succeeded after the leader was killed"))?;
    let stall = first_after - killed_at;
    println!("leader {leader} killed: writes resumed after {} ms", stall.as_millis());
    assert!(stall < 3 * SECOND, "new leader served only after {stall:?}");

    let client = cluster.client()?;
    let listed = names(&client.readdir_all(dir).await?);
    for (_, _, name) in &acked {
        assert!(
            listed.contains(name.as_bytes()),
            "acknowledged create {name} is missing"
        );
        client.lookup(dir, name.as_bytes()).await?;
    }
    let unacked = unacked.lock().unwrap().clone();
    for name in &unacked {
        let found = client.lookup(dir, name.as_bytes()).await;
        match found {
            Ok(attr) => {
                assert!(listed.contains(name.as_bytes()), "{name} has an inode but no entry");
                assert_eq!(client.getattr(Ino(attr.ino)).await?.nlink, 1);
            }
            Err(ClientError::Errno(Errno::ENOENT)) => {
                assert!(
                    !listed.contains(name.as_bytes()),
                    "{name} is listed but cannot be looked up"
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "{} acknowledged creates all present; {} unacknowledged checked",
        acked.len(),
        unacked.len()
    );
    Ok(())
}

/// Every node stopped (SIGKILL: nothing flushed on the way out) and started
/// again: the namespace is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_the_namespace() -> anyhow::Result<()> {
    let mut cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    let client = cluster.client()?;
    let d = Ino(client.mkdir(Ino::ROOT, b"keep", 0o750).await?.ino);
    for i in 0..200 {
        client.create(d, format!("f{i}").as_bytes(), 0o600).await?;
    }
    client
        .call(Op::Setxattr(pb::SetXattr {
            ino: d.0,
            name: b"user.tag".to_vec(),
            value: b"blue".to_vec(),
            flags: 0,
        }))
        .await?;
    let before = cluster.wait_converged(20 * SECOND).await?;
    let listing = client.readdir_all(d).await?;
    drop(client);

    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.launch(id)?;
    }
    cluster.wait_leader(20 * SECOND).await?;
    let client = cluster.client()?;
    assert_eq!(client.readdir_all(d).await?, listing);
    let xattr = client
        .call(Op::Getxattr(pb::GetXattr {
            ino: d.0,
            name: b"user.tag".to_vec(),
        }))
        .await?;
    assert_eq!(xattr, pb::ns_reply::Result::Data(b"blue".to_vec()));
    let after = cluster.wait_converged(20 * SECOND).await?;
    assert_eq!(before.1, after.1, "same inode count after restart");
    Ok(())
}

/// A fourth node joins, catches up through a snapshot and becomes a voter;
/// another node is removed; writes never stop succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_joins_through_snapshot_and_another_leaves() -> anyhow::Result<()> {
    let opts = Options {
        snapshot_every: 50,
        meta_args: vec!["--cache-mib".into(), "64".into()],
        ..Options::default()
    };
    let mut cluster = MetaCluster::start(opts)?;
    cluster.wait_leader(20 * SECOND).await?;
    let client = cluster.client()?;
    let d = Ino(client.mkdir(Ino::ROOT, b"grow", 0o755).await?.ino);
    for i in 0..300 {
        client.create(d, format!("before{i}").as_bytes(), 0o644).await?;
    }

    // A writer that runs through the whole membership change.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = cluster.client()?;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client.create(d, format!("during{n}").as_bytes(), 0o644).await?;
                n += 1;
            }
            Ok::<u64, ClientError>(n)
        })
    };

    // Compact the log, so that a new node can only catch up through a snapshot.
    let admin = cluster.client()?;
    admin
        .on_leader(|ch| async move { MetaClient::admin(ch).trigger_snapshot(pb::SnapshotRequest {}).await })
        .await?;
    let deadline = Instant::now() + 20 * SECOND;
    loop {
        let leader = cluster.wait_leader(10 * SECOND).await?;
        let s = admin.node_status(&cluster.nodes[&leader].addr).await?;
        if s.purged_index.is_some_and(|p| p >= 100) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the leader did not compact its log: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let addr4 = cluster.spawn_joiner(4)?;
    let status = admin
        .on_leader(|ch| {
            let req = pb::AddMemberRequest {
                id: 4,
                addr: addr4.clone(),
            };
            async move { MetaClient::admin(ch).add_member(req).await }
        })
        .await?;
    assert!(
        status.members.iter().any(|m| m.id == 4 && m.voter),
        "node 4 is a voter: {status:?}"
    );
    let deadline = Instant::now() + 20 * SECOND;
    loop {
        let s4 = admin.node_status(&addr4).await?;
        if s4.snapshot_index.is_some() {
            // Installed from the leader's snapshot file, streamed; the status
            // reports what it took.
            assert_eq!(s4.snapshots_installed, 1, "{s4:?}");
            assert!(s4.snapshot_install_ms.is_some(), "{s4:?}");
            assert!(s4.snapshot_bytes > 0 && s4.store_bytes > s4.snapshot_bytes, "{s4:?}");
            assert!(s4.resident_bytes > 0, "{s4:?}");
            assert_eq!(s4.cache_bytes, 64 << 20, "--cache-mib reaches the store: {s4:?}");
            let snap = cluster.nodes[&4].data_dir.join("snapshots/current.snap");
            assert_eq!(std::fs::metadata(&snap)?.len(), s4.snapshot_bytes, "{}", snap.display());
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node 4 did not catch up through a snapshot: {s4:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let leader = cluster.wait_leader(10 * SECOND).await?;
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    let status = admin
        .on_leader(|ch| async move {
            MetaClient::admin(ch)
                .remove_member(pb::RemoveMemberRequest { id: victim })
                .await
        })
        .await?;
    assert!(
        !status.members.iter().any(|m| m.id == victim),
        "node {victim} removed: {status:?}"
    );
    cluster.stop(victim);
    cluster.nodes.remove(&victim);

    tokio::time::sleep(SECOND).await;
    stop.store(true, Ordering::Relaxed);
    let during = writer.await??;
    assert!(during > 0);
    let (_, inodes) = cluster.wait_converged(20 * SECOND).await?;
    assert_eq!(
        inodes,
        2 + 300 + during,
        "every write made during the change is on every node"
    );
    println!("{during} creates succeeded while node 4 joined and node {victim} left");
    Ok(())
}

/// Malformed and hostile requests get errors, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_are_refused_and_the_server_survives() -> anyhow::Result<()> {
    let cluster = MetaCluster::start(Options::default())?;
    cluster.wait_leader(20 * SECOND).await?;
    let client = cluster.client()?;
    let errno = |r: Result<pb::Attr, ClientError>| match r {
        Err(ClientError::Errno(e)) => e,
        other => panic!("expected an errno, got {other:?}"),
    };

    assert_eq!(errno(client.getattr(Ino(987_654_321)).await), Errno::ENOENT);
    assert_eq!(errno(client.create(Ino(987_654_321), b"x", 0o644).await), Errno::ENOENT);
    assert_eq!(errno(client.create(Ino::ROOT, b"a/b", 0o644).await), Errno::EINVAL);
    assert_eq!(errno(client.create(Ino::ROOT, b"nul\0", 0o644).await), Errno::EINVAL);
    assert_eq!(errno(client.create(Ino::ROOT, b"", 0o644).await), Errno::EINVAL);
    assert_eq!(
        errno(client.create(Ino::ROOT, &[b'n'; 4096], 0o644).await),
        Errno::ENAMETOOLONG
    );
    assert_eq!(
        errno(client.lookup(Ino::ROOT, &[b'n'; 4096]).await),
        Errno::ENAMETOOLONG
    );
    for (name, new_name) in [(&b"."[..], &b"x"[..]), (b"..", b"x"), (b"x", b".")] {
        match client.rename(Ino::ROOT, name, Ino::ROOT, new_name, 0).await {
            Err(ClientError::Errno(e)) => assert!(e == Errno::EBUSY || e == Errno::EINVAL, "{e}"),
            other => panic!("rename of the root accepted: {other:?}"),
        }
    }
    let d = client.mkdir(Ino::ROOT, b"d", 0o755).await?;
    match client.rename(Ino::ROOT, b"d", Ino(d.ino), b"inside", 0).await {
        Err(ClientError::Errno(Errno::EINVAL)) => {}
        other => panic!("directory moved under itself: {other:?}"),
    }
    let big = client
        .call(Op::Setxattr(pb::SetXattr {
            ino: d.ino,
            name: b"user.big".to_vec(),
            value: vec![7; 1 << 20],
            flags: 0,
        }))
        .await;
    assert!(matches!(big, Err(ClientError::Errno(Errno::E2BIG))), "{big:?}");
    // Past the gRPC message limit: refused by the transport, not the server.
    let huge = client
        .call(Op::Setxattr(pb::SetXattr {
            ino: d.ino,
            name: b"user.huge".to_vec(),
            value: vec![7; 20 << 20],
            flags: 0,
        }))
        .await;
    assert!(huge.is_err(), "a 20 MiB request was accepted");
    let bad_mode = client.make_node(Ino::ROOT, b"m", pb::FileKind::Regular, 0o177777).await;
    assert!(matches!(bad_mode, Err(ClientError::Refused(_))), "{bad_mode:?}");
    let bad_kind = client
        .call(Op::MakeNode(pb::MakeNode {
            parent: 1,
            name: b"k".to_vec(),
            kind: 99,
            ..Default::default()
        }))
        .await;
    assert!(matches!(bad_kind, Err(ClientError::Refused(_))), "{bad_kind:?}");
    // A reserved inode number is only for a create that comes with its
    // contents (CommitWrite.create), and must name the committed inode.
    let numbered = pb::MakeNode {
        parent: 1,
        name: b"n".to_vec(),
        kind: pb::FileKind::Regular as i32,
        perm: 0o644,
        ino: 1 << 40,
        ..Default::default()
    };
    let plain = client.call(Op::MakeNode(numbered.clone())).await;
    assert!(matches!(plain, Err(ClientError::Refused(_))), "{plain:?}");
    let mismatched = client
        .call(Op::CommitWrite(pb::CommitWrite {
            ino: 7,
            create: Some(numbered.clone()),
            sealed: true,
            ..Default::default()
        }))
        .await;
    assert!(matches!(mismatched, Err(ClientError::Refused(_))), "{mismatched:?}");
    let unreserved = client
        .call(Op::CommitWrite(pb::CommitWrite {
            ino: 1 << 40,
            create: Some(numbered),
            sealed: true,
            ..Default::default()
        }))
        .await;
    assert!(
        matches!(unreserved, Err(ClientError::Errno(e)) if e == Errno::ESTALE),
        "{unreserved:?}"
    );

    // Garbage to the Raft transport of every node, and messages meant for
    // another node (two nodes sharing an address).
    for node in cluster.nodes.values() {
        let ch = cluster.security()?.endpoint(&node.addr)?.connect().await?;
        let mut raft = pb::raft_client::RaftClient::new(ch);
        let garbage = pb::RaftPayload {
            data: vec![0xff; 64],
            target: node.id,
        };
        let r = raft.append_entries(garbage).await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), tonic::Code::InvalidArgument);
        let r = raft
            .vote(pb::RaftPayload {
                data: vec![],
                target: node.id,
            })
            .await;
        assert!(r.is_err());
        let misrouted = pb::RaftPayload {
            data: vec![],
            target: node.id + 100,
        };
        let r = raft.append_entries(misrouted).await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), tonic::Code::FailedPrecondition);
    }
    // An empty request: without a token, nobody; with one, no operation.
    let leader = cluster.wait_leader(20 * SECOND).await?;
    let ch = cluster
        .security()?
        .endpoint(&cluster.nodes[&leader].addr)?
        .connect()
        .await?;
    let r = pb::namespace_client::NamespaceClient::new(ch.clone())
        .call(pb::NsRequest::default())
        .await;
    assert_eq!(r.map(|_| ()).unwrap_err().code(), tonic::Code::Unauthenticated);
    let r = pb::namespace_client::NamespaceClient::new(ch)
        .call(client.request(pb::NsRequest::default()))
        .await;
    assert_eq!(r.map(|_| ()).unwrap_err().code(), tonic::Code::InvalidArgument);

    // A client with only the CA (a user's workstation) may use the namespace
    // but not the services meant for servers and operators.
    let ca_only = nimbus_common::tls::Security::load_ca(&cluster.certs)?;
    for addr in cluster.addrs() {
        let ch = ca_only.endpoint(&addr)?.connect().await?;
        let r = pb::raft_client::RaftClient::new(ch.clone())
            .vote(pb::RaftPayload {
                data: vec![],
                target: 1,
            })
            .await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), tonic::Code::PermissionDenied);
        let r = pb::admin_client::AdminClient::new(ch.clone())
            .remove_member(pb::RemoveMemberRequest { id: 1 })
            .await;
        assert_eq!(r.map(|_| ()).unwrap_err().code(), tonic::Code::PermissionDenied);
    }
    let user = MetaClient::new(ca_only, cluster.addrs(), 10 * SECOND)?.with_password("admin", ADMIN_PASSWORD);
    user.getattr(Ino::ROOT).await?;

    // Still serving, on every node.
    client.create(Ino::ROOT, b"still-alive", 0o644).await?;
    for addr in cluster.addrs() {
        client.node_status(&addr).await?;
    }
    cluster.wait_converged(20 * SECOND).await?;
    Ok(())
}

/// Reads are linearizable whichever node a client asks: a client that knows
/// only a follower sees every write acknowledged before its read began, and
/// its own writes reach the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_through_a_follower_see_every_acknowledged_write() -> anyhow::Result<()> {
    let cluster = MetaCluster::start(Options::default())?;
    let leader = cluster.wait_leader(20 * SECOND).await?;
    let follower = cluster.nodes.values().find(|n| n.id != leader).map(|n| n.addr.clone());
    let follower = follower.ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let writer = cluster.client()?;
    let reader = MetaClient::new(cluster.security()?, vec![follower.clone()], 10 * SECOND)?
        .with_password("admin", ADMIN_PASSWORD)
        .with_caller(0, vec![0]);

    let d = Ino(writer.mkdir(Ino::ROOT, b"lin", 0o755).await?.ino);
    for i in 0..100 {
        let name = format!("f{i}");
        writer.create(d, name.as_bytes(), 0o644).await?;
        // Acknowledged above, so visible to any later read, via any node.
        reader.lookup(d, name.as_bytes()).await?;
        writer
            .rename(d, name.as_bytes(), d, format!("g{i}").as_bytes(), 0)
            .await?;
        assert!(matches!(
            reader.lookup(d, name.as_bytes()).await,
            Err(ClientError::Errno(Errno::ENOENT))
        ));
    }
    // Writes sent to a follower reach the leader.
    let only_follower = MetaClient::new(cluster.security()?, vec![follower], 10 * SECOND)?
        .with_password("admin", ADMIN_PASSWORD)
        .with_caller(0, vec![0]);
    only_follower.create(d, b"via-follower", 0o644).await?;
    writer.lookup(d, b"via-follower").await?;
    assert_eq!(writer.readdir_all(d).await?.len(), 101);
    Ok(())
}

/// A chmod, chown or chgrp that would leave the inode as it is (what `tar -x`
/// and `cp -a` send for every directory) is answered by the leader without
/// a Raft entry; one that changes anything is committed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setattr_that_changes_nothing_appends_no_entry() -> anyhow::Result<()> {
    let cluster = MetaCluster::start(Options::default())?;
    let leader = cluster.wait_leader(20 * SECOND).await?;
    let client = cluster.client()?;
    let d = client.mkdir(Ino::ROOT, b"d", 0o755).await?;
    let log_index = || async {
        let s = client.node_status(&cluster.nodes[&leader].addr).await?;
        s.last_log_index
            .ok_or_else(|| anyhow::anyhow!("the leader reports no log index: {s:?}"))
    };
    let setattr = |perm: u32| {
        Op::Setattr(pb::SetAttr {
            ino: d.ino,
            perm: Some(perm),
            uid: Some(d.uid),
            gid: Some(d.gid),
            ..Default::default()
        })
    };
    let before = log_index().await?;
    for _ in 0..20 {
        match client.call(setattr(0o755)).await? {
            pb::ns_reply::Result::Attr(a) => assert_eq!((a.perm, a.uid, a.gid), (0o755, d.uid, d.gid)),
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(log_index().await?, before, "20 setattrs that change nothing");
    client.call(setattr(0o700)).await?;
    assert!(
        log_index().await? > before,
        "a chmod that changes the mode is committed"
    );
    assert_eq!(client.getattr(Ino(d.ino)).await?.perm, 0o700);
    Ok(())
}
