//! Namespace commands by path, resolved one lookup per component.

use anyhow::{bail, Context};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::Ino;
use nimbus_proto as pb;
use nimbus_proto::ns_request::Op;

/// Splits an absolute path into its components.
fn components(path: &str) -> anyhow::Result<Vec<&str>> {
    if !path.starts_with('/') {
        bail!("{path:?}: paths in the store are absolute (start with /)");
    }
    Ok(path.split('/').filter(|c| !c.is_empty() && *c != ".").collect())
}

/// The inode at `path`.
pub async fn resolve(client: &MetaClient, path: &str) -> anyhow::Result<pb::Attr> {
    let mut attr = client.getattr(Ino::ROOT).await?;
    for c in components(path)? {
        attr = client
            .lookup(Ino(attr.ino), c.as_bytes())
            .await
            .with_context(|| format!("{path}: {c}"))?;
    }
    Ok(attr)
}

/// The parent directory's inode and the last name of `path`.
async fn parent_of<'p>(client: &MetaClient, path: &'p str) -> anyhow::Result<(Ino, &'p str)> {
    let parts = components(path)?;
    let Some((last, dirs)) = parts.split_last() else {
        bail!("{path:?} names the root directory");
    };
    let mut ino = Ino::ROOT;
    for c in dirs {
        ino = Ino(client
            .lookup(ino, c.as_bytes())
            .await
            .with_context(|| format!("{path}: {c}"))?
            .ino);
    }
    Ok((ino, *last))
}

fn kind_char(kind: i32) -> char {
    match pb::FileKind::try_from(kind) {
        Ok(pb::FileKind::Directory) => 'd',
        Ok(pb::FileKind::Symlink) => 'l',
        Ok(pb::FileKind::Fifo) => 'p',
        Ok(pb::FileKind::Socket) => 's',
        Ok(pb::FileKind::CharDevice) => 'c',
        Ok(pb::FileKind::BlockDevice) => 'b',
        _ => '-',
    }
}

