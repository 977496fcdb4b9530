//! Policy decisions for the gateway's callers, and the audit log they go to.
//!
//! Every path asks here: the invocation path (`call`), `tools/list` and
//! the directory (`list`), registrations (`register`), trigger
//! subscriptions (`trigger`) and the admin API (`admin`). The gateway's own
//! calls (built-ins answering, deliveries it schedules) are not subjects.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use capgate_catalog::Caller;
use capgate_catalog::audit::{AuditLog, CallDetail, Detail, Record};
use capgate_catalog::invocation::DEFAULT_TENANT;
use capgate_policies::{
    Action, Decision, DeprecatedMode, LivePolicy, Policy, PolicyError, Request, read_files,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::AuditConfig;

/// The rule named when the gateway acts on its own behalf.
const GATEWAY_RULE: &str = "the gateway's own call";

/// Policies in force, the audit log, and a signal for policy changes.
pub struct Access {
    pub policy: LivePolicy,
    pub audit: Arc<AuditLog>,
    pub audit_config: AuditConfig,
    files: Vec<PathBuf>,
    changed: watch::Sender<u64>,
}

impl Access {
    pub fn new(
        policy: Policy,
        files: Vec<PathBuf>,
        audit: Arc<AuditLog>,
        audit_config: AuditConfig,
    ) -> Self {
        let live = LivePolicy::new(policy);
        let (changed, _) = watch::channel(live.generation());
        Self {
            policy: live,
            audit,
            audit_config,
            files,
            changed,
        }
    }

    /// Reads the configured policy files (the embedded default without any).
    pub fn load(files: &[PathBuf]) -> Result<Policy, PolicyError> {
        if files.is_empty() {
            return Ok(Policy::open());
        }
        Policy::from_sources(&read_files(files)?)
    }

    /// The decision for `caller`.
    pub fn decide(&self, caller: &Caller, action: Action, object: &str) -> Decision {
        if let Caller::Gateway = caller {
            return Decision {
                allowed: true,
                rule: GATEWAY_RULE.into(),
            };
        }
        thread_local! {
            // Asked on every call: the subject is written into a kept
            // buffer rather than a new string each time.
            static SUBJECT: RefCell<String> = const { RefCell::new(String::new()) };
        }
        SUBJECT.with_borrow_mut(|subject| {
            caller.write_subject(subject);
            let decision = self.policy.decide(&Request {
                subject,
                domain: caller.tenant(),
                action,
                object,
            });
            // Names are at most 64 characters; anything longer is not kept.
            if subject.capacity() > 256 {
                *subject = String::new();
            }
            decision
        })
    }

    /// How deprecated versions are treated for `caller`.
    pub fn deprecation(&self, caller: &Caller) -> DeprecatedMode {
        match caller {
            Caller::Gateway => DeprecatedMode::Allow,
            _ => {
                // Asked on every call; a named caller's subject is text
                // built for the asking, which the default policy never reads.
                let policy = self.policy.current();
                if !policy.has_deprecation_lines() {
                    return DeprecatedMode::default();
                }
                policy.deprecation_for(&caller.subject())
            }
        }
    }

    /// Re-reads the policy files; on any error the policy in force stays.
    /// Returns the new generation.
    pub async fn reload(&self, by: &str) -> Result<u64, PolicyError> {
        // Files are read off the runtime's threads: a slow disk or a
        // file that blocks (a FIFO, a hung network mount) must not stall calls.
        let files = self.files.clone();
        let outcome = tokio::task::spawn_blocking(move || Self::load(&files))
            .await
            .unwrap_or_else(|error| {
                Err(PolicyError::Read {
                    file: object_label(&self.files),
                    reason: format!("the reading task stopped: {error}"),
                })
            });
        let object = self.files_label();
        match outcome {
            Ok(policy) => {
                let lines = policy.line_count();
                let generation = self.policy.replace(policy);
                tracing::info!(generation, lines, files = %object, "policy reloaded");
                self.record_policy(
                    by,
                    &object,
                    true,
                    "reloaded",
                    json!({"generation": generation, "lines": lines}),
                );
                self.changed.send_replace(generation);
                Ok(generation)
            }
            Err(error) => {
                tracing::error!(%error, "policy change refused; the previous policy stays in force");
                self.record_policy(by, &object, false, &error.to_string(), Value::Null);
                Err(error)
            }
        }
    }

    /// Resolves when a reload puts a new policy in force.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn files_label(&self) -> String {
        object_label(&self.files)
    }

    fn record_policy(&self, by: &str, object: &str, allowed: bool, rule: &str, detail: Value) {
        self.audit.record(Record {
            kind: "policy",
            subject: by.to_owned().into(),
            tenant: capgate_catalog::invocation::DEFAULT_TENANT.into(),
            action: "reload".into(),
            object: object.into(),
            allowed,
            rule: rule.into(),
            detail: detail.into(),
        });
    }

    /// Appends an entry decided for `caller`.
    pub fn record(
        &self,
        kind: &'static str,
        caller: &Caller,
        action: &str,
        object: &str,
        decision: &Decision,
        detail: Value,
    ) {
        self.record_as(
            kind,
            caller,
            action.to_owned().into(),
            object.into(),
            decision,
            detail.into(),
        );
    }

    /// Appends the entry of a call: the one recorded at the call rate, so
    /// its detail is fields, not a JSON map.
    pub fn record_call(
        &self,
        caller: &Caller,
        function: Arc<str>,
        decision: &Decision,
        detail: CallDetail,
    ) {
        self.record_as(
            "call",
            caller,
            "call".into(),
            function,
            decision,
            detail.into(),
        );
    }

    fn record_as(
        &self,
        kind: &'static str,
        caller: &Caller,
        action: Cow<'static, str>,
        object: Arc<str>,
        decision: &Decision,
        detail: Detail,
    ) {
        let tenant = match caller.tenant() {
            DEFAULT_TENANT => Cow::Borrowed(DEFAULT_TENANT),
            other => Cow::Owned(other.to_owned()),
        };
        self.audit.record(Record {
            kind,
            subject: caller.subject(),
            tenant,
            action,
            object,
            allowed: decision.allowed,
            rule: decision.rule.clone(),
            detail,
        });
    }
}

