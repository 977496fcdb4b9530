// capgate's fields travel in `metadata`, the only place an iii SDK can put
// them; metadata of the user's own (a numeric "version") must not get in the way.
import { registerWorker } from "iii-sdk";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("billing::refund", async (input) => ({ refunded: input.amount }), {
  description: "Refunds an amount",
  metadata: { version: "1.2.0", owner: { team: "payments" }, tags: ["money"] },
});
runtime.registerFunction("calc::add", async ({ a, b }) => ({ sum: a + b }), {
  description: "Adds two numbers",
  metadata: { team: "wire", version: 1 },
});
await runtime.trigger({ function_id: "billing::refund", payload: { amount: 1 } });
await runtime.trigger({ function_id: "calc::add", payload: { a: 1, b: 2 } });
console.log("ready");
