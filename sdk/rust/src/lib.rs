//! # capgate-sdk
//!
//! Workers for capgate in Rust. A [`Worker`] holds one WebSocket to the
//! gateway, registers [`Function`]s, answers their invocations, and calls
//! other functions through the gateway — waiting for the result
//! ([`Worker::call`]) or not ([`Worker::call_void`]). When the connection
//! drops it reconnects with exponential backoff and jitter, and replays its
//! registrations. It stays connected while the application holds a
//! [`Worker`] (or a clone); dropping the last closes the connection, as
//! [`Worker::shutdown`] does, and the gateway withdraws its functions.
//!
//! ```no_run
//! use capgate_sdk::{Function, Worker};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), capgate_sdk::CallError> {
//! let worker = Worker::connect("ws://127.0.0.1:49134").await?;
//! worker.register(
//!     Function::new("hello::greet")
//!         .description("Greets someone by name")
//!         .input_schema(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))
//!         .handler(|input, _ctx| async move {
//!             let name = input["name"].as_str().unwrap_or("world").to_owned();
//!             Ok(json!({ "message": format!("hello {name}") }))
//!         }),
//! );
//! let reply = worker.call("hello::greet", json!({"name": "world"})).await?;
//! assert_eq!(reply["message"], "hello world");
//! # Ok(()) }
//! ```
//!
//! Owns: the client side of the worker protocol. Must not know: anything of
//! the gateway beyond the frames in `capgate-protocol`.
#![forbid(unsafe_code)]

mod backoff;
mod connection;
mod function;
mod state;
mod trigger;
mod worker;

pub use backoff::Backoff;
pub use function::Function;
pub use state::{Change as StateChange, State};
pub use worker::{CallError, CallOptions, Context, HandlerError, Worker, WorkerBuilder};
