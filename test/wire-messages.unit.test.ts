import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { PublishRequestSchema, PublishResponseSchema, SubscribeRequestSchema, SubscribeResponseSchema } from "../src/gen/weft/v1/mesh_pb.js";
import {
  type EventFields,
  readAckRequest,
  readEvent,
  readPublishRequest,
  readSubscribeResponse,
  writeDeliveries,
  writeEvent,
  writePublishRequest,
  writePublishResponse,
} from "../src/wire/messages.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";

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

  it.each<[string, bigint, { sequence: number; duplicate: boolean }[]]>([
    ["one stored event", 1n, [{ sequence: 1, duplicate: false }]],
    ["no batch id", 0n, [{ sequence: 300, duplicate: false }]],
    ["big numbers", 2n ** 64n - 1n, [{ sequence: 2 ** 53 - 1, duplicate: true }, { sequence: 128, duplicate: false }]],
    ["no results", 5n, []],
    ["many", 9n, Array.from({ length: 500 }, (_, i) => ({ sequence: 100_000 + i, duplicate: i % 7 === 0 }))],
  ])("encodes a PublishResponse of stored events (%s) as toBinary does", (_, batchId, results) => {
    const expected = toBinary(PublishResponseSchema, create(PublishResponseSchema, { batchId, results: results.map((r) => ({ sequence: BigInt(r.sequence), duplicate: r.duplicate })) }));
    expect(Buffer.from(writePublishResponse(batchId, results)).equals(Buffer.from(expected))).toBe(true);
  });

  const ackOf = (ids: bigint[]): Uint8Array => toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request: { case: "ack", value: { deliveryIds: ids } } }));
  it.each<[string, Uint8Array]>([
    ["one id", ackOf([1n])],
    ["many ids, big ones", ackOf([1n, 127n, 128n, 2n ** 53n, 2n ** 64n - 1n])],
    ["no ids", ackOf([])],
    ["ids not packed", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Varint).uint64(4n).tag(1, WireType.Varint).uint64(5n).finish()).finish()],
  ])("reads an ack request (%s) as fromBinary does", (_, bytes) => {
    const r = fromBinary(SubscribeRequestSchema, bytes).request;
    expect(r.case).toBe("ack");
    expect(readAckRequest(bytes)).toEqual(r.case === "ack" ? r.value.deliveryIds : undefined);
  });

  it.each<[string, Uint8Array]>([
    ["a nack", toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request: { case: "nack", value: { deliveryIds: [1n] } } }))],
    ["a credit", toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request: { case: "credit", value: { credits: 5 } } }))],
    ["an open", toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request: { case: "open", value: { channel: "a", group: "g" } } }))],
    ["nothing", new Uint8Array(0)],
    ["an ack twice (merged)", Buffer.concat([ackOf([1n]), ackOf([2n])])],
    ["an ack, then an open (the open wins)", Buffer.concat([ackOf([1n]), toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request: { case: "open", value: { channel: "a", group: "g" } } }))])],
    ["an unknown field in the ack", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(9, WireType.Varint).uint32(1).finish()).finish()],
    ["a truncated ack", ackOf([1n, 2n]).subarray(0, 4)],
    ["an ack as a varint", new BinaryWriter().tag(2, WireType.Varint).uint32(1).finish()],
  ])("leaves %s to fromBinary", (_, bytes) => {
    expect(readAckRequest(bytes)).toBeUndefined();
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

  it("encodes deliveries to the bytes toBinary gives, in messages under the size asked for", () => {
    const deliveries = [1, 2, 3, 40, 300].map((i) => ({
      deliveryId: i === 300 ? Number.MAX_SAFE_INTEGER : i,
      attempt: i,
      deadline: i === 2 ? -1_700_000_000_000.4 : 1_700_000_000_000 + i * 1e9,
      event: { channel: "a.b", sequence: 2 ** 40 + i, appendedAt: 0, key: "", bytes: toBinary(EventSchema, event(i)) },
    }));
    const expected = (ds: typeof deliveries) =>
      toBinary(
        SubscribeResponseSchema,
        create(SubscribeResponseSchema, {
          response: {
            case: "deliveries",
            value: {
              deliveries: ds.map((d) => ({
                deliveryId: BigInt(d.deliveryId),
                sequence: BigInt(d.event.sequence),
                attempt: d.attempt,
                event: fromBinary(EventSchema, d.event.bytes),
                deadlineUnixMs: BigInt(Math.round(d.deadline)),
              })),
            },
          },
        }),
      );
    const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
    expect(writeDeliveries(deliveries, 1 << 20).map(hex)).toEqual([hex(expected(deliveries))]);
    for (const maxBytes of [1, 100, 200, 3100, 3500]) {
      const messages = writeDeliveries(deliveries, maxBytes);
      const split = messages.map((m) => (fromBinary(SubscribeResponseSchema, m).response.value as { deliveries: unknown[] }).deliveries.length);
      expect(split.reduce((a, b) => a + b)).toBe(deliveries.length);
      let at = 0;
      messages.forEach((m, i) => {
        // Each message holds what fits; only a message of one delivery may be larger.
        if (split[i]! > 1) expect(m.length).toBeLessThanOrEqual(maxBytes + 6);
        expect(hex(m)).toBe(hex(expected(deliveries.slice(at, (at += split[i]!)))));
      });
    }
  });

  it("decodes SubscribeResponse deliveries by hand to what fromBinary gives", () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const text = (): string => ["", "a", "ünï", "日本", "\u{1F600}", "x".repeat(rand(300))][rand(6)]! + String(rand(1000));
    for (let round = 0; round < 200; round++) {
      const deliveries = Array.from({ length: 1 + rand(20) }, (_, i) => {
        const e = create(EventSchema, {
          channel: "a.b",
          id: text(),
          source: text(),
          type: text(),
          subject: text(),
          datacontenttype: rand(2) ? "application/json" : "",
          data: Buffer.alloc(rand(500), rand(256)),
          key: rand(2) ? text() : "",
          attributes: rand(2) ? { [text()]: text(), other: text() } : {},
          ...(rand(2) ? { time: { seconds: BigInt(rand(2 ** 31)) - 2n ** 30n, nanos: rand(1e9) } } : {}),
        });
        return {
          deliveryId: rand(2) ? i + 1 : Number.MAX_SAFE_INTEGER - i,
          attempt: 1 + rand(1000),
          deadline: rand(2) ? 1_700_000_000_000 + rand(1e6) : -rand(1e6),
          event: { channel: "a.b", sequence: 1 + rand(2 ** 31), appendedAt: 0, key: e.key, bytes: toBinary(EventSchema, e) },
        };
      });
      for (const bytes of writeDeliveries(deliveries, 1 + rand(8000))) {
        expect(readSubscribeResponse(bytes)).toEqual(fromBinary(SubscribeResponseSchema, bytes));
      }
    }
  });

  it("hands what it does not read by hand to fromBinary", () => {
    const subscribed = toBinary(
      SubscribeResponseSchema,
      create(SubscribeResponseSchema, { response: { case: "subscribed", value: { channel: "a.b", group: "g", maxInFlight: 5 } } }),
    );
    const [one] = writeDeliveries([{ deliveryId: 1, attempt: 1, deadline: 5, event: { sequence: 1, bytes: toBinary(EventSchema, event(1)) } }], 1 << 20);
    const twice = Buffer.concat([one!, one!]); // the deliveries field repeated: fromBinary merges
    // Fields out of order, and an event whose id has the wrong wire type (readEvent refuses;
    // fromBinary reads the varint 0 as the length of an empty string).
    const delivery = new BinaryWriter().tag(3, WireType.Varint).uint32(2).tag(1, WireType.Varint).uint64(9).finish();
    const oddEvent = new BinaryWriter().tag(1, WireType.Varint).uint32(0).tag(2, WireType.LengthDelimited).string("//s").finish();
    const withOddEvent = new BinaryWriter().tag(1, WireType.Varint).uint64(1).tag(4, WireType.LengthDelimited).bytes(oddEvent).finish();
    const wrap = (d: Uint8Array): Uint8Array =>
      new BinaryWriter().tag(2, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).bytes(d).join().finish();
    for (const bytes of [subscribed, twice, wrap(delivery), wrap(withOddEvent), new Uint8Array(0)]) {
      expect(readSubscribeResponse(bytes)).toEqual(fromBinary(SubscribeResponseSchema, bytes));
    }
    expect(readSubscribeResponse(twice).response.value).toMatchObject({ deliveries: [{ deliveryId: 1n }, { deliveryId: 1n }] });
    expect(() => readSubscribeResponse(Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]))).toThrow();
  });

  it("encodes events and publish requests on the client exactly as toBinary does", () => {
    const samples: EventFields[] = [
      { id: "a", source: "//s", type: "t", subject: "", time: undefined, datacontenttype: "", data: new Uint8Array(0), attributes: {}, channel: "a.b", key: "" },
      {
        id: "ünïcode-✓",
        source: "//s/" + "x".repeat(300),
        type: "t.y",
        subject: "subj",
        time: new Date(Date.UTC(2026, 10, 27, 9, 0, 0, 123)),
        datacontenttype: "application/json",
        data: Buffer.from('{"n":1}'),
        attributes: { traceparent: "00-abc", empty: "" },
        channel: "orders.created",
        key: "customer-7",
      },
      { id: "pre-epoch", source: "//s", type: "t", subject: "", time: new Date(-1500), datacontenttype: "", data: Buffer.alloc(200, 1), attributes: {}, channel: "c", key: "" },
    ];
    const encoded = samples.map((e) => writeEvent(e));
    samples.forEach((e, i) => {
      const { time, ...rest } = e;
      const expected = toBinary(EventSchema, create(EventSchema, { ...rest, ...(time ? { time: timestampFromDate(time) } : {}) }));
      expect(Buffer.from(encoded[i]!).toString("hex")).toBe(Buffer.from(expected).toString("hex"));
    });
    const request = fromBinary(PublishRequestSchema, writePublishRequest(2n ** 63n + 5n, encoded));
    expect(request.batchId).toBe(2n ** 63n + 5n);
    expect(request.events.map((e) => e.id)).toEqual(samples.map((e) => e.id));
  });

  it("reads an event as fromBinary does, and never takes bytes fromBinary refuses (random damage)", () => {
    const whole = toBinary(
      EventSchema,
      create(EventSchema, {
        channel: "orders.eu",
        id: "é-1",
        source: "//s",
        type: "t",
        subject: "x",
        key: "k",
        datacontenttype: "text/plain",
        time: timestampFromDate(new Date(1_700_000_000_123)),
        attributes: { a: "1", "b.c": "ü" },
        data: Buffer.from("payload"),
      }),
    );
    const sameAs = (bytes: Uint8Array): void => {
      const mine = readEvent(bytes);
      const { $unknown: _skipped, ...theirs } = fromBinary(EventSchema, bytes);
      if (theirs.time) theirs.time = { ...theirs.time, $unknown: undefined } as typeof theirs.time;
      if (mine.time) mine.time = { ...mine.time, $unknown: undefined } as typeof mine.time;
      expect({ ...mine, attributes: { ...mine.attributes }, data: Buffer.from(mine.data).toString("hex") }).toEqual({
        ...theirs,
        attributes: { ...theirs.attributes },
        data: Buffer.from(theirs.data).toString("hex"),
      });
    };
    sameAs(whole);
    // An unknown field (number 20, varint) and an unknown group (number 21) are skipped.
    sameAs(Buffer.concat([whole, Buffer.from([0xa0, 0x01, 0x05, 0xab, 0x01, 0x08, 0x01, 0xac, 0x01])]));
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    let read = 0;
    for (let i = 0; i < 3000; i++) {
      const bytes = Buffer.from(whole);
      for (let k = 0; k <= random(3); k++) bytes[random(bytes.length)] = random(256);
      const cut = random(4) === 0 ? bytes.subarray(0, random(bytes.length)) : bytes;
      let mine: unknown;
      try {
        mine = readEvent(cut);
      } catch {
        continue; // stricter than fromBinary is allowed (wire types, UTF-8)
      }
      read++;
      expect(mine).toBeDefined();
      sameAs(cut);
    }
    expect(read).toBeGreaterThan(100);
  });
});
