//! Triggers a worker attaches to functions: an HTTP route, a schedule, a
//! subscription. The gateway runs them; the worker only registers them
//! (again after every reconnect) and answers the calls they make.

use std::sync::PoisonError;

use capgate_protocol::{Frame, RegisterTrigger};
use serde_json::Value;

use crate::worker::{Outgoing, Worker};

impl Worker {
    /// Registers (or replaces) trigger `id` of `trigger_type` calling
    /// `function_id` — for example an HTTP route:
    /// `register_trigger("greet-route", "http", "hello::greet",
    /// json!({"api_path": "/greet", "http_method": "POST"}))`. A refusal
    /// arrives as a `triggerregistrationresult` error and is logged.
    pub fn register_trigger(
        &self,
        id: impl Into<String>,
        trigger_type: impl Into<String>,
        function_id: impl Into<String>,
        config: Value,
    ) {
        let trigger = RegisterTrigger {
            id: id.into(),
            trigger_type: trigger_type.into(),
            function_id: function_id.into(),
            config,
            metadata: None,
        };
        let frame = Frame::RegisterTrigger(trigger.clone()).to_json();
        self.shared
            .triggers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(trigger.id.clone(), trigger);
        let _ = self.shared.outbox.send(Outgoing::Frame(frame));
    }

    /// Removes trigger `id`.
    pub fn unregister_trigger(&self, id: &str) {
        let removed = self
            .shared
            .triggers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        let frame = Frame::UnregisterTrigger {
            id: id.to_owned(),
            trigger_type: removed.map(|trigger| trigger.trigger_type),
        };
        let _ = self.shared.outbox.send(Outgoing::Frame(frame.to_json()));
    }
}
