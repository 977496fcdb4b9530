//! The REST services the gateway serves: imported, re-imported, kept in
//! the store, restored at start, removed — and the dispatch of a resolved
//! call to its upstream.
//!
//! Each service is one provider in the catalog ([`ProviderId`]s from
//! [`REST_PROVIDER_BASE`] up, apart from workers'), the same across
//! re-imports. Versions follow the document: see [`Services::import`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use capgate_catalog::lifecycle::Deprecation;
use capgate_catalog::store::{Store, StoreError};
use capgate_catalog::{Capability, Catalog, FunctionId, InvocationError, ProviderId, TraceContext};
use ipnet::IpNet;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::breaker::BreakerView;
use super::credentials::Credential;
use super::guard::{AddressRules, GuardError};
use super::import::{self, ImportError, Imported, Selection};
use super::plan::Plan;
use super::tls::UpstreamTls;
use super::upstream::{Upstream, UpstreamError, UpstreamSettings, guarded_client};

/// REST providers are numbered from here; workers' count up from 1.
pub const REST_PROVIDER_BASE: u64 = 1 << 62;

/// How a service came to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `POST /api/v1/rest-services` or `capgate rest import`.
    #[default]
    Api,
    /// `[[rest_services]]` in capgate.toml, imported at every start.
    Config,
}

/// What an import asks for. Kept (with the document and the versions its
/// operations took) as the service's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    pub namespace: String,
    pub base_url: String,
    /// The OpenAPI document's text.
    pub document: String,
    /// Where the document came from (a file or URL), for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The name of a credential in the gateway's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The name of TLS settings in the gateway's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Address ranges allowed although refused by default (CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<IpNet>,
    #[serde(default)]
    pub origin: Origin,
    /// Function id → the version this service provides.
    #[serde(default)]
    pub versions: BTreeMap<String, Version>,
    #[serde(default)]
    pub imported_ms: i64,
}

/// The gateway-wide settings of REST services.
pub struct RestSettings {
    pub upstream: UpstreamSettings,
    /// Credentials by name, read from configuration and environment.
    pub credentials: HashMap<String, Arc<Credential>>,
    /// TLS settings by name (a private CA, a client certificate).
    pub tls: HashMap<String, Arc<UpstreamTls>>,
    /// Most services held.
    pub max_services: usize,
    /// Loopback upstreams pass the address rules (the gateway listens only
    /// on loopback, so nothing remote can reach them through it).
    pub allow_loopback: bool,
}

/// The live catalog changes of an import in progress.
#[derive(Default)]
struct Changed {
    /// Functions whose new version the service was put on.
    put_on: Vec<FunctionId>,
    /// Functions the service was taken off, with the version it provided.
    taken_off: Vec<(FunctionId, Version)>,
}

/// Why an import or removal is refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(
        "credential '{0}' is not configured; define it under [rest.credentials.{0}] in capgate.toml (secrets come from the environment)"
    )]
    UnknownCredential(String),
    #[error(
        "TLS settings '{0}' are not configured; define them under [rest.tls.{0}] in capgate.toml (a ca_file, a client certificate)"
    )]
    UnknownTls(String),
    #[error("the gateway holds its limit of {0} REST services (rest.max_services)")]
    Full(usize),
    #[error(
        "importing would add {needed} catalog versions and the catalog has room for {room} (max_catalog_versions)"
    )]
    CatalogFull { needed: usize, room: usize },
    #[error("no REST service has namespace '{0}'")]
    Unknown(String),
    #[error(
        "REST service '{0}' is declared in capgate.toml; change or remove it there (it is imported at every start)"
    )]
    Configured(String),
    #[error(
        "namespace '{namespace}' already holds functions that are not this REST service's: {functions}"
    )]
    Taken {
        namespace: String,
        functions: String,
    },
    #[error("the OpenAPI document could not be fetched from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the catalog refused {function}@{version}: {reason}")]
    Catalog {
        function: String,
        version: String,
        reason: String,
    },
    #[error("the import stopped unexpectedly ({0}); report this as a bug")]
    Crashed(String),
    #[error("the service could not be stored: {0}")]
    Store(#[from] StoreError),
}

