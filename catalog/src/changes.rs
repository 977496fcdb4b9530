//! The change feed: every change to the directory, numbered.
//!
//! Revisions increase by one per change and are assigned while the directory
//! is locked for the change, so subscribers see them in order. A subscriber
//! that falls behind the channel's capacity is told how many it missed
//! (`RecvError::Lagged`) and re-reads the directory.

use std::sync::Arc;

use semver::Version;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::naming::FunctionId;

/// How many changes a slow subscriber may fall behind before it lags.
const FEED_CAPACITY: usize = 4096;

/// What happened to one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A version gained its first live provider: agents can see it.
    Online,
    /// A version lost its last live provider: hidden from agents, still known.
    Offline,
    /// A version was seen for the first time.
    Defined,
    /// An unstable version's definition was replaced (the operator allows it).
    Redefined,
    /// Another provider joined a version that was already live.
    ProviderAdded,
    /// A provider left a version that stays live.
    ProviderRemoved,
}

impl ChangeKind {
    /// Whether the set of tools (or a tool's definition) an agent sees changed.
    pub fn changes_tools(self) -> bool {
        matches!(
            self,
            Self::Online | Self::Offline | Self::Defined | Self::Redefined
        )
    }
}

/// One numbered change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub revision: u64,
    pub kind: ChangeKind,
    pub id: FunctionId,
    #[serde(serialize_with = "crate::changes::version_as_string")]
    pub version: Version,
}

fn version_as_string<S: serde::Serializer>(version: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(version)
}

/// The sending side, owned by the directory.
pub(crate) struct ChangeFeed {
    sender: broadcast::Sender<Arc<Change>>,
    revision: u64,
}

impl ChangeFeed {
    pub(crate) fn new() -> Self {
        Self {
            sender: broadcast::channel(FEED_CAPACITY).0,
            revision: 0,
        }
    }

    /// Numbers and publishes a change; call with the directory locked.
    pub(crate) fn publish(&mut self, kind: ChangeKind, id: &FunctionId, version: &Version) {
        self.revision += 1;
        // No subscriber is not an error: the revision still advances.
        let _ = self.sender.send(Arc::new(Change {
            revision: self.revision,
            kind,
            id: id.clone(),
            version: version.clone(),
        }));
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }
}
