//! `[workers.NAME]` and `[[issuers]]` as written, and their checks.

use std::path::PathBuf;

use capgate_catalog::FunctionId;
use semver::VersionReq;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// `[workers.NAME]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerEntry {
    /// Hex SHA-256 of the worker's token (`capgate workers key NAME`).
    pub api_key_sha256: Option<String>,
    pub tenant: Option<String>,
}

/// One `[workers.NAME]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub name: String,
    pub api_key_sha256: [u8; 32],
    pub tenant: Option<String>,
}

/// `[[issuers]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerEntry {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// Accepted `aud` values; default: this gateway's MCP URL (`public_url` + `/mcp`).
    #[serde(default)]
    pub audience: Vec<String>,
    /// Accepted algorithms; default: HS256 with a secret, RS256 and ES256 with keys.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// HS256 shared secret; prefer `secret_env`.
    pub secret: Option<String>,
    /// Environment variable holding the HS256 secret.
    pub secret_env: Option<String>,
    /// JWKS file with the issuer's public keys.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL, fetched at start and refreshed.
    pub jwks_url: Option<String>,
    /// The claim naming the agent or worker (default `sub`).
    pub name_claim: Option<String>,
    /// The claim naming the tenant (the policy domain); default tenant `default`.
    pub tenant_claim: Option<String>,
    /// Scopes every token must hold (from `scope` or `scp`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Whom its tokens identify: `agents`, `workers` or both (default `["agents"]`).
    pub identifies: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    pub leeway_s: Option<u64>,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Secret(Vec<u8>),
    JwksFile(PathBuf),
    JwksUrl(String),
}

/// One `[[issuers]]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    pub name_claim: String,
    pub tenant_claim: Option<String>,
    pub required_scopes: Vec<String>,
    pub agents: bool,
    pub workers: bool,
    pub leeway_s: u64,
}

/// Shortest HS256 secret accepted: 256 bits, as RFC 7518 requires.
const MIN_SECRET_BYTES: usize = 32;

/// Checks an `[[issuers]]` entry; `default_audience` is the MCP URL when
/// `public_url` is set.
pub fn issuer(entry: IssuerEntry, default_audience: Option<&str>) -> Result<IssuerConfig, String> {
    if entry.issuer.trim().is_empty() {
        return Err("issuer must name the iss its tokens carry".into());
    }
    let audience = match (entry.audience.is_empty(), default_audience) {
        (false, _) => entry.audience,
        (true, Some(default)) => vec![default.to_owned()],
        (true, None) => {
            return Err("audience is required (the aud its tokens carry, normally this gateway's MCP URL); or set public_url and it defaults to PUBLIC_URL/mcp".into());
        }
    };
    let secret =
        match (entry.secret, entry.secret_env) {
            (Some(_), Some(_)) => return Err("set secret or secret_env, not both".into()),
            (Some(secret), None) => Some(secret),
            (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
                format!("secret_env names {var}, which is not set in the environment")
            })?),
            (None, None) => None,
        };
    let keys = match (secret, entry.jwks_file, entry.jwks_url) {
        (Some(secret), None, None) => {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "the HS256 secret is {} bytes; use at least {MIN_SECRET_BYTES}",
                    secret.len()
                ));
            }
            KeySource::Secret(secret.into_bytes())
        }
        (None, Some(file), None) => KeySource::JwksFile(file),
        (None, None, Some(url)) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!("jwks_url '{url}' must be an http(s) URL"));
            }
            KeySource::JwksUrl(url)
        }
        _ => {
            return Err(
                "give exactly one key source: secret (or secret_env) for HS256, jwks_file or jwks_url for RS256/ES256"
                    .into(),
            );
        }
    };
    let shared = matches!(keys, KeySource::Secret(_));
    let algorithms = if entry.algorithms.is_empty() {
        if shared {
            vec![Algorithm::HS256]
        } else {
            vec![Algorithm::RS256, Algorithm::ES256]
        }
    } else {
        entry
            .algorithms
            .iter()
            .map(|name| {
                name.parse::<Algorithm>().map_err(|_| {
                    format!("algorithm '{name}' is unknown; use HS256, RS256 or ES256")
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    // A public key must never be usable as an HMAC secret, nor a secret as a key.
    for algorithm in &algorithms {
        let hmac = matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if hmac != shared {
            return Err(format!(
                "algorithm {algorithm:?} does not fit the key source: HS* needs secret or secret_env, RS*/ES* need jwks_file or jwks_url"
            ));
        }
    }
    let identifies = entry
        .identifies
        .unwrap_or_else(|| vec!["agents".to_owned()]);
    let mut agents = false;
    let mut workers = false;
    for kind in &identifies {
        match kind.as_str() {
            "agents" => agents = true,
            "workers" => workers = true,
            other => {
                return Err(format!(
                    "identifies: '{other}' must be \"agents\" or \"workers\""
                ));
            }
        }
    }
    if !agents && !workers {
        return Err("identifies must name agents, workers or both".into());
    }
    Ok(IssuerConfig {
        issuer: entry.issuer,
        audience,
        algorithms,
        keys,
        name_claim: entry.name_claim.unwrap_or_else(|| "sub".to_owned()),
        tenant_claim: entry.tenant_claim,
        required_scopes: entry.required_scopes,
        agents,
        workers,
        leeway_s: entry.leeway_s.unwrap_or(30),
    })
}

/// Checks a `[workers.NAME]` entry.
pub fn worker(name: String, entry: WorkerEntry) -> Result<WorkerConfig, String> {
    check_name(&name, "a worker")?;
    let text = entry.api_key_sha256.ok_or(
        "api_key_sha256 is required (`capgate workers key NAME` prints a token and its hash)",
    )?;
    Ok(WorkerConfig {
        name,
        api_key_sha256: key_hash(&text)?,
        tenant: entry.tenant.map(|t| check_tenant(&t)).transpose()?,
    })
}

/// Agent and worker names: what a policy subject can spell.
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what}'s name is 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// A tenant name: what a policy domain can spell.
pub fn check_tenant(tenant: &str) -> Result<String, String> {
    check_name(tenant, "a tenant").map(|()| tenant.to_owned())
}

/// 64 hex digits → a SHA-256.
pub fn key_hash(text: &str) -> Result<[u8; 32], String> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut digest).map_err(|_| {
        "api_key_sha256 must be 64 hex digits, the SHA-256 of the key \
         (`capgate agents key NAME` or `capgate workers key NAME` prints a key and its hash)"
            .to_owned()
    })?;
    Ok(digest)
}

/// Who may connect: named agents, named workers, JWT issuers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdentityConfig {
    /// Named agents: their API key (hashed) and version pins (`[agents.NAME]`).
    pub agents: Vec<AgentConfig>,
    /// Named workers and their token hashes (`[workers.NAME]`).
    pub workers: Vec<WorkerConfig>,
    /// JWT issuers (`[[issuers]]`).
    pub issuers: Vec<IssuerConfig>,
}

