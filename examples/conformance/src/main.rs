//! The MCP conformance suite's fixture tools, served by a capgate worker.
//!
//! `@modelcontextprotocol/conformance server` calls tools by fixed names
//! (`test_simple_text`, `test_image_content`, ...) and checks what comes
//! back. This worker registers them, so the suite's tool scenarios run
//! against capgate — through the whole invocation path, like any call.
//! Tools that need something capgate does not bridge from a worker to an
//! MCP client (progress, logging, sampling and elicitation requests) are
//! left out; docs/mcp.md says why for each scenario.
//!
//! Connects to the URL given as the first argument, else
//! `CAPGATE_WORKER_URL`, else `ws://127.0.0.1:49134`, prints `ready` once
//! every tool is registered, and serves until stdin closes or Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use capgate_sdk::{Function, HandlerError, Worker};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// A 1×1 red PNG.
const RED_PIXEL_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
/// Eight samples of silence, 8 kHz mono WAV.
const SILENT_WAV: &str = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==";
/// The tool `test_trigger_tool_change` adds and removes.
const DYNAMIC_TOOL: &str = "test_dynamic_tool";

/// A tool with no arguments whose result is the given MCP content.
fn content_tool(id: &str, description: &str, content: Value) -> Function {
    Function::new(id)
        .description(description)
        .input_schema(json!({"type": "object", "properties": {}}))
        .mcp(json!({"result": "content"}))
        .handler(move |_input, _ctx| {
            let content = content.clone();
            async move { Ok(json!({ "content": content })) }
        })
}

/// Every fixture tool; `worker` lets `test_trigger_tool_change` change the
/// tool list.
fn fixtures(worker: &Worker) -> Vec<Function> {
    let dynamic_registered = Arc::new(AtomicBool::new(false));
    let toggler = worker.clone();
    vec![
        content_tool(
            "test_simple_text",
            "Returns a simple text response",
            json!([{"type": "text", "text": "This is a simple text response for testing."}]),
        ),
        content_tool(
            "test_image_content",
            "Returns a 1x1 red PNG",
            json!([{"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"}]),
        ),
        content_tool(
            "test_audio_content",
            "Returns a short silent WAV",
            json!([{"type": "audio", "data": SILENT_WAV, "mimeType": "audio/wav"}]),
        ),
        content_tool(
            "test_embedded_resource",
            "Returns an embedded text resource",
            json!([{"type": "resource", "resource": {
                "uri": "test://embedded-resource",
                "mimeType": "text/plain",
                "text": "This is an embedded resource content."
            }}]),
        ),
        content_tool(
            "test_multiple_content_types",
            "Returns text, an image and a resource",
            json!([
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": RED_PIXEL_PNG, "mimeType": "image/png"},
                {"type": "resource", "resource": {
                    "uri": "test://mixed-content-resource",
                    "mimeType": "application/json",
                    "text": "{\"test\":\"data\",\"value\":123}"
                }}
            ]),
        ),
        Function::new("test_error_handling")
            .description("Always fails")
            .input_schema(json!({"type": "object", "properties": {}}))
            .handler(|_input, _ctx| async {
                Err(HandlerError::new(
                    "This tool intentionally returns an error for testing",
                ))
            }),
        Function::new("json_schema_2020_12_tool")
            .description("Tool with JSON Schema 2020-12 features")
            .input_schema(json_schema_2020_12())
            .handler(|_input, _ctx| async { Ok(json!({"accepted": true})) }),
        content_tool(
            "test_logging_tool",
            "Sends no log messages unless asked for a log level (capgate never does)",
            json!([{"type": "text", "text": "logging tool ran"}]),
        ),
        content_tool(
            "test_missing_capability",
            "Needs the client's sampling capability",
            json!([{"type": "text", "text": "the client declared sampling"}]),
        )
        .mcp(json!({"result": "content", "requires": {"sampling": {}}})),
        Function::new("test_trigger_tool_change")
            .description("Adds test_dynamic_tool to the tool list, or removes it")
            .input_schema(json!({"type": "object", "properties": {}}))
            .handler(move |_input, _ctx| {
                let worker = toggler.clone();
                let registered = dynamic_registered.clone();
                async move {
                    let added = !registered.fetch_xor(true, Ordering::SeqCst);
                    if added {
                        worker.register(dynamic_tool());
                    } else {
                        worker.unregister(DYNAMIC_TOOL);
                    }
                    Ok(json!({"test_dynamic_tool": if added { "added" } else { "removed" }}))
                }
            }),
    ]
}

fn dynamic_tool() -> Function {
    content_tool(
        DYNAMIC_TOOL,
        "Comes and goes with test_trigger_tool_change",
        json!([{"type": "text", "text": "dynamic tool ran"}]),
    )
}

/// The suite's schema for `json_schema_2020_12_tool`, verbatim.
fn json_schema_2020_12() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"}
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("CAPGATE_WORKER_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:49134".into());
    let mut builder = Worker::builder(&url).name("conformance-fixture");
    if let Ok(token) = std::env::var("CAPGATE_WORKER_TOKEN") {
        builder = builder.token(token);
    }
    let worker = match builder.connect().await {
        Ok(worker) => worker,
        Err(error) => {
            eprintln!("conformance-fixture: cannot connect to {url}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for function in fixtures(&worker) {
        worker.register(function);
    }
    // A call of the last one answers only once every earlier registration
    // has been taken (frames are handled in order).
    if let Err(error) = worker.call("engine::functions::list", json!({})).await {
        eprintln!("conformance-fixture: the gateway did not answer: {error}");
        return std::process::ExitCode::FAILURE;
    }
    let rejected = worker.take_rejections();
    if !rejected.is_empty() {
        for rejection in rejected {
            eprintln!("conformance-fixture: registration refused: {rejection:?}");
        }
        return std::process::ExitCode::FAILURE;
    }
    println!("ready");
    // Serve until stdin closes (the parent is gone) or Ctrl-C.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    tokio::select! {
        _ = async { while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {} } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    worker.shutdown();
    std::process::ExitCode::SUCCESS
}
