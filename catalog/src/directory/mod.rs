//! The [`Catalog`]: every known capability version and who provides it now.
//!
//! Reads (resolution, tool lists) take a shared lock and clone an `Arc`;
//! writes (registration, a provider leaving) take the exclusive lock, publish
//! their change while holding it, and hand new definitions to the store's
//! writer without waiting for the disk.
//!
//! By concern: [`registration`] (versions and their providers),
//! [`resolution`] (an id and requirement to one version; listings),
//! [`deprecation`], [`publishing`] (the change feed and the store hand-off).

mod deprecation;
mod publishing;
mod registration;
mod resolution;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::NaiveDate;
use semver::{Version, VersionReq};

use crate::changes::{ChangeFeed, ChangeKind};
use crate::definition::{Capability, DefinitionHash};
use crate::lifecycle;
use crate::naming::FunctionId;
use crate::redefinition::Redefinition;
use crate::store::{DefinitionSink, Store, StoreError};

/// An opaque provider handle; the gateway knows what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(pub u64);

/// Version requirements a caller is held to, by function id.
pub type Pins = HashMap<FunctionId, VersionReq>;

/// The outcome of resolution: one version and one of its providers.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub capability: Arc<Capability>,
    /// The provider round-robin picks.
    pub provider: ProviderId,
    /// The version's other providers (empty with one), for the gateway to
    /// prefer the least loaded and to retry elsewhere.
    pub others: Vec<ProviderId>,
}

/// Two definitions for one `id@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub id: FunctionId,
    pub version: Version,
    pub existing: DefinitionHash,
    pub offered: DefinitionHash,
    /// The agent-visible fields that differ.
    pub differs: Vec<&'static str>,
}

impl Conflict {
    fn offer(&self) -> String {
        format!(
            "this registration offers {}, which differs in {}",
            self.offered,
            self.differs.join(", ")
        )
    }

    fn hint(&self) -> &'static str {
        if self.version.major == 0 || !self.version.pre.is_empty() {
            " (this gateway's redefine_versions rule is \"never\"; \"unstable\" lets 0.x and pre-release versions change)"
        } else {
            ""
        }
    }
}

/// A registration the directory cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "{}@{} is provided by another live worker with definition {}; {}. Publish it as a new version, or stop the other providers first",
        .0.id, .0.version, .0.existing, .0.offer()
    )]
    LiveConflict(Box<Conflict>),
    #[error(
        "{}@{} is pinned to definition {}; {}. Published versions are immutable: register the change as a new version{}",
        .0.id, .0.version, .0.existing, .0.offer(), .0.hint()
    )]
    Immutable(Box<Conflict>),
    #[error(
        "the catalog holds its limit of {limit} versions (max_catalog_versions); a new version is refused until the limit is raised"
    )]
    Full { limit: usize },
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The provider joined; `kind` is the change it made.
    Added(ChangeKind),
    /// The provider already provided this version with this definition.
    Unchanged,
}

/// A version and its live providers.
struct VersionEntry {
    capability: Arc<Capability>,
    providers: Vec<ProviderId>,
    /// Spreads calls across providers.
    cursor: AtomicUsize,
}

