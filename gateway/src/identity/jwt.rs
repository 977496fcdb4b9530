//! JWT bearer tokens from configured issuers.
//!
//! A token is matched to its issuer by `iss`, then verified with that
//! issuer's keys and rules only: its algorithms (never `none`, never an
//! HMAC over a public key), its audience (RFC 8707: this gateway), expiry
//! and required scopes. JWKS URLs are fetched at start, refreshed every
//! few minutes, and again (at most every 30 s) when a token names a key id
//! the set does not have — how issuers rotate keys.

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, errors::ErrorKind};
use serde_json::Value;

use super::config::{ANONYMOUS_AGENT, IssuerConfig, KeySource, check_name};

/// A string claim that names an agent, worker or tenant, checked as
/// configured names are: it becomes a policy subject and an audit entry.
fn name_claim(claims: &Value, claim: &str, what: &str) -> Result<String, TokenError> {
    let value = claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::MissingClaim(claim.to_owned()))?;
    check_name(value, what).map_err(|reason| TokenError::BadName {
        claim: claim.to_owned(),
        reason,
    })?;
    Ok(value.to_owned())
}

/// How often a JWKS URL is fetched again.
const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Least time between fetches caused by unknown key ids.
const JWKS_RETRY: Duration = Duration::from_secs(30);
/// Largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// Why a token was not accepted. Messages say what to fix, never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT this gateway accepts ({0}); 'alg: none' is never accepted")]
    Malformed(String),
    #[error("the token's issuer '{0}' is not configured here")]
    UnknownIssuer(String),
    #[error("tokens of issuer '{0}' do not identify {1} here")]
    WrongKind(String, &'static str),
    #[error("the token has expired; get a new one from its issuer")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's audience is not this gateway; request a token for {0}")]
    WrongAudience(String),
    #[error("the token's issuer does not match")]
    WrongIssuer,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's algorithm is not accepted for its issuer (allowed: {0})")]
    AlgorithmNotAllowed(String),
    #[error("the token's key id is not among its issuer's keys")]
    UnknownKey,
    #[error("the token lacks the claim '{0}'")]
    MissingClaim(String),
    /// The value is not echoed: it may hold anything, terminal escapes included.
    #[error("the token's claim '{claim}' is not a usable name: {reason}")]
    BadName { claim: String, reason: String },
    #[error("the issuer's keys are not loaded yet: {0}")]
    KeysUnavailable(String),
}

/// Who a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub name: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    /// The issuer's required scopes, for an `insufficient_scope` answer.
    pub required_scopes: Vec<String>,
}

/// What a token must identify at the endpoint it was presented to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Worker,
}

impl Kind {
    fn singular(self) -> &'static str {
        match self {
            Self::Agent => "an agent",
            Self::Worker => "a worker",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Agent => "agents",
            Self::Worker => "workers",
        }
    }
}