fn mode_string(a: &pb::Attr) -> String {
    let mut s = String::from(kind_char(a.kind));
    for shift in [6, 3, 0] {
        let bits = (a.perm >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub async fn ls(client: &MetaClient, path: &str) -> anyhow::Result<()> {
    let dir = resolve(client, path).await?;
    for e in client.readdir_all(Ino(dir.ino)).await? {
        let a = client.getattr(Ino(e.ino)).await?;
        println!(
            "{} {:>3} {:>6} {:>6} {:>12} {}",
            mode_string(&a),
            a.nlink,
            a.uid,
            a.gid,
            a.size,
            String::from_utf8_lossy(&e.name)
        );
    }
    Ok(())
}

pub async fn stat(client: &MetaClient, path: &str) -> anyhow::Result<()> {
    let a = resolve(client, path).await?;
    // Lookups do not carry the replication setting; getattr does.
    let a = client.getattr(Ino(a.ino)).await.with_context(|| path.to_owned())?;
    println!(
        "  path: {path}\n inode: {}\n  mode: {} ({:04o})\n links: {}\n   uid: {}   gid: {}\n  size: {}\n  replication: {}",
        a.ino,
        mode_string(&a),
        a.perm,
        a.nlink,
        a.uid,
        a.gid,
        a.size,
        crate::replication::describe(a.replication)
    );
    Ok(())
}

pub async fn mkdir(client: &MetaClient, path: &str, mode: u32) -> anyhow::Result<()> {
    let (parent, name) = parent_of(client, path).await?;
    client
        .mkdir(parent, name.as_bytes(), mode)
        .await
        .with_context(|| path.to_owned())?;
    Ok(())
}

pub async fn touch(client: &MetaClient, path: &str, mode: u32) -> anyhow::Result<()> {
    let (parent, name) = parent_of(client, path).await?;
    client
        .create(parent, name.as_bytes(), mode)
        .await
        .with_context(|| path.to_owned())?;
    Ok(())
}

pub async fn rm(client: &MetaClient, path: &str, dir: bool) -> anyhow::Result<()> {
    let (parent, name) = parent_of(client, path).await?;
    let op = if dir {
        Op::Rmdir(pb::Rmdir {
            parent: parent.0,
            name: name.as_bytes().to_vec(),
        })
    } else {
        Op::Unlink(pb::Unlink {
            parent: parent.0,
            name: name.as_bytes().to_vec(),
            keep_for_session: None,
        })
    };
    client.call(op).await.with_context(|| path.to_owned())?;
    Ok(())
}

pub async fn mv(client: &MetaClient, from: &str, to: &str) -> anyhow::Result<()> {
    let (p1, n1) = parent_of(client, from).await?;
    let (p2, n2) = parent_of(client, to).await?;
    client
        .rename(p1, n1.as_bytes(), p2, n2.as_bytes(), 0)
        .await
        .with_context(|| format!("{from} -> {to}"))?;
    Ok(())
}

pub async fn status(client: &MetaClient, json: bool) -> anyhow::Result<()> {
    // Any member answers Status; its view names the leader.
    let leader = client
        .on_leader(|ch| async move { MetaClient::admin(ch).status(pb::StatusRequest {}).await })
        .await;
    let s = match leader {
        Ok(s) => s,
        Err(ClientError::Unavailable(e)) => bail!("no meta leader reachable: {e}"),
        Err(e) => return Err(e.into()),
    };
    let mut nodes = Vec::new();
    for m in &s.members {
        nodes.push((m.clone(), client.node_status(&m.addr).await.ok()));
    }
    let data = client.data_health().await.ok();
    let fs = client.call(Op::Statfs(pb::StatFs {})).await?;
    let (inodes, bytes) = match fs {
        pb::ns_reply::Result::Stats(st) => (st.inodes, st.bytes),
        _ => (0, 0),
    };
    if json {
        let members: Vec<_> = nodes
            .iter()
            .map(|(m, st)| {
                serde_json::json!({
                    "id": m.id, "addr": m.addr, "voter": m.voter,
                    "role": st.as_ref().map(|s| s.role.clone()),
                    "master_key": st.as_ref().map(|s| crate::key::short(&s.master_key)),
                    "key_ring": st.as_ref().map(|s| crate::key::short(&s.cluster_key)),
                    "last_applied": st.as_ref().and_then(|s| s.last_applied),
                    "store_bytes": st.as_ref().map(|s| s.store_bytes),
                    "resident_bytes": st.as_ref().map(|s| s.resident_bytes),
                    "cache_bytes": st.as_ref().map(|s| s.cache_bytes),
                    "snapshot_bytes": st.as_ref().map(|s| s.snapshot_bytes),
                    "snapshot_build_ms": st.as_ref().and_then(|s| s.snapshot_build_ms),
                    "snapshot_install_ms": st.as_ref().and_then(|s| s.snapshot_install_ms),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "leader": { "id": s.leader_id, "addr": s.leader_addr, "term": s.term },
            "meta": members,
            "namespace": { "inodes": inodes, "bytes": bytes },
            "data": data.as_ref().map(|d| serde_json::json!({
                "servers": d.servers.iter().map(|s| serde_json::json!({
                    "id": s.id, "addr": s.addr, "zone": s.zone, "state": s.state,
                    "capacity": s.capacity, "used": s.used, "blocks": s.recorded_blocks,
                    "load": s.load, "last_seen_ms": s.last_seen_ms,
                })).collect::<Vec<_>>(),
                "blocks": d.blocks,
                "under_replicated": d.under_replicated,
                "copies_in_flight": d.repairs_in_flight,
                "copies_done": d.repaired_total,
                "deletes_pending": d.pending_deletes,
                "clear_blocks": d.clear_blocks,
                "blocks_by_replication": d.blocks_by_replication.iter()
                    .map(|(copies, n)| (copies.to_string(), *n))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    match s.leader_id {
        Some(id) => println!("meta leader: node {id} at {} (term {})", s.leader_addr, s.term),
        None => println!("meta leader: none (election in progress, term {})", s.term),
    }
    println!(
        "{:>4} {:<22} {:<8} {:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "VOTER", "ROLE", "APPLIED", "STORE", "SNAPSHOT", "MEMORY", "CACHE"
    );
    for (m, st) in &nodes {
        let role = st.as_ref().map(|s| s.role.as_str()).unwrap_or("unreachable");
        let applied = st
            .as_ref()
            .and_then(|s| s.last_applied)
            .map(|a| a.to_string())
            .unwrap_or("-".into());
        let size = |f: fn(&pb::NodeStatus) -> u64| st.as_ref().map(|s| human(f(s))).unwrap_or("-".into());
        println!(
            "{:>4} {:<22} {:<8} {:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            m.id,
            m.addr,
            if m.voter { "yes" } else { "learner" },
            role,
            applied,
            size(|s| s.store_bytes),
            size(|s| s.snapshot_bytes),
            size(|s| s.resident_bytes),
            size(|s| s.cache_bytes),
        );
    }
    println!("namespace: {inodes} inodes, {bytes} bytes in files");
    let ring = nodes
        .iter()
        .find_map(|(_, st)| st.as_ref().map(|s| s.cluster_key.clone()));
    match ring {
        Some(k) if !k.is_empty() => println!(
            "encryption at rest: on; data secret wrapped under master key {} (`nimbus key status`)",
            crate::key::short(&k)
        ),
        _ => println!("encryption at rest: key ring not set up yet (a new cluster's leader makes it)"),
    }
    match data {
        None => println!("data servers: unknown (no answer from the leader)"),
        Some(d) => print_data(&d),
    }
    Ok(())
}

pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn print_data(d: &pb::DataHealth) {
    println!(
        "\ndata: {} blocks, {} under-replicated, {} copies in flight ({} done), {} deletions pending",
        d.blocks, d.under_replicated, d.repairs_in_flight, d.repaired_total, d.pending_deletes
    );
    if !d.blocks_by_replication.is_empty() {
        let mut levels: Vec<(u32, u64)> = d.blocks_by_replication.iter().map(|(c, n)| (*c, *n)).collect();
        levels.sort();
        let levels: Vec<String> = levels
            .iter()
            .map(|(copies, n)| format!("{n} with {}", crate::replication::describe(*copies)))
            .collect();
        println!("blocks by replication: {}", levels.join(", "));
    }
    if d.clear_blocks > 0 {
        println!(
            "{} blocks are stored in the clear (written before encryption at rest); they stay readable. \
             Copying a file (cp f f.new && mv f.new f) rewrites its blocks encrypted.",
            d.clear_blocks
        );
    }
    println!(
        "{:>20} {:<22} {:<8} {:<9} {:>10} {:>10} {:>8} {:>6}",
        "SERVER", "ADDRESS", "ZONE", "STATE", "USED", "CAPACITY", "BLOCKS", "LOAD"
    );
    for s in &d.servers {
        println!(
            "{:>20} {:<22} {:<8} {:<9} {:>10} {:>10} {:>8} {:>6}",
            s.id,
            s.addr,
            s.zone,
            s.state,
            human(s.used),
            human(s.capacity),
            s.recorded_blocks,
            s.load
        );
    }
}

/// Drains, re-activates or removes a data server.
pub async fn server_state(client: &MetaClient, id: u64, state: &str) -> anyhow::Result<()> {
    client.set_server_state(id, state).await?;
    match state {
        "draining" => println!("server {id} is draining: its blocks move elsewhere (watch `nimbus status`)"),
        "removed" => println!("server {id} removed; stop its process"),
        _ => println!("server {id} is {state}"),
    }
    Ok(())
}

/// Waits until draining server `id` holds no blocks and no block lacks a
/// copy, printing the progress whenever it changes.
pub async fn wait_drained(client: &MetaClient, id: u64) -> anyhow::Result<()> {
    let mut shown = None;
    loop {
        // A leader change or a slow answer is not the end of a drain: ask again.
        let d = match client.data_health().await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("no answer from the meta leader ({e}); asking again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(s) = d.servers.iter().find(|s| s.id == id) else {
            bail!("server {id} is not known to the cluster");
        };
        if s.state != "draining" && s.state != "drained" {
            bail!("server {id} is {} now, no longer draining", s.state);
        }
        let now = (s.recorded_blocks, d.under_replicated, d.repairs_in_flight);
        if shown != Some(now) {
            println!(
                "server {id}: {} blocks left; cluster: {} under-replicated, {} copies in flight",
                now.0, now.1, now.2
            );
            shown = Some(now);
        }
        if s.recorded_blocks == 0 && d.under_replicated == 0 {
            println!("server {id} is drained: `nimbus server remove {id}`, then stop its process");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
