//! One fire of a trigger: the condition function first when the trigger
//! has one, then the function — both on the one path, as the trigger's
//! caller, with the trigger as their source.

use capgate_catalog::Payload;
use capgate_catalog::{Caller, Invocation, InvocationError, Invoker, TraceContext, TriggerSource};
use serde_json::Value;

use super::TriggerStats;

/// What a trigger calls, and as whom.
pub struct Firing<'a> {
    pub function_id: &'a str,
    /// Called first with the same input; the function is called only when
    /// it answers a truthy value.
    pub condition: Option<&'a str>,
    pub caller: &'a Caller,
    pub source: &'a TriggerSource,
    pub trace: TraceContext,
    /// Overrides the function's deadline (a queue delivery's lease).
    pub timeout: Option<std::time::Duration>,
}

/// How a fire ended.
#[derive(Debug)]
pub enum Fired {
    /// The function was called; its result or error.
    Called(Result<Value, InvocationError>),
    /// The condition answered a falsy value: the function was not called.
    ConditionNotMet,
    /// The condition itself could not be called, or failed.
    ConditionFailed(InvocationError),
}

impl Firing<'_> {
    /// Fires once; counts the function's call (not a refusal by the
    /// condition) in `stats`.
    pub async fn run(
        self,
        invoker: &dyn Invoker,
        input: impl Into<Payload>,
        stats: &TriggerStats,
    ) -> Fired {
        let input = input.into();
        if let Some(condition) = self.condition {
            match invoker
                .invoke(self.invocation(condition, input.clone()))
                .await
            {
                Ok(verdict) if truthy(&verdict) => {}
                Ok(_) => return Fired::ConditionNotMet,
                Err(error) => return Fired::ConditionFailed(error),
            }
        }
        let outcome = invoker
            .invoke(self.invocation(self.function_id, input))
            .await;
        stats.fired(outcome.is_err());
        Fired::Called(outcome)
    }

    fn invocation(&self, function_id: &str, input: Payload) -> Invocation {
        Invocation {
            trace: self.trace.clone(),
            source: Some(self.source.clone()),
            timeout: self.timeout,
            ..Invocation::new(function_id, input, self.caller.clone())
        }
    }
}

/// A condition's verdict: `false`, `null`, `0` and `""` refuse; any other
/// result lets the trigger fire (as iii decides it).
pub fn truthy(verdict: &Value) -> bool {
    match verdict {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_false_null_zero_and_empty_text_refuse() {
        for refuse in [json!(false), json!(null), json!(0), json!(0.0), json!("")] {
            assert!(!truthy(&refuse), "{refuse}");
        }
        for pass in [json!(true), json!(1), json!("no"), json!({}), json!([])] {
            assert!(truthy(&pass), "{pass}");
        }
    }
}
