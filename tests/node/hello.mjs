// The canonical iii example, exactly as a user writes it; only the address
// comes from the environment so the test can pick a free port.
import { registerWorker } from "iii-sdk";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("hello::greet", async (input) => ({ message: `hello ${input.name}` }));
runtime.registerTrigger({ type: "http", function_id: "hello::greet", config: { api_path: "/greet", http_method: "POST" } });
const result = await runtime.trigger({ function_id: "hello::greet", payload: { name: "world" } });
console.log(JSON.stringify(result));
