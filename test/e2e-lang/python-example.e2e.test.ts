import { fromBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, expect, it } from "vitest";
import { EventSchema } from "../../src/gen/weft/v1/event_pb.js";
import { eventually } from "../support/collect.js";
import { type TestSidecar, startSidecar } from "../support/sidecar.js";
import { EXAMPLE, type PythonRun, runPython } from "./support/python.js";
import { describeWithPython } from "./support/python-suite.js";

/**
 * The Python example service (examples/python/weft_service.py), with stubs generated from
 * the proto, against a real sidecar: it publishes a batch, subscribes as a group, acks,
 * nacks one event and sees it redelivered with attempt 2, nacks it again, and reads it from
 * the group's dead-letter channel. The test checks what it printed, and the sidecar's state.
 */

const CHANNEL = "orders.python";
const GROUP = "python-billing";
const DLQ = `${CHANNEL}.dlq.${GROUP}`;
const ID = "[0-9a-f-]{36}";

/** The lines of `run` that match `pattern`, each as its match. */
function matches(run: PythonRun, pattern: RegExp): RegExpMatchArray[] {
  return run.lines.map((l) => l.match(pattern)).filter((m): m is RegExpMatchArray => m !== null);
}

function expectExited0(run: PythonRun): void {
  expect({ code: run.code, stderr: run.stderr }, run.stdout).toEqual({ code: 0, stderr: "" });
}

describeWithPython("the Python example service against a sidecar", () => {
  let t: TestSidecar;
  beforeAll(async () => {
    t = await startSidecar();
  });
  afterAll(async () => {
    await t?.dispose();
  });

  it("publishes a batch, acks, sees a nacked event redelivered with attempt 2, and reads its dead letter", async () => {
    const run = await runPython(EXAMPLE, ["--address", t.address]);
    expectExited0(run);

    expect(run.lines[0]).toBe(`published 5 events to ${CHANNEL}: sequences 1..5`);
    expect(run.lines[1]).toBe(`subscribed to ${CHANNEL} as group ${GROUP} (created; max_attempts 2; dead letters to ${DLQ})`);

    const acked = matches(run, new RegExp(`^acked (${ID}) sequence (\\d+) attempt 1$`));
    expect(acked).toHaveLength(4);
    const nacked = matches(run, new RegExp(`^nacked (${ID}) sequence (\\d) attempt (\\d)`));
    expect(nacked.map((m) => m[3])).toEqual(["1", "2"]);
    const [, id, sequence] = nacked[0]!;
    expect(nacked[1]![1]).toBe(id);
    expect(run.lines).toContain(`redelivered ${id} sequence ${sequence} attempt 2`);
    expect(run.lines).toContain(`nacked ${id} sequence ${sequence} attempt 2 (the last attempt: it goes to the dead letters)`);
    // Every event of the batch was handled once: four acked, the fifth refused.
    const sequences = [...acked.map((m) => m[2]), sequence].map(Number).sort((a, b) => a - b);
    expect(sequences).toEqual([1, 2, 3, 4, 5]);
    // The redelivery comes after the first nack, the second nack after the redelivery.
    const at = (line: string) => run.lines.indexOf(line);
    expect(at(`nacked ${id} sequence ${sequence} attempt 1`)).toBeLessThan(at(`redelivered ${id} sequence ${sequence} attempt 2`));

    expect(run.lines).toContain(`subscribed to ${DLQ} as group ${GROUP}-dlq-reader (created; max_attempts 5; dead letters to ${DLQ}.dlq.${GROUP}-dlq-reader)`);
    expect(run.lines).toContain(`dead letter ${id} reason max_attempts attempts 2 from ${CHANNEL} sequence ${sequence}`);
    const attributes = run.lines.filter((l) => l.startsWith("  weft.dead_letter."));
    expect(attributes).toEqual([
      "  weft.dead_letter.attempts = 2",
      `  weft.dead_letter.channel = ${CHANNEL}`,
      "  weft.dead_letter.detail = 2 of 2 attempts made; the last was nacked",
      `  weft.dead_letter.group = ${GROUP}`,
      "  weft.dead_letter.reason = max_attempts",
      `  weft.dead_letter.sequence = ${sequence}`,
    ]);
    expect(run.lines.at(-1)).toBe("done: 4 acked, 1 redelivered, 1 dead-lettered");
    expect(run.lines.some((l) => l.includes("from an earlier run"))).toBe(false);

    // What the sidecar holds: the batch, one dead letter (the refused event, with its data),
    // and a group that is done with every event.
    expect(t.sidecar.log.head(CHANNEL).last).toBe(5);
    const [original] = await t.sidecar.log.read(CHANNEL, Number(sequence), 1);
    const [dead] = await t.sidecar.log.read(DLQ, 1, 10);
    const deadEvent = fromBinary(EventSchema, dead!.bytes);
    const originalEvent = fromBinary(EventSchema, original!.bytes);
    expect(deadEvent.id).toBe(id);
    expect(deadEvent.data).toEqual(originalEvent.data);
    expect(deadEvent.channel).toBe(DLQ);
    await eventually(() => {
      const g = t.sidecar.engine.status().find((s) => s.channel === CHANNEL && s.group === GROUP);
      return g?.backlog === 0 && g.ackedThrough === 5;
    }, 10_000, "the group done with the batch");
  });

  it("run again, the group resumes where it left off: only the new batch is delivered", async () => {
    const run = await runPython(EXAMPLE, ["--address", t.address]);
    expectExited0(run);
    expect(run.lines[0]).toBe(`published 5 events to ${CHANNEL}: sequences 6..10`);
    expect(run.lines[1]).toBe(`subscribed to ${CHANNEL} as group ${GROUP} (joined; max_attempts 2; dead letters to ${DLQ})`);
    const delivered = matches(run, new RegExp(`^(?:acked|nacked) ${ID} sequence (\\d+) attempt 1`)).map((m) => Number(m[1]));
    expect(delivered.sort((a, b) => a - b)).toEqual([6, 7, 8, 9, 10]);
    expect(matches(run, /^dead letter /)).toHaveLength(1);
    expect(run.lines.some((l) => l.includes("from an earlier run"))).toBe(false);
    expect(t.sidecar.log.head(DLQ).last).toBe(2);
  });

  it("exits 1 with the status code and reason when the sidecar refuses a call", async () => {
    const run = await runPython(EXAMPLE, ["--address", t.address, "--channel", "orders.refused", "--group", "Not-A-Group"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^error: a call to the sidecar at ${t.address} failed: INVALID_ARGUMENT: INVALID_GROUP: open.group "Not-A-Group" is not valid`));
  });

  it("exits 1 with UNAVAILABLE when no sidecar listens at the address", async () => {
    const run = await runPython(EXAMPLE, ["--address", "127.0.0.1:1"]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/^error: a call to the sidecar at 127\.0\.0\.1:1 failed: UNAVAILABLE: /);
  });
});
