//! What every scenario node binary does around its node: log to stderr, take SIGTERM as a
//! graceful stop, and serve until the test closes its standard input or sends SIGTERM.

use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Logs to stderr, filtered by `RUST_LOG`.
pub fn init_stderr_log() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}

/// Takes SIGTERM from now on (call it before the node starts, so that a SIGTERM during the
/// start is a graceful stop too); on failure prints why, as `{binary} {id}`, and exits 1.
pub fn take_sigterm(binary: &str, id: &str) -> Signal {
    match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{binary} {id}: cannot handle SIGTERM: {e}");
            std::process::exit(1);
        }
    }
}

/// Returns when the standard input closes or `terminate` fires.
pub async fn until_stopped(terminate: &mut Signal) {
    let mut sink = Vec::new();
    let mut stdin = tokio::io::stdin();
    tokio::select! {
        _ = stdin.read_to_end(&mut sink) => {}
        _ = terminate.recv() => {}
    }
}
