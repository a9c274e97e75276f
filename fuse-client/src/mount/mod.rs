//! `nimbus mount`: serves the Nimbus namespace through FUSE at a directory,
//! in the foreground, until SIGTERM/SIGINT or an external `umount`, and
//! leaves no mount behind when it exits.

mod backend;
mod cache;
mod convert;
mod files;
mod fs;
mod idmap;
mod listing;
mod open;
mod ops;
mod session;
mod stats;

use anyhow::{bail, Context};
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use nimbus_client::{ClientError, MetaClient};
use nimbus_common::Ino;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long the cluster has to answer the first getattr before the mount
/// gives up with a clear error (instead of the client's long retry deadline).
const REACH_TIMEOUT: Duration = Duration::from_secs(15);
/// How long, after unmounting, the mount waits for the kernel to end the
/// session (open files after a lazy unmount keep it alive).
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `nimbus mount`.
#[derive(clap::Args)]
pub struct MountArgs {
    /// An existing directory to mount the file system on.
    pub mountpoint: PathBuf,
    /// How long the kernel may cache names and attributes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub attr_ttl_ms: u64,
    /// Threads reading requests from the kernel.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Let users other than the one mounting use the file system. Unless
    /// --as-local-users, they all act as the signed-in Nimbus user.
    #[arg(long)]
    pub allow_other: bool,
    /// Administrators only: act as each calling process's local uid and
    /// groups (local root is the superuser), as a trusted NFS client does,
    /// instead of as the signed-in user; the kernel then checks permissions
    /// too. For conformance tests and migrations that set owners.
    #[arg(long)]
    pub as_local_users: bool,
    /// How owners and groups appear. `names`: you (the signed-in user) as
    /// the local user who mounted, other Nimbus users and groups as the
    /// local accounts of the same name, else nobody/nogroup; chown, chgrp
    /// and ACL entries map back by name. `none`: Nimbus ids as they are.
    /// --as-local-users implies none.
    #[arg(long, value_enum, default_value = "names")]
    pub idmap: idmap::IdMode,
    /// Serve counters (FUSE requests by kind, namespace commits and reads,
    /// block transfers and bytes) in Prometheus text on this host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Memory for buffered writes across all open files, in MiB: a writer
    /// that would go past it commits its own buffers first (each file also
    /// holds at most 64 MiB).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(4..=65536))]
    pub write_buffer_mib: u64,
    /// Create new files in the cluster when they are opened, so that other
    /// mounts list them at once. By default a new regular file reaches the
    /// cluster with its first commit (close, fsync, or anything else that
    /// needs it there): one command for its create, data and attributes
    /// instead of two; another mount sees it from that commit on, and a
    /// name another mount took meanwhile fails the close with EEXIST.
    #[arg(long, env = "NIMBUS_CREATE_AT_OPEN", value_parser = clap::builder::BoolishValueParser::new())]
    pub create_at_open: bool,
    /// Answer every lookup from the cluster. By default, after a few
    /// lookups in one folder, the mount reads the folder's entries and
    /// attributes in one call and answers the next lookups of names it
    /// holds from them, for the attribute TTL (as the kernel does for
    /// names it has seen); changes made through this mount are taken in or
    /// drop the listing.
    #[arg(long, env = "NIMBUS_NO_FOLDER_LISTINGS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_folder_listings: bool,
    /// Also answer that a name is missing when a folder's whole listing
    /// lacks it (no read per new name for tar, cp -a, mkdir), at the price
    /// of seeing a name another mount just made only once the attribute
    /// TTL since the listing was read has passed. Off by default: a file a
    /// colleague just saved shows at once.
    #[arg(long, env = "NIMBUS_MISSING_FROM_LISTINGS", value_parser = clap::builder::BoolishValueParser::new())]
    pub missing_from_listings: bool,
}

