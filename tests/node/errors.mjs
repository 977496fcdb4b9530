// What iii callers see for a handler that throws and an unknown function:
// one JSON line with each rejection's code, message and how long it took.
import { registerWorker } from "iii-sdk";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("boom::fail", async () => {
  throw new Error("kaboom");
});
async function outcome(function_id) {
  const started = Date.now();
  try {
    const result = await runtime.trigger({ function_id, payload: {} });
    return { result, ms: Date.now() - started };
  } catch (error) {
    return { code: error.code, message: error.message, ms: Date.now() - started };
  }
}
const thrown = await outcome("boom::fail");
const unknown = await outcome("nope::missing");
console.log(JSON.stringify({ thrown, unknown }));
await runtime.shutdown();
process.exit(0);
