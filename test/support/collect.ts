import type { Delivery, Subscription } from "../../src/client/index.js";

/**
 * Reads deliveries from `sub` until `until` says stop, calling `handle` for each (which
 * acks by default). Rejects if the subscription ends first or nothing arrives within
 * `idleMs` (a safety net against hangs, not an assertion on speed).
 */
export async function collect(
  sub: Subscription,
  until: (seen: Delivery[]) => boolean,
  handle: (d: Delivery) => void | Promise<void> = (d) => d.ack(),
  idleMs = 20_000,
): Promise<Delivery[]> {
  const seen: Delivery[] = [];
  const it = sub[Symbol.asyncIterator]();
  while (!until(seen)) {
    let timer: NodeJS.Timeout | undefined;
    let poll: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no delivery within ${idleMs} ms after ${seen.length}`)), idleMs);
      }),
      // `until` may depend on other subscribers too: stop waiting once it holds.
      new Promise<"done">((resolve) => {
        poll = setInterval(() => until(seen) && resolve("done"), 20);
      }),
    ]).finally(() => {
      clearTimeout(timer);
      clearInterval(poll);
    });
    if (next === "done") break;
    if (next.done) throw new Error(`subscription ended after ${seen.length} deliveries`);
    seen.push(next.value);
    await handle(next.value);
  }
  return seen;
}

/** Collects exactly `n` deliveries. */
export function take(sub: Subscription, n: number, handle?: (d: Delivery) => void | Promise<void>): Promise<Delivery[]> {
  return collect(sub, (seen) => seen.length >= n, handle);
}

/** Waits until `check` is true, polling; rejects after `timeoutMs` (a safety net). */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Lets in-flight work settle, for asserting that something did not happen. */
export const settle = (ms = 300): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `promise`, or a rejection naming `what` after `timeoutMs` (a safety net against hangs). */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not happen within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
