//! `capgate functions list|show|declare|deprecate` and `capgate workers list`.

use serde_json::Value;

use super::remote::{Remote, clip, print_table, printable};

#[derive(Debug, clap::Subcommand)]
pub enum FunctionsCommand {
    /// List functions (one row per version), following every page.
    List(ListArgs),
    /// Show every version of one function, with its providers.
    Show {
        /// The function id, such as billing::refund.
        id: String,
        /// Print the gateway's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Declare a version ahead of its worker, from a JSON file of its
    /// definition ("-" reads standard input); it is offline until a worker
    /// registers exactly that definition.
    Declare {
        /// JSON file: {"id": ..., "version": ..., "description": ..., "input_schema": ...}.
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Deprecate a version: callable until its sunset, then refused.
    Deprecate {
        /// The version, such as billing::refund@1.2.0.
        target: String,
        /// First day calls are refused (YYYY-MM-DD, in the future).
        #[arg(long)]
        sunset: Option<String>,
        /// What to use instead, such as billing::refund@^2.
        #[arg(long)]
        replacement: Option<String>,
        /// Why, for the agents and people who read it.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Text to find in the id, title, description or tags.
    #[arg(long = "search", short = 'q')]
    search: Option<String>,
    #[arg(long)]
    prefix: Option<String>,
    /// Owner team.
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    #[arg(long)]
    include_deprecated: bool,
    /// Also list versions with no connected provider.
    #[arg(long)]
    include_offline: bool,
    /// Print the rows as a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum WorkersCommand {
    /// List the connected workers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a new token for a worker and print the `[workers.NAME]` entry
    /// that accepts it (offline; only the token's hash goes in the configuration).
    Key {
        /// The worker's name, such as billing.
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TriggersCommand {
    /// List the running triggers: type, function, owner, calls, failures.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop a trigger (OWNER_KEY and ID as `list --json` shows them).
    Remove { owner_key: String, id: String },
}

pub async fn triggers(command: TriggersCommand, remote: &Remote) -> anyhow::Result<()> {
    let json = match command {
        TriggersCommand::List { json } => json,
        TriggersCommand::Remove { owner_key, id } => {
            let path = format!("/triggers/{}/{}", urlencoding(&owner_key), urlencoding(&id));
            remote.delete(&path).await?;
            println!("removed trigger {id} of {owner_key}");
            return Ok(());
        }
    };
    let answer = remote.get("/triggers", &[]).await?;
    let triggers = answer["triggers"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&triggers)?);
        return Ok(());
    }
    let last_fire = |v: &Value| {
        v.as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let table: Vec<Vec<String>> = triggers
        .iter()
        .map(|t| {
            vec![
                cell(&t["id"]),
                cell(&t["trigger_type"]),
                cell(&t["function_id"]),
                cell(&t["owner"]),
                cell(&t["fires"]),
                cell(&t["failures"]),
                last_fire(&t["last_fire_ms"]),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "TYPE",
            "FUNCTION",
            "OWNER",
            "CALLS",
            "FAILURES",
            "LAST CALL",
        ],
        &table,
    );
    Ok(())
}

/// A JSON value as a table cell: text as it is, nothing for null.
fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A path segment as it must be written in a URL.
pub(super) fn urlencoding(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn functions(command: FunctionsCommand, remote: &Remote) -> anyhow::Result<()> {
    match command {
        FunctionsCommand::List(args) => list(args, remote).await,
        FunctionsCommand::Show { id, json } => show(&id, json, remote).await,
        FunctionsCommand::Declare { file, json } => declare(&file, json, remote).await,
        FunctionsCommand::Deprecate {
            target,
            sunset,
            replacement,
            reason,
            json,
        } => {
            let Some((id, version)) = target.split_once('@') else {
                anyhow::bail!(
                    "'{target}' names no version: write ID@VERSION, such as billing::refund@1.2.0"
                );
            };
            let body =
                serde_json::json!({"sunset": sunset, "replacement": replacement, "reason": reason});
            let answer = remote
                .post(
                    &format!("/functions/{id}/versions/{version}/deprecation"),
                    &body,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{id}@{version} deprecated: {}", answer["deprecation"]);
            }
            Ok(())
        }
    }
}

async fn declare(file: &std::path::Path, json: bool, remote: &Remote) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", file.display()))?
    };
    let body: Value = serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{} is not JSON: {error}", file.display()))?;
    let answer = remote.post("/functions", &body).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{}@{} declared ({}), {}",
            answer["id"].as_str().unwrap_or_default(),
            answer["version"].as_str().unwrap_or_default(),
            answer["definition_hash"].as_str().unwrap_or_default(),
            if answer["live"] == true {
                "live"
            } else {
                "offline until a worker provides it"
            }
        );
    }
    Ok(())
}

async fn list(args: ListArgs, remote: &Remote) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = [
        ("q", args.search),
        ("prefix", args.prefix),
        ("owner", args.owner),
        ("tag", args.tag),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| (key, v)))
    .collect();
    if args.include_deprecated {
        query.push(("include_deprecated", "true".into()));
    }
    if args.include_offline {
        query.push(("include_offline", "true".into()));
    }
    let mut rows: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_query = query.clone();
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor.clone()));
        }
        let page = remote.get("/functions", &page_query).await?;
        rows.extend(page["functions"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|f| {
            vec![
                text(&f["id"]),
                text(&f["version"]),
                if f["live"] == true {
                    "live".into()
                } else {
                    "offline".into()
                },
                text(&f["owner"]["team"]),
                if f["deprecation"].is_null() {
                    String::new()
                } else {
                    "deprecated".into()
                },
                clip(&text(&f["description"]), 60),
            ]
        })
        .collect();
    print_table(
        &["ID", "VERSION", "STATE", "OWNER", "", "DESCRIPTION"],
        &table,
    );
    Ok(())
}

async fn show(id: &str, json: bool, remote: &Remote) -> anyhow::Result<()> {
    let answer = remote.get(&format!("/functions/{id}"), &[]).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "{}  (tool {})",
        id,
        answer["tool_name"].as_str().unwrap_or("")
    );
    for version in answer["versions"].as_array().into_iter().flatten() {
        let definition = &version["definition"];
        let providers: Vec<&str> = version["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!();
        println!(
            "  {}  {}",
            version["version"].as_str().unwrap_or(""),
            version["definition_hash"].as_str().unwrap_or("")
        );
        if let Some(description) = definition["description"].as_str() {
            println!("    {}", printable(description, true));
        }
        if let Some(team) = definition["owner"]["team"].as_str() {
            println!("    owner: {}", printable(team, false));
        }
        if !definition["deprecation"].is_null() {
            println!("    deprecated: {}", definition["deprecation"]);
        }
        if providers.is_empty() {
            println!("    offline: no connected provider");
        } else {
            println!("    providers: {}", printable(&providers.join(", "), false));
        }
    }
    Ok(())
}

pub async fn workers(command: WorkersCommand, remote: &Remote) -> anyhow::Result<()> {
    let json = match command {
        WorkersCommand::List { json } => json,
        WorkersCommand::Key { .. } => anyhow::bail!("`capgate workers key` runs offline"),
    };
    let answer = remote.get("/workers", &[]).await?;
    let workers = answer["workers"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(());
    }
    let table: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                cell(&w["id"]),
                cell(&w["name"]),
                cell(&w["runtime"]),
                cell(&w["function_count"]),
                cell(&w["active_invocations"]),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "RUNTIME", "FUNCTIONS", "IN FLIGHT"], &table);
    Ok(())
}
