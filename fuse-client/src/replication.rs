//! `nimbus replication get|set PATH [N]`: how many copies the cluster keeps
//! of new blocks under a directory (or of one file).

use anyhow::{bail, Context};
use nimbus_client::MetaClient;
use nimbus_common::Ino;
use nimbus_proto as pb;
use nimbus_proto::ns_request::Op;

/// The most copies the meta servers accept (their MAX_REPLICATION).
const MAX_REPLICATION: u32 = 5;

/// What a replication setting means, for people.
pub fn describe(replication: u32) -> String {
    match replication {
        0 => "cluster default".to_owned(),
        1 => "1 copy".to_owned(),
        n => format!("{n} copies"),
    }
}

/// Prints the replication of `path`.
pub async fn get(client: &MetaClient, path: &str) -> anyhow::Result<()> {
    let attr = crate::paths::resolve(client, path).await?;
    // Lookups do not carry the setting; getattr does.
    let attr = client.getattr(Ino(attr.ino)).await.with_context(|| path.to_owned())?;
    println!("{path}: {}", describe(attr.replication));
    Ok(())
}

/// Sets the replication of `path`: files and directories made in it from now
/// on inherit it, and the blocks they write get that many copies.
pub async fn set(client: &MetaClient, path: &str, replication: u32) -> anyhow::Result<()> {
    if replication == 0 || replication > MAX_REPLICATION {
        bail!("replication is 1 to {MAX_REPLICATION} copies, not {replication}");
    }
    let attr = crate::paths::resolve(client, path).await?;
    client
        .call(Op::SetReplication(pb::SetReplication {
            ino: attr.ino,
            replication,
        }))
        .await
        .with_context(|| format!("{path}: setting replication (only its owner or an administrator may)"))?;
    println!(
        "{path}: {}; new files and directories in it inherit this, blocks already written keep theirs",
        describe(replication)
    );
    Ok(())
}
