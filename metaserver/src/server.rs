//! Running one meta server: storage, Raft, the gRPC services, bootstrap and
//! clean shutdown.

use crate::config::Config;
use anyhow::Context;
use nimbus_common::tls::{Security, MAX_MESSAGE_BYTES};
use nimbus_common::token::Signer;
use nimbus_meta::commit::{Committer, Lease, ReadBarrier};
use nimbus_meta::data::{DataService, DataSettings, Secrets};
use nimbus_meta::keys::Keys;
use nimbus_meta::namespace::accounts::{self, AccountOp};
use nimbus_meta::namespace::{Caller, Command, Op, Txn};
use nimbus_meta::raft::durable::EarlyAck;
use nimbus_meta::raft::lease::Acks;
use nimbus_meta::raft::{LogStore, Network, Raft, SnapshotStats, StateMachine};
use nimbus_meta::service::auth::{self, Auth};
use nimbus_meta::service::{AccountService, AdminService, NamespaceService, NodeFacts, RaftService};
use nimbus_meta::store::{DiskStore, Store};
use nimbus_proto::account_service_server::AccountServiceServer;
use nimbus_proto::data_cluster_server::DataClusterServer;
use nimbus_proto::{admin_server::AdminServer, namespace_server::NamespaceServer, raft_server::RaftServer};
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Serves until SIGTERM or SIGINT, then shuts Raft down and flushes.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let security = match &cfg.tls {
        None => {
            tracing::warn!("serving WITHOUT TLS (--insecure): anyone on the network can read and change the namespace");
            Security::Insecure
        }
        Some((dir, name)) => {
            Security::load(dir, name).with_context(|| format!("loading TLS material {name} from {}", dir.display()))?
        }
    };
    let tls = security.is_tls();

    let keys = Arc::new(Keys::load(&cfg.master_key).with_context(|| {
        format!(
            "loading this node's master key {} (data is encrypted at rest; --master-key)",
            cfg.master_key.display()
        )
    })?);
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let db = cfg.data_dir.join("namespace.redb");
    let store: Arc<dyn Store> = Arc::new(
        DiskStore::open(&db, cfg.cache_bytes, Some(&cfg.data_dir.join("db")))
            .with_context(|| format!("opening {} (is another nimbus-meta using it?)", db.display()))?,
    );
    // A node whose state holds a key ring must have its master key, before
    // anything else runs: a wrong key would serve nothing and write nothing.
    let ring = Txn::new(store.as_ref()).keyring().context("reading the key ring")?;
    keys.observe(ring.as_ref())?;

    let raft_config = openraft::Config {
        cluster_name: "nimbus".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        // A chunk of a snapshot may take a while on 2 slow cores: the default
        // 200 ms makes catch-up of a big namespace loop forever.
        install_snapshot_timeout: 10_000,
        // Snapshots are asked for by `keep_snapshots`, which weighs the log
        // against the snapshot it would replace.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: cfg.snapshot_every.min(1000),
        snapshot_max_chunk_size: 4 << 20,
        max_payload_entries: 64,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft settings")?;

    let log_dir = cfg.data_dir.join("raft-log");
    let (log_store, recovery) =
        LogStore::open(&log_dir).with_context(|| format!("opening the Raft log in {}", log_dir.display()))?;
    if recovery.torn_bytes > 0 {
        tracing::warn!(
            bytes = recovery.torn_bytes,
            "the Raft log ended in a torn write (a crash mid-append); cut it off"
        );
    }
    // Nodes from before the log had its own files kept it in sled.
    log_store
        .import_from(store.as_ref())
        .context("moving the Raft log out of sled")?;
    let mirror = log_store.mirror();
    let appended = log_store.appended();
    let synced = log_store.synced();
    if cfg.log_sync_delay_ms > 0 {
        tracing::warn!(
            ms = cfg.log_sync_delay_ms,
            "test setting: the leader's log fdatasyncs are delayed"
        );
        log_store.delay_background_syncs(Duration::from_millis(cfg.log_sync_delay_ms));
    }
    let early_ack = log_store.early_ack();
    let snapshot_dir = cfg.data_dir.join("snapshots");
    let state_machine = StateMachine::open(store.clone(), keys.clone(), &snapshot_dir)
        .with_context(|| format!("opening the snapshots in {}", snapshot_dir.display()))?;
    let snapshot_stats = state_machine.stats();

    let acks = Arc::new(Acks::default());
    let raft = Raft::new(
        cfg.id,
        Arc::new(raft_config),
        Network::new(security.clone(), acks.clone(), synced.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;

    let mailer = match &cfg.mail {
        Some((url, from, public)) => Some(Arc::new(
            nimbus_meta::mail::Mailer::new(url, from, public).context("configuring mail (--smtp-url)")?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let committer = Committer::start(raft.clone(), synced.clone());
    tokio::spawn(follow_voters(raft.clone(), cfg.id, early_ack));
    let lease = Lease::new(cfg.id, acks, mirror, Duration::from_millis(cfg.election_timeout_min_ms));
    let barrier = ReadBarrier::start(raft.clone(), lease);
    let signer = match &cfg.token_dir {
        Some(dir) => {
            Some(Arc::new(Signer::load(dir).with_context(|| {
                format!("loading the token key from {}", dir.display())
            })?))
        }
        None => {
            tracing::warn!("no --token-dir: this node cannot hand out block tokens");
            None
        }
    };
    let auth = Arc::new(Auth::new(store.clone(), signer.clone(), barrier.clone()));
    let data = DataService::new(
        raft.clone(),
        store.clone(),
        committer.clone(),
        barrier.clone(),
        Secrets {
            signer,
            keys: keys.clone(),
        },
        DataSettings {
            dead_after: Duration::from_millis(cfg.dead_after_ms),
            heartbeat_interval: Duration::from_millis(cfg.data_heartbeat_ms),
            max_copies: cfg.max_copies as usize,
            max_copies_per_server: (cfg.max_copies as usize / 2).max(1),
            token_ttl: Duration::from_secs(600),
        },
        auth.clone(),
    );
    tokio::spawn(data.clone().run_repair());
    if let Some(addr) = cfg.metrics_listen.clone() {
        let d = data.clone();
        tokio::spawn(async move {
            if let Err(e) = nimbus_common::metrics::serve(addr, std::sync::Arc::new(move || d.metrics())).await {
                tracing::error!("metrics endpoint: {e}");
            }
        });
    }
    let router = security
        .server()
        .context("configuring TLS")?
        .add_service(
            NamespaceServer::new(
                NamespaceService::new(
                    store.clone(),
                    committer.clone(),
                    barrier.clone(),
                    auth.clone(),
                    keys.clone(),
                )
                .allow_clear_blocks(cfg.allow_clear_blocks),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(AccountServiceServer::new(
            AccountService::new(store.clone(), committer.clone(), barrier, auth).with_mailer(mailer),
        ))
        .add_service(AdminServer::new(AdminService::new(
            raft.clone(),
            store.clone(),
            security.clone(),
            keys.clone(),
            committer.clone(),
            NodeFacts {
                data_dir: cfg.data_dir.clone(),
                cache_bytes: cfg.cache_bytes,
                snapshots: snapshot_stats.clone(),
            },
        )))
        .add_service(DataClusterServer::new(data))
        .add_service(
            RaftServer::new(RaftService::new(raft.clone(), cfg.id, tls))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );

    tracing::info!(
        id = cfg.id,
        listen = %cfg.listen,
        advertise = %cfg.advertise,
        data_dir = %cfg.data_dir.display(),
        tls,
        "nimbus-meta serving"
    );
    tokio::spawn(keep_snapshots(
        raft.clone(),
        appended,
        snapshot_stats,
        cfg.snapshot_every,
    ));
    tokio::spawn(keep_keyring(
        raft.clone(),
        store.clone(),
        committer.clone(),
        keys.clone(),
    ));
    if !cfg.initial_members.is_empty() {
        tokio::spawn(bootstrap(raft.clone(), cfg.clone()));
        if let Some(password) = cfg.admin_password.clone() {
            tokio::spawn(create_first_admin(raft.clone(), store.clone(), committer, password));
        }
    }

    let result = router
        .serve_with_incoming_shutdown(Security::incoming(listener), nimbus_common::process::shutdown_signal())
        .await;
    tracing::info!("shutting down");
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    store.flush().context("final flush")?;
    result.context("gRPC server")
}

/// Commits a command of the server's own (as the superuser), with its
/// refusal or failure as text for a log line.
async fn submit_as_root(committer: &Committer, op: Op) -> Result<(), String> {
    let command = Command {
        caller: Caller::root(),
        op,
        request: None,
    };
    match committer.submit(command).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Gives a cluster without a key ring (a new one, or one from before
/// encryption at rest) its key ring: whichever node leads then submits a
/// fresh data secret wrapped under its master key; apply refuses a second.
async fn keep_keyring(raft: Raft, store: Arc<dyn Store>, committer: Committer, keys: Arc<Keys>) {
    loop {
        match Txn::new(store.as_ref()).keyring() {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => tracing::warn!("reading the key ring: {e}"),
        }
        let m = raft.metrics().borrow().clone();
        if m.current_leader == Some(m.id) {
            match keys.new_keyring() {
                Ok(ring) => match submit_as_root(&committer, Op::SetKeyring { expect: None, ring }).await {
                    Ok(()) => tracing::info!("created the cluster's key ring"),
                    Err(e) => tracing::debug!("creating the key ring: {e}"),
                },
                Err(e) => tracing::error!("creating the key ring: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps the log store told how many voters the cluster has: with one, the
/// leader's appends are fsynced before openraft hears of them (see
/// `nimbus_meta::raft::durable`); with more, after. Follows openraft's server
/// metrics, which change with the vote, role and membership only, not with
/// every commit.
async fn follow_voters(raft: Raft, id: u64, early_ack: Arc<EarlyAck>) {
    let mut metrics = raft.server_metrics();
    loop {
        let voters = {
            let m = metrics.borrow_and_update();
            if m.state == openraft::ServerState::Shutdown {
                return;
            }
            m.membership_config.membership().voter_ids().count()
        };
        early_ack.set(id, voters);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Asks openraft for a snapshot once at least `every` entries were applied
/// since the last one and the log written since is at least a quarter of
/// that snapshot's size: a snapshot rewrites the whole namespace, so with a
/// large namespace it waits for a proportionate amount of log (which keeps
/// the disk written per entry bounded), and with a small one it comes after
/// `every` entries as before.
async fn keep_snapshots(raft: Raft, appended: Arc<AtomicU64>, stats: Arc<SnapshotStats>, every: u64) {
    let mut appended_at_last = appended.load(Ordering::Relaxed);
    let mut metrics = raft.metrics();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = metrics.borrow().clone();
        if m.state == openraft::ServerState::Shutdown {
            return;
        }
        let (Some(applied), snapshot) = (m.last_applied, m.snapshot) else {
            continue;
        };
        let since = applied.index - snapshot.map_or(0, |s| s.index);
        let written = appended.load(Ordering::Relaxed) - appended_at_last;
        if since < every || written < stats.bytes.load(Ordering::Relaxed) / 4 {
            continue;
        }
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::warn!("asking for a snapshot: {e}");
            return;
        }
        appended_at_last = appended.load(Ordering::Relaxed);
        // One at a time: wait for this one (or give up on it after a while).
        let built = metrics.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= applied.index));
        if tokio::time::timeout(Duration::from_secs(600), built).await.is_err() {
            tracing::warn!(
                index = applied.index,
                "a snapshot asked for 10 minutes ago is not built"
            );
        }
    }
}

/// Initialises a new cluster from the member with the lowest id.
async fn bootstrap(raft: Raft, cfg: Config) {
    let first = cfg.initial_members.keys().next().copied();
    if first != Some(cfg.id) {
        return;
    }
    match raft.is_initialized().await {
        Ok(false) => {}
        Ok(true) => return,
        Err(e) => {
            tracing::error!("cannot tell whether the cluster is initialised: {e}");
            return;
        }
    }
    let members: BTreeMap<u64, BasicNode> = cfg
        .initial_members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(members = ?cfg.initial_members, "initialised a new cluster"),
        Err(e) => tracing::warn!("initialise: {e}"),
    }
}

/// Creates the first administrator of a new cluster: whichever initial
/// member leads while no account exists submits it (apply ignores a second).
async fn create_first_admin(raft: Raft, store: Arc<dyn Store>, committer: Committer, password: String) {
    let mut hash = None;
    loop {
        match accounts::users(&Txn::new(store.as_ref())) {
            Ok(users) if !users.is_empty() => return,
            Ok(_) => {}
            Err(e) => tracing::warn!("reading accounts: {e}"),
        }
        let leading = raft.metrics().borrow().current_leader == Some(raft.metrics().borrow().id);
        if leading {
            if hash.is_none() {
                hash = auth::hash_password(password.clone()).await.ok();
            }
            if let Some(h) = &hash {
                let op = Op::Account(AccountOp::InitAdmin {
                    name: "admin".into(),
                    hash: h.clone(),
                });
                match submit_as_root(&committer, op).await {
                    Ok(()) => {
                        tracing::info!("created the first administrator, `admin`");
                        return;
                    }
                    Err(e) => tracing::debug!("creating the first administrator: {e}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