/// The policy files as one audit object.
fn object_label(files: &[PathBuf]) -> String {
    if files.is_empty() {
        "(embedded default)".into()
    } else {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use capgate_catalog::store::Store;

    use super::*;

    /// A policy file that blocks when read (a FIFO with no writer yet, as a
    /// hung network mount would): the reload waits for it, but the runtime
    /// keeps running other tasks meanwhile. With the files read on the
    /// runtime's only thread, the timer below could not fire until the
    /// writer gave up waiting for it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_reads_files_without_blocking_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("team.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo failed");
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let audit = AuditLog::open(store, 100).await.unwrap();
        let access = Arc::new(Access::new(
            Policy::open(),
            vec![fifo.clone()],
            audit,
            AuditConfig::default(),
        ));
        let (timer_fired, fired) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            // Writes once the runtime has shown it still runs, or gives up
            // after a while so that a blocked runtime fails instead of hanging.
            let ran = fired.recv_timeout(Duration::from_secs(10)).is_ok();
            std::fs::write(&fifo, "p, agent:bot, default, hello::*, call, allow\n").unwrap();
            ran
        });
        let reload = tokio::spawn({
            let access = access.clone();
            async move { access.reload("test").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        timer_fired.send(()).unwrap();
        let generation = reload.await.unwrap().expect("the policy loads");
        assert!(
            writer.join().unwrap(),
            "the runtime stood still while the policy file was read"
        );
        assert_eq!(generation, access.policy.generation());
        assert!(access.policy.current().line_count() >= 1);
    }
}
