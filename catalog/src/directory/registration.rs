//! Versions and their providers: registering, declaring, withdrawing and
//! handing registrations over to a reattached connection.

use std::sync::Arc;

use super::ProviderId;
use super::{Catalog, Conflict, RegisterError, Registered, VersionEntry};
use crate::changes::ChangeKind;
use crate::definition::Capability;
use crate::naming::FunctionId;
use crate::redefinition::{Redefinition, differing_fields};

impl Catalog {
    /// Sets the operator's rule for redefining existing versions.
    pub fn with_redefinition(mut self, redefinition: Redefinition) -> Self {
        self.redefinition = redefinition;
        self
    }

    /// Caps the versions the catalog holds: each one is kept in memory and
    /// on disk for good (a pin), so registrations must not grow it without
    /// bound. Restored versions count; beyond the cap new ones are refused.
    pub fn with_version_limit(mut self, limit: usize) -> Self {
        self.version_limit = limit;
        self
    }

    /// Loads stored versions as offline entries (no provider yet).
    pub(super) fn restore(&self, capabilities: Vec<Capability>) {
        let mut directory = self.write();
        for capability in capabilities {
            let capability = Arc::new(capability);
            let added = directory
                .functions
                .entry(capability.id().clone())
                .or_default()
                .insert(capability.version().clone(), VersionEntry::new(capability))
                .is_none();
            directory.versions += usize::from(added);
        }
    }

    /// Adds `provider` to `capability`'s version, defining it if new.
    pub fn register(
        &self,
        capability: Capability,
        provider: ProviderId,
    ) -> Result<Registered, RegisterError> {
        self.offer(capability, Some(provider))
    }

    /// Declares a version that no worker provides yet (admin API,
    /// configuration): it is kept and shown offline, pins its definition
    /// like any other, and goes online when a worker registers the same
    /// definition.
    pub fn define(&self, capability: Capability) -> Result<Registered, RegisterError> {
        self.offer(capability, None)
    }

    fn offer(
        &self,
        capability: Capability,
        provider: Option<ProviderId>,
    ) -> Result<Registered, RegisterError> {
        let mut directory = self.write();
        let full = directory.versions >= self.version_limit;
        let versions = directory
            .functions
            .entry(capability.id().clone())
            .or_default();
        let version = capability.version().clone();
        let id = capability.id().clone();
        let (kind, persist) = match versions.get_mut(&version) {
            Some(entry) if entry.capability.hash() == capability.hash() => {
                let Some(provider) = provider else {
                    return Ok(Registered::Unchanged);
                };
                if entry.providers.contains(&provider) {
                    return Ok(Registered::Unchanged);
                }
                entry.providers.push(provider);
                let kind = if entry.providers.len() == 1 {
                    ChangeKind::Online
                } else {
                    ChangeKind::ProviderAdded
                };
                (kind, None)
            }
            Some(entry) => {
                let conflict = Box::new(Conflict {
                    id: id.clone(),
                    version: version.clone(),
                    existing: entry.capability.hash(),
                    offered: capability.hash(),
                    differs: differing_fields(
                        entry.capability.definition(),
                        capability.definition(),
                    ),
                });
                if entry.providers.iter().any(|p| Some(*p) != provider) {
                    return Err(RegisterError::LiveConflict(conflict));
                }
                if !self.redefinition.allows(&version) {
                    return Err(RegisterError::Immutable(conflict));
                }
                tracing::warn!(%id, %version, old = %conflict.existing, new = %conflict.offered,
                    differs = ?conflict.differs, "version redefined");
                let capability = Arc::new(capability);
                if let Some(writer) = &self.writer {
                    writer.record_redefinition(&entry.capability, &capability);
                }
                entry.capability = capability.clone();
                entry.providers = provider.into_iter().collect();
                (ChangeKind::Redefined, Some(capability))
            }
            None if full => {
                if versions.is_empty() {
                    directory.functions.remove(&id);
                }
                return Err(RegisterError::Full {
                    limit: self.version_limit,
                });
            }
            None => {
                let capability = Arc::new(capability);
                let mut entry = VersionEntry::new(capability.clone());
                entry.providers.extend(provider);
                versions.insert(version.clone(), entry);
                directory.versions += 1;
                (ChangeKind::Defined, Some(capability))
            }
        };
        if let (Some(capability), Some(writer)) = (persist, &self.writer) {
            writer.save(capability);
        }
        self.publish(kind, &id, &version);
        if matches!(kind, ChangeKind::Defined | ChangeKind::Redefined) && provider.is_some() {
            self.publish(ChangeKind::Online, &id, &version);
        }
        drop(directory);
        Ok(Registered::Added(kind))
    }

    /// Removes `provider` from every version of `id`; true if it provided one.
    pub fn unregister(&self, id: &FunctionId, provider: ProviderId) -> bool {
        let mut directory = self.write();
        let Some(versions) = directory.functions.get_mut(id) else {
            return false;
        };
        let mut removed = false;
        for (version, entry) in versions.iter_mut() {
            let before = entry.providers.len();
            entry.providers.retain(|p| *p != provider);
            if entry.providers.len() != before {
                removed = true;
                let kind = if entry.providers.is_empty() {
                    ChangeKind::Offline
                } else {
                    ChangeKind::ProviderRemoved
                };
                self.publish(kind, id, version);
            }
        }
        removed
    }

    /// Hands `from`'s registrations of `ids` to `to` (a worker that
    /// reattached): every version `from` provided is provided by `to`
    /// instead. The live set does not change, so nothing is published —
    /// agents see no churn from a reconnect. Returns the ids moved.
    pub fn transfer(
        &self,
        ids: &[FunctionId],
        from: ProviderId,
        to: ProviderId,
    ) -> Vec<FunctionId> {
        let mut directory = self.write();
        let mut moved = Vec::new();
        for id in ids {
            let Some(versions) = directory.functions.get_mut(id) else {
                continue;
            };
            let mut any = false;
            for entry in versions.values_mut() {
                let Some(at) = entry.providers.iter().position(|p| *p == from) else {
                    continue;
                };
                if entry.providers.contains(&to) {
                    entry.providers.remove(at);
                } else {
                    entry.providers[at] = to;
                }
                any = true;
            }
            if any {
                moved.push(id.clone());
            }
        }
        moved
    }
}
