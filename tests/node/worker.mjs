// node worker.mjs NAME PEER: provides NAME::echo, and NAME::ask, which calls
// PEER::echo through the gateway. Prints "ready" once its own function is
// callable, then serves until killed.
import { registerWorker } from "iii-sdk";
const [name, peer] = process.argv.slice(2);
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction(`${name}::echo`, async (input) => ({ from: name, input }));
runtime.registerFunction(`${name}::ask`, async (input) =>
  runtime.trigger({ function_id: `${peer}::echo`, payload: input }),
);
await runtime.trigger({ function_id: `${name}::echo`, payload: { ready: true } });
console.log("ready");
