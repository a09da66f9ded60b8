import { type ConnectOptions, connect } from "../../src/client/index.js";
import { LatencyRecorder, type StreamResult, type StreamShape } from "./stream-shape.js";

/**
 * Publishes `shape.events` events to a sidecar and receives them with one subscriber per
 * group (`groups` groups of one channel), acking each. Publisher and subscribers share this
 * process, so the `t` attribute gives publish-to-delivery latency on one clock.
 */
export async function runWeftStream(address: string, shape: StreamShape, groups = 1, client: Pick<ConnectOptions, "tls"> = {}): Promise<StreamResult> {
  const channel = `bench.events.r${Date.now()}`;
  // Own subchannels: a pooled one left from an earlier run on a reused port must not be picked up.
  const channelOptions = { "grpc.use_local_subchannel_pool": 1 };
  const pub = connect(address, { ...client, maxOutstanding: shape.maxOutstanding, maxBatch: shape.maxBatch, channelOptions });
  const subClients = Array.from({ length: groups }, () => connect(address, { ...client, channelOptions }));
  const subs = subClients.map((c, g) => c.subscribe({ channel, group: `bench-${g}`, from: "earliest", maxInFlight: shape.maxInFlight }));
  await Promise.all(subs.map((s) => s.subscribed()));
  const payload = Buffer.alloc(shape.payloadBytes, 120);
  const latency = new LatencyRecorder(shape.events * groups);
  const total = shape.events * groups;
  let received = 0;
  let consumed!: () => void;
  const allConsumed = new Promise<void>((r) => (consumed = r));
  const start = performance.now();
  for (const sub of subs) {
    void (async () => {
      let mine = 0;
      for await (const d of sub) {
        latency.record(d.event.attributes.t);
        d.ack();
        if (++received === total) consumed();
        if (++mine === shape.events) break;
      }
    })();
  }
  const inflight: Promise<unknown>[] = [];
  for (let i = 0; i < shape.events; i += shape.chunk) {
    const n = Math.min(shape.chunk, shape.events - i);
    const events = new Array(n);
    for (let j = 0; j < n; j++) events[j] = { channel, data: payload, attributes: { t: String(performance.now()) } };
    inflight.push(pub.publishMany(events));
    if (inflight.length >= shape.window) await inflight.shift();
  }
  await Promise.all(inflight);
  const published = performance.now();
  await allConsumed;
  const done = performance.now();
  for (const s of subs) s.close();
  pub.close();
  for (const c of subClients) c.close();
  return latency.result(total, shape.payloadBytes, shape.events, start, published, done);
}