/// One `[agents.NAME]` entry, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub name: String,
    /// SHA-256 of the agent's API key; the key itself is never stored.
    pub api_key_sha256: Option<[u8; 32]>,
    /// The policy domain; `None` is the tenant `default`.
    pub tenant: Option<String>,
    /// Version requirements this agent's calls and tool list are held to.
    pub pins: Vec<(FunctionId, VersionReq)>,
}

/// The name of the agent a request without credentials acts as.
pub const ANONYMOUS_AGENT: &str = "anonymous";

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml: &str) -> IssuerEntry {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn issuers_are_checked() {
        let good = issuer(
            entry("issuer = \"https://auth\"\njwks_url = \"https://auth/jwks\"\n"),
            Some("https://gw/mcp"),
        )
        .unwrap();
        assert_eq!(good.audience, vec!["https://gw/mcp".to_owned()]);
        assert_eq!(good.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
        assert!(good.agents && !good.workers);
        assert_eq!(good.name_claim, "sub");

        for (text, audience, expected) in [
            (
                "issuer = \"i\"\njwks_url = \"https://a\"\n",
                None,
                "audience is required",
            ),
            (
                "issuer = \"i\"\nsecret = \"short\"\n",
                Some("a"),
                "at least 32",
            ),
            ("issuer = \"i\"\n", Some("a"), "exactly one key source"),
            (
                "issuer = \"i\"\njwks_file = \"k.json\"\nalgorithms = [\"HS256\"]\n",
                Some("a"),
                "does not fit the key source",
            ),
            (
                "issuer = \"i\"\njwks_file = \"k.json\"\nalgorithms = [\"none\"]\n",
                Some("a"),
                "algorithm 'none' is unknown",
            ),
            (
                "issuer = \"i\"\njwks_file = \"k.json\"\nidentifies = [\"robots\"]\n",
                Some("a"),
                "'robots'",
            ),
            (
                "issuer = \"i\"\nsecret_env = \"CAPGATE_TEST_UNSET_SECRET\"\n",
                Some("a"),
                "not set in the environment",
            ),
            (
                "issuer = \"i\"\njwks_url = \"ftp://x\"\n",
                Some("a"),
                "http(s) URL",
            ),
        ] {
            let error = issuer(entry(text), audience).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn workers_need_a_key_hash() {
        let error = worker("billing".into(), WorkerEntry::default()).unwrap_err();
        assert!(error.contains("capgate workers key"), "{error}");
        let error = worker("bad name".into(), WorkerEntry::default()).unwrap_err();
        assert!(error.contains("name is 1 to 64"), "{error}");
    }
}
