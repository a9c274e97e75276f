//! `nimbus key`: the master keys that wrap the cluster's data secret
//! (encryption at rest, docs/encryption.md): which one each meta server
//! holds, and rotation to a new one.

use anyhow::{bail, Context};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::encryption::hex;
use nimbus_proto as pb;
use std::time::{Duration, Instant};

/// How long the meta servers get to switch to the new key after the commit.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A fingerprint as shown: the first 8 bytes in hex, or "-".
pub fn short(fingerprint: &[u8]) -> String {
    match fingerprint.len() {
        0 => "-".into(),
        _ => hex(&fingerprint[..fingerprint.len().min(8)]),
    }
}

async fn members(client: &MetaClient) -> anyhow::Result<Vec<pb::Member>> {
    let s = client
        .on_leader(|ch| async move { MetaClient::admin(ch).status(pb::StatusRequest {}).await })
        .await
        .context("asking the meta leader for the members")?;
    Ok(s.members)
}

/// Prints each meta server's master key, staged key and key ring.
pub async fn status(client: &MetaClient) -> anyhow::Result<()> {
    println!(
        "{:>4} {:<22} {:<17} {:<17} {:<17}",
        "ID", "ADDRESS", "MASTER KEY", "STAGED", "KEY RING"
    );
    for m in members(client).await? {
        match client.node_status(&m.addr).await {
            Ok(s) => println!(
                "{:>4} {:<22} {:<17} {:<17} {:<17}",
                m.id,
                m.addr,
                short(&s.master_key),
                short(&s.next_master_key),
                short(&s.cluster_key)
            ),
            Err(e) => println!("{:>4} {:<22} unreachable: {e}", m.id, m.addr),
        }
    }
    println!("(fingerprints, never keys; MASTER KEY and KEY RING agree on a healthy node)");
    Ok(())
}

/// Rotates the master key: the leader stages a fresh one on every voter and
/// commits the data secret re-wrapped under it; then waits until every meta
/// server holds it as its master key.
pub async fn rotate(client: &MetaClient) -> anyhow::Result<()> {
    println!("staging a new master key on every meta server and re-wrapping the data secret...");
    let after = client
        .on_leader(|ch| async move { MetaClient::admin(ch).rotate_key(pb::RotateKeyRequest {}).await })
        .await;
    let after = match after {
        Ok(s) => s,
        Err(ClientError::Refused(e)) if e.contains("certificate") => {
            bail!("rotating the master key needs the operator certificate (admin.pem in --tls-dir): {e}")
        }
        Err(e) => {
            return Err(e).context("rotating the master key (nothing changed unless it says committed; run it again)")
        }
    };
    let new = after.cluster_key.clone();
    println!("committed: the key ring is wrapped under master key {}", short(&new));
    println!("data is not re-encrypted: block keys derive from the same data secret");
    let deadline = Instant::now() + SWITCH_TIMEOUT;
    let mut pending: Vec<pb::Member> = members(client).await?;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for m in pending {
            match client.node_status(&m.addr).await {
                Ok(s) if s.master_key == new && s.cluster_key == new => {
                    println!("  meta server {} ({}): switched", m.id, m.addr)
                }
                _ => still.push(m),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for m in &pending {
                println!(
                    "  meta server {} ({}): not switched yet; it takes the new key when it applies the \
                     rotation (or at its next start, from its staged key)",
                    m.id, m.addr
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("the old master key no longer starts a meta server of this cluster; keep no copy of it");
    Ok(())
}
