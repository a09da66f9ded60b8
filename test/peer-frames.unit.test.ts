import { type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { StartPosition_Kind } from "../src/gen/weft/v1/mesh_pb.js";
import { GroupOutcomeSchema, HeartbeatSchema, OutcomesSchema, PeerFrameSchema } from "../src/gen/weft/v1/peer_pb.js";
import { writeEvent } from "../src/wire/messages.js";
import {
  type ForwardedEvent,
  type GroupOutcomes,
  MAX_FORWARD_EVENTS,
  TooManyEvents,
  readFrame,
  writeForward,
  writeFrame,
  writeOutcomes,
  writeStored,
} from "../src/wire/peer-frames.js";

/**
 * The hand-written forward codec agrees with protobuf-es on proto/weft/v1/peer.proto, and
 * keeps event bytes exactly as the origin stored them.
 */

const event = (channel: string, i: number, dataBytes = (i % 50) * 10): Uint8Array =>
  writeEvent({
    id: `id-${i}`,
    source: "//weft-test/frames",
    type: "test.frames",
    subject: "",
    time: i % 2 === 0 ? new Date(1_700_000_000_000 + i) : undefined,
    datacontenttype: "",
    data: Buffer.alloc(dataBytes, i),
    attributes: i % 3 === 0 ? { "x-i": String(i) } : {},
    channel,
    key: i % 2 === 0 ? `k${i}` : "",
  });

const forwarded = (channel: string, group: string, sequence: number, attempt = 1, bytes = event(channel, sequence)): ForwardedEvent => ({
  channel,
  group,
  sequence,
  attempt,
  bytes,
});

/** A spread of events: multi-byte varints, big numbers, non-ASCII names, an empty event. */
const samples: ForwardedEvent[] = [
  forwarded("orders", "billing", 1),
  forwarded("orders.created", "g", 300, 2, event("orders.created", 300, 5000)),
  forwarded("a", "b", Number.MAX_SAFE_INTEGER, 4_294_967_295),
  forwarded("naïve.channel", "grüppe", 128, 1000),
  forwarded("orders", "billing", 2, 1, new Uint8Array(0)),
];

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("writeForward", () => {
  it("encodes a PeerFrame.forward that fromBinary reads to the same content", () => {
    const forwardId = 2 ** 40 + 3;
    const bytes = writeForward(forwardId, samples);
    const frame = fromBinary(PeerFrameSchema, bytes).frame;
    expect(frame.case).toBe("forward");
    if (frame.case !== "forward") return;
    expect(frame.value.forwardId).toBe(BigInt(forwardId));
    expect(
      frame.value.events.map((e) => ({ channel: e.channel, group: e.group, sequence: e.sequence, attempt: e.attempt })),
    ).toEqual(samples.map((e) => ({ channel: e.channel, group: e.group, sequence: BigInt(e.sequence), attempt: e.attempt })));
    // Each event, encoded again by protobuf-es, is byte for byte what went in.
    expect(frame.value.events.map((e) => hex(toBinary(EventSchema, e.event ?? create(EventSchema))))).toEqual(samples.map((e) => hex(e.bytes)));
  });

  it("writes the same bytes protobuf-es writes for the same forward (all fields set)", () => {
    const events = samples.filter((e) => e.bytes.length > 0);
    const bytes = writeForward(7, events);
    const viaEs = toBinary(
      PeerFrameSchema,
      create(PeerFrameSchema, {
        frame: {
          case: "forward",
          value: {
            forwardId: 7n,
            events: events.map((e) => ({
              channel: e.channel,
              group: e.group,
              sequence: BigInt(e.sequence),
              attempt: e.attempt,
              event: fromBinary(EventSchema, e.bytes),
            })),
          },
        },
      }),
    );
    expect(hex(bytes)).toBe(hex(viaEs));
  });

  it("encodes a forward without events", () => {
    const frame = fromBinary(PeerFrameSchema, writeForward(1, [])).frame;
    expect(frame.case === "forward" && { id: frame.value.forwardId, events: frame.value.events.length }).toEqual({ id: 1n, events: 0 });
  });
});

describe("readFrame", () => {
  it("reads back what writeForward wrote, event bytes identical (views of the frame, not copies)", () => {
    const bytes = writeForward(Number.MAX_SAFE_INTEGER, samples);
    const frame = readFrame(bytes);
    expect(frame.case).toBe("forward");
    if (frame.case !== "forward") return;
    expect(frame.forwardId).toBe(BigInt(Number.MAX_SAFE_INTEGER));
    expect(frame.events.map((e) => ({ ...e, bytes: hex(e.bytes) }))).toEqual(samples.map((e) => ({ ...e, bytes: hex(e.bytes) })));
    for (const e of frame.events) if (e.bytes.length > 0) expect(e.bytes.buffer).toBe(bytes.buffer);
  });

  it("reads a forward protobuf-es wrote, with zero fields left out, like fromBinary", () => {
    const bytes = toBinary(
      PeerFrameSchema,
      create(PeerFrameSchema, {
        frame: { case: "forward", value: { forwardId: 0n, events: [{ channel: "orders", group: "g" }, { channel: "orders", group: "g", sequence: 9n, attempt: 1 }] } },
      }),
    );
    const frame = readFrame(bytes);
    expect(frame).toEqual({
      case: "forward",
      forwardId: 0n,
      events: [
        { channel: "orders", group: "g", sequence: 0, attempt: 0, bytes: new Uint8Array(0) },
        { channel: "orders", group: "g", sequence: 9, attempt: 1, bytes: new Uint8Array(0) },
      ],
    });
  });

  it("skips unknown fields inside a forward and its events (newer peers)", () => {
    const e = new BinaryWriter()
      .tag(9, WireType.Varint).uint32(5)
      .tag(1, WireType.LengthDelimited).string("orders")
      .tag(2, WireType.LengthDelimited).string("g")
      .tag(3, WireType.Varint).uint64(4n)
      .tag(10, WireType.LengthDelimited).bytes(new Uint8Array([1, 2, 3]))
      .tag(4, WireType.Varint).uint32(1)
      .tag(5, WireType.LengthDelimited).bytes(event("orders", 4))
      .finish();
    const forward = new BinaryWriter()
      .tag(2, WireType.LengthDelimited).bytes(e)
      .tag(15, WireType.Bit64).fixed64(1n)
      .tag(1, WireType.Varint).uint64(11n)
      .finish();
    const bytes = new BinaryWriter().tag(3, WireType.LengthDelimited).bytes(forward).finish();
    const frame = readFrame(bytes);
    expect(frame.case === "forward" && { forwardId: frame.forwardId, events: frame.events.map((x) => ({ ...x, bytes: hex(x.bytes) })) }).toEqual({
      forwardId: 11n,
      events: [{ channel: "orders", group: "g", sequence: 4, attempt: 1, bytes: hex(event("orders", 4)) }],
    });
  });

  it("reads a sequence over 2^53-1 as -1, for the receiver to refuse", () => {
    const e = new BinaryWriter().tag(3, WireType.Varint).uint64(2n ** 53n).finish();
    const bytes = new BinaryWriter().tag(3, WireType.LengthDelimited).bytes(new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(e).finish()).finish();
    const frame = readFrame(bytes);
    expect(frame.case === "forward" && frame.events[0]?.sequence).toBe(-1);
  });

  const others: [string, MessageInitShape<typeof PeerFrameSchema>["frame"]][] = [
    [
      "hello",
      {
        case: "hello",
        value: { nodeId: "node-1", instance: 2n ** 63n, logId: 5n, maxProtocolVersion: 1, minProtocolVersion: 1, softwareVersion: "0.1.0", heartbeatIntervalMs: 1000 },
      },
    ],
    [
      "interest",
      {
        case: "interest",
        value: {
          snapshot: true,
          groups: [
            { channel: "orders", group: "g", start: { kind: StartPosition_Kind.EARLIEST }, maxAttempts: 3, deadLetterChannel: "orders.dead", members: true, createdUnixMs: 1_700_000_000_000n },
            { channel: "orders", group: "old" },
          ],
        },
      },
    ],
    ["stored", { case: "stored", value: { forwardId: 2n ** 64n - 1n } }],
    ["outcomes", { case: "outcomes", value: { groups: [{ channel: "orders", group: "g", done: [1n, 2n, 3n], returned: [7n] }] } }],
    ["heartbeat", { case: "heartbeat", value: { sentUnixMs: 1_700_000_000_000n } }],
    ["nothing", { case: undefined }],
  ];

  it.each(others)("reads a %s frame as fromBinary does", (_, init) => {
    const bytes = writeFrame(create(PeerFrameSchema, { frame: init }).frame);
    expect(readFrame(bytes)).toEqual({ case: "message", frame: fromBinary(PeerFrameSchema, bytes).frame });
  });

  it("reads a frame of two oneof members as fromBinary does (the last wins)", () => {
    const bytes = Buffer.concat([writeForward(1, [samples[0]!]), writeFrame({ case: "heartbeat", value: create(HeartbeatSchema, { sentUnixMs: 1n }) })]);
    const frame = readFrame(bytes);
    expect(frame).toEqual({ case: "message", frame: fromBinary(PeerFrameSchema, bytes).frame });
    expect(frame.case === "message" && frame.frame.case).toBe("heartbeat");
  });

  it.each<[string, Uint8Array]>([
    ["forward.forward_id as bytes", new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(new Uint8Array([1])).finish()],
    ["forward.events as a varint", new BinaryWriter().tag(2, WireType.Varint).uint32(1).finish()],
    ["channel as a varint", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Varint).uint32(1).finish()).finish()],
    ["group as a fixed32", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(2, WireType.Bit32).fixed32(1).finish()).finish()],
    ["sequence as bytes", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(3, WireType.LengthDelimited).bytes(new Uint8Array([1])).finish()).finish()],
    ["attempt as a fixed64", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(4, WireType.Bit64).fixed64(1n).finish()).finish()],
    ["event as a varint", new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(new BinaryWriter().tag(5, WireType.Varint).uint32(1).finish()).finish()],
  ])("refuses %s", (_, forward) => {
    const bytes = new BinaryWriter().tag(3, WireType.LengthDelimited).bytes(forward).finish();
    expect(() => readFrame(bytes)).toThrow(/wire type/);
  });

  it.each<[string, number[]]>([
    ["a truncated varint", [0xff, 0xff, 0xff]],
    ["a length past the end", [0x0a, 0x05, 0x01]],
    ["field number 0", [0x07]],
    ["a forward whose length is past the end", [0x1a, 0x7f, 0x08]],
  ])("refuses bytes that are not a PeerFrame (%s)", (_, bytes) => {
    expect(() => readFrame(Buffer.from(bytes))).toThrow(Error);
  });

  it("refuses a forward of more than 1000 events with TooManyEvents, and takes exactly 1000", () => {
    const events = Array.from({ length: MAX_FORWARD_EVENTS + 1 }, (_, i) => forwarded("orders", "g", i + 1, 1, new Uint8Array([0x0a, 0x01, 0x78])));
    expect(() => readFrame(writeForward(1, events))).toThrow(TooManyEvents);
    const frame = readFrame(writeForward(1, events.slice(0, MAX_FORWARD_EVENTS)));
    expect(frame.case === "forward" && frame.events.length).toBe(MAX_FORWARD_EVENTS);
  });

  // Proto3 skips unknown fields: a forward next to one is read as a forward.
  it("reads a forward next to an unknown PeerFrame field as a forward", () => {
    const bytes = Buffer.concat([writeForward(3, [samples[0]!]), new BinaryWriter().tag(99, WireType.Varint).uint32(1).finish()]);
    expect(readFrame(bytes).case).toBe("forward");
  });

  // A singular message field seen twice merges, as fromBinary does: the events of both,
  // the last forward_id.
  it("reads a frame carrying forward twice as fromBinary does (merged)", () => {
    const bytes = Buffer.concat([writeForward(1, [samples[0]!]), writeForward(2, [samples[1]!])]);
    const es = fromBinary(PeerFrameSchema, bytes).frame;
    expect(es.case === "forward" && es.value.events.map((e) => e.sequence)).toEqual([1n, 300n]);
    const frame = readFrame(bytes);
    expect(frame.case === "forward" && { id: frame.forwardId, sequences: frame.events.map((e) => e.sequence) }).toEqual({ id: 2n, sequences: [1, 300] });
  });

  it.each([0n, 1n, 127n, 128n, 2n ** 53n, 2n ** 64n - 1n])("writes stored %s as toBinary does", (forwardId) => {
    const expected = toBinary(PeerFrameSchema, create(PeerFrameSchema, { frame: { case: "stored", value: { forwardId } } }));
    expect(Buffer.from(writeStored(forwardId)).equals(Buffer.from(expected))).toBe(true);
    expect(readFrame(writeStored(forwardId))).toEqual({ case: "message", frame: fromBinary(PeerFrameSchema, expected).frame });
  });

  const outcomes: [string, GroupOutcomes[]][] = [
    ["one group", [{ channel: "orders", group: "g", done: [1, 2, 3], returned: [] }]],
    ["returned only", [{ channel: "orders", group: "g", done: [], returned: [7] }]],
    ["big sequences", [{ channel: "orders.created", group: "billing", done: [127, 128, 16_384, 2 ** 53 - 1], returned: [300, 1] }]],
    ["several groups, non-ASCII names", [{ channel: "orders", group: "g", done: [1], returned: [] }, { channel: "café", group: "grüppe", done: [], returned: [2, 3] }]],
    ["an empty group", [{ channel: "", group: "", done: [], returned: [] }]],
  ];

  it.each(outcomes)("writes outcomes (%s) as toBinary does, and reads them back", (_, groups) => {
    const value = { groups: groups.map((g) => ({ ...g, done: g.done.map(BigInt), returned: g.returned.map(BigInt) })) };
    const expected = toBinary(PeerFrameSchema, create(PeerFrameSchema, { frame: { case: "outcomes", value } }));
    expect(Buffer.from(writeOutcomes(groups)).equals(Buffer.from(expected))).toBe(true);
    expect(readFrame(writeOutcomes(groups))).toEqual({ case: "message", frame: fromBinary(PeerFrameSchema, expected).frame });
  });

  /** PeerFrame field `field` as a message holding `inner`. */
  const member = (field: number, inner: Uint8Array): Uint8Array => new BinaryWriter().tag(field, WireType.LengthDelimited).bytes(inner).finish();
  const group = (build: (w: BinaryWriter) => BinaryWriter): Uint8Array => member(5, new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(build(new BinaryWriter()).finish()).finish());
  const odd: [string, Uint8Array][] = [
    ["stored twice (merged: the last id)", Buffer.concat([writeStored(3n), writeStored(9n)])],
    ["stored, a heartbeat, stored (the last wins)", Buffer.concat([writeStored(3n), writeFrame({ case: "heartbeat", value: create(HeartbeatSchema, { sentUnixMs: 1n }) }), writeStored(5n)])],
    ["outcomes twice (merged: the groups add up)", Buffer.concat([writeOutcomes([outcomes[0]![1][0]!]), writeOutcomes([outcomes[1]![1][0]!])])],
    ["unpacked sequences", group((w) => w.tag(1, WireType.LengthDelimited).string("orders").tag(3, WireType.Varint).uint64(4n).tag(3, WireType.Varint).uint64(5n))],
    ["packed sequences in two runs", group((w) => w.tag(3, WireType.LengthDelimited).bytes(new BinaryWriter().uint64(1n).uint64(2n).finish()).tag(3, WireType.LengthDelimited).bytes(new BinaryWriter().uint64(3n).finish()))],
    ["an unknown field in a group", group((w) => w.tag(2, WireType.LengthDelimited).string("g").tag(9, WireType.Varint).uint32(1))],
    ["an unknown field in stored", member(4, new BinaryWriter().tag(1, WireType.Varint).uint64(2n).tag(7, WireType.Varint).uint32(1).finish())],
    ["a group's channel named twice (the last wins)", group((w) => w.tag(1, WireType.LengthDelimited).string("a").tag(1, WireType.LengthDelimited).string("b"))],
    ["a varint before stored", Buffer.concat([new BinaryWriter().tag(1, WireType.Varint).uint32(1).finish(), writeStored(2n)])],
  ];

  it.each(odd)("reads %s as fromBinary does", (_, bytes) => {
    let expected: unknown;
    try {
      expected = { case: "message", frame: fromBinary(PeerFrameSchema, bytes).frame };
    } catch (e) {
      expect(() => readFrame(bytes)).toThrow((e as Error).message);
      return;
    }
    expect(readFrame(bytes)).toEqual(expected);
  });

  it.each<[string, Uint8Array]>([
    ["stored.forward_id as bytes", member(4, new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(new Uint8Array([1])).finish())],
    ["a group's channel as a varint", group((w) => w.tag(1, WireType.Varint).uint32(1))],
    ["a group's done as a fixed32", group((w) => w.tag(3, WireType.Bit32).fixed32(1))],
    ["outcomes.groups as a varint", member(5, new BinaryWriter().tag(1, WireType.Varint).uint32(1).finish())],
  ])("refuses %s, as fromBinary does", (_, bytes) => {
    expect(() => fromBinary(PeerFrameSchema, bytes)).toThrow();
    expect(() => readFrame(bytes)).toThrow();
  });

  it("reads outcomes given back after attempts as fromBinary does", () => {
    const value = create(OutcomesSchema, { groups: [{ channel: "orders", group: "g", done: [1n], returnedAfterAttempts: [{ sequence: 2n, attempts: 3 }] }] });
    const bytes = writeFrame({ case: "outcomes", value });
    expect(readFrame(bytes)).toEqual({ case: "message", frame: fromBinary(PeerFrameSchema, bytes).frame });
    const frame = readFrame(bytes);
    expect(frame.case === "message" && frame.frame.case === "outcomes" && frame.frame.value.groups[0]!.returnedAfterAttempts.map((a) => [a.sequence, a.attempts])).toEqual([[2n, 3]]);
  });

  it("reads a GroupOutcome the same whichever way it came", () => {
    const bytes = writeOutcomes([{ channel: "orders", group: "g", done: [1, 2], returned: [3] }]);
    const frame = readFrame(bytes);
    expect(frame.case === "message" && frame.frame.case === "outcomes" && frame.frame.value.groups).toEqual([create(GroupOutcomeSchema, { channel: "orders", group: "g", done: [1n, 2n], returned: [3n] })]);
  });
});
