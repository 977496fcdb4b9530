//! The one rule behind every acknowledgement: an answer that says a change
//! happened is sent after the change is on disk.
//!
//! Changes themselves never wait — the catalog's and the audit log's
//! writers batch them in the background. An entry point that is about to
//! acknowledge something (a registration, a declaration, a deprecation, a
//! policy reload, a refusal it audited) calls [`settle`] first; waiters
//! that arrive together share one commit, which is what keeps bulk
//! registration fast.

use capgate_catalog::Catalog;
use capgate_catalog::audit::AuditLog;
use capgate_catalog::store::StoreError;

/// Waits until every definition and audit entry handed over so far is
/// committed to the store.
pub async fn settle(catalog: &Catalog, audit: &AuditLog) -> Result<(), StoreError> {
    let (definitions, entries) = tokio::join!(catalog.flush(), audit.flush());
    definitions.and(entries)
}
