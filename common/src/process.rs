//! What every Nimbus binary does around its work: a runtime, a clean exit
//! code, and the signals that ask it to stop.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Runs `work` on a multi-threaded runtime; an error is printed as
/// `NAME: error` (with its causes) and makes the exit code non-zero.
pub fn run<E: Display>(name: &str, work: impl Future<Output = Result<(), E>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets SIGPIPE end the process, as it does any Unix tool: `nimbus status |
/// head` must stop quietly, not panic in `println!` on a closed pipe. Call it
/// first thing in `main`, before any thread starts, and only in commands that
/// print: a server must keep SIGPIPE ignored, or a peer closing a socket
/// under a write would kill it.
pub fn die_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to its default is async-signal-
    // safe and done before other threads exist; Rust's runtime set it to
    // "ignore" and nothing else in Nimbus relies on that.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Caps glibc's malloc at two arenas, for a long-running server whose
/// memory must stay bounded by its configuration. glibc gives every thread
/// that allocates under contention an arena of its own (up to eight per
/// core), each keeping what it once held: a meta server leading a 64-client
/// create storm held 13 arenas of ~60 MiB, 350 MiB more than its followers
/// with the same store (with the cap: the same as its followers). Call first
/// thing in `main`, before any thread starts.
///
/// (Also fixing glibc's mmap threshold at 256 KiB, so that megabyte buffers
/// always go back to the system, was tried: 6% less memory at 3 million
/// inodes, 15% fewer creates/s. Not kept.)
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands memory the allocator holds but does not use back to the system:
/// after a large, rare piece of work (a snapshot built or installed).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
