//! Unix signals for the daemon: SIGTERM and SIGINT start a graceful drain
//! (the caller bounds it); SIGHUP re-reads the config file, validates it and
//! hands a valid one to the engine task. An invalid one is rejected with
//! every problem logged (file, line, key) and the running config is kept.

use crate::config::Config;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// SIGINT and SIGTERM cancel `cancel` (once).
pub fn spawn_shutdown_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        info!("Signal received: draining and stopping.");
        cancel.cancel();
    });
}

/// On each SIGHUP, loads and validates `path`; valid configs are sent on the
/// returned channel (for [`super::run_reloadable`]).
pub fn spawn_reload_on_sighup(path: PathBuf) -> mpsc::Receiver<Config> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(error) => {
                error!(%error, "Cannot listen for SIGHUP; reload needs a restart.");
                return;
            }
        };
        while hup.recv().await.is_some() {
            info!(file = %path.display(), "SIGHUP: reloading the configuration.");
            match Config::load(&path) {
                Ok(c) => {
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    for p in &e.problems {
                        error!(file = %e.file.display(), line = p.line, key = %p.key, problem = %p.message, "Config problem.");
                    }
                    metrics::counter!("gaswatch_config_reloads_total", "result" => "rejected")
                        .increment(1);
                    error!(file = %path.display(), problems = e.problems.len(), "Reload rejected: the new configuration is invalid; keeping the running configuration.");
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (path, tx);
    rx
}
