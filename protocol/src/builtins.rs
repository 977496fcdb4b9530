//! Ids of the functions the gateway itself provides.

/// Fire-and-forget: the worker describes itself (`name`, `runtime`, `features`, ...).
pub const WORKERS_REGISTER: &str = "engine::workers::register";
/// Lists the workers connected to the gateway.
pub const WORKERS_LIST: &str = "engine::workers::list";
/// Lists the live functions (`search?`, `prefix?`, `include_internal?`).
pub const FUNCTIONS_LIST: &str = "engine::functions::list";
/// Describes one function (`function_id`) or several (`function_ids`).
pub const FUNCTIONS_INFO: &str = "engine::functions::info";
/// Lists trigger types (capgate has none of its own yet).
pub const TRIGGERS_LIST: &str = "engine::triggers::list";
/// Lists registered triggers.
pub const REGISTERED_TRIGGERS_LIST: &str = "engine::registered-triggers::list";
/// Streaming channels; not supported yet, answered with a clear error.
pub const CHANNELS_CREATE: &str = "engine::channels::create";

/// Namespace of the built-in functions.
pub const ENGINE_NAMESPACE: &str = "engine";

/// State: `{scope, key, value}` (or `data`); answers `{old_value, new_value}`.
pub const STATE_SET: &str = "state::set";
/// State: `{scope, key}`; answers the value, or null.
pub const STATE_GET: &str = "state::get";
/// State: `{scope, key}`; answers `{old_value}`.
pub const STATE_DELETE: &str = "state::delete";
/// State: `{scope, key, ops}` applied atomically; answers `{old_value, new_value}`.
pub const STATE_UPDATE: &str = "state::update";
/// State: `{scope}`; answers `[{key, value}]` by key.
pub const STATE_LIST: &str = "state::list";
/// State: `{}`; answers the scopes the caller may read, `[{scope, count}]`.
pub const STATE_LIST_GROUPS: &str = "state::list_groups";

/// Durable queues: `{topic, data, idempotency_key?, delay_seconds?, message_group?}`;
/// answers `{messageReceiptId, duplicate}` once the message is durable.
pub const DURABLE_PUBLISH: &str = "iii::durable::publish";
/// capgate's own name for [`DURABLE_PUBLISH`].
pub const QUEUE_PUBLISH: &str = "capgate::queue::publish";
/// Non-durable pub/sub: `{topic, data}`; answers `{delivered}` (subscriptions reached).
pub const PUBLISH: &str = "publish";
/// Dead letters: `{}`; answers `{topics: [{topic, count}]}`.
pub const DLQ_TOPICS: &str = "engine::queue::dlq_topics";
/// Dead letters: `{topic, offset?, limit?}`; answers `{messages: [...]}`.
pub const DLQ_MESSAGES: &str = "engine::queue::dlq_messages";
/// Dead letters: `{queue}` (or `topic`); every dead letter delivered again; answers `{redriven}`.
pub const QUEUE_REDRIVE: &str = "iii::queue::redrive";
/// Dead letters: `{queue, message_id}`; answers `{redriven}`.
pub const QUEUE_REDRIVE_MESSAGE: &str = "iii::queue::redrive_message";
/// Dead letters: `{queue, message_id}`; answers `{discarded}`.
pub const QUEUE_DISCARD_MESSAGE: &str = "iii::queue::discard_message";
