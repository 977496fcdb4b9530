//! Waiting for catalog changes and policy reloads that alter what agents
//! and subscribers see.

use std::sync::Arc;
use std::time::Duration;

use capgate_catalog::changes::Change;
use tokio::sync::{broadcast, watch};

use crate::agents::Agent;
use crate::server::GatewayState;

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

/// Watches one agent's tool list: wakes on catalog changes and policy
/// reloads, and reports only those that changed what this agent sees —
/// so a policy edit notifies exactly the clients it affects.
pub struct AgentListWatch {
    agent: Arc<Agent>,
    changes: broadcast::Receiver<Arc<Change>>,
    policy: watch::Receiver<u64>,
    seen: u64,
}

impl AgentListWatch {
    pub fn new(state: &GatewayState, agent: Arc<Agent>) -> Self {
        let changes = state.catalog.subscribe();
        let policy = state.access.changes();
        let seen = state.tools.for_agent(&agent).fingerprint();
        Self {
            agent,
            changes,
            policy,
            seen,
        }
    }

    /// Resolves when the agent's tool list differs from the last one seen;
    /// `None` once the catalog's feed or the policy signal is gone.
    pub async fn changed(&mut self, state: &GatewayState, coalesce: Duration) -> Option<()> {
        loop {
            tokio::select! {
                change = next_tool_change(&mut self.changes, coalesce) => change?,
                changed = self.policy.changed() => {
                    changed.ok()?;
                    tokio::time::sleep(coalesce).await;
                }
            }
            let now = state.tools.for_agent(&self.agent).fingerprint();
            if now != self.seen {
                self.seen = now;
                return Some(());
            }
        }
    }
}
