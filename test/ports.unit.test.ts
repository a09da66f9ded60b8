import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { freePort } from "./support/process.js";

/** Where Linux starts handing out ports for port-0 listeners and outgoing connections. */
function ephemeralStart(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
  } catch {
    return 32_768;
  }
}

describe("freePort (the tests' port picker)", () => {
  it("picks ports the kernel never hands out itself, and never the same one twice", async () => {
    const ports = [];
    for (let i = 0; i < 50; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(50);
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(1024);
      expect(port).toBeLessThan(ephemeralStart());
    }
  });
});
