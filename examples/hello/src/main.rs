//! The canonical capgate example.
//!
//! Registers `hello::greet` (input `{name}`, output `{message}`), calls it
//! once through the gateway, prints the result, and keeps serving until
//! stopped (Ctrl-C). Connects to the URL given as the first argument, else
//! `CAPGATE_WORKER_URL`, else `ws://127.0.0.1:49134`.

use capgate_sdk::{Function, Worker};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct Greeting {
    /// Who to greet.
    name: String,
}

#[derive(Serialize, JsonSchema)]
struct Reply {
    message: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("CAPGATE_WORKER_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:49134".into());
    let worker = match Worker::builder(&url).name("hello").connect().await {
        Ok(worker) => worker,
        Err(error) => {
            eprintln!("hello: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    worker.register(
        Function::typed("hello::greet", |input: Greeting, _ctx| async move {
            Ok(Reply {
                message: format!("hello {}", input.name),
            })
        })
        .description("Greets someone by name")
        .version("1.0.0"),
    );
    match worker
        .call("hello::greet", serde_json::json!({"name": "world"}))
        .await
    {
        Ok(result) => println!("{result}"),
        Err(error) => {
            eprintln!("hello: calling hello::greet failed: {error}");
            return std::process::ExitCode::FAILURE;
        }
    }
    // Keep serving until stopped.
    let _ = tokio::signal::ctrl_c().await;
    worker.shutdown();
    std::process::ExitCode::SUCCESS
}
