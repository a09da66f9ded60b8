import { afterEach, describe, expect, it } from "vitest";
import { take } from "./support/collect.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

describe("TypeScript client", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("splits a burst of large events into requests under the sidecar's message limit", async () => {
    t = await startSidecar(); // 16 MiB max message, 1 MiB max event
    const channel = "client.large";
    const big = Buffer.alloc(900 * 1024, 7);
    const published = await t.client().publishMany(Array.from({ length: 30 }, () => ({ channel, data: big })));
    expect(published.map((p) => Number(p.sequence))).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    const sub = t.client().subscribe({ channel, group: "g", from: "earliest" });
    const got = await take(sub, 30);
    sub.close();
    expect(got.every((d) => Buffer.from(d.data).equals(big))).toBe(true);
  });

  it("fills in id, source, type and content type, and keeps what the caller set", async () => {
    t = await startSidecar();
    const c = t.client({ source: "//tests/client" });
    const channel = "client.defaults";
    const sub = c.subscribe({ channel, group: "g", from: "earliest" });
    await c.publishMany([
      { channel, data: { a: 1 } },
      { channel, data: "text" },
      { channel, data: new Uint8Array([1, 2]), id: "mine", source: "//other", type: "custom.type", subject: "s", key: "k", time: new Date(0), attributes: { traceparent: "tp" } },
    ]);
    const [json, text, bytes] = (await take(sub, 3)).sort((a, b) => Number(a.sequence - b.sequence));
    sub.close();
    expect(json!.event).toMatchObject({ source: "//tests/client", type: "weft.event", datacontenttype: "application/json" });
    expect(json!.event.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(json!.json()).toEqual({ a: 1 });
    expect(text!.event.datacontenttype).toBe("text/plain");
    expect(text!.text()).toBe("text");
    expect(bytes!.event).toMatchObject({ id: "mine", source: "//other", type: "custom.type", subject: "s", key: "k", datacontenttype: "" });
    expect(bytes!.event.time?.seconds).toBe(0n);
    expect(bytes!.event.attributes).toEqual({ traceparent: "tp" });
    expect([...bytes!.data]).toEqual([1, 2]);
  });

  it("rejects only the refused event of a batch, with the sidecar's reason and field", async () => {
    t = await startSidecar();
    const c = t.client();
    const results = await Promise.allSettled([
      c.publish({ channel: "client.ok", data: "1" }),
      c.publish({ channel: "Client.Bad", data: "2" }),
      c.publish({ channel: "client.ok", data: "3" }),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    const error = (results[1] as PromiseRejectedResult).reason;
    expect(error).toMatchObject({ code: 3, reason: "INVALID_CHANNEL", field: "channel" });
  });

  it("rejects subscribed() when the sidecar refuses the subscription, and resolves closed with the error", async () => {
    t = await startSidecar();
    const sub = t.client().subscribe({ channel: "Bad Channel", group: "g" });
    await expect(sub.subscribed()).rejects.toMatchObject({ reason: "INVALID_CHANNEL", field: "open.channel" });
    expect(await sub.closed).toMatchObject({ code: 3, reason: "INVALID_CHANNEL" });
    await expect(sub[Symbol.asyncIterator]().next()).rejects.toMatchObject({ reason: "INVALID_CHANNEL" });
  });

  it("reconnects after the sidecar cut its calls (CANCELLED at the end of a shutdown grace)", async () => {
    t = await startSidecar();
    const c = t.client();
    const channel = "client.cut";
    const sub = c.subscribe({ channel, group: "g", from: "earliest" });
    await sub.subscribed();
    // What a stop does when its grace runs out: every call is cut.
    (t.sidecar as unknown as { server: { forceShutdown(): void } }).server.forceShutdown();
    await t.restart();
    await c.publish({ channel, data: "after the cut" });
    const [d] = await take(sub, 1);
    expect(d!.text()).toBe("after the cut");
    sub.close();
    expect(await sub.closed).toBeUndefined();
  });
});