/// Mounts the cluster `client` talks to and serves it until told to stop.
pub async fn run(client: MetaClient, args: MountArgs) -> anyhow::Result<()> {
    nimbus_common::logging::init();
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    // Before mounting: a signal during the handshake must still unmount.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let client = Arc::new(client.act_as_callers(args.as_local_users));
    tokio::select! {
        reached = tokio::time::timeout(REACH_TIMEOUT, client.getattr(Ino::ROOT)) => match reached {
            Ok(Ok(_)) => {}
            Ok(Err(e @ (ClientError::Unauthenticated(_) | ClientError::Denied(_)))) => bail!("{e}"),
            Ok(Err(e)) => bail!("cannot reach the meta cluster: {e}"),
            Err(_) => bail!("the meta cluster did not answer within {REACH_TIMEOUT:?}"),
        },
        _ = sigterm.recv() => return Ok(()),
        _ = sigint.recv() => return Ok(()),
    }

    let mode = if args.as_local_users {
        idmap::IdMode::None
    } else {
        args.idmap
    };
    let me = client.whoami().await.context("asking the cluster who this mount is")?;
    let ids = idmap::IdMap::load(mode, &me, client.clone())
        .await
        .context("learning the cluster's user and group names")?;
    let identity = ops::Identity {
        nimbus_uid: me.uid,
        superuser: me.admin,
        as_local_users: args.as_local_users,
    };
    let inner = Arc::new(ops::Inner::new(
        client,
        Duration::from_millis(args.attr_ttl_ms),
        ids,
        identity,
        files::WriteBudget::new(args.write_buffer_mib << 20),
        !args.create_at_open,
        listing::Listings::new(Duration::from_millis(args.attr_ttl_ms), !args.no_folder_listings)
            .answer_missing(args.missing_from_listings),
    ));
    tokio::spawn(inner.session.clone().keep_alive());
    if let Some(addr) = args.metrics.clone() {
        stats::serve(addr, inner.stats.clone(), inner.client.clone());
    }
    let filesystem = fs::NimbusFs::new(inner.clone(), tokio::runtime::Handle::current(), args.as_local_users);
    let mut config = Config::default();
    config.n_threads = Some(usize::from(args.threads));
    config.clone_fd = true;
    config.mount_options = vec![
        MountOption::FSName("nimbus".into()),
        MountOption::Subtype("nimbus".into()),
    ];
    if args.as_local_users {
        // Local uids mean something here, so the kernel checks mode bits
        // and ACLs itself, on every path component and also for names it has
        // cached; without this a cached lookup would skip the meta servers'
        // check for the attribute TTL. The servers still check every
        // operation. Signed in as one user, the local uid means nothing:
        // the meta servers alone decide (open, access and every change ask
        // them).
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    if args.allow_other {
        config.acl = SessionACL::All;
    }

    // The session blocks (handshake, then the request loop): it gets its own
    // thread and reports back over channels.
    let (mounted_tx, mounted_rx) = oneshot::channel();
    let (ended_tx, mut ended_rx) = oneshot::channel();
    let at = mountpoint.clone();
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let mut session = match Session::new(filesystem, &at, &config) {
                Ok(s) => s,
                Err(e) => {
                    let _ = mounted_tx.send(Err(e));
                    return;
                }
            };
            let _ = mounted_tx.send(Ok(session.unmount_callable()));
            let _ = ended_tx.send(session.run());
        })
        .context("starting the FUSE session thread")?;
    let unmounter = match mounted_rx.await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return Err(mount_error(e, &mountpoint)),
        Err(_) => bail!("the FUSE session thread ended before mounting"),
    };
    let mut guard = MountGuard {
        mountpoint: mountpoint.clone(),
        unmounter: Some(unmounter),
    };
    println!("nimbus mounted at {}", mountpoint.display());

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: unmounting {}", mountpoint.display()),
        _ = sigint.recv() => tracing::info!("SIGINT: unmounting {}", mountpoint.display()),
        ended = &mut ended_rx => {
            // Unmounted from outside (umount, fusermount3 -u): nothing to undo.
            guard.unmounter = None;
            tracing::info!("{} was unmounted", mountpoint.display());
            return session_result(ended);
        }
    }
    guard.unmount();
    match tokio::time::timeout(SESSION_END_TIMEOUT, ended_rx).await {
        Ok(ended) => session_result(ended),
        Err(_) => {
            // Files still open behind a lazy unmount keep the session up;
            // commit what they buffered, then let the exit close the device.
            tracing::warn!("the session did not end within {SESSION_END_TIMEOUT:?}: committing open files and exiting");
            inner.flush_all().await;
            Ok(())
        }
    }
}

/// The canonical mountpoint, or a clear error.
fn check_mountpoint(path: &Path) -> anyhow::Result<PathBuf> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mountpoint {} does not exist: create it first", path.display())
        }
        Err(e) if e.raw_os_error() == Some(107) => bail!(
            "{} is a mount whose file system is gone (a crashed mount?): `umount -l {}` first",
            path.display(),
            path.display()
        ),
        Err(e) => bail!("mountpoint {}: {e}", path.display()),
    };
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", path.display());
    }
    let canonical = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    // Allowed, as the kernel allows it, but worth a word: its files vanish
    // from view while mounted.
    if std::fs::read_dir(&canonical).is_ok_and(|mut d| d.next().is_some()) {
        tracing::warn!(
            "{} is not empty: its files are hidden while Nimbus is mounted",
            canonical.display()
        );
    }
    Ok(canonical)
}

fn mount_error(e: std::io::Error, mountpoint: &Path) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => " (is /dev/fuse present? `modprobe fuse`; in a container, pass the device)",
        std::io::ErrorKind::PermissionDenied => " (mounting needs root, or fusermount3 from the fuse3 package)",
        _ => "",
    };
    anyhow::anyhow!("cannot mount at {}: {e}{hint}", mountpoint.display())
}

fn session_result(ended: Result<std::io::Result<()>, oneshot::error::RecvError>) -> anyhow::Result<()> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("the FUSE session failed: {e}"),
        Err(_) => bail!("the FUSE session thread died"),
    }
}

/// Unmounts when dropped (or asked), so that no exit path leaves a dead
/// mount behind.
struct MountGuard {
    mountpoint: PathBuf,
    unmounter: Option<SessionUnmounter>,
}

impl MountGuard {
    fn unmount(&mut self) {
        let Some(mut unmounter) = self.unmounter.take() else {
            return;
        };
        match unmounter.unmount() {
            Ok(()) => tracing::info!("unmounted {}", self.mountpoint.display()),
            Err(e) => {
                // Busy (a shell inside it, a file open): detach it now; the
                // kernel finishes once the last user lets go.
                tracing::warn!("unmounting {}: {e}; detaching it lazily", self.mountpoint.display());
                lazy_unmount(&self.mountpoint);
            }
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn lazy_unmount(mountpoint: &Path) {
    for (tool, args) in [("umount", &["-l"][..]), ("fusermount3", &["-u", "-z"][..])] {
        match Command::new(tool).args(args).arg(mountpoint).status() {
            Ok(s) if s.success() => return,
            Ok(s) => tracing::warn!("{tool} {args:?} {}: {s}", mountpoint.display()),
            Err(e) => tracing::warn!("running {tool}: {e}"),
        }
    }
    tracing::error!("{} is still mounted: `umount -l` it by hand", mountpoint.display());
}