/// One live service.
pub struct Service {
    pub record: ServiceRecord,
    pub provider: ProviderId,
    pub title: String,
    pub api_version: String,
    pub skipped: Vec<String>,
    upstream: Upstream,
    /// Function id → its version's request plan and route.
    plans: HashMap<FunctionId, (Version, Arc<Plan>, String)>,
}

/// What an import did, for the answer.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub namespace: String,
    pub title: String,
    pub api_version: String,
    /// Each operation: function, version, route and what happened to it
    /// (`added`, `unchanged`, `new_version`).
    pub operations: Vec<OperationReport>,
    /// Versions deprecated by this import (changed or removed operations).
    pub deprecated: Vec<String>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    pub function: String,
    pub version: String,
    pub route: String,
    pub change: &'static str,
}

/// A service as `GET /api/v1/rest-services` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub namespace: String,
    pub title: String,
    pub api_version: String,
    pub base_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub origin: Origin,
    /// The credential's name (never its secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The TLS settings' name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    pub operation_count: usize,
    pub breaker: BreakerView,
    pub imported_ms: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

#[derive(Default)]
struct Held {
    by_namespace: BTreeMap<String, Arc<Service>>,
    by_provider: HashMap<ProviderId, Arc<Service>>,
}

pub struct Services {
    catalog: Arc<Catalog>,
    store: Store,
    settings: RestSettings,
    held: RwLock<Held>,
    next_provider: AtomicU64,
    /// One import or removal at a time: each reads and changes the catalog
    /// and the record of its namespace as a whole.
    changing: tokio::sync::Mutex<()>,
}

