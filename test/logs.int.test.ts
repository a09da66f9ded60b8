import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../src/ops/logger.js";
import { eventually, take } from "./support/collect.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

describe("the sidecar's log records", () => {
  const started: TestSidecar[] = [];
  afterEach(async () => {
    for (const s of started.splice(0)) await s.dispose();
  });

  it("say at warn that an event went to the dead letters, naming the node, channel and group", async () => {
    const records: Record<string, unknown>[] = [];
    const logger = createLogger({ destination: { write: (line: string) => records.push(JSON.parse(line)) } });
    const t = await startSidecar({ nodeId: "logged" }, { logger });
    started.push(t);
    const sub = t.client().subscribe({ channel: "logged.orders", group: "billing", from: "earliest", maxAttempts: 1 });
    await sub.subscribed();
    await t.client().publish({ channel: "logged.orders", source: "//test", data: "x" });
    await take(sub, 1, (d) => d.nack());
    await eventually(() => records.some((r) => r.level === "warn" && r.group === "billing"), 10_000, "the dead-letter record");
    expect(records.find((r) => r.group === "billing")).toMatchObject({ level: "warn", node: "logged", channel: "logged.orders", group: "billing" });
    sub.close();
  });
});
