import { describe, expect, it } from "vitest";
import { LOG_LEVELS, type LogLevel, SILENT_LOGGER, createLogger } from "../src/ops/logger.js";

/** A logger at `level` whose lines are kept. */
function capture(level: LogLevel, format: "json" | "pretty" = "json") {
  const lines: string[] = [];
  const logger = createLogger({ level, format, destination: { write: (line: string) => lines.push(line) } });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe("the logger", () => {
  it("writes one JSON object per line: level by name, ISO time, msg and the fields", () => {
    const { logger, lines, records } = capture("info");
    logger.child({ node: "east" }).warn({ peer: "west", reason: "PEER_SILENT", channel: "orders.created", group: "billing" }, "link with west lost");
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith("\n")).toBe(true);
    expect(lines[0]!.trimEnd()).not.toContain("\n");
    const [r] = records();
    expect(r).toMatchObject({ level: "warn", node: "east", peer: "west", reason: "PEER_SILENT", channel: "orders.created", group: "billing", msg: "link with west lost" });
    expect(new Date(r!.time as string).toISOString()).toBe(r!.time);
    expect(r!.pid).toBe(process.pid);
  });

  it("writes the levels from the one set on, and nothing at silent", () => {
    const levels = LOG_LEVELS.filter((l) => l !== "silent");
    for (const [i, level] of LOG_LEVELS.entries()) {
      const { logger, records } = capture(level);
      for (const l of levels) logger[l]({}, l);
      expect(records().map((r) => r.level), level).toEqual(levels.slice(i));
      for (const l of levels) expect(logger.enabled(l)).toBe(levels.indexOf(l) >= i);
    }
  });

  it("writes an error as its type, message and stack, and leaves % in messages alone", () => {
    const { logger, records } = capture("info");
    logger.error({ err: new TypeError("bad thing") }, "group orders/billing: 100% %s %d broken");
    const [r] = records();
    expect(r!.msg).toBe("group orders/billing: 100% %s %d broken");
    expect(r!.err).toMatchObject({ type: "TypeError", message: "bad thing" });
    expect((r!.err as { stack: string }).stack).toContain("TypeError: bad thing");
  });

  it("writes a line of text per record in the pretty format", () => {
    const { logger, lines } = capture("debug", "pretty");
    logger.child({ node: "east" }).info({ peer: "west", address: "10.0.0.2:7421", note: "two words" }, "linked with west");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  linked with west node=east peer=west address=10\.0\.0\.2:7421 note="two words"\n$/);
  });

  it("has a silent logger that writes nothing and says so", () => {
    SILENT_LOGGER.child({ node: "x" }).fatal({}, "nothing");
    expect(SILENT_LOGGER.enabled("fatal")).toBe(false);
  });
});
