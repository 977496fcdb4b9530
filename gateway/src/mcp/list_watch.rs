//! Waiting for catalog changes and policy reloads that alter what one
//! agent sees.

use std::sync::Arc;
use std::time::Duration;

use capgate_catalog::changes::{Change, next_tool_change};
use tokio::sync::{broadcast, watch};

use super::McpState;
use crate::identity::agents::Agent;

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
    pub fn new(state: &McpState, agent: Arc<Agent>) -> Self {
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
    pub async fn changed(&mut self, state: &McpState, coalesce: Duration) -> Option<()> {
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
