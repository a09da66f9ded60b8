import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type Browser, type Page, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Delivery, Subscription } from "../../src/client/index.js";
import { startMesh } from "../support/mesh.js";
import type { TestSidecar } from "../support/sidecar.js";
import { REPO } from "./support/python.js";

/**
 * The dashboard in a real browser: Debian's chromium driven by playwright-core
 * opens the page a real sidecar serves, under load, sees the four rates move and a backlog
 * appear, and redrives a dead letter with a click. Saves test-results/dashboard.png (a CI
 * artifact). Without chromium the suite is skipped with a reason; in CI (CI set) it fails.
 */

const CHROMIUM = process.env.WEFT_CHROMIUM ?? "/usr/bin/chromium";
const HINT = "install it with `apt-get install --no-install-recommends chromium`, or set WEFT_CHROMIUM to a Chromium binary";
const SCREENSHOT = join(REPO, "test-results", "dashboard.png");
const POLL = { timeout: 30_000, interval: 200 };

/** A consumer loop in the background: handles every delivery until the subscription closes. */
function consume(sub: Subscription, handle: (d: Delivery) => void | Promise<void>): Promise<void> {
  return (async () => {
    for await (const d of sub) await handle(d);
  })().catch(() => {});
}

/** The number in a cell ("12", "3+", "4.50"). */
async function numberIn(page: Page, selector: string): Promise<number> {
  const text = (await page.locator(selector).first().textContent({ timeout: POLL.timeout })) ?? "";
  return Number.parseFloat(text);
}

