//! What the gateway lends trigger adapters: answers that need the policy
//! and the live connections, which the adapters crate does not know.

use std::sync::Arc;

use capgate_adapters::triggers::TriggerHost;
use capgate_catalog::{Caller, InvocationError, ProviderId};
use capgate_policies::Action;

use crate::access::Access;
use crate::identity::Identities;
use crate::workers::Workers;

pub struct GatewayTriggerHost {
    pub access: Arc<Access>,
    pub workers: Arc<Workers>,
    pub identities: Arc<Identities>,
}

impl TriggerHost for GatewayTriggerHost {
    fn may_list(&self, caller: &Caller, function_id: &str) -> bool {
        self.access
            .decide(caller, Action::List, function_id)
            .allowed
    }

    fn provider_name(&self, provider: ProviderId) -> Option<String> {
        self.workers.get(provider).and_then(|worker| worker.name())
    }

    fn agent(&self, headers: &http::HeaderMap) -> Result<Caller, String> {
        self.identities
            .agent(headers)
            .map(|agent| agent.caller())
            .map_err(|error| error.to_string())
    }

    fn may_read_state(&self, caller: &Caller, scope: &str) -> bool {
        self.access
            .decide(
                caller,
                Action::Read,
                &crate::builtins::state::scope_object(scope),
            )
            .allowed
    }

    fn may_consume(&self, caller: &Caller, topic: &str) -> bool {
        self.access
            .decide(
                caller,
                Action::Read,
                &crate::builtins::queue::topic_object(topic),
            )
            .allowed
    }

    fn error_code(&self, error: &InvocationError) -> String {
        crate::invocation::errors::code_of(error).to_owned()
    }
}
