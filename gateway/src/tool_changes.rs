//! Waiting for catalog changes that alter what agents and subscribers see.

use std::sync::Arc;
use std::time::Duration;

use capgate_catalog::changes::Change;
use tokio::sync::broadcast;

/// Waits for the next change that alters the live tool set, then waits
/// `coalesce` and swallows the rest of its burst, so a worker registering
/// a hundred functions causes one notification. `None` once the feed is
/// closed.
pub async fn next_tool_change(
    changes: &mut broadcast::Receiver<Arc<Change>>,
    coalesce: Duration,
) -> Option<()> {
    loop {
        match changes.recv().await {
            Ok(change) if change.kind.changes_tools() => break,
            Ok(_) => continue,
            // Missed changes may have altered the tools: notify.
            Err(broadcast::error::RecvError::Lagged(_)) => break,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
    tokio::time::sleep(coalesce).await;
    loop {
        match changes.try_recv() {
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return Some(()),
        }
    }
}
