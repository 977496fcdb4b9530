// iii's durable queue as a Node user writes it: a durable:subscriber on the
// "orders" topic (a poison order fails every time), a function queue call
// with TriggerAction.Enqueue, and publishes with iii::durable::publish.
// Prints each delivery and each answer as one JSON line.
import { registerWorker, TriggerAction } from "iii-sdk";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("orders::placed", async (input) => {
  console.log(JSON.stringify({ delivered: input }));
  if (input.poison) throw new Error("poison order");
  return null;
});
runtime.registerTrigger({
  type: "durable:subscriber",
  function_id: "orders::placed",
  config: { topic: "orders", queue_config: { maxRetries: 1, backoffDelayMs: 10 } },
});
runtime.registerFunction("mail::send", async (input) => {
  console.log(JSON.stringify({ mailed: input }));
  return { sent: true };
});
const call = (function_id, payload, action) => runtime.trigger({ function_id, payload, action });
console.log(JSON.stringify({
  published: await call("iii::durable::publish", { topic: "orders", data: { id: 1 } }),
}));
console.log(JSON.stringify({
  enqueued: await call("mail::send", { to: "ops@example.com" }, TriggerAction.Enqueue({ queue: "mail" })),
}));
try {
  await call("mail::send", {}, TriggerAction.Enqueue({ queue: "nowhere" }));
} catch (error) {
  console.log(JSON.stringify({ refused: { code: error.code, message: error.message } }));
}
console.log(JSON.stringify({
  poisoned: await call("iii::durable::publish", { topic: "orders", data: { id: 2, poison: true } }),
}));
