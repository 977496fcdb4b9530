//! The change feed of the catalog and the hand-off of definitions to the
//! store.

use std::sync::{Arc, PoisonError};

use semver::Version;
use tokio::sync::broadcast;

use super::Catalog;
use crate::changes::{Change, ChangeKind, Gap, Resumed};
use crate::naming::FunctionId;
use crate::store::StoreError;

impl Catalog {
    pub(super) fn publish(&self, kind: ChangeKind, id: &FunctionId, version: &Version) {
        self.feed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .publish(kind, id, version);
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .subscribe()
    }

    /// The changes after revision `after` and a subscription to what follows,
    /// with nothing lost between them; a [`Gap`] when they can no longer be
    /// replayed.
    pub fn resume(&self, after: u64) -> Result<Resumed, Gap> {
        self.feed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .resume(after)
    }

    /// The revision of the latest change.
    pub fn revision(&self) -> u64 {
        self.feed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision()
    }

    /// Waits until every definition handed to the store is written.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.flush().await,
            None => Ok(()),
        }
    }
}
