//! `capgate policy …` and `capgate audit …`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use capgate_catalog::invocation::DEFAULT_TENANT;
use capgate_policies::reference::CasbinReference;
use capgate_policies::{Action, Policy, Request};
use serde_json::Value;

use super::remote::{Remote, print_table};
use crate::access::Access;
use crate::config::{Config, Settings};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Explain a decision: which rules matched, and what casbin says on
    /// policies/model.conf. Reads the policy files of --config, or
    /// --policy files, without a running gateway.
    Check {
        /// agent:NAME, worker:NAME or role:NAME.
        subject: String,
        /// list, call, register, trigger or admin.
        action: String,
        /// A function id (billing::refund) or an admin object (audit).
        object: String,
        /// The tenant (policy domain) asked about.
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Configuration whose [policies] files to read.
        #[arg(long, env = "CAPGATE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Policy files to read instead (repeatable).
        #[arg(long = "policy", value_name = "FILE")]
        policies: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Make a running gateway re-read its policy files now.
    Reload {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print the newest audit entries, and with --follow, new ones as they come.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// How many of the newest entries to print first.
    #[arg(short = 'n', long, default_value_t = 20)]
    limit: usize,
    /// Keep printing new entries.
    #[arg(short, long)]
    follow: bool,
    /// call, registration, trigger, deprecation, declaration, policy or admin.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    action: Option<String>,
    /// A function id; a trailing * matches a prefix.
    #[arg(long)]
    object: Option<String>,
    /// Only denials.
    #[arg(long, conflicts_with = "allowed")]
    denied: bool,
    /// Only allowed entries.
    #[arg(long)]
    allowed: bool,
    /// One JSON object per line (for export).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: Remote,
}

pub async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check {
            subject,
            action,
            object,
            tenant,
            config,
            policies,
            json,
        } => check(&subject, &action, &object, &tenant, config, policies, json).await,
        PolicyCommand::Reload { remote } => {
            let answer = remote
                .post("/policies/reload", &Value::Object(Default::default()))
                .await?;
            println!(
                "policy reloaded: generation {}, {} lines",
                answer["generation"], answer["lines"]
            );
            Ok(())
        }
    }
}

async fn check(
    subject: &str,
    action: &str,
    object: &str,
    tenant: &str,
    config: Option<PathBuf>,
    policies: Vec<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let action: Action = action.parse().map_err(anyhow::Error::msg)?;
    let files = if policies.is_empty() {
        Config::load(config.as_deref(), Settings::default())?
            .policies
            .files
    } else {
        policies
    };
    let policy: Policy = Access::load(&files)?;
    let request = Request {
        subject,
        domain: tenant,
        action,
        object,
    };
    let explanation = policy.explain(&request);
    let casbin = CasbinReference::new(&policy)
        .await?
        .allows(&request)
        .context("asking casbin")?;
    let agrees = casbin == explanation.decision.allowed;
    if json {
        let answer = serde_json::json!({
            "allowed": explanation.decision.allowed,
            "rule": &*explanation.decision.rule,
            "subjects": explanation.subjects,
            "matched": explanation.matched.iter().map(|m| &**m).collect::<Vec<_>>(),
            "casbin_allows": casbin,
        });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let verdict = if explanation.decision.allowed {
            "ALLOW"
        } else {
            "DENY"
        };
        println!("{verdict}: {subject} {action} {object} (tenant {tenant})");
        println!("decided by: {}", explanation.decision.rule);
        println!("subject and roles: {}", explanation.subjects.join(", "));
        if explanation.matched.len() > 1 {
            println!("all matching rules (denies first):");
            for rule in &explanation.matched {
                println!("  {rule}");
            }
        }
        println!(
            "deprecated versions for {subject}: {:?}",
            policy.deprecation_for(subject)
        );
        println!(
            "casbin on policies/model.conf: {} ({})",
            if casbin { "allow" } else { "deny" },
            if agrees { "agrees" } else { "DISAGREES" }
        );
    }
    if !agrees {
        bail!("the compiled policy and casbin disagree; please report this with the policy files");
    }
    Ok(())
}

pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Tail(args) = command;
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.max(1).to_string())];
    for (key, value) in [
        ("kind", &args.kind),
        ("subject", &args.subject),
        ("action", &args.action),
        ("object", &args.object),
    ] {
        if let Some(value) = value {
            query.push((key, value.clone()));
        }
    }
    if args.denied {
        query.push(("allowed", "false".into()));
    }
    if args.allowed {
        query.push(("allowed", "true".into()));
    }
    let mut after: Option<i64> = None;
    loop {
        let mut asked = query.clone();
        if let Some(seq) = after {
            asked.retain(|(key, _)| *key != "limit");
            asked.push(("after", seq.to_string()));
        }
        let answer = args.remote.get("/audit", &asked).await?;
        let entries = answer["entries"].as_array().cloned().unwrap_or_default();
        print_entries(&entries, args.json)?;
        if let Some(seq) = answer["last_seq"].as_i64() {
            after = Some(seq);
        } else if after.is_none() {
            after = Some(0);
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_entries(entries: &[Value], json: bool) -> anyhow::Result<()> {
    if json {
        for entry in entries {
            println!("{}", serde_json::to_string(entry)?);
        }
        return Ok(());
    }
    if entries.is_empty() {
        return Ok(());
    }
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                text(&e["seq"]),
                text(&e["kind"]),
                text(&e["subject"]),
                text(&e["action"]),
                text(&e["object"]),
                if e["allowed"].as_bool() == Some(true) {
                    "allow"
                } else {
                    "deny"
                }
                .to_owned(),
                super::remote::clip(&text(&e["rule"]), 60),
            ]
        })
        .collect();
    print_table(
        &[
            "SEQ", "KIND", "SUBJECT", "ACTION", "OBJECT", "DECISION", "RULE",
        ],
        &rows,
    );
    Ok(())
}