impl VersionEntry {
    fn new(capability: Arc<Capability>) -> Self {
        Self {
            capability,
            providers: Vec::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> Option<ProviderId> {
        match self.providers.len() {
            0 => None,
            1 => Some(self.providers[0]),
            n => Some(self.providers[self.cursor.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// This version and the provider round-robin picks, if it has one.
    fn resolved(&self) -> Option<Resolved> {
        let provider = self.pick()?;
        Some(Resolved {
            capability: self.capability.clone(),
            provider,
            others: self
                .providers
                .iter()
                .copied()
                .filter(|other| *other != provider)
                .collect(),
        })
    }
}

#[derive(Default)]
struct Directory {
    functions: HashMap<FunctionId, BTreeMap<Version, VersionEntry>>,
    /// Versions across all functions (none is ever removed).
    versions: usize,
}

/// The live catalog.
pub struct Catalog {
    directory: RwLock<Directory>,
    feed: RwLock<ChangeFeed>,
    writer: Option<Box<dyn DefinitionSink>>,
    redefinition: Redefinition,
    /// Most versions the catalog holds; a new one beyond is refused.
    version_limit: usize,
    /// Today's date, for sunsets; replaceable in tests.
    clock: fn() -> NaiveDate,
}

/// One row of a directory listing.
#[derive(Debug, Clone)]
pub struct Listing {
    pub capability: Arc<Capability>,
    pub providers: Vec<ProviderId>,
}

impl Catalog {
    /// A catalog that keeps nothing on disk (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self::with_writer(None)
    }

    /// Opens a catalog over `store`: restores every stored version (offline
    /// until a provider registers it) and starts the store's writer.
    pub async fn open(store: Store) -> Result<Self, StoreError> {
        let stored = store.load().await?;
        let catalog = Self::with_writer(Some(Box::new(store.writer())));
        tracing::info!(versions = stored.len(), "catalog restored");
        catalog.restore(stored);
        Ok(catalog)
    }

    fn with_writer(writer: Option<Box<dyn DefinitionSink>>) -> Self {
        Self {
            directory: RwLock::new(Directory::default()),
            feed: RwLock::new(ChangeFeed::new()),
            writer,
            redefinition: Redefinition::default(),
            version_limit: usize::MAX,
            clock: lifecycle::today,
        }
    }

    /// Replaces the source of today's date (tests, simulations of a sunset).
    pub fn with_clock(mut self, clock: fn() -> NaiveDate) -> Self {
        self.clock = clock;
        self
    }

    fn read(&self) -> RwLockReadGuard<'_, Directory> {
        // A panic elsewhere never leaves the maps half-updated (each write is
        // a single insert or removal), so a poisoned lock is still usable.
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Draft;
    use crate::lifecycle::{DeprecateError, Deprecation};
    use serde_json::json;

    fn capability(id: &str, version: &str, description: &str) -> Capability {
        Draft {
            id: id.into(),
            version: Some(json!(version)),
            description: Some(description.into()),
            ..Default::default()
        }
        .build()
        .unwrap()
    }

    #[test]
    fn beyond_the_version_limit_new_versions_are_refused_and_known_ones_still_register() {
        let catalog = Catalog::in_memory().with_version_limit(2);
        let provider = ProviderId(1);
        for (id, version) in [("a::f", "1.0.0"), ("a::f", "2.0.0")] {
            catalog
                .register(capability(id, version, "d"), provider)
                .unwrap();
        }
        for (id, version) in [("a::f", "3.0.0"), ("b::g", "1.0.0")] {
            let refused = catalog
                .register(capability(id, version, "d"), ProviderId(2))
                .unwrap_err();
            assert!(
                matches!(refused, RegisterError::Full { limit: 2 }),
                "{refused}"
            );
            assert!(refused.to_string().contains("max_catalog_versions"));
        }
        assert!(catalog.providers_of("b::g").is_empty());
        assert_eq!(catalog.list().len(), 2, "nothing of a refused id is kept");
        // A version the catalog already holds is not a new one.
        assert_eq!(
            catalog
                .register(capability("a::f", "1.0.0", "d"), ProviderId(2))
                .unwrap(),
            Registered::Added(ChangeKind::ProviderAdded)
        );
    }

    #[test]
    fn resolves_the_highest_live_matching_version() {
        let catalog = Catalog::in_memory();
        catalog
            .register(capability("a::f", "1.0.0", "one"), ProviderId(1))
            .unwrap();
        catalog
            .register(capability("a::f", "1.4.0", "one-four"), ProviderId(2))
            .unwrap();
        catalog
            .register(capability("a::f", "2.0.0", "two"), ProviderId(3))
            .unwrap();

        let any = catalog.resolve("a::f", None).unwrap();
        assert_eq!(any.capability.version().to_string(), "2.0.0");
        let req = VersionReq::parse("^1").unwrap();
        let one = catalog.resolve("a::f", Some(&req)).unwrap();
        assert_eq!(
            (one.capability.version().to_string(), one.provider),
            ("1.4.0".into(), ProviderId(2))
        );

        assert!(catalog.unregister(&FunctionId::parse("a::f").unwrap(), ProviderId(2)));
        let one = catalog.resolve("a::f", Some(&req)).unwrap();
        assert_eq!(one.capability.version().to_string(), "1.0.0");

        let req = VersionReq::parse("^3").unwrap();
        let error = catalog.resolve("a::f", Some(&req)).unwrap_err().to_string();
        assert!(error.contains("no version matches ^3"), "{error}");
    }

    #[test]
    fn pins_choose_the_listed_version() {
        let catalog = Catalog::in_memory();
        for (version, provider) in [("1.2.0", 1), ("2.0.0", 2)] {
            catalog
                .register(capability("a::f", version, "x"), ProviderId(provider))
                .unwrap();
        }
        catalog
            .register(capability("a::g", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        let versions = |list: Vec<Arc<Capability>>| -> Vec<String> {
            list.iter()
                .map(|c| format!("{}@{}", c.id(), c.version()))
                .collect()
        };
        assert_eq!(versions(catalog.live()), ["a::f@2.0.0", "a::g@1.0.0"]);
        let mut pins = Pins::new();
        pins.insert(
            FunctionId::parse("a::f").unwrap(),
            VersionReq::parse("^1").unwrap(),
        );
        assert_eq!(
            versions(catalog.live_pinned(&pins)),
            ["a::f@1.2.0", "a::g@1.0.0"]
        );
        // A pin no live version satisfies hides the tool.
        catalog.unregister(&FunctionId::parse("a::f").unwrap(), ProviderId(1));
        assert_eq!(versions(catalog.live_pinned(&pins)), ["a::g@1.0.0"]);
    }

    #[test]
    fn a_transfer_moves_registrations_without_publishing_a_change() {
        let catalog = Catalog::in_memory();
        for version in ["1.0.0", "2.0.0"] {
            catalog
                .register(capability("a::f", version, "x"), ProviderId(1))
                .unwrap();
        }
        catalog
            .register(capability("a::g", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        // ProviderId(3) already provides a::g beside 1: it is not listed twice.
        catalog
            .register(capability("a::g", "1.0.0", "x"), ProviderId(3))
            .unwrap();
        catalog
            .register(capability("a::h", "1.0.0", "x"), ProviderId(2))
            .unwrap();
        let revision = catalog.revision();
        let ids: Vec<FunctionId> = ["a::f", "a::g", "a::h", "a::missing"]
            .iter()
            .map(|id| FunctionId::parse(id).unwrap())
            .collect();
        let moved = catalog.transfer(&ids, ProviderId(1), ProviderId(3));
        assert_eq!(moved, vec![ids[0].clone(), ids[1].clone()]);
        assert_eq!(catalog.revision(), revision, "a transfer publishes nothing");
        let providers = |id: &str| -> Vec<(String, Vec<u64>)> {
            catalog
                .list()
                .into_iter()
                .filter(|row| row.capability.id().as_str() == id)
                .map(|row| {
                    (
                        row.capability.version().to_string(),
                        row.providers.iter().map(|p| p.0).collect(),
                    )
                })
                .collect()
        };
        assert_eq!(
            providers("a::f"),
            [("1.0.0".to_owned(), vec![3]), ("2.0.0".to_owned(), vec![3])]
        );
        assert_eq!(providers("a::g"), [("1.0.0".to_owned(), vec![3])]);
        assert_eq!(providers("a::h"), [("1.0.0".to_owned(), vec![2])]);
        assert!(
            !catalog.unregister(&ids[0], ProviderId(1)),
            "1 provides nothing now"
        );
    }

    #[test]
    fn spreads_calls_across_providers_of_one_version() {
        let catalog = Catalog::in_memory();
        for provider in [1, 2] {
            catalog
                .register(capability("a::f", "1.0.0", "x"), ProviderId(provider))
                .unwrap();
        }
        let picks: Vec<u64> = (0..4)
            .map(|_| catalog.resolve("a::f", None).unwrap().provider.0)
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2, "{picks:?}");
    }

    #[test]
    fn a_live_definition_cannot_be_changed_by_another_provider() {
        let catalog = Catalog::in_memory();
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        let error = catalog
            .register(capability("a::f", "1.0.0", "changed"), ProviderId(2))
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("a::f@1.0.0") && text.matches("sha256:").count() == 2,
            "{text}"
        );
        assert!(text.contains("differs in description"), "{text}");
        // The original stays in force.
        assert_eq!(
            catalog
                .resolve("a::f", None)
                .unwrap()
                .capability
                .definition()
                .description
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn offline_versions_stay_known_but_are_not_live() {
        let catalog = Catalog::in_memory();
        let mut changes = catalog.subscribe();
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        assert_eq!(catalog.live().len(), 1);
        catalog.unregister(&FunctionId::parse("a::f").unwrap(), ProviderId(1));
        assert!(catalog.live().is_empty());
        assert_eq!(catalog.list().len(), 1);
        let error = catalog.resolve("a::f", None).unwrap_err().to_string();
        assert!(
            error.contains("no worker providing it is connected"),
            "{error}"
        );

        let kinds: Vec<(u64, ChangeKind)> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| (c.revision, c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (1, ChangeKind::Defined),
                (2, ChangeKind::Online),
                (3, ChangeKind::Offline)
            ]
        );
        assert_eq!(catalog.revision(), 3);
    }

    #[test]
    fn a_declared_version_is_offline_until_a_worker_provides_that_definition() {
        let catalog = Catalog::in_memory();
        let mut changes = catalog.subscribe();
        assert_eq!(
            catalog.define(capability("a::f", "1.0.0", "x")).unwrap(),
            Registered::Added(ChangeKind::Defined)
        );
        assert_eq!(
            catalog.define(capability("a::f", "1.0.0", "x")).unwrap(),
            Registered::Unchanged
        );
        assert!(catalog.live().is_empty());
        assert_eq!(catalog.list().len(), 1);
        assert!(catalog.resolve("a::f", None).is_err());

        // A worker offering another definition is refused: the declaration pins it.
        let error = catalog
            .register(capability("a::f", "1.0.0", "poisoned"), ProviderId(1))
            .unwrap_err();
        assert!(matches!(error, RegisterError::Immutable(_)), "{error}");

        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        assert_eq!(
            catalog.resolve("a::f", None).unwrap().provider,
            ProviderId(1)
        );
        let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, vec![ChangeKind::Defined, ChangeKind::Online]);
    }

    #[test]
    fn a_declaration_cannot_change_a_live_version() {
        let catalog = Catalog::in_memory().with_redefinition(Redefinition::Unstable);
        catalog
            .register(capability("a::f", "0.1.0", "x"), ProviderId(1))
            .unwrap();
        let error = catalog
            .define(capability("a::f", "0.1.0", "changed"))
            .unwrap_err();
        assert!(matches!(error, RegisterError::LiveConflict(_)), "{error}");
        catalog.unregister(&FunctionId::parse("a::f").unwrap(), ProviderId(1));
        // Offline and unstable: the operator's rule allows the redefinition.
        assert_eq!(
            catalog
                .define(capability("a::f", "0.1.0", "changed"))
                .unwrap(),
            Registered::Added(ChangeKind::Redefined)
        );
    }

    #[test]
    fn registering_twice_is_idempotent() {
        let catalog = Catalog::in_memory();
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        let again = catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        assert_eq!(again, Registered::Unchanged);
        assert_eq!(catalog.revision(), 2);
    }

    #[test]
    fn a_published_version_is_immutable_even_offline() {
        let catalog = Catalog::in_memory();
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        catalog.unregister(&FunctionId::parse("a::f").unwrap(), ProviderId(1));
        let error = catalog
            .register(capability("a::f", "1.0.0", "poisoned"), ProviderId(2))
            .unwrap_err();
        assert!(matches!(error, RegisterError::Immutable(_)), "{error}");
        let text = error.to_string();
        assert!(
            text.contains("pinned to definition sha256:")
                && text.contains("differs in description"),
            "{text}"
        );
        assert!(text.contains("new version"), "{text}");
        // The same definition comes back online.
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(2))
            .unwrap();
    }

    #[test]
    fn unstable_versions_may_be_redefined_when_allowed_and_are_announced() {
        let catalog = Catalog::in_memory();
        let mut changes = catalog.subscribe();
        catalog
            .register(capability("a::f", "0.3.0", "x"), ProviderId(1))
            .unwrap();
        catalog
            .register(capability("a::f", "0.3.0", "y"), ProviderId(1))
            .unwrap();
        let kinds: Vec<ChangeKind> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.kind)
            .collect();
        assert!(kinds.contains(&ChangeKind::Redefined), "{kinds:?}");
        let live = catalog.resolve("a::f", None).unwrap();
        assert_eq!(
            live.capability.definition().description.as_deref(),
            Some("y")
        );

        let strict = Catalog::in_memory().with_redefinition(Redefinition::Never);
        strict
            .register(capability("a::f", "0.3.0", "x"), ProviderId(1))
            .unwrap();
        let error = strict
            .register(capability("a::f", "0.3.0", "y"), ProviderId(1))
            .unwrap_err();
        assert!(error.to_string().contains("redefine_versions"), "{error}");
    }

    fn deprecation(sunset: &str, replacement: &str) -> Deprecation {
        Deprecation {
            sunset: Some(sunset.into()),
            replacement: Some(replacement.into()),
            reason: Some("v2 supports partial refunds".into()),
            since: None,
        }
    }

    #[test]
    fn a_deprecation_is_checked_kept_out_of_the_hash_and_announced() {
        let catalog = Catalog::in_memory()
            .with_clock(|| NaiveDate::from_ymd_opt(2026, 11, 24).unwrap_or_default());
        let id = FunctionId::parse("a::f").unwrap();
        let v1 = Version::new(1, 0, 0);
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        catalog
            .register(capability("a::f", "2.0.0", "y"), ProviderId(1))
            .unwrap();
        let mut changes = catalog.subscribe();

        let error = catalog
            .deprecate(&id, &v1, deprecation("2026-11-24", "a::f@^2"))
            .unwrap_err();
        assert!(
            matches!(error, DeprecateError::SunsetNotInFuture { .. }),
            "{error}"
        );
        let error = catalog
            .deprecate(&id, &v1, deprecation("2027-01-31", "a::f@^3"))
            .unwrap_err();
        assert!(error.to_string().contains("matches no version"), "{error}");
        let error = catalog
            .deprecate(&id, &v1, deprecation("2027-01-31", "a::f@=1.0.0"))
            .unwrap_err();
        assert!(
            matches!(error, DeprecateError::SelfReplacement { .. }),
            "{error}"
        );
        let error = catalog
            .deprecate(
                &id,
                &Version::new(9, 0, 0),
                deprecation("2027-01-31", "a::f@^2"),
            )
            .unwrap_err();
        assert!(
            matches!(error, DeprecateError::UnknownVersion { .. }),
            "{error}"
        );

        let before = catalog
            .resolve("a::f", Some(&VersionReq::parse("^1").unwrap()))
            .unwrap();
        let deprecated = catalog
            .deprecate(&id, &v1, deprecation("2027-01-31", "a::f@^2"))
            .unwrap();
        assert_eq!(
            deprecated.hash(),
            before.capability.hash(),
            "deprecation leaves the hash alone"
        );
        assert_eq!(
            deprecated
                .definition()
                .deprecation
                .as_ref()
                .unwrap()
                .since
                .as_deref(),
            Some("2026-11-24")
        );
        assert_eq!(changes.try_recv().unwrap().kind, ChangeKind::Deprecated);
        // The version's own worker can still register its definition.
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(2))
            .unwrap();
        // Still callable before the sunset.
        assert!(
            catalog
                .resolve("a::f", Some(&VersionReq::parse("^1").unwrap()))
                .is_ok()
        );
    }

    #[test]
    fn after_its_sunset_a_version_is_refused_with_its_replacement() {
        let today = || NaiveDate::from_ymd_opt(2026, 11, 24).unwrap_or_default();
        let later = || NaiveDate::from_ymd_opt(2027, 2, 1).unwrap_or_default();
        let id = FunctionId::parse("a::f").unwrap();
        let catalog = Catalog::in_memory().with_clock(today);
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        catalog
            .register(capability("a::f", "2.0.0", "y"), ProviderId(1))
            .unwrap();
        catalog
            .deprecate(
                &id,
                &Version::new(1, 0, 0),
                deprecation("2027-01-31", "a::f@^2"),
            )
            .unwrap();
        let catalog = catalog.with_clock(later);
        let error = catalog
            .resolve("a::f", Some(&VersionReq::parse("^1").unwrap()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("was sunset on 2027-01-31; use a::f@^2 instead"),
            "{error}"
        );
        assert_eq!(
            catalog
                .resolve("a::f", None)
                .unwrap()
                .capability
                .version()
                .to_string(),
            "2.0.0"
        );
        // With only the sunset version live, there is no tool to show.
        catalog.unregister(&id, ProviderId(1));
        catalog
            .register(capability("a::f", "1.0.0", "x"), ProviderId(1))
            .unwrap();
        assert!(catalog.live().is_empty(), "a sunset version is no tool");
    }
}