impl Services {
    pub fn new(catalog: Arc<Catalog>, store: Store, settings: RestSettings) -> Self {
        Self {
            catalog,
            store,
            settings,
            held: RwLock::default(),
            next_provider: AtomicU64::new(REST_PROVIDER_BASE),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `provider` is a REST service (not a worker).
    pub fn is_rest(provider: ProviderId) -> bool {
        provider.0 >= REST_PROVIDER_BASE
    }

    /// Calls `capability` on the service that provides it as `provider`.
    pub async fn call(
        &self,
        provider: ProviderId,
        capability: &Capability,
        input: &Value,
        trace: &TraceContext,
        until: tokio::time::Instant,
        deadline: Duration,
    ) -> Result<Value, InvocationError> {
        let service = self.read().by_provider.get(&provider).cloned();
        let function = capability.id();
        let plan = service.as_ref().and_then(|service| {
            service
                .plans
                .get(function)
                .filter(|(version, _, _)| version == capability.version())
                .map(|(_, plan, _)| plan.clone())
        });
        let (Some(service), Some(plan)) = (service, plan) else {
            return Err(InvocationError::Stopped {
                function: function.to_string(),
            });
        };
        service
            .upstream
            .call(function.as_str(), &plan, input, trace, until, deadline)
            .await
    }

    /// Whether a service has `namespace`.
    pub fn holds(&self, namespace: &str) -> bool {
        self.read().by_namespace.contains_key(namespace)
    }

    /// The namespace of the service among whose functions `function_id`
    /// would be (`petstore` for `petstore::get_pet`), if a service holds one.
    fn namespace_holding(&self, function_id: &str) -> Option<String> {
        self.read()
            .by_namespace
            .keys()
            .find(|namespace| {
                function_id
                    .strip_prefix(namespace.as_str())
                    .is_some_and(|rest| rest.starts_with("::"))
            })
            .cloned()
    }

    /// Why `function_id` may not be added by anyone but a REST service
    /// (`verb`: what was asked, "register" or "declare"), when a service
    /// holds its namespace: the service's functions come from its document
    /// only, and a foreign one would shadow them and make the next import
    /// refuse the namespace as taken.
    pub fn refusal_for(&self, function_id: &str, verb: &str) -> Option<String> {
        self.namespace_holding(function_id).map(|namespace| {
            format!(
                "{function_id} is in the namespace '{namespace}::' of the REST service imported as '{namespace}', whose functions come from its OpenAPI document only; {verb} it under another namespace, or remove the service first (capgate rest remove {namespace})"
            )
        })
    }

    /// The namespace of the service that is `provider`, if one is.
    pub fn namespace_of(&self, provider: ProviderId) -> Option<String> {
        self.read()
            .by_provider
            .get(&provider)
            .map(|service| service.record.namespace.clone())
    }

    pub fn list(&self) -> Vec<ServiceView> {
        self.read().by_namespace.values().map(|s| view(s)).collect()
    }

    /// A service and its operations (function, version, route).
    pub fn show(&self, namespace: &str) -> Option<(ServiceView, Vec<OperationReport>)> {
        let service = self.read().by_namespace.get(namespace).cloned()?;
        let mut operations: Vec<OperationReport> = service
            .plans
            .iter()
            .map(|(function, (version, _, route))| OperationReport {
                function: function.to_string(),
                version: version.to_string(),
                route: route.clone(),
                change: "live",
            })
            .collect();
        operations.sort_by(|a, b| a.function.cmp(&b.function));
        Some((view(&service), operations))
    }

    /// Fetches a document from `url`, through the same address rules as
    /// calls (plus `allow`), at most [`super::document::MAX_DOCUMENT_BYTES`].
    pub async fn fetch_document(
        &self,
        url: &str,
        allow: &[IpNet],
        tls: Option<&str>,
    ) -> Result<String, ServiceError> {
        let tls = self.tls_named(tls)?;
        let fetch_error = |reason: String| ServiceError::Fetch {
            url: url.to_owned(),
            reason,
        };
        let settings = self.upstream_settings(allow);
        let parsed = url::Url::parse(url).map_err(|e| fetch_error(e.to_string()))?;
        settings
            .rules
            .check_url(&parsed)
            .map_err(|e| fetch_error(e.to_string()))?;
        let client = guarded_client(&settings, tls.as_deref())?;
        let mut response = client
            .get(parsed)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| fetch_error(super::upstream::describe(&e)))?;
        if !response.status().is_success() {
            return Err(fetch_error(format!("it answered {}", response.status())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fetch_error(super::upstream::describe(&e)))?
        {
            if bytes.len() + chunk.len() > super::document::MAX_DOCUMENT_BYTES {
                return Err(ServiceError::Import(ImportError::Document(
                    super::document::DocumentError::TooLarge {
                        size: bytes.len() + chunk.len(),
                    },
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        String::from_utf8(bytes).map_err(|_| fetch_error("the document is not UTF-8 text".into()))
    }

    /// The TLS settings a service names, if it names any.
    fn tls_named(&self, name: Option<&str>) -> Result<Option<Arc<UpstreamTls>>, ServiceError> {
        name.map(|name| {
            self.settings
                .tls
                .get(name)
                .cloned()
                .ok_or_else(|| ServiceError::UnknownTls(name.to_owned()))
        })
        .transpose()
    }

    fn upstream_settings(&self, allow: &[IpNet]) -> UpstreamSettings {
        UpstreamSettings {
            rules: AddressRules {
                allow: allow.to_vec(),
                allow_loopback: self.settings.allow_loopback,
            },
            ..self.settings.upstream.clone()
        }
    }

    /// Restores the stored services (at start, after the catalog): each is
    /// imported again from its kept document, taking the versions it had.
    /// One that no longer imports (a credential or TLS settings gone from the
    /// configuration) is logged and left out; its versions stay offline.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        let mut restored = 0;
        for (namespace, text) in self.store.rest_services().await? {
            let record: ServiceRecord = match serde_json::from_str(&text) {
                Ok(record) => record,
                Err(error) => {
                    tracing::error!(%namespace, %error, "a stored REST service could not be read; left out");
                    continue;
                }
            };
            if record.origin == Origin::Config {
                // Imported from the configuration, which may have changed.
                continue;
            }
            match self.import(record).await {
                Ok(_) => restored += 1,
                Err(error) => {
                    tracing::error!(%namespace, %error, "a stored REST service could not be restored; its functions stay offline")
                }
            }
        }
        Ok(restored)
    }

    /// The versions a configured service's operations took last time
    /// (kept in the store), so a restart does not move them.
    pub async fn stored_versions(&self, namespace: &str) -> BTreeMap<String, Version> {
        let stored = match self.store.rest_services().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%namespace, %error, "the stored versions of a configured REST service could not be read; its operations take the document's version");
                Vec::new()
            }
        };
        stored
            .into_iter()
            .find(|(ns, _)| ns == namespace)
            .and_then(|(_, text)| serde_json::from_str::<ServiceRecord>(&text).ok())
            .map(|record| record.versions)
            .unwrap_or_default()
    }

    /// Imports (or re-imports) a service, answering once its versions and
    /// its record are on disk. Versions:
    ///
    /// - each operation takes the document's version ([`import::api_version`]);
    /// - an operation unchanged since the last import keeps its version;
    /// - one whose definition changed while `info.version` did not takes the
    ///   next patch above its highest version; the version it replaces is
    ///   deprecated with the new one as replacement and goes offline;
    /// - an operation gone from the document is deprecated and goes offline
    ///   (versions are never deleted: they pin their definitions).
    ///
    /// An import that fails before its record is on disk leaves the live
    /// catalog as it was (`undo`); deprecations are made after it.
    pub async fn import(&self, record: ServiceRecord) -> Result<ImportReport, ServiceError> {
        // One import at a time, from parsing on: a parsed document takes
        // several times its text in memory, so concurrent imports of large
        // documents must not add up.
        let _changing = self.changing.lock().await;
        let tls = self.tls_named(record.tls.as_deref())?;
        let credential = match &record.auth {
            Some(name) => Some(
                self.settings
                    .credentials
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ServiceError::UnknownCredential(name.clone()))?,
            ),
            None => None,
        };
        // Parsing and checking a large document takes CPU for a while:
        // off the async runtime's threads, so calls go on meanwhile.
        let (mut record, imported) = tokio::task::spawn_blocking(move || {
            let imported = import::import(
                &record.document,
                &Selection {
                    namespace: &record.namespace,
                    include: &record.include,
                    exclude: &record.exclude,
                    owner: record.owner.as_deref(),
                },
            );
            (record, imported)
        })
        .await
        .map_err(|error| ServiceError::Crashed(error.to_string()))?;
        let imported = imported?;
        let upstream = Upstream::new(
            &record.namespace,
            &record.base_url,
            &self.upstream_settings(&record.allow),
            credential,
            tls.as_deref(),
        )?;
        let previous = self.read().by_namespace.get(&record.namespace).cloned();
        if previous.is_none() && self.read().by_namespace.len() >= self.settings.max_services {
            return Err(ServiceError::Full(self.settings.max_services));
        }
        if let Some(previous) = &previous
            && previous.record.origin == Origin::Config
            && record.origin == Origin::Api
        {
            return Err(ServiceError::Configured(record.namespace.clone()));
        }
        let provider = previous
            .as_ref()
            .map(|p| p.provider)
            .unwrap_or_else(|| ProviderId(self.next_provider.fetch_add(1, Ordering::Relaxed)));
        self.check_namespace_free(&record.namespace, provider)?;
        let last: BTreeMap<String, Version> = match &previous {
            Some(previous) => previous.record.versions.clone(),
            None => std::mem::take(&mut record.versions),
        };
        let chosen = self.choose_versions(&imported, &last)?;
        let needed = chosen.iter().filter(|c| c.new_version).count();
        let room = self.catalog.room();
        if needed > room {
            return Err(ServiceError::CatalogFull { needed, room });
        }
        let mut report = ImportReport {
            namespace: record.namespace.clone(),
            title: imported.title.clone(),
            api_version: imported.api_version.clone(),
            operations: Vec::new(),
            deprecated: Vec::new(),
            skipped: imported.skipped.clone(),
        };
        let mut plans = HashMap::new();
        let mut versions = BTreeMap::new();
        // What this import changes in the live catalog before its record is
        // on disk, undone if it fails there; deprecations wait until then.
        let mut changed = Changed::default();
        let mut replaced = Vec::new();
        let mut removed = Vec::new();
        for (operation, choice) in imported.operations.into_iter().zip(chosen) {
            let function = operation.function.clone();
            let before = last.get(function.as_str());
            let change = match before {
                Some(v) if *v == choice.capability.version().clone() => "unchanged",
                Some(_) => "new_version",
                None => "added",
            };
            if let Some(old) = before
                && old != choice.capability.version()
            {
                // Off every version first, then onto the new one.
                self.catalog.unregister(&function, provider);
                changed.taken_off.push((function.clone(), old.clone()));
            }
            let version = choice.capability.version().clone();
            if !self.catalog.provides(&function, &version, provider) {
                if let Err(error) = self.catalog.register(choice.capability, provider) {
                    self.undo(&changed, provider);
                    return Err(ServiceError::Catalog {
                        function: function.to_string(),
                        version: version.to_string(),
                        reason: error.to_string(),
                    });
                }
                changed.put_on.push(function.clone());
            }
            if let Some(old) = before
                && *old != version
            {
                report.deprecated.push(format!("{function}@{old}"));
                replaced.push((
                    function.clone(),
                    old.clone(),
                    format!("{function}@={version}"),
                ));
            }
            report.operations.push(OperationReport {
                function: function.to_string(),
                version: version.to_string(),
                route: operation.route.clone(),
                change,
            });
            versions.insert(function.to_string(), version.clone());
            plans.insert(function, (version, operation.plan, operation.route));
        }
        for (function, old) in &last {
            if versions.contains_key(function) {
                continue;
            }
            let Ok(id) = FunctionId::parse(function) else {
                continue;
            };
            report.deprecated.push(format!("{function}@{old}"));
            removed.push((id, old.clone()));
        }
        record.versions = versions;
        record.imported_ms = crate::queue::now_ms();
        let saved = match serde_json::to_string(&record) {
            Ok(text) => self
                .store
                .save_rest_service(&record.namespace, &text)
                .await
                .map_err(ServiceError::from),
            Err(error) => Err(ServiceError::Crashed(error.to_string())),
        };
        if let Err(error) = saved {
            self.undo(&changed, provider);
            return Err(error);
        }
        for (id, old, replacement) in replaced {
            self.deprecate(
                &id,
                &old,
                Some(replacement),
                "its definition changed in the service's OpenAPI document",
            );
        }
        for (id, old) in removed {
            self.catalog.unregister(&id, provider);
            self.deprecate(
                &id,
                &old,
                None,
                "the operation is no longer in the service's OpenAPI document",
            );
        }
        self.catalog.flush().await?;
        let service = Arc::new(Service {
            provider,
            title: imported.title,
            api_version: imported.api_version,
            skipped: imported.skipped,
            upstream,
            plans,
            record,
        });
        let mut held = self.write();
        held.by_provider.insert(provider, service.clone());
        held.by_namespace
            .insert(service.record.namespace.clone(), service);
        drop(held);
        tracing::info!(namespace = %report.namespace, operations = report.operations.len(),
            deprecated = report.deprecated.len(), "REST service imported");
        Ok(report)
    }

    /// Removes a service: its versions are deprecated and go offline; its
    /// record is forgotten. Answers once that is on disk.
    pub async fn remove(
        &self,
        namespace: &str,
        origin: Origin,
    ) -> Result<Vec<String>, ServiceError> {
        let _changing = self.changing.lock().await;
        let service = self
            .read()
            .by_namespace
            .get(namespace)
            .cloned()
            .ok_or_else(|| ServiceError::Unknown(namespace.to_owned()))?;
        if service.record.origin == Origin::Config && origin == Origin::Api {
            return Err(ServiceError::Configured(namespace.to_owned()));
        }
        for function in service.plans.keys() {
            self.catalog.unregister(function, service.provider);
        }
        let versions = service
            .plans
            .iter()
            .map(|(function, (version, _, _))| (function.clone(), version.clone()));
        let deprecated = self
            .retire(
                namespace,
                versions,
                "its REST service was removed from the gateway",
            )
            .await?;
        let mut held = self.write();
        held.by_namespace.remove(namespace);
        held.by_provider.remove(&service.provider);
        Ok(deprecated)
    }

    /// Retires the services an earlier configuration imported and
    /// `configured` no longer names: their versions are deprecated (they
    /// are offline already: nothing imported them this time) and their
    /// records forgotten, as `remove` does for the others. Answers once
    /// that is on disk, with the versions deprecated.
    pub async fn retire_unconfigured(
        &self,
        configured: &[&str],
    ) -> Result<Vec<String>, ServiceError> {
        let _changing = self.changing.lock().await;
        let mut deprecated = Vec::new();
        for (namespace, text) in self.store.rest_services().await? {
            let Ok(record) = serde_json::from_str::<ServiceRecord>(&text) else {
                continue;
            };
            if record.origin != Origin::Config || configured.contains(&namespace.as_str()) {
                continue;
            }
            let versions = record
                .versions
                .into_iter()
                .filter_map(|(function, version)| {
                    FunctionId::parse(&function).ok().map(|id| (id, version))
                });
            deprecated.extend(
                self.retire(
                    &namespace,
                    versions,
                    "its REST service was removed from the configuration",
                )
                .await?,
            );
            tracing::info!(%namespace, "REST service no longer configured: its versions are deprecated");
        }
        deprecated.sort();
        Ok(deprecated)
    }

    /// Deprecates a service's `versions` for `reason`, makes that durable,
    /// and only then forgets the service's record — in that order, so that
    /// a crash between the two leaves the record to retire it again at the
    /// next start, never a forgotten service whose versions were not
    /// deprecated. Gives `function@version` of each, sorted.
    async fn retire(
        &self,
        namespace: &str,
        versions: impl Iterator<Item = (FunctionId, Version)>,
        reason: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let mut deprecated = Vec::new();
        for (function, version) in versions {
            self.deprecate(&function, &version, None, reason);
            deprecated.push(format!("{function}@{version}"));
        }
        self.catalog.flush().await?;
        self.store.delete_rest_service(namespace).await?;
        deprecated.sort();
        Ok(deprecated)
    }

    /// Puts the live catalog back as it was before an import that failed
    /// before its record was on disk: the versions it put the service on
    /// are taken off, the ones it took the service off are provided again.
    /// Definitions it added stay, offline, as any defined version does.
    fn undo(&self, changed: &Changed, provider: ProviderId) {
        for function in &changed.put_on {
            self.catalog.unregister(function, provider);
        }
        for (function, old) in &changed.taken_off {
            let previous = self
                .catalog
                .versions_of(function)
                .into_iter()
                .find(|c| c.version() == old);
            let restored = previous.map(|capability| {
                self.catalog
                    .register(Capability::clone(&capability), provider)
            });
            if let Some(Err(error)) = restored {
                tracing::error!(%function, version = %old, %error,
                    "a REST version could not be provided again after a failed import");
            }
        }
    }

    fn deprecate(
        &self,
        id: &FunctionId,
        version: &Version,
        replacement: Option<String>,
        reason: &str,
    ) {
        let already = self
            .catalog
            .versions_of(id)
            .iter()
            .any(|c| c.version() == version && c.definition().deprecation.is_some());
        if already {
            return;
        }
        let deprecation = Deprecation {
            since: None,
            sunset: None,
            replacement,
            reason: Some(reason.to_owned()),
        };
        if let Err(error) = self.catalog.deprecate(id, version, deprecation) {
            tracing::warn!(%id, %version, %error, "a REST version could not be deprecated");
        }
    }

    /// Functions of the namespace provided by anything but this service.
    fn check_namespace_free(
        &self,
        namespace: &str,
        provider: ProviderId,
    ) -> Result<(), ServiceError> {
        let prefix = format!("{namespace}::");
        let foreign: Vec<String> = self
            .catalog
            .live_rows()
            .into_iter()
            .filter(|row| row.capability.id().as_str().starts_with(&prefix))
            .filter(|row| row.providers.iter().any(|p| *p != provider))
            .map(|row| row.capability.id().to_string())
            .take(5)
            .collect();
        if foreign.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Taken {
                namespace: namespace.to_owned(),
                functions: foreign.join(", "),
            })
        }
    }

    /// The version each operation takes (see [`Services::import`]).
    fn choose_versions(
        &self,
        imported: &Imported,
        last: &BTreeMap<String, Version>,
    ) -> Result<Vec<Choice>, ServiceError> {
        let mut chosen = Vec::with_capacity(imported.operations.len());
        for operation in &imported.operations {
            let known = self.catalog.versions_of(&operation.function);
            let at = |version: &Version| -> Result<Capability, ServiceError> {
                let mut definition = operation.capability.definition().clone();
                definition.version = version.clone();
                Capability::from_definition(definition).map_err(|error| ServiceError::Catalog {
                    function: operation.function.to_string(),
                    version: version.to_string(),
                    reason: error.to_string(),
                })
            };
            let same = |candidate: &Capability| {
                known
                    .iter()
                    .find(|k| k.version() == candidate.version())
                    .map(|k| k.hash() == candidate.hash())
            };
            let document_version = imported.version.clone();
            let candidates = last
                .get(operation.function.as_str())
                .into_iter()
                .cloned()
                .chain(std::iter::once(document_version.clone()));
            let mut picked = None;
            for version in candidates {
                if version < document_version {
                    // The document moved on: its version, not an older one.
                    continue;
                }
                let capability = at(&version)?;
                match same(&capability) {
                    Some(true) => {
                        picked = Some(Choice {
                            capability,
                            new_version: false,
                        });
                        break;
                    }
                    Some(false) => continue,
                    None => {
                        picked = Some(Choice {
                            capability,
                            new_version: true,
                        });
                        break;
                    }
                }
            }
            let choice = match picked {
                Some(choice) => choice,
                None => {
                    let highest = known
                        .iter()
                        .map(|k| k.version().clone())
                        .max()
                        .unwrap_or(document_version);
                    let next = Version::new(highest.major, highest.minor, highest.patch + 1);
                    Choice {
                        capability: at(&next)?,
                        new_version: true,
                    }
                }
            };
            chosen.push(choice);
        }
        Ok(chosen)
    }
}

struct Choice {
    capability: Capability,
    new_version: bool,
}

fn view(service: &Service) -> ServiceView {
    ServiceView {
        namespace: service.record.namespace.clone(),
        title: service.title.clone(),
        api_version: service.api_version.clone(),
        base_url: service.upstream.base_url().to_owned(),
        source: service.record.source.clone(),
        origin: service.record.origin,
        auth: service.record.auth.clone(),
        tls: service.record.tls.clone(),
        operation_count: service.plans.len(),
        breaker: service.upstream.breaker(),
        imported_ms: service.record.imported_ms,
        skipped: service.skipped.clone(),
    }
}

impl From<GuardError> for ServiceError {
    fn from(error: GuardError) -> Self {
        Self::Upstream(UpstreamError::Guard(error))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A 3.1 document of GET operations, each `(operationId, path, query
    /// parameter)`.
    fn document(version: &str, operations: &[(&str, &str, &str)]) -> String {
        let paths: serde_json::Map<String, Value> = operations
            .iter()
            .map(|(id, path, query)| {
                (
                    (*path).to_owned(),
                    serde_json::json!({"get": {
                        "operationId": id,
                        "parameters": [{"name": query, "in": "query", "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "ok"}}
                    }}),
                )
            })
            .collect();
        serde_json::json!({
            "openapi": "3.1.0",
            "info": {"title": "Pets", "version": version},
            "paths": paths,
        })
        .to_string()
    }

    fn record(document: String) -> ServiceRecord {
        ServiceRecord {
            namespace: "pets".into(),
            base_url: "http://127.0.0.1:9".into(),
            document,
            source: None,
            include: Vec::new(),
            exclude: Vec::new(),
            auth: None,
            tls: None,
            owner: None,
            allow: Vec::new(),
            origin: Origin::Api,
            versions: BTreeMap::new(),
            imported_ms: 0,
        }
    }

    /// What the namespace shows live: each version, and whether it is
    /// deprecated.
    fn live(catalog: &Catalog) -> BTreeSet<(String, String, bool)> {
        catalog
            .live_rows()
            .into_iter()
            .filter(|row| row.capability.id().as_str().starts_with("pets::"))
            .map(|row| {
                (
                    row.capability.id().to_string(),
                    row.capability.version().to_string(),
                    row.capability.definition().deprecation.is_some(),
                )
            })
            .collect()
    }

    /// An import whose record cannot be written (the store refuses it)
    /// fails and leaves the live catalog as it was: the changed operation
    /// keeps its old version, the removed one stays, the added one does
    /// not appear, nothing is deprecated; the service and its stored record
    /// are the first import's. The same import succeeds once the store
    /// accepts writes again.
    #[tokio::test]
    async fn an_import_whose_record_cannot_be_written_changes_nothing_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let catalog = Arc::new(Catalog::open(store.clone()).await.unwrap());
        let services = Services::new(
            catalog.clone(),
            store.clone(),
            RestSettings {
                upstream: UpstreamSettings::default(),
                credentials: HashMap::new(),
                tls: HashMap::new(),
                max_services: 8,
                allow_loopback: true,
            },
        );
        let first = document("1.0.0", &[("getA", "/a", "q"), ("getB", "/b", "q")]);
        services.import(record(first)).await.unwrap();
        let before = live(&catalog);
        assert_eq!(
            before
                .iter()
                .map(|(id, _, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["pets::get_a", "pets::get_b"]
        );
        assert!(before.iter().all(|(_, _, deprecated)| !deprecated));

        // The store refuses the service's record from here on: its table
        // is renamed through a second connection to the same file.
        let file = dir.path().join(capgate_catalog::store::SQLITE_FILE);
        let other = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        sqlx::query("ALTER TABLE rest_services RENAME TO rest_services_away")
            .execute(&other)
            .await
            .unwrap();
        let second = document("1.1.0", &[("getA", "/a", "changed"), ("getC", "/c", "q")]);
        let refused = services.import(record(second.clone())).await;
        assert!(
            matches!(refused, Err(ServiceError::Store(_))),
            "{:?}",
            refused.map(|report| report.operations.len())
        );
        assert_eq!(live(&catalog), before);
        assert_eq!(services.list()[0].operation_count, 2);

        sqlx::query("ALTER TABLE rest_services_away RENAME TO rest_services")
            .execute(&other)
            .await
            .unwrap();
        let stored = services.stored_versions("pets").await;
        assert_eq!(
            stored
                .iter()
                .map(|(f, v)| format!("{f}@{v}"))
                .collect::<Vec<_>>(),
            ["pets::get_a@1.0.0", "pets::get_b@1.0.0"],
            "the stored record is the first import's"
        );
        let report = services.import(record(second)).await.unwrap();
        assert_eq!(report.deprecated.len(), 2, "{:?}", report.deprecated);
        let after = live(&catalog);
        assert!(
            after.contains(&("pets::get_c".into(), "1.1.0".into(), false)),
            "{after:?}"
        );
        assert!(
            after.contains(&("pets::get_a".into(), "1.1.0".into(), false)),
            "{after:?}"
        );
        assert!(
            !after.iter().any(|(id, _, _)| id == "pets::get_b"),
            "{after:?}"
        );
    }
}
