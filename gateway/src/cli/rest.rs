//! `capgate rest`: REST services in a running gateway, through the admin
//! API (`/api/v1/rest-services`): import an OpenAPI document, list, show,
//! remove.

use serde_json::{Value, json};

use super::discovery::urlencoding;
use super::remote::{Remote, clip, print_table, rows, text};

#[derive(Debug, clap::Subcommand)]
pub enum RestCommand {
    /// Import (or import again) a REST service: each operation of its
    /// OpenAPI 3.0/3.1 document becomes a function NAMESPACE::operation.
    Import {
        /// The document: a file (JSON or YAML), or an http(s) URL the gateway fetches.
        #[arg(long)]
        openapi: String,
        /// Where the service is called (`https://api.example.com/v1`).
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        namespace: String,
        /// Only these operations (operationId, function name or 'METHOD /path';
        /// a trailing * matches a prefix). Repeatable.
        #[arg(long)]
        include: Vec<String>,
        /// Leave these operations out. Repeatable.
        #[arg(long)]
        exclude: Vec<String>,
        /// A credential named in the gateway's [rest.credentials].
        #[arg(long)]
        auth: Option<String>,
        /// TLS settings named in the gateway's [rest.tls] (a private CA's
        /// roots, a client certificate for mutual TLS).
        #[arg(long)]
        tls: Option<String>,
        /// The owning team (the namespace by default).
        #[arg(long)]
        owner: Option<String>,
        /// An address range the service may be reached at although refused
        /// by default (CIDR, e.g. 10.20.0.0/16). Repeatable.
        #[arg(long)]
        allow: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every REST service: operations, circuit breaker, origin.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A REST service and its operations.
    Show {
        namespace: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a REST service: its versions are deprecated and go offline.
    Remove { namespace: String },
}

pub async fn run(command: RestCommand, remote: &Remote) -> anyhow::Result<()> {
    match command {
        RestCommand::Import {
            openapi,
            base_url,
            namespace,
            include,
            exclude,
            auth,
            tls,
            owner,
            allow,
            json,
        } => {
            let mut body = json!({
                "namespace": namespace, "base_url": base_url, "include": include,
                "exclude": exclude, "auth": auth, "tls": tls, "owner": owner, "allow": allow,
            });
            if crate::rest::is_url(&openapi) {
                body["openapi_url"] = Value::String(openapi);
            } else {
                let text = crate::rest::read_document(std::path::Path::new(&openapi))
                    .map_err(anyhow::Error::msg)?;
                body["openapi"] = Value::String(text);
                body["source"] = Value::String(openapi);
            }
            let answer = remote.post("/rest-services", &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = rows(&answer["operations"])
                .iter()
                .map(|op| {
                    vec![
                        text(&op["function"]),
                        text(&op["version"]),
                        clip(&text(&op["route"]), 60),
                        text(&op["change"]),
                    ]
                })
                .collect();
            print_table(&["FUNCTION", "VERSION", "ROUTE", "CHANGE"], &rows);
            for deprecated in rows_of(&answer["deprecated"]) {
                println!("deprecated: {deprecated}");
            }
            for skipped in rows_of(&answer["skipped"]) {
                println!("skipped: {skipped}");
            }
        }
        RestCommand::List { json } => {
            let answer = remote.get("/rest-services", &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = rows(&answer["services"])
                .iter()
                .map(|s| {
                    vec![
                        text(&s["namespace"]),
                        clip(&text(&s["title"]), 40),
                        s["operation_count"].to_string(),
                        text(&s["breaker"]["state"]),
                        text(&s["origin"]),
                        clip(&text(&s["base_url"]), 50),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAMESPACE",
                    "TITLE",
                    "OPERATIONS",
                    "CIRCUIT",
                    "ORIGIN",
                    "BASE URL",
                ],
                &rows,
            );
        }
        RestCommand::Show { namespace, json } => {
            let answer = remote
                .get(&format!("/rest-services/{}", urlencoding(&namespace)), &[])
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let service = &answer["service"];
            println!(
                "{} — {} (API version {})\nbase URL: {}\ncircuit: {}",
                text(&service["namespace"]),
                text(&service["title"]),
                text(&service["api_version"]),
                text(&service["base_url"]),
                text(&service["breaker"]["state"]),
            );
            let rows: Vec<Vec<String>> = rows(&answer["operations"])
                .iter()
                .map(|op| {
                    vec![
                        text(&op["function"]),
                        text(&op["version"]),
                        text(&op["route"]),
                    ]
                })
                .collect();
            print_table(&["FUNCTION", "VERSION", "ROUTE"], &rows);
        }
        RestCommand::Remove { namespace } => {
            let answer = remote
                .delete(&format!("/rest-services/{}", urlencoding(&namespace)))
                .await?;
            let count = rows(&answer["deprecated"]).len();
            println!("removed {namespace}: {count} versions deprecated and offline");
        }
    }
    Ok(())
}

fn rows_of(value: &Value) -> Vec<String> {
    rows(value).iter().map(text).collect()
}
