// iii's state built-ins and a state trigger, as a Node user writes them:
// every change of the "orders" scope is printed, then the worker sets,
// updates, reads and deletes a value and prints each answer.
import { registerWorker } from "iii-sdk";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("orders::changed", async (input) => {
  console.log(JSON.stringify({ change: input }));
  return null;
});
runtime.registerTrigger({ type: "state", function_id: "orders::changed", config: { scope: "orders" } });
const call = (function_id, payload) => runtime.trigger({ function_id, payload });
console.log(JSON.stringify({ set: await call("state::set", { scope: "orders", key: "o-1", value: { total: 5 } }) }));
console.log(JSON.stringify({
  update: await call("state::update", {
    scope: "orders", key: "o-1", ops: [{ type: "increment", path: "total", by: 2 }],
  }),
}));
console.log(JSON.stringify({ get: await call("state::get", { scope: "orders", key: "o-1" }) }));
console.log(JSON.stringify({ delete: await call("state::delete", { scope: "orders", key: "o-1" }) }));
