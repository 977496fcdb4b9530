//! Reloads the policy when its files change.
//!
//! The files are read once a second and compared by content, which works
//! the same for editors that rewrite in place, editors that replace the
//! file, and Kubernetes ConfigMaps that swap a symlink. A change that does
//! not parse is refused (logged, audited) and the policy in force stays;
//! the same broken content is not reported again until it changes. Files
//! are read without blocking the runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::access::Access;

/// How often the policy files are read.
pub const POLL: Duration = Duration::from_secs(1);

/// Starts watching the policy files in force, if there are any.
pub fn spawn(access: Arc<Access>, shutdown: CancellationToken) {
    if access.files().is_empty() {
        return;
    }
    tokio::spawn(async move {
        let files = access.files().to_vec();
        let mut seen = digest(&files).await;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.cancelled() => return,
            }
            let now = digest(&files).await;
            if now != seen {
                seen = now;
                // The outcome is logged and audited by reload itself.
                let _ = access.reload("operator:policy-files").await;
            }
        }
    });
}

/// The files' combined content digest; `None` while one cannot be read
/// (a change too: its reload fails and the policy in force stays).
async fn digest(files: &[PathBuf]) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    for file in files {
        let text = tokio::fs::read(file).await.ok()?;
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(&text);
    }
    Some(hasher.finalize().into())
}
