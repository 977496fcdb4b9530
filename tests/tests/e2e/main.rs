//! End-to-end tests: one binary, real sockets, the real gateway.

mod admin;
mod declarations;
mod functions_available;
mod iii_node;
mod lifecycle;
mod mcp;
mod mcp_http;
mod pins;
mod worker_frames;
mod worker_to_worker;
