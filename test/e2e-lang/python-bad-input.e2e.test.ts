import { afterAll, beforeAll, expect, it } from "vitest";
import { type TestSidecar, startSidecar } from "../support/sidecar.js";
import { BAD_INPUT, runPython } from "./support/python.js";
import { describeWithPython } from "./support/python-suite.js";

/**
 * Bad input from a Python client (test/e2e-lang/python/bad_input.py, generated stubs and,
 * for bytes no protobuf library writes, a raw method with identity serializers) gets the
 * codes and reasons of docs/errors.md, read by Python from PublishResult.error or from the
 * status and its "weft-reason" / "weft-field" trailers. Nothing of a refused event or of a
 * request that ended its stream is stored, and the sidecar goes on serving.
 */

interface Status {
  code: string;
  details: string;
  reason: string;
  field: string;
}
interface Result {
  sequence?: string;
  error?: { code: number; reason: string; field: string; message: string };
}
interface Case {
  case: string;
  channel: string;
  responses: { batch_id?: string; results?: Result[] }[];
  status: Status;
  read_back?: boolean;
}

const INVALID_ARGUMENT = 3;
const RESOURCE_EXHAUSTED = 8;

describeWithPython("bad input from a Python client", () => {
  let t: TestSidecar;
  const cases = new Map<string, Case>();
  let stderr = "";

  beforeAll(async () => {
    t = await startSidecar();
    const run = await runPython(BAD_INPUT, ["--address", t.address, "--channel", "py.bad"]);
    stderr = run.stderr;
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    for (const line of run.lines) {
      const c = JSON.parse(line) as Case;
      cases.set(c.case, c);
    }
  });
  afterAll(async () => {
    await t?.dispose();
  });

  function get(name: string): Case {
    const c = cases.get(name);
    expect(c, `bad_input.py reported case ${name} (stderr: ${stderr})`).toBeDefined();
    return c!;
  }

  /** The results of the one PublishResponse of a case whose stream ended OK. */
  function results(c: Case): Result[] {
    expect(c.status.code).toBe("OK");
    expect(c.responses).toHaveLength(1);
    expect(c.responses[0]!.batch_id).toBe("7");
    return c.responses[0]!.results ?? [];
  }

  /** A per-event refusal, as Python read it: [code, reason, field], and a message that starts with the reason. */
  function refusal(r: Result | undefined): [number, string, string] | "stored" {
    if (!r?.error) return "stored";
    expect(r.error.message.startsWith(`${r.error.reason}: `)).toBe(true);
    expect(r.sequence ?? "0").toBe("0");
    return [r.error.code, r.error.reason, r.error.field];
  }

  /** How a stream ended, as Python read it; the details start with the reason. */
  function ended(c: Case): [string, string, string] {
    expect(c.responses).toEqual([]);
    if (c.status.reason) expect(c.status.details.startsWith(`${c.status.reason}: `)).toBe(true);
    return [c.status.code, c.status.reason, c.status.field];
  }

  const stored = (c: Case): number => t.sidecar.log.head(c.channel).last;

  it("missing id, source or type: a per-event INVALID_ARGUMENT INVALID_EVENT naming the field; the valid events are stored", () => {
    const c = get("missing-fields");
    expect(results(c).map(refusal)).toEqual([
      "stored",
      [INVALID_ARGUMENT, "INVALID_EVENT", "id"],
      [INVALID_ARGUMENT, "INVALID_EVENT", "source"],
      [INVALID_ARGUMENT, "INVALID_EVENT", "type"],
      "stored",
    ]);
    expect(results(c).filter((r) => !r.error).map((r) => r.sequence)).toEqual(["1", "2"]);
    expect(stored(c)).toBe(2);
  });

  it("a bad or reserved attribute name: a per-event INVALID_ARGUMENT INVALID_EVENT naming the attribute", () => {
    const c = get("attribute-names");
    expect(results(c).map(refusal)).toEqual([
      [INVALID_ARGUMENT, "INVALID_EVENT", "attributes[Trace]"],
      [INVALID_ARGUMENT, "INVALID_EVENT", "attributes[a b]"],
      [INVALID_ARGUMENT, "INVALID_EVENT", "attributes[weft.dead_letter.reason]"],
      "stored",
    ]);
    expect(stored(c)).toBe(1);
  });

  it.each([
    ["attribute-value-varint", "an attribute value sent as a varint"],
    ["attribute-key-varint", "an attribute name sent as a varint"],
    ["attribute-value-fixed32", "an attribute value sent as a fixed32"],
    ["attributes-varint", "the attributes field sent as a varint"],
  ])("%s (%s): the stream ends with INVALID_ARGUMENT MALFORMED_MESSAGE for events[1], and nothing of the request is stored", (name) => {
    const c = get(name);
    expect(ended(c)).toEqual(["INVALID_ARGUMENT", "MALFORMED_MESSAGE", "events[1]"]);
    expect(c.status.details).toMatch(/is not a valid weft\.v1\.Event \(.*wire type/);
    expect(stored(c)).toBe(0);
  });

  it("an event over 1 MiB encoded: a per-event RESOURCE_EXHAUSTED EVENT_TOO_LARGE; one of exactly 1 MiB is stored", () => {
    const c = get("event-too-large");
    expect(results(c).map(refusal)).toEqual(["stored", [RESOURCE_EXHAUSTED, "EVENT_TOO_LARGE", "event"], "stored"]);
    expect(results(c)[1]!.error!.message).toMatch(/at most 1048576 are allowed$/);
    expect(stored(c)).toBe(2);
  });

  it("more than 1000 events in a request: the stream ends with RESOURCE_EXHAUSTED BATCH_TOO_LARGE, nothing stored", () => {
    const c = get("batch-too-large");
    expect(ended(c)).toEqual(["RESOURCE_EXHAUSTED", "BATCH_TOO_LARGE", "events"]);
    expect(stored(c)).toBe(0);
  });

  it("a request over 16 MiB: gRPC's own RESOURCE_EXHAUSTED ends the stream (no weft-reason), nothing stored", () => {
    const c = get("message-too-large");
    expect(ended(c)).toEqual(["RESOURCE_EXHAUSTED", "", ""]);
    expect(c.status.details).toMatch(/larger than max .*16777216/);
    expect(stored(c)).toBe(0);
  });

  it("Subscribe: an unspecified start is INVALID_ARGUMENT INVALID_START; an ack before open is FAILED_PRECONDITION NOT_OPEN", () => {
    expect(ended(get("subscribe-start-unspecified"))).toEqual(["INVALID_ARGUMENT", "INVALID_START", "open.start.kind"]);
    expect(ended(get("subscribe-ack-before-open"))).toEqual(["FAILED_PRECONDITION", "NOT_OPEN", "ack"]);
  });

  it("after all of it the sidecar still serves Python: an event published is read back equal", () => {
    const c = get("after");
    expect(results(c).map(refusal)).toEqual(["stored"]);
    expect(c.read_back).toBe(true);
  });

  // Lengths are counted in characters (code points), as event.proto says and other
  // languages count them, not in JavaScript's UTF-16 units.
  it("an id of 200 characters outside the BMP is stored (at most 256 characters); 257 are refused", () => {
    const c = get("id-astral-characters");
    expect(results(c).map(refusal)).toEqual(["stored", [INVALID_ARGUMENT, "INVALID_EVENT", "id"]]);
  });
});
