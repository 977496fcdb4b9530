//! Reloads the policy when its files change.
//!
//! The files are read once a second and compared by content, which works
//! the same for editors that rewrite in place, editors that replace the
//! file, and Kubernetes ConfigMaps that swap a symlink. A change that does
//! not parse is refused (logged, audited) and the policy in force stays;
//! the same broken content is not reported again until it changes.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::server::GatewayState;

/// How often the policy files are read.
pub const POLL: Duration = Duration::from_secs(1);

/// Starts the watcher if there are files to watch and watching is on.
pub fn spawn(state: &Arc<GatewayState>) {
    if state.access.files().is_empty() || !state.config.watch_policies {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut seen = digest(&state);
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = state.shutdown.cancelled() => return,
            }
            let now = digest(&state);
            if now != seen {
                seen = now;
                // The outcome is logged and audited by reload itself.
                let _ = state.access.reload("operator:policy-files");
            }
        }
    });
}

/// The files' combined content digest; `None` while one cannot be read
/// (a change too: its reload fails and the policy in force stays).
fn digest(state: &GatewayState) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    for file in state.access.files() {
        let text = std::fs::read(file).ok()?;
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(&text);
    }
    Some(hasher.finalize().into())
}
