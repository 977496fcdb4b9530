//! The change feed: every change to the directory, numbered.
//!
//! Revisions increase by one per change and are assigned while the directory
//! is locked for the change, so subscribers see them in order. A subscriber
//! that falls behind the channel's capacity is told how many it missed
//! (`RecvError::Lagged`) and re-reads the directory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

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
    /// A version was deprecated (its tool description changes).
    Deprecated,
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
            Self::Online | Self::Offline | Self::Defined | Self::Redefined | Self::Deprecated
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

/// How many past changes are kept for subscribers that resume.
const REPLAY_CAPACITY: usize = 10_000;

/// A subscriber asked to resume from a point the feed can no longer replay
/// (too old, or from before this process started); it must re-read the
/// directory and follow from `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub revision: u64,
}

/// Where a resuming subscriber picks up: what it missed, then the live feed.
pub struct Resumed {
    pub missed: Vec<Arc<Change>>,
    pub receiver: broadcast::Receiver<Arc<Change>>,
}

/// The sending side, owned by the directory.
pub(crate) struct ChangeFeed {
    sender: broadcast::Sender<Arc<Change>>,
    revision: u64,
    recent: VecDeque<Arc<Change>>,
}

impl ChangeFeed {
    pub(crate) fn new() -> Self {
        Self {
            sender: broadcast::channel(FEED_CAPACITY).0,
            revision: 0,
            recent: VecDeque::with_capacity(64),
        }
    }

    /// Numbers and publishes a change; call with the directory locked.
    pub(crate) fn publish(&mut self, kind: ChangeKind, id: &FunctionId, version: &Version) {
        self.revision += 1;
        let change = Arc::new(Change {
            revision: self.revision,
            kind,
            id: id.clone(),
            version: version.clone(),
        });
        if self.recent.len() == REPLAY_CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back(change.clone());
        // No subscriber is not an error: the revision still advances.
        let _ = self.sender.send(change);
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }

    /// The changes after `after`, and a subscription to those that follow,
    /// taken together so nothing falls between them.
    pub(crate) fn resume(&self, after: u64) -> Result<Resumed, Gap> {
        let oldest_kept = self
            .recent
            .front()
            .map_or(self.revision + 1, |c| c.revision);
        if after > self.revision || after + 1 < oldest_kept {
            return Err(Gap {
                revision: self.revision,
            });
        }
        let missed = self
            .recent
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect();
        Ok(Resumed {
            missed,
            receiver: self.sender.subscribe(),
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_without_gaps_and_reports_what_it_cannot_replay() {
        let mut feed = ChangeFeed::new();
        let id = FunctionId::parse("a::f").unwrap();
        let version = Version::new(1, 0, 0);
        for _ in 0..3 {
            feed.publish(ChangeKind::Online, &id, &version);
        }
        let Resumed {
            missed,
            mut receiver,
        } = feed.resume(1).unwrap();
        assert_eq!(
            missed.iter().map(|c| c.revision).collect::<Vec<_>>(),
            vec![2, 3]
        );
        feed.publish(ChangeKind::Offline, &id, &version);
        assert_eq!(receiver.try_recv().unwrap().revision, 4);
        assert!(feed.resume(4).unwrap().missed.is_empty());
        assert_eq!(
            feed.resume(9).err(),
            Some(Gap { revision: 4 }),
            "from the future: another process"
        );

        for _ in 0..REPLAY_CAPACITY {
            feed.publish(ChangeKind::Online, &id, &version);
        }
        assert!(feed.resume(0).is_err(), "too old to replay");
        assert!(feed.resume(feed.revision() - 5).is_ok());
    }
}
