//! The `cron` trigger: calls a function at each window of a schedule.
//!
//! `config {expression}` as in iii (6 fields with seconds, or 7 with the
//! year), plus capgate's `timezone` (IANA, default UTC) and `on_missed`:
//! what to do at start about windows that passed while no gateway ran the
//! job — `skip` (default), `run_once` (the latest of them) or `run_all`
//! (each, oldest first, at most `max_catch_up` of the latest). The store
//! keeps each job's last fired window; claiming a window there before
//! calling makes a job fire once per window however many gateways share
//! the store.

pub mod clock;
pub mod schedule;

use std::sync::Arc;

use capgate_catalog::TraceContext;
use capgate_catalog::store::Store;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::triggers::fire::{Fired, Firing};
use crate::triggers::{
    TriggerContext, TriggerError, TriggerKind, TriggerSpec, check_condition, parse_config,
};
use clock::Clock;
use schedule::Schedule;

/// The trigger type workers register.
pub const TRIGGER_TYPE: &str = "cron";

/// Schedules one owner may hold.
pub const MAX_PER_OWNER: usize = 256;

/// Default and largest `max_catch_up`.
pub const DEFAULT_CATCH_UP: usize = 100;
pub const MAX_CATCH_UP: usize = 1_000;

/// How long before its window a window is claimed in the store.
const CLAIM_LEAD: chrono::Duration = chrono::Duration::milliseconds(200);

/// Fires of one job that may run at once; a window that comes while this
/// many are still running is skipped (and left for another gateway).
pub const MAX_OVERLAPPING: usize = 4;

/// What to do about windows that passed while the job was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissed {
    #[default]
    Skip,
    RunOnce,
    RunAll,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CronConfig {
    expression: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    on_missed: OnMissed,
    #[serde(default)]
    max_catch_up: Option<usize>,
    #[serde(default)]
    condition_function_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

/// The kind, for the [`crate::triggers::Triggers`] registry.
pub struct CronTrigger {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Names this gateway in the store's record of who fired a window.
    instance: Arc<str>,
}

impl CronTrigger {
    pub fn new(store: Store, clock: Arc<dyn Clock>, instance: impl Into<Arc<str>>) -> Self {
        Self {
            store,
            clock,
            instance: instance.into(),
        }
    }
}

fn invalid(reason: impl Into<String>) -> TriggerError {
    TriggerError::InvalidConfig {
        trigger_type: TRIGGER_TYPE,
        reason: reason.into(),
    }
}

impl TriggerKind for CronTrigger {
    fn trigger_type(&self) -> &'static str {
        TRIGGER_TYPE
    }

    fn description(&self) -> &'static str {
        "Calls the function at each window of a cron schedule (6 fields, seconds first; optional time zone and catch-up of missed windows)"
    }

    fn limit_per_owner(&self) -> usize {
        MAX_PER_OWNER
    }

    fn start(
        &self,
        spec: &TriggerSpec,
        context: TriggerContext,
    ) -> Result<JoinHandle<()>, TriggerError> {
        let config: CronConfig = parse_config(
            TRIGGER_TYPE,
            &spec.config,
            "expression, timezone, on_missed (\"skip\", \"run_once\" or \"run_all\"), max_catch_up and condition_function_id",
        )?;
        let timezone = config.timezone.as_deref().unwrap_or("UTC");
        let schedule = Schedule::parse(&config.expression, timezone).map_err(invalid)?;
        let catch_up = config.max_catch_up.unwrap_or(DEFAULT_CATCH_UP);
        if !(1..=MAX_CATCH_UP).contains(&catch_up) {
            return Err(invalid(format!(
                "max_catch_up is {catch_up}; use 1 to {MAX_CATCH_UP}"
            )));
        }
        check_condition(TRIGGER_TYPE, config.condition_function_id.as_deref())?;
        // The job is its owner's schedule for a function, not the id the
        // SDK drew for it: a worker that reconnects (or a replica of it on
        // another gateway) registers the same job again.
        let owner = &context.owner;
        let expression = config.expression.split_whitespace().collect::<Vec<_>>();
        let key = [
            owner.tenant(),
            &owner.subject(),
            &spec.function_id,
            &expression.join(" "),
            timezone,
        ]
        .join("\u{1f}");
        let job = Job {
            key,
            id: spec.id.clone(),
            function_id: spec.function_id.clone(),
            condition: config.condition_function_id,
            schedule,
            on_missed: config.on_missed,
            catch_up,
            store: self.store.clone(),
            clock: self.clock.clone(),
            instance: self.instance.clone(),
            running: Arc::new(Semaphore::new(MAX_OVERLAPPING)),
        };
        Ok(tokio::spawn(job.run(Arc::new(context))))
    }
}

/// One scheduled job.
struct Job {
    /// Identifies the job in the store.
    key: String,
    /// The trigger's id, given to the function as `job_id`.
    id: String,
    function_id: String,
    condition: Option<String>,
    schedule: Schedule,
    on_missed: OnMissed,
    catch_up: usize,
    store: Store,
    clock: Arc<dyn Clock>,
    instance: Arc<str>,
    running: Arc<Semaphore>,
}