const problem = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} does not exist`;
if (problem !== undefined && !process.env.CI) console.warn(`Skipping the dashboard browser test: ${problem}; ${HINT}.`);

describe.skipIf(problem !== undefined && !process.env.CI)("the dashboard in a real browser (playwright-core, Debian's chromium)", () => {
  let a: TestSidecar;
  let b: TestSidecar;
  let browser: Browser;
  const subs: Subscription[] = [];
  let loading = true;
  let publisher: Promise<void> = Promise.resolve();

  beforeAll(async () => {
    if (problem !== undefined) throw new Error(`${problem}; ${HINT} (.ci/run installs it)`);
    const mesh = await startMesh(["dash-a", "dash-b"]);
    a = mesh[0]!;
    b = mesh[1]!;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
  });

  afterAll(async () => {
    loading = false;
    await publisher;
    for (const s of subs) s.close();
    await browser?.close();
    await Promise.all([a?.dispose(), b?.dispose()]);
  });

  it("shows the mesh, the rates moving and a backlog under load, and redrives a dead letter with a click", async () => {
    const channel = "load.events";
    const onA = a.client();
    const onB = b.client();

    // A slow group on A (one in flight, a pause before each ack) and a quick one behind B,
    // so A publishes, stores, forwards and acks, and the slow group falls behind.
    const slow = onA.subscribe({ channel, group: "slow", from: "earliest", maxInFlight: 1 });
    const quick = onB.subscribe({ channel, group: "quick", from: "earliest" });
    subs.push(slow, quick);
    await Promise.all([slow.subscribed(), quick.subscribed()]);
    void consume(slow, async (d) => {
      await new Promise((r) => setTimeout(r, 20));
      d.ack();
    });
    void consume(quick, (d) => d.ack());
    await expect.poll(() => a.sidecar.mesh.status().some((p) => p.nodeId === "dash-b" && p.groups.includes(`${channel}!quick`)), POLL).toBe(true);
    let n = 0;
    publisher = (async () => {
      while (loading) {
        await onA.publishMany(Array.from({ length: 20 }, () => ({ channel, id: `e${n++}`, source: "//load", data: { n } })));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    const problems: string[] = [];
    page.on("pageerror", (e) => problems.push(e.message));
    page.on("requestfailed", (r) => problems.push(`${r.url()} failed`));
    const response = await page.goto(`http://${a.sidecar.httpAddress}/`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()["content-security-policy"]).toContain("default-src 'none'");

    // The mesh: this sidecar and its peer, link up.
    await page.locator("#node-id", { hasText: "dash-a" }).waitFor();
    await page.locator('#peers tr[data-peer="dash-b"] .badge', { hasText: "up" }).waitFor();
    await page.locator("#ready .badge", { hasText: "ready" }).waitFor();

    // The four rates move: each is above 0, and the numbers change between two reads.
    for (const kind of ["published", "stored", "forwarded", "acked"]) {
      await expect.poll(() => numberIn(page, `#rate-${kind}`), POLL).toBeGreaterThan(0);
      await page.locator(`#chart polyline[data-rate="${kind}"]`).waitFor({ state: "attached" });
    }
    const totals = await page.locator("#totals").textContent();
    await expect.poll(() => page.locator("#totals").textContent(), POLL).not.toBe(totals);
    const published = await numberIn(page, "#rate-published");
    await expect.poll(() => numberIn(page, "#rate-published"), POLL).not.toBe(published);

    // A backlog appears for the slow group, which does not keep up: not draining.
    const slowRow = `#groups tr[data-group="${channel}/slow"]`;
    await expect.poll(() => numberIn(page, `${slowRow} td.backlog`), POLL).toBeGreaterThan(50);
    await expect.poll(() => page.locator(`${slowRow} td.drain`).textContent(), POLL).toBe("not draining");
    expect(await numberIn(page, `${slowRow} td.members`)).toBe(1);

    // A dead letter: a group with max attempts 1 that nacks.
    const orders = "orders.created";
    const fragile = onA.subscribe({ channel: orders, group: "fragile", from: "earliest", maxAttempts: 1 });
    subs.push(fragile);
    await fragile.subscribed();
    const received: Delivery[] = [];
    void consume(fragile, (d) => {
      received.push(d);
      if (d.event.attributes["weft.redrive.from"] === undefined) d.nack();
      else d.ack();
    });
    await onA.publish({ channel: orders, id: "order-1", source: "//shop", data: { total: 42 } });
    const deadRow = page.locator(`#dead-letters tr[data-dead-letters="${orders}/fragile"]`);
    await deadRow.locator("td.letters", { hasText: "order-1 (max_attempts, 1 attempts)" }).waitFor();
    expect(await deadRow.locator("td.count").textContent()).toBe("1");
    await expect.poll(() => numberIn(page, `#groups tr[data-group="${orders}/fragile"] td.dead-letters`), POLL).toBe(1);

    await mkdir(join(REPO, "test-results"), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    // Redrive with a click: the group receives the event again, the list empties.
    await deadRow.locator("button[data-redrive]").click();
    await page.locator("#notice", { hasText: `Redrove 1 dead letter(s) of ${orders}/fragile` }).waitFor();
    await expect.poll(() => received.filter((d) => d.event.id === "order-1").length, POLL).toBe(2);
    const again = received.filter((d) => d.event.id === "order-1")[1]!;
    expect(again.event.attributes["weft.redrive.from"]).toBe(`${orders}.dlq.fragile#1`);
    expect(again.attempt).toBe(1);
    expect(again.json()).toEqual({ total: 42 });
    await deadRow.waitFor({ state: "detached" });
    await page.locator("#dead-letters td", { hasText: "no dead letters" }).waitFor();

    expect(problems).toEqual([]);
    await page.close();
  });

  it("the JSON API refuses bad input with 400 and a JSON error, unknown things with 404, other methods with 405", async () => {
    const base = `http://${a.sidecar.httpAddress}`;
    const post = (body: string, type = "application/json", headers: Record<string, string> = {}) =>
      fetch(`${base}/api/dlq/redrive`, { method: "POST", headers: { "content-type": type, ...headers }, body });
    const cases: [string, Promise<Response>, number, string][] = [
      ["not JSON", post("{"), 400, "MALFORMED_JSON"],
      ["a JSON array", post("[]"), 400, "MALFORMED_JSON"],
      ["not application/json", post('{"channel":"orders.created","group":"fragile"}', "text/plain"), 400, "INVALID_CONTENT_TYPE"],
      ["no group", post('{"channel":"orders.created"}'), 400, "INVALID_GROUP"],
      ["a bad channel name", post('{"channel":"Orders!","group":"fragile"}'), 400, "INVALID_CHANNEL"],
      ["sequence 0", post('{"channel":"orders.created","group":"fragile","sequences":[0]}'), 400, "INVALID_SEQUENCE"],
      ["sequences not numbers", post('{"channel":"orders.created","group":"fragile","sequences":["1"]}'), 400, "INVALID_SEQUENCE"],
      ["an unknown field", post('{"channel":"orders.created","group":"fragile","all":true}'), 400, "INVALID_PARAMETER"],
      ["an unknown group", post('{"channel":"orders.created","group":"nobody"}'), 404, "GROUP_NOT_FOUND"],
      ["a dead letter already redriven", post('{"channel":"orders.created","group":"fragile","sequences":[1]}'), 404, "DEAD_LETTER_NOT_FOUND"],
      ["another site's page", post('{"channel":"orders.created","group":"fragile"}', "application/json", { origin: "http://evil.example" }), 403, "CROSS_ORIGIN"],
      ["too large a body", post(JSON.stringify({ channel: "x".repeat(70_000) })), 413, "BODY_TOO_LARGE"],
      ["a query parameter on the overview", fetch(`${base}/api/overview?window=5`), 400, "INVALID_PARAMETER"],
    ];
    for (const [what, call, status, reason] of cases) {
      const r = await call;
      const body = (await r.json()) as { error: { reason: string; message: string } };
      expect([what, r.status, r.headers.get("content-type"), body.error.reason]).toEqual([what, status, "application/json; charset=utf-8", reason]);
      expect(body.error.message.length).toBeGreaterThan(0);
    }
    expect((await fetch(`${base}/api/dlq/redrive`)).status).toBe(405);
    expect((await fetch(`${base}/api/overview`, { method: "DELETE" })).status).toBe(405);
    expect((await fetch(`${base}/api/nothing`)).status).toBe(404);
    // Still serving.
    expect((await fetch(`${base}/api/overview`)).status).toBe(200);
  });
});
