//! Resolution: an id, a requirement, a pin and a deprecation policy to one
//! version and its providers; and the listings built the same way.

use std::sync::Arc;

use semver::{Version, VersionReq};

use super::{Catalog, Listing, Pins, ProviderId, Resolved};
use crate::definition::Capability;
use crate::invocation::{InvocationError, NotFoundReason};
use crate::lifecycle::{Deprecation, is_sunset};
use crate::naming::FunctionId;

impl Catalog {
    /// Resolves an id and optional requirement to the highest matching
    /// version that has a live provider, and picks one provider.
    pub fn resolve(
        &self,
        id: &str,
        requirement: Option<&VersionReq>,
    ) -> Result<Resolved, InvocationError> {
        self.resolve_for(id, requirement, false)
    }

    /// [`Catalog::resolve`] for a caller whose policy refuses deprecated
    /// versions (`skip_deprecated`): the highest live version that is not
    /// deprecated at all.
    pub fn resolve_for(
        &self,
        id: &str,
        requirement: Option<&VersionReq>,
        skip_deprecated: bool,
    ) -> Result<Resolved, InvocationError> {
        let directory = self.read();
        let mut refused: Option<&Version> = None;
        let Some(versions) = directory.functions.get(id) else {
            return Err(InvocationError::not_found(id));
        };
        let mut today = None;
        let mut sunset: Option<(&Version, &Deprecation)> = None;
        for (version, entry) in versions.iter().rev() {
            if requirement.is_some_and(|req| !req.matches(version)) {
                continue;
            }
            if let Some(deprecation) = &entry.capability.definition().deprecation
                && is_sunset(deprecation, *today.get_or_insert_with(self.clock))
            {
                sunset.get_or_insert((version, deprecation));
                continue;
            }
            if skip_deprecated && entry.capability.definition().deprecation.is_some() {
                refused.get_or_insert(version);
                continue;
            }
            if let Some(resolved) = entry.resolved() {
                return Ok(resolved);
            }
        }
        let reason = match (refused, requirement, sunset) {
            (Some(version), _, _) => NotFoundReason::DeprecatedRefused {
                version: version.clone(),
            },
            (None, _, Some((version, deprecation))) => NotFoundReason::Sunset {
                version: version.clone(),
                sunset: deprecation.sunset.clone().unwrap_or_else(|| "?".into()),
                replacement: deprecation.replacement.clone(),
            },
            (None, Some(req), None) if versions.keys().any(|v| req.matches(v)) => {
                NotFoundReason::NoLiveMatch {
                    requirement: req.clone(),
                }
            }
            (None, Some(req), None) => NotFoundReason::NoMatch {
                requirement: req.clone(),
                known: versions.keys().cloned().collect(),
            },
            (None, None, None) => NotFoundReason::Offline,
        };
        Err(InvocationError::NotFound {
            function: id.to_owned(),
            reason,
        })
    }

    /// The providers `resolved`'s version has now (after a reattach moved
    /// it, or a provider left), or `None` if it has none or was redefined.
    pub fn providers_now(&self, resolved: &Resolved) -> Option<Resolved> {
        let capability = &resolved.capability;
        let directory = self.read();
        let entry = directory
            .functions
            .get(capability.id())?
            .get(capability.version())?;
        if entry.capability.hash() != capability.hash() {
            return None;
        }
        entry.resolved()
    }

    /// For each id, the version an unpinned caller resolves to (highest live),
    /// sorted by id.
    pub fn live(&self) -> Vec<Arc<Capability>> {
        self.live_pinned(&Pins::new())
    }

    /// For each id, the version a caller with these pins resolves to: the
    /// highest live, non-sunset version within its pin. An id whose pin no
    /// live version matches is left out.
    pub fn live_pinned(&self, pins: &Pins) -> Vec<Arc<Capability>> {
        self.live_for(pins, false)
    }

    /// [`Catalog::live_pinned`], leaving deprecated versions out when
    /// `skip_deprecated` (a policy that hides or refuses them).
    pub fn live_for(&self, pins: &Pins, skip_deprecated: bool) -> Vec<Arc<Capability>> {
        self.live_rows_pinned(pins, skip_deprecated)
            .into_iter()
            .map(|row| row.capability)
            .collect()
    }

    /// [`Catalog::live`] with each version's providers.
    pub fn live_rows(&self) -> Vec<Listing> {
        self.live_rows_pinned(&Pins::new(), false)
    }

    fn live_rows_pinned(&self, pins: &Pins, skip_deprecated: bool) -> Vec<Listing> {
        let today = (self.clock)();
        let directory = self.read();
        let mut live: Vec<Listing> = directory
            .functions
            .iter()
            .filter_map(|(id, versions)| {
                let pin = pins.get(id);
                versions
                    .iter()
                    .rev()
                    .find(|(version, entry)| {
                        !entry.providers.is_empty()
                            && pin.is_none_or(|req| req.matches(version))
                            && !entry
                                .capability
                                .definition()
                                .deprecation
                                .as_ref()
                                .is_some_and(|d| skip_deprecated || is_sunset(d, today))
                    })
                    .map(|(_, entry)| Listing {
                        capability: entry.capability.clone(),
                        providers: entry.providers.clone(),
                    })
            })
            .collect();
        live.sort_by(|a, b| a.capability.id().cmp(b.capability.id()));
        live
    }

    /// How many live providers `id@version` has; `None` if it is unknown.
    pub fn provider_count(&self, id: &FunctionId, version: &Version) -> Option<usize> {
        self.read()
            .functions
            .get(id)
            .and_then(|versions| versions.get(version))
            .map(|entry| entry.providers.len())
    }

    /// Every known version of `id` with its definition, lowest first.
    pub fn versions_of(&self, id: &FunctionId) -> Vec<Arc<Capability>> {
        self.read()
            .functions
            .get(id)
            .into_iter()
            .flat_map(|versions| versions.values())
            .map(|entry| entry.capability.clone())
            .collect()
    }

    /// Whether `provider` provides `id@version` now.
    pub fn provides(&self, id: &FunctionId, version: &Version, provider: ProviderId) -> bool {
        self.read()
            .functions
            .get(id)
            .and_then(|versions| versions.get(version))
            .is_some_and(|entry| entry.providers.contains(&provider))
    }

    /// How many more versions the catalog takes before its limit.
    pub fn room(&self) -> usize {
        self.version_limit.saturating_sub(self.read().versions)
    }

    /// The live providers of any version of `id`.
    pub fn providers_of(&self, id: &str) -> Vec<ProviderId> {
        let mut providers: Vec<ProviderId> = self
            .read()
            .functions
            .get(id)
            .into_iter()
            .flat_map(|versions| versions.values())
            .flat_map(|entry| entry.providers.iter().copied())
            .collect();
        providers.sort_by_key(|p| p.0);
        providers.dedup();
        providers
    }

    /// Every known version with its providers, sorted by id then version.
    pub fn list(&self) -> Vec<Listing> {
        let directory = self.read();
        let mut rows: Vec<Listing> = directory
            .functions
            .values()
            .flat_map(|versions| versions.values())
            .map(|entry| Listing {
                capability: entry.capability.clone(),
                providers: entry.providers.clone(),
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.capability.id(), a.capability.version())
                .cmp(&(b.capability.id(), b.capability.version()))
        });
        rows
    }
}