struct Issuer {
    config: IssuerConfig,
    keys: RwLock<Keys>,
    last_fetch: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Keys {
    secret: Option<DecodingKey>,
    set: Vec<(Option<String>, DecodingKey)>,
    /// Why the set is empty, when it is.
    problem: Option<String>,
}

/// Every configured issuer.
pub struct Issuers {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
    /// Least time between fetches caused by unknown key ids.
    retry: Duration,
}

impl Issuers {
    /// Loads secrets and JWKS files; JWKS URLs load with [`Issuers::refresh`].
    pub fn new(configs: &[IssuerConfig]) -> Result<Self, String> {
        let issuers = configs
            .iter()
            .map(|config| {
                let keys = match &config.keys {
                    KeySource::Secret(secret) => Keys {
                        secret: Some(DecodingKey::from_secret(secret)),
                        ..Keys::default()
                    },
                    KeySource::JwksFile(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            format!(
                                "issuer {}: cannot read jwks_file {}: {e}",
                                config.issuer,
                                path.display()
                            )
                        })?;
                        keys_from_jwks(&text).map_err(|e| {
                            format!(
                                "issuer {}: jwks_file {}: {e}",
                                config.issuer,
                                path.display()
                            )
                        })?
                    }
                    KeySource::JwksUrl(url) => Keys {
                        problem: Some(format!("{url} has not been fetched yet")),
                        ..Keys::default()
                    },
                };
                Ok(Issuer {
                    config: config.clone(),
                    keys: RwLock::new(keys),
                    last_fetch: Mutex::new(None),
                })
            })
            .collect::<Result<_, String>>()?;
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        Ok(Self {
            issuers,
            http,
            retry: JWKS_RETRY,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Whether any issuer identifies `kind`.
    pub fn identify(&self, kind: Kind) -> bool {
        self.issuers.iter().any(|i| match kind {
            Kind::Agent => i.config.agents,
            Kind::Worker => i.config.workers,
        })
    }

    /// Every issuer's `iss`, for the protected resource metadata.
    pub fn names(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| i.config.issuer.clone())
            .collect()
    }

    /// Every scope some issuer requires.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .issuers
            .iter()
            .flat_map(|i| i.config.required_scopes.iter().cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// Fetches every JWKS URL that is due (`force`: whatever its age).
    pub async fn refresh(&self, force: bool) {
        for issuer in &self.issuers {
            let KeySource::JwksUrl(url) = &issuer.config.keys else {
                continue;
            };
            if !issuer.due(force) {
                continue;
            }
            let keys = match self.fetch(url).await {
                Ok(text) => keys_from_jwks(&text),
                Err(error) => Err(error),
            };
            match keys {
                Ok(keys) => {
                    tracing::info!(issuer = %issuer.config.issuer, keys = keys.set.len(), "JWKS loaded");
                    *issuer.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
                }
                Err(problem) => {
                    tracing::warn!(issuer = %issuer.config.issuer, %url, %problem, "JWKS not loaded; keeping the keys held");
                    let mut held = issuer.keys.write().unwrap_or_else(PoisonError::into_inner);
                    if held.set.is_empty() {
                        held.problem = Some(format!("{url}: {problem}"));
                    }
                }
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("cannot read: {e}"))?;
        if bytes.len() > JWKS_MAX_BYTES {
            return Err(format!("larger than {JWKS_MAX_BYTES} bytes"));
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".to_owned())
    }

    /// Background refresh of JWKS URLs until `stop`.
    pub async fn keep_fresh(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            self.refresh(false).await;
            tokio::select! {
                () = tokio::time::sleep(self.retry) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Verifies `token` as presented at an endpoint for `kind`.
    pub fn verify(&self, token: &str, kind: Kind) -> Result<Verified, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        // Only to find the issuer whose keys and rules then verify everything.
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::MissingClaim("iss".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer(iss.to_owned()))?;
        let config = &issuer.config;
        let accepts = match kind {
            Kind::Agent => config.agents,
            Kind::Worker => config.workers,
        };
        if !accepts {
            return Err(TokenError::WrongKind(iss.to_owned(), kind.plural()));
        }
        if !config.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed(algorithm_names(config)));
        }
        // Only the header's algorithm (already checked against the issuer's
        // list): jsonwebtoken wants every listed algorithm to fit the key.
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_s;
        let verified = {
            let keys = issuer.keys.read().unwrap_or_else(PoisonError::into_inner);
            let key = match (&keys.secret, header.kid.as_deref()) {
                (Some(secret), _) => Some(secret),
                (None, Some(kid)) => keys
                    .set
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid))
                    .map(|(_, key)| key),
                (None, None) if keys.set.len() == 1 => keys.set.first().map(|(_, key)| key),
                (None, None) => None,
            };
            match (key, &keys.problem) {
                (Some(key), _) => decode::<Value>(token, key, &validation),
                (None, Some(problem)) => return Err(TokenError::KeysUnavailable(problem.clone())),
                (None, None) => {
                    drop(keys);
                    issuer.wants_refetch(self.retry);
                    return Err(TokenError::UnknownKey);
                }
            }
        };
        let claims = verified
            .map_err(|error| token_error(error.kind(), config))?
            .claims;
        let name = name_claim(&claims, &config.name_claim, kind.singular())?;
        if name == ANONYMOUS_AGENT {
            return Err(TokenError::BadName {
                claim: config.name_claim.clone(),
                reason: format!(
                    "'{ANONYMOUS_AGENT}' is what requests without credentials act as and cannot be claimed"
                ),
            });
        }
        let tenant = match &config.tenant_claim {
            Some(claim) => Some(name_claim(&claims, claim, "a tenant")?),
            None => None,
        };
        Ok(Verified {
            name,
            tenant,
            scopes: scopes_of(&claims),
            required_scopes: config.required_scopes.clone(),
        })
    }
}

impl Issuer {
    /// Whether a JWKS fetch is due now; marks it taken.
    fn due(&self, force: bool) -> bool {
        let mut last = self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = force || last.is_none_or(|at| at.elapsed() >= JWKS_REFRESH);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// An unknown key id: let the next refresh round fetch at once, unless
    /// one ran within `retry`.
    fn wants_refetch(&self, retry: Duration) {
        let mut last = self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() >= retry) {
            *last = None;
        }
    }
}

fn keys_from_jwks(text: &str) -> Result<Keys, String> {
    let set: JwkSet = serde_json::from_str(text)
        .map_err(|e| format!("not a JWK set ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // Symmetric keys in a published set would let anyone sign: skipped.
        if matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a key cannot be used: {e}"))?;
        keys.push((jwk.common.key_id.clone(), key));
    }
    if keys.is_empty() {
        return Err("the set has no usable public keys".into());
    }
    Ok(Keys {
        set: keys,
        ..Keys::default()
    })
}

fn token_error(kind: &ErrorKind, config: &IssuerConfig) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience(config.audience.join(" or ")),
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed(algorithm_names(config)),
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

fn algorithm_names(config: &IssuerConfig) -> String {
    config
        .algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// OAuth scopes: `scope` (space-separated) or `scp` (a list or a string).
fn scopes_of(claims: &Value) -> Vec<String> {
    let words = |text: &str| {
        text.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(text)), _) | (None, Some(Value::String(text))) => words(text),
        (None, Some(Value::Array(items))) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn rsa_key(name: &str) -> EncodingKey {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/jwt")
            .join(name);
        EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap()
    }

    fn jwk(key: &EncodingKey, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    /// A key rotated in at the issuer is picked up at the first token that
    /// names it (no later than the retry interval), not at the next
    /// five-minute refresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_key_id_fetches_the_jwks_again() {
        let (old, new) = (rsa_key("rsa.pem"), rsa_key("rsa-other.pem"));
        let served = Arc::new(RwLock::new(
            serde_json::to_string(&JwkSet {
                keys: vec![jwk(&old, "k1")],
            })
            .unwrap(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = served.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let text = body.read().unwrap().clone();
                async move { text }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = IssuerConfig {
            issuer: "https://rsa.test".into(),
            audience: vec!["https://capgate.test/mcp".into()],
            algorithms: vec![Algorithm::RS256],
            keys: KeySource::JwksUrl(url),
            name_claim: "sub".into(),
            tenant_claim: None,
            required_scopes: Vec::new(),
            agents: true,
            workers: true,
            leeway_s: 0,
        };
        let mut issuers = Issuers::new(&[config]).unwrap();
        issuers.retry = Duration::from_millis(100);
        let issuers = Arc::new(issuers);
        issuers.refresh(true).await;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn({
            let (issuers, stop) = (issuers.clone(), stop.clone());
            async move { issuers.keep_fresh(stop).await }
        });
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let sign = |key: &EncodingKey, kid: &str| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.to_owned());
            let claims = json!({"iss": "https://rsa.test", "sub": "alice", "aud": "https://capgate.test/mcp", "exp": exp});
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        };
        assert!(issuers.verify(&sign(&old, "k1"), Kind::Agent).is_ok());
        let rotated = sign(&new, "k2");
        assert!(
            issuers.verify(&rotated, Kind::Agent).is_err(),
            "k2 is not published yet"
        );
        // The issuer publishes k2; the gateway has not fetched since.
        *served.write().unwrap() = serde_json::to_string(&JwkSet {
            keys: vec![jwk(&old, "k1"), jwk(&new, "k2")],
        })
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut outcome = issuers.verify(&rotated, Kind::Agent);
        while outcome.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "k2 never accepted: {outcome:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            outcome = issuers.verify(&rotated, Kind::Agent);
        }
        assert_eq!(outcome.unwrap().name, "alice");
        stop.cancel();
    }
}
