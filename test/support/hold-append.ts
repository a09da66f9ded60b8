import { vi } from "vitest";
import type { EventLog } from "../../src/log/event-log.js";

/**
 * Holds the log's next append until `release()`, so that a graceful stop has a publish
 * batch to wait for. `appending` resolves once that append has started.
 */
export function holdNextAppend(log: EventLog): { appending: Promise<void>; release: () => void } {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const append = log.append.bind(log);
  const appending = new Promise<void>((resolve) => {
    vi.spyOn(log, "append").mockImplementationOnce(async (entries) => {
      resolve();
      await held;
      return append(entries);
    });
  });
  return { appending, release };
}
