//! Reloading the project: on SIGHUP, or when the project file changes (checked every refresh
//! interval). A new file that does not load or whose sources do not open is refused with the
//! error logged, and the old project keeps serving. SIGHUP also reads the tokens file again,
//! so that a revoked token stops working without a restart.

use std::time::{Duration, SystemTime};

use lodestar_core::Engine;

use crate::{AppState, Tokens};

/// Reads the tokens again (the environment's and the tokens file's) and accepts those from
/// now on; a file that cannot be used is refused with the error logged, and the previous
/// tokens stay.
pub fn reload_tokens(state: &AppState) {
    let Some(file) = state.settings().tokens_file.as_deref() else {
        return;
    };
    match Tokens::load(Some(file)) {
        Ok(tokens) => {
            let count = tokens.len();
            state.replace_tokens(tokens);
            tracing::info!(file = %file.display(), tokens = count, "tokens reloaded (SIGHUP)");
        }
        Err(e) => tracing::error!(
            file = %file.display(),
            "tokens reload refused (SIGHUP); the previous tokens stay: {e}"
        ),
    }
}

/// Loads the project file again and swaps the engine if it works.
pub async fn reload(state: &AppState, why: &str) {
    let path = state.shared_engine().project().path.clone();
    let opened = match crate::load_project(&path, state.settings()) {
        Ok(project) => Engine::open(project).await,
        Err(e) => Err(e),
    };
    match opened {
        Ok(engine) => {
            let metrics = engine.project().metrics.len();
            state.replace_engine(engine);
            tracing::info!(project = %path.display(), metrics, "project reloaded ({why})");
        }
        Err(e) => tracing::error!(
            project = %path.display(),
            "project reload refused ({why}); the previous project keeps serving: {e}"
        ),
    }
}

fn modified(state: &AppState) -> Option<SystemTime> {
    std::fs::metadata(&state.shared_engine().project().path)
        .and_then(|m| m.modified())
        .ok()
}

/// Where SIGHUP is received; `None` where there is no SIGHUP (or it cannot be caught).
#[cfg(unix)]
pub type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub type Hangup = Option<()>;

/// Starts catching SIGHUP, whose default action would end the process. Call it before
/// announcing the server, so that a SIGHUP right after is a reload.
pub fn catch_hangup() -> Hangup {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Reloads on SIGHUP and when the project file's modification time changes.
#[cfg_attr(not(unix), allow(unused_mut, unused_variables))]
pub async fn watch(state: AppState, interval: Duration, mut hangup: Hangup) {
    let mut last = modified(&state);
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            () = hup => {
                reload_tokens(&state);
                reload(&state, "SIGHUP").await;
            }
            _ = ticks.tick() => {
                let now = modified(&state);
                if now != last {
                    reload(&state, "the file changed").await;
                }
            }
        }
        last = modified(&state);
    }
}
