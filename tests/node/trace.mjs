// node trace.mjs: provides node::trace, which answers with the trace
// context its handler runs in, as the unmodified iii SDK sets it up from
// the invokefunction frame (its own OpenTelemetry on, as by default), and
// logs a line through the SDK's logger.
// Prints "ready" once callable.
import { registerWorker } from "iii-sdk";
import { Logger } from "@iii-dev/helpers/observability";
import { propagation, trace } from "@opentelemetry/api";
const runtime = registerWorker(process.env.CAPGATE_WORKER_URL ?? "ws://localhost:49134");
runtime.registerFunction("node::trace", async () => {
  // A log written through the SDK's logger goes out on its /otel socket.
  new Logger().info("node::trace ran");
  const span = trace.getActiveSpan()?.spanContext();
  const baggage = Object.fromEntries(
    (propagation.getActiveBaggage()?.getAllEntries() ?? []).map(([key, entry]) => [key, entry.value]),
  );
  return { traceId: span?.traceId ?? null, spanId: span?.spanId ?? null, baggage };
});
await runtime.trigger({ function_id: "node::trace", payload: {} });
console.log("ready");
