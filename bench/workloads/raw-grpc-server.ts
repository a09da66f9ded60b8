/**
 * The ceiling of W1 and W2: a grpc-js server that speaks weft.v1.Mesh's Publish and Subscribe
 * with the same messages and codecs as the sidecar (src/wire/messages.ts), but keeps no log:
 * a publish batch is acked at once and its events go straight to every subscriber as
 * deliveries, within each subscriber's max_in_flight credits. The Weft client runs against
 * it unchanged, so the client's work is the same on both sides of the ratio.
 *
 *   node --import tsx bench/workloads/raw-grpc-server.ts PORT
 */
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { type ServerDuplexStream, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import type { OutgoingDelivery } from "../../src/delivery/types.js";
import { SubscribeRequestSchema, SubscribeResponseSchema } from "../../src/gen/weft/v1/mesh_pb.js";
import { newServer } from "../../src/grpc/server.js";
import { type RawPublishResult, readPublishRequest, writeDeliveries, writePublishResponse } from "../../src/wire/messages.js";

/** The sidecar's largest deliveries message (src/grpc/mesh-service.ts). */
const MAX_DELIVERY_MESSAGE_BYTES = 3 * 1024 * 1024;
const ACK_DEADLINE_MS = 30_000;

type Stream = ServerDuplexStream<Buffer, Uint8Array>;

interface Subscriber {
  call: Stream;
  credits: number;
  queue: OutgoingDelivery[];
  nextId: number;
}

const subscribers = new Set<Subscriber>();
let sequence = 0;
let pumpScheduled = false;

function schedulePump(): void {
  if (pumpScheduled) return;
  pumpScheduled = true;
  setImmediate(() => {
    pumpScheduled = false;
    for (const s of subscribers) {
      const n = Math.min(s.credits, s.queue.length);
      if (n === 0) continue;
      s.credits -= n;
      for (const m of writeDeliveries(s.queue.splice(0, n), MAX_DELIVERY_MESSAGE_BYTES)) s.call.write(m);
    }
  });
}

function publish(call: Stream): void {
  call.on("data", (bytes: Buffer) => {
    const { batchId, events } = readPublishRequest(bytes, 100_000);
    const results: RawPublishResult[] = [];
    const now = Date.now();
    for (const e of events) {
      const seq = ++sequence;
      results.push({ sequence: seq, duplicate: false });
      for (const s of subscribers) {
        s.queue.push({ deliveryId: s.nextId++, attempt: 1, deadline: now + ACK_DEADLINE_MS, event: { channel: "", sequence: seq, appendedAt: now, key: "", bytes: e } });
      }
    }
    call.write(writePublishResponse(batchId, results));
    schedulePump();
  });
  call.on("end", () => call.end());
  call.on("error", () => {});
}

function subscribe(call: Stream): void {
  let subscriber: Subscriber | undefined;
  call.on("data", (bytes: Buffer) => {
    const request = fromBinary(SubscribeRequestSchema, bytes).request;
    if (request.case === "open") {
      subscriber = { call, credits: request.value.maxInFlight || 100, queue: [], nextId: 1 };
      subscribers.add(subscriber);
      const { channel, group, maxInFlight } = request.value;
      call.write(toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, { response: { case: "subscribed", value: { channel, group, created: true, maxInFlight } } })));
    } else if (request.case === "ack" && subscriber) {
      subscriber.credits += request.value.deliveryIds.length;
      schedulePump();
    }
  });
  const gone = (): void => {
    if (subscriber) subscribers.delete(subscriber);
  };
  call.on("end", () => {
    gone();
    call.end();
  });
  call.on("error", gone);
  call.on("cancelled", gone);
}

const identity = (b: Buffer): Buffer => b;
const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const bidi = { requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: asBuffer, responseDeserialize: identity };
const definition: ServiceDefinition = {
  Publish: { path: "/weft.v1.Mesh/Publish", ...bidi },
  Subscribe: { path: "/weft.v1.Mesh/Subscribe", ...bidi },
};

const server = newServer(16 * 1024 * 1024);
server.addService(definition, { Publish: publish, Subscribe: subscribe } as UntypedServiceImplementation);
server.bindAsync(`127.0.0.1:${process.argv[2]}`, ServerCredentials.createInsecure(), (e) => {
  if (e) {
    console.error(e.message);
    process.exit(1);
  }
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
