// node bench.mjs URL CALLS CONCURRENCY SECONDS: one iii-sdk worker provides
// bench::echo, another calls it through capgate: sequential p50/p99, then
// throughput with CONCURRENCY callers. Prints one JSON line.
import { registerWorker } from "iii-sdk";
const [url, calls = "20000", concurrency = "64", seconds = "5"] = process.argv.slice(2);
const options = { enableMetricsReporting: false, otel: { enabled: false } };
const provider = registerWorker(url, options);
provider.registerFunction("bench::echo", async (input) => ({ message: `hello ${input.name}` }));
await provider.trigger({ function_id: "bench::echo", payload: { name: "ready" } });
const caller = registerWorker(url, options);
const call = () => caller.trigger({ function_id: "bench::echo", payload: { name: "bench" } });
for (let i = 0; i < 1000; i++) await call();
const latencies = [];
for (let i = 0; i < Number(calls); i++) {
  const started = process.hrtime.bigint();
  await call();
  latencies.push(Number(process.hrtime.bigint() - started) / 1000);
}
latencies.sort((a, b) => a - b);
const at = (p) => latencies[Math.max(0, Math.ceil(latencies.length * p) - 1)];
let done = 0;
let errors = 0;
let running = true;
const loop = async () => {
  while (running) {
    try {
      await call();
      done++;
    } catch {
      errors++;
    }
  }
};
const started = process.hrtime.bigint();
const loops = Array.from({ length: Number(concurrency) }, loop);
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
running = false;
const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
await Promise.all(loops);
console.log(JSON.stringify({ p50_us: at(0.5), p99_us: at(0.99), concurrency: Number(concurrency), calls_per_sec: done / elapsed, errors }));
await caller.shutdown();
await provider.shutdown();
process.exit(0);
