//! Talking to a running gateway's admin API from the command line.

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the gateway is, and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The gateway's HTTP address.
    #[arg(
        long,
        env = "CAPGATE_URL",
        default_value = "http://127.0.0.1:49134",
        global = true
    )]
    url: String,
    /// Bearer token for the admin API.
    #[arg(long, env = "CAPGATE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    /// GETs `path` (under `/api/v1`) with `query`, and returns the JSON body.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        self.send(client.get(self.endpoint(path)).query(query))
            .await
    }

    /// POSTs `body` as JSON to `path` (under `/api/v1`), and returns the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        self.send(client.post(self.endpoint(path)).json(body)).await
    }

    /// PUTs `body` as JSON to `path` (under `/api/v1`), and returns the JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        self.send(client.put(self.endpoint(path)).json(body)).await
    }

    /// DELETEs `path` (under `/api/v1`), and returns the JSON body.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        self.send(client.delete(self.endpoint(path))).await
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url.trim_end_matches('/'))
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| {
            let reason = if error.is_connect() {
                "connection refused".to_owned()
            } else {
                error.to_string()
            };
            anyhow::anyhow!(
                "cannot reach capgate at {}: {reason}; is `capgate serve` running there? (set --url or CAPGATE_URL)",
                self.url
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| {
            format!(
                "capgate at {} answered {status} with a body that is not JSON",
                self.url
            )
        })?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            bail!("capgate answered {status}: {message}");
        }
        Ok(body)
    }
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    // Cells come from the gateway: names, ids, rules — some written by
    // workers, some by tokens, some stored long ago. None may move the
    // cursor, recolour the terminal or fake a line.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| printable(cell, false).into_owned())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The items of a JSON array (none for anything else).
pub fn rows(value: &serde_json::Value) -> &[serde_json::Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A JSON value as a table cell: strings as they are, `-` for null.
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

pub use capgate_catalog::audit::printable;
