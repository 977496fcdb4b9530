// iii's cron example as a user writes it: a function on a schedule of
// every second. Each input is printed as a line for the test to read.
import { registerWorker } from "iii-sdk";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("cron::tick", async (input) => {
  console.log(JSON.stringify(input));
  return { ok: true };
});
runtime.registerTrigger({ type: "cron", function_id: "cron::tick", config: { expression: "* * * * * *" } });
console.log("ready");
