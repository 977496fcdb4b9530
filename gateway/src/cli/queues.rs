//! `capgate queues`: a running gateway's queues and their dead letters
//! through the admin API (`/api/v1/queues`).

use serde_json::Value;

use super::discovery::urlencoding;
use super::remote::{Remote, clip, print_table, rows, text};

#[derive(Debug, clap::Subcommand)]
pub enum QueuesCommand {
    /// Every queue: depth, in flight, dead letters, oldest message's age.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A queue's dead letters, oldest first.
    Dlq {
        queue: String,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Deliver dead letters again: one by MESSAGE_ID, or all of the queue.
    Redrive {
        queue: String,
        message_id: Option<String>,
    },
    /// Delete one dead letter.
    Discard { queue: String, message_id: String },
    /// Delete every message of a queue, live and dead; asks for --confirm
    /// naming the queue again.
    Purge {
        queue: String,
        #[arg(long)]
        confirm: Option<String>,
    },
}

pub async fn run(command: QueuesCommand, remote: &Remote) -> anyhow::Result<()> {
    let at = |queue: &str| format!("/queues/{}", urlencoding(queue));
    match command {
        QueuesCommand::List { json } => {
            let answer = remote.get("/queues", &[]).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = rows(&answer["queues"])
                .iter()
                .map(|q| {
                    vec![
                        text(&q["queue"]),
                        text(&q["kind"]),
                        q["depth"].to_string(),
                        q["in_flight"].to_string(),
                        q["dead_letters"].to_string(),
                        q["oldest_age_ms"]
                            .as_i64()
                            .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                    ]
                })
                .collect();
            print_table(
                &["QUEUE", "KIND", "DEPTH", "IN FLIGHT", "DEAD", "OLDEST"],
                &rows,
            );
        }
        QueuesCommand::Dlq {
            queue,
            offset,
            limit,
            json,
        } => {
            let answer = remote
                .get(
                    &format!("{}/dlq", at(&queue)),
                    &[("offset", offset.to_string()), ("limit", limit.to_string())],
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer["messages"])?);
                return Ok(());
            }
            // Data and errors as JSON: text in them is quoted and escaped,
            // never printed raw to a terminal.
            let rows: Vec<Vec<String>> = rows(&answer["messages"])
                .iter()
                .map(|m| {
                    vec![
                        text(&m["message_id"]),
                        text(&m["consumer"]),
                        m["attempts"].to_string(),
                        clip(&m["error"].to_string(), 60),
                        clip(&m["data"].to_string(), 60),
                    ]
                })
                .collect();
            print_table(&["MESSAGE", "CONSUMER", "ATTEMPTS", "ERROR", "DATA"], &rows);
        }
        QueuesCommand::Redrive { queue, message_id } => {
            let path = match &message_id {
                Some(id) => format!("{}/dlq/{}/redrive", at(&queue), urlencoding(id)),
                None => format!("{}/redrive", at(&queue)),
            };
            let answer = remote.post(&path, &Value::Null).await?;
            println!("redrove {} message(s) of {queue}", answer["redriven"]);
        }
        QueuesCommand::Discard { queue, message_id } => {
            remote
                .delete(&format!("{}/dlq/{}", at(&queue), urlencoding(&message_id)))
                .await?;
            println!("discarded {message_id} from {queue}");
        }
        QueuesCommand::Purge { queue, confirm } => {
            if confirm.as_deref() != Some(queue.as_str()) {
                anyhow::bail!(
                    "purging deletes every message of '{queue}', live and dead; run again with --confirm {queue}"
                );
            }
            let answer = remote
                .delete(&format!("{}?confirm={}", at(&queue), urlencoding(&queue)))
                .await?;
            println!("purged {} message(s) of {queue}", answer["purged"]);
        }
    }
    Ok(())
}
