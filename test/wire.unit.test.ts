import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { PublishRequestSchema, PublishResponseSchema, SubscribeResponseSchema } from "../src/gen/weft/v1/mesh_pb.js";
import { readPublishRequest, writeDeliveries, writePublishResponse } from "../src/grpc/wire.js";

const event = (i: number) => create(EventSchema, { channel: "a.b", id: `id-${i}`, source: "//s", type: "t", data: Buffer.alloc(i * 10, i) });

describe("wire codecs agree with the generated ones", () => {
  it("splits a PublishRequest into its batch id and the exact event bytes", () => {
    const events = [event(1), event(2), event(3)];
    const bytes = toBinary(PublishRequestSchema, create(PublishRequestSchema, { batchId: 2n ** 60n, events }));
    const raw = readPublishRequest(bytes, 10);
    expect(raw.batchId).toBe(2n ** 60n);
    expect(raw.tooMany).toBe(false);
    expect(raw.events.map((e) => Buffer.from(e).toString("hex"))).toEqual(events.map((e) => Buffer.from(toBinary(EventSchema, e)).toString("hex")));
    expect(readPublishRequest(bytes, 2)).toMatchObject({ tooMany: true });
  });

  it("refuses bytes that are not a PublishRequest with MALFORMED_MESSAGE", () => {
    expect(() => readPublishRequest(Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]), 10)).toThrow(/MALFORMED_MESSAGE/);
  });

  it("encodes a PublishResponse with sequences, duplicates and errors", () => {
    const bytes = writePublishResponse(7n, [
      { sequence: 1, duplicate: false },
      { sequence: 1, duplicate: true },
      { error: { code: 3, reason: "INVALID_CHANNEL", field: "channel", message: "bad" } },
    ]);
    const r = fromBinary(PublishResponseSchema, bytes);
    expect(r.batchId).toBe(7n);
    expect(r.results.map((x) => [x.sequence, x.duplicate, x.error?.reason ?? ""])).toEqual([
      [1n, false, ""],
      [1n, true, ""],
      [0n, false, "INVALID_CHANNEL"],
    ]);
  });

  it("encodes deliveries with the stored event bytes, split by size", () => {
    const deliveries = [1, 2, 3].map((i) => ({
      deliveryId: i,
      attempt: i,
      deadline: 1_700_000_000_000 + i,
      event: { channel: "a.b", sequence: 10 + i, appendedAt: 0, key: "", bytes: toBinary(EventSchema, event(i)) },
    }));
    const one = writeDeliveries(deliveries, 1 << 20);
    expect(one).toHaveLength(1);
    const decoded = fromBinary(SubscribeResponseSchema, one[0]!);
    expect(decoded.response.case).toBe("deliveries");
    const ds = decoded.response.case === "deliveries" ? decoded.response.value.deliveries : [];
    expect(ds.map((d) => [d.deliveryId, d.sequence, d.attempt, d.deadlineUnixMs, d.event?.id])).toEqual([
      [1n, 11n, 1, 1_700_000_000_001n, "id-1"],
      [2n, 12n, 2, 1_700_000_000_002n, "id-2"],
      [3n, 13n, 3, 1_700_000_000_003n, "id-3"],
    ]);
    expect(writeDeliveries(deliveries, 60)).toHaveLength(3);
  });
});
