import { fromBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, expect, it } from "vitest";
import { EventSchema } from "../../src/gen/weft/v1/event_pb.js";
import { eventually, take } from "../support/collect.js";
import { settled, startMesh } from "../support/mesh.js";
import type { TestSidecar } from "../support/sidecar.js";
import { EXAMPLE, runPython } from "./support/python.js";
import { describeWithPython } from "./support/python-suite.js";

/**
 * A mesh of two languages: a Python service publishes on sidecar A, a TypeScript service
 * subscribes on sidecar B. Every event crosses the peer link and reaches TypeScript exactly
 * as Python encoded it, and B's acks travel back to A, which is then done with them.
 */

const CHANNEL = "orders.mixed";
const GROUP = "ts-billing";
const COUNT = 25;

describeWithPython("a mixed mesh: Python publisher on sidecar A, TypeScript subscriber on sidecar B", () => {
  let a: TestSidecar;
  let b: TestSidecar;
  beforeAll(async () => {
    [a, b] = (await startMesh(["py-a", "ts-b"])) as [TestSidecar, TestSidecar];
  });
  afterAll(async () => {
    await b?.dispose();
    await a?.dispose();
  });

  it("delivers every event intact, with its origin sequence, and the acks drain A", async () => {
    const sub = b.client().subscribe({ channel: CHANNEL, group: GROUP, from: "earliest" });
    await sub.subscribed();
    await settled(a, [b], CHANNEL, GROUP);

    const run = await runPython(EXAMPLE, ["--address", a.address, "--publish-only", String(COUNT), "--channel", CHANNEL, "--dump-events"]);
    expect({ code: run.code, stderr: run.stderr }, run.stdout).toEqual({ code: 0, stderr: "" });
    expect(run.lines.at(-1)).toBe(`published ${COUNT} events to ${CHANNEL}: sequences 1..${COUNT}`);

    // What Python sent: each event's own bytes, decoded here, and the sequence A acked.
    const sent = new Map(
      run.lines
        .map((l) => l.match(/^published (\S+) to orders\.mixed sequence (\d+) event (\S+)$/))
        .filter((m): m is RegExpMatchArray => m !== null)
        .map(([, id, sequence, base64]) => [id!, { sequence: BigInt(sequence!), event: fromBinary(EventSchema, Buffer.from(base64!, "base64")) }]),
    );
    expect(sent.size).toBe(COUNT);

    const got = await take(sub, COUNT);
    sub.close();
    for (const d of got) {
      const s = sent.get(d.event.id);
      expect(s, `event ${d.event.id} was published by Python`).toBeDefined();
      expect(d.event).toEqual(s!.event);
      expect(d.sequence).toBe(s!.sequence);
      expect(d.attempt).toBe(1);
    }
    expect(new Set(got.map((d) => d.event.id)).size).toBe(COUNT);

    // A sample, field by field: what a TypeScript handler sees of a Python event.
    const first = got.find((d) => d.sequence === 1n)!;
    expect(first.event.source).toBe("//examples/python");
    expect(first.event.type).toBe("com.example.order.created");
    expect(first.event.subject).toBe("order-1");
    expect(first.event.datacontenttype).toBe("application/json");
    expect(first.event.key).toBe("customer-1");
    expect(first.event.time?.seconds).toBeGreaterThan(0n);
    expect(first.json()).toEqual({ order: 1, note: "crème brûlée ✓" });
    expect(first.event.attributes.lang).toBe("python");
    expect(first.event.attributes.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);

    // B's acks went back over the peer link: the origin is done with every event.
    await eventually(() => {
      const g = a.sidecar.engine.status().find((s) => s.channel === CHANNEL && s.group === GROUP);
      return g?.backlog === 0 && g.ackedThrough === COUNT;
    }, 20_000, "A done with every event for the group");
    // B held one relay copy of each, as events of the channel held for the group.
    const held = await b.sidecar.log.read(CHANNEL, 1, COUNT + 1);
    expect(held.map((e) => [e.origin?.node, e.onlyGroup])).toEqual(Array.from({ length: COUNT }, () => [a.sidecar.config.nodeId, GROUP]));
  });
});
