//! `capgate state`: read and write a running gateway's state through the
//! admin API (`/api/v1/state`).

use anyhow::Context;
use serde_json::Value;

use super::discovery::urlencoding;
use super::remote::{Remote, clip, print_table};

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Print a value as JSON.
    Get { scope: String, key: String },
    /// Set a value; VALUE is JSON (`'{"n": 1}'`, `'"text"'`, `42`).
    Set {
        scope: String,
        key: String,
        value: String,
    },
    /// Delete a value.
    Delete { scope: String, key: String },
    /// List a scope's keys and values, or without SCOPE the scopes.
    List {
        scope: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: StateCommand, remote: &Remote) -> anyhow::Result<()> {
    let at = |scope: &str, key: &str| format!("/state/{}/{}", urlencoding(scope), urlencoding(key));
    match command {
        StateCommand::Get { scope, key } => {
            let answer = remote.get(&at(&scope, &key), &[]).await?;
            println!("{}", serde_json::to_string_pretty(&answer["value"])?);
        }
        StateCommand::Set { scope, key, value } => {
            let value: Value = serde_json::from_str(&value).with_context(|| {
                format!("VALUE is not JSON: {value}; quote text as JSON ('\"text\"')")
            })?;
            remote.put(&at(&scope, &key), &value).await?;
            println!("set {scope}/{key}");
        }
        StateCommand::Delete { scope, key } => {
            remote.delete(&at(&scope, &key)).await?;
            println!("deleted {scope}/{key}");
        }
        StateCommand::List { scope: None, json } => {
            let answer = remote.get("/state", &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["scopes"])?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = answer["scopes"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|row| vec![json_cell(&row["scope"]), row["count"].to_string()])
                .collect();
            print_table(&["SCOPE", "KEYS"], &rows);
        }
        StateCommand::List {
            scope: Some(scope),
            json,
        } => {
            let answer = remote
                .get(&format!("/state/{}", urlencoding(&scope)), &[])
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["entries"])?);
                return Ok(());
            }
            // Values as JSON: text in them is quoted and escaped, never
            // printed raw to a terminal.
            let rows: Vec<Vec<String>> = answer["entries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|entry| {
                    vec![
                        json_cell(&entry["key"]),
                        clip(&entry["value"].to_string(), 120),
                    ]
                })
                .collect();
            print_table(&["KEY", "VALUE"], &rows);
        }
    }
    Ok(())
}

/// Scope names and keys hold no control characters (the store refuses
/// them); shown as they are.
fn json_cell(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