impl Job {
    async fn run(self, context: Arc<TriggerContext>) {
        let job = Arc::new(self);
        let started = job.clock.now();
        tokio::select! {
            () = context.stop.cancelled() => return,
            () = job.catch_up(&context, started) => {}
        }
        let mut cursor = started;
        loop {
            let Some(window) = job.schedule.next_after(cursor) else {
                tracing::info!(job = %job.id, function = %job.function_id, "cron schedule has no further windows");
                return;
            };
            // The window is claimed a little ahead of it, so that the
            // store's commit is not part of how late the call is made.
            tokio::select! {
                () = context.stop.cancelled() => return,
                () = job.clock.sleep_until(window - CLAIM_LEAD) => {}
            }
            // A clock stepped forward, or a stalled machine, can leave
            // several windows behind at once: only the latest fires.
            let due = job
                .schedule
                .last_at_or_before(job.clock.now())
                .filter(|due| *due > window)
                .unwrap_or(window);
            if due > window {
                tracing::warn!(
                    job = %job.id, function = %job.function_id, from = %window, to = %due,
                    "cron windows passed while the gateway could not fire them (clock stepped or process stalled); firing only the latest"
                );
            }
            let window = due;
            cursor = window;
            // A window that comes while earlier fires still run is left
            // unclaimed: another gateway on the store may take it.
            let Ok(permit) = job.running.clone().try_acquire_owned() else {
                context.stats.fired(true);
                tracing::warn!(
                    job = %job.id, function = %job.function_id, window = %window,
                    "cron window skipped: {MAX_OVERLAPPING} earlier fires of this job are still running"
                );
                continue;
            };
            if !job.claim(&context, window).await {
                continue;
            }
            tokio::select! {
                () = context.stop.cancelled() => return,
                () = job.clock.sleep_until(window) => {}
            }
            job.fire(&context, window, permit);
        }
    }

    /// Fires the windows missed since the job last fired, as `on_missed`
    /// says.
    async fn catch_up(self: &Arc<Self>, context: &Arc<TriggerContext>, now: DateTime<Utc>) {
        let limit = match self.on_missed {
            OnMissed::Skip => return,
            OnMissed::RunOnce => 1,
            OnMissed::RunAll => self.catch_up,
        };
        let last = match self.store.last_cron_window(&self.key).await {
            Ok(Some(ms)) => match Utc.timestamp_millis_opt(ms).single() {
                Some(last) => last,
                None => return,
            },
            // Never fired: nothing was missed.
            Ok(None) => return,
            Err(error) => {
                tracing::error!(job = %self.id, %error, "cron catch-up skipped: the store could not say when the job last fired");
                return;
            }
        };
        let missed = self.schedule.windows_between(last, now, limit);
        if !missed.is_empty() {
            tracing::info!(job = %self.id, function = %self.function_id, count = missed.len(), since = %last, "firing missed cron windows");
        }
        for window in missed {
            let Ok(permit) = self.running.clone().acquire_owned().await else {
                return;
            };
            if self.claim(context, window).await {
                self.fire(context, window, permit);
            }
        }
    }

    /// Whether this gateway is the one to fire `window`: it claimed it in
    /// the store.
    async fn claim(&self, context: &TriggerContext, window: DateTime<Utc>) -> bool {
        match self
            .store
            .claim_cron_window(&self.key, window.timestamp_millis(), &self.instance)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                context.stats.fired(true);
                tracing::error!(job = %self.id, %window, %error, "cron window skipped: it could not be claimed in the store, and firing unclaimed could fire it twice");
                false
            }
        }
    }

    /// Calls the function for a claimed window, on a task of its own.
    fn fire(
        self: &Arc<Self>,
        context: &Arc<TriggerContext>,
        window: DateTime<Utc>,
        permit: OwnedSemaphorePermit,
    ) {
        let input = json!({
            "trigger": TRIGGER_TYPE,
            "job_id": self.id,
            "scheduled_time": window.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            "actual_time": self.clock.now().to_rfc3339_opts(SecondsFormat::AutoSi, false),
        });
        let job = self.clone();
        let context = context.clone();
        tokio::spawn(async move {
            let firing = Firing {
                function_id: &job.function_id,
                condition: job.condition.as_deref(),
                caller: &context.owner,
                source: &context.source,
                trace: TraceContext::default(),
                timeout: None,
            };
            match firing
                .run(context.services.invoker.as_ref(), input, &context.stats)
                .await
            {
                Fired::Called(Ok(_)) => {}
                Fired::Called(Err(error)) => {
                    tracing::warn!(job = %job.id, function = %job.function_id, %window, %error, "cron call failed");
                }
                Fired::ConditionNotMet => {
                    tracing::debug!(job = %job.id, %window, "cron condition not met");
                }
                Fired::ConditionFailed(error) => {
                    context.stats.fired(true);
                    tracing::warn!(job = %job.id, %window, %error, "cron condition failed; the function was not called");
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests;
