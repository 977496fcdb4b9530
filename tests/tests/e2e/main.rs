//! End-to-end tests: one binary, real sockets, the real gateway.

mod admin;
mod conformance;
mod crash;
mod cron_triggers;
mod declarations;
mod faults;
mod functions_available;
mod http_call;
mod http_triggers;
mod identity;
mod iii_node;
mod lifecycle;
mod limits;
mod mcp;
mod mcp_http;
mod mcp_process;
mod mcp_schema;
mod observability;
mod official_clients;
mod pins;
mod policies;
mod queues;
mod reattach;
mod state;
mod worker_frames;
mod worker_to_worker;
