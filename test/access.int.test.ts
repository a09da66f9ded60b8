import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AdminClient, ClientError, type ConnectOptions, type Subscription, connect } from "../src/client/index.js";
import { Reason } from "../src/contract/errors.js";
import { tokenHash } from "../src/security/access.js";
import type { SidecarConfig } from "../sidecar/sidecar.js";
import { type TestCa, testCa } from "./support/certs.js";
import { take } from "./support/collect.js";
import { type TestSidecar, scratchDirs, startSidecar } from "./support/sidecar.js";

/**
 * Who may call (docs/security.md): with a policy, every call of weft.v1.Mesh and
 * weft.v1.Admin and every dashboard route is authenticated (a service certificate, a bearer
 * token, or the unix socket) and checked against the identity's grants. Each denial is
 * checked to have stored or changed nothing.
 */

const tokens = { ops: randomBytes(16).toString("hex"), reader: randomBytes(16).toString("hex") };

const policy: NonNullable<SidecarConfig["policy"]> = {
  billing: { publish: ["billing.>", "orders.dl.>"], subscribe: ["orders.>/billing"] },
  reader: { subscribe: ["orders.>/reader"], settings: ["orders.>/reader"] },
  ops: { admin: [">"] },
};

let ca: TestCa;
let t: TestSidecar;
let billingTls: ConnectOptions["tls"];
const clients: { close(): void }[] = [];
const subscriptions: Subscription[] = [];


const dirs = scratchDirs();
const scratch = (): Promise<string> => dirs.make();
afterAll(() => dirs.removeAll());

beforeAll(async () => {
  ca = await testCa();
  billingTls = ca.client(await ca.service("billing"));
  t = await startSidecar({
    nodeId: "acl",
    tls: await ca.node("acl"),
    policy,
    tokens: { ops: tokenHash(tokens.ops), reader: tokenHash(tokens.reader) },
  });
});

afterEach(() => {
  for (const s of subscriptions.splice(0)) s.close();
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  await t?.dispose();
  if (ca) await rm(ca.dir, { recursive: true, force: true });
});

let counter = 0;
const fresh = (prefix: string): string => `${prefix}.n${++counter}`;

function client(options: ConnectOptions): ReturnType<typeof connect> {
  const c = connect(t.address, options);
  clients.push(c);
  return c;
}
const asBilling = (): ReturnType<typeof connect> => client({ tls: billingTls });
const asToken = (token: string): ReturnType<typeof connect> => client({ tls: ca.client(), token });
const anonymous = (): ReturnType<typeof connect> => client({ tls: ca.client() });
function admin(options: { token?: string; tls?: ConnectOptions["tls"] } = {}): AdminClient {
  const a = new AdminClient(t.address, { tls: options.tls ?? ca.client(), ...(options.token ? { token: options.token } : {}) });
  clients.push(a);
  return a;
}

/** The refusal `promise` rejects with, as code name and reason. */
async function refusal(promise: Promise<unknown>): Promise<{ code: string; reason: string }> {
  const e = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, "expected a refusal").toBeInstanceOf(ClientError);
  const { code, reason } = e as ClientError;
  return { code: ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"][code]!, reason };
}

const channelsNow = (): string[] => t.sidecar.log.channels();
const groupOf = (channel: string, group: string) => t.sidecar.engine.groupSettings(channel, group);

describe("weft.v1.Mesh/Publish", () => {
  it("refuses a call without credentials (UNAUTHENTICATED), storing nothing", async () => {
    const channel = fresh("billing.anon");
    expect(await refusal(anonymous().publish({ channel, data: "x" }))).toEqual({ code: "UNAUTHENTICATED", reason: Reason.UNAUTHENTICATED });
    expect(channelsNow()).not.toContain(channel);
  });

  it("refuses a token it does not know (INVALID_TOKEN), storing nothing", async () => {
    const channel = fresh("billing.badtoken");
    expect(await refusal(asToken("not-a-token").publish({ channel, data: "x" }))).toEqual({ code: "UNAUTHENTICATED", reason: Reason.INVALID_TOKEN });
    expect(channelsNow()).not.toContain(channel);
  });

  it("refuses a channel outside the identity's grant (NOT_PERMITTED), storing nothing, and stores what it may", async () => {
    const denied = fresh("orders.created");
    const allowed = fresh("billing.invoices");
    const c = asBilling();
    expect(await refusal(c.publish({ channel: denied, data: "x" }))).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    expect(channelsNow()).not.toContain(denied);
    expect((await c.publish({ channel: allowed, data: "y" })).sequence).toBe(1n);
  });

  it("names the identity and its grant in the refusal", async () => {
    const e = await asBilling().publish({ channel: fresh("audit.log"), data: "x" }).catch((err: unknown) => err as ClientError);
    expect((e as ClientError).message).toContain("identity billing (certificate) may not publish to audit.log");
    expect((e as ClientError).message).toContain("publish: billing.>, orders.dl.>");
  });
});

describe("weft.v1.Mesh/Subscribe", () => {
  it("refuses a call without credentials (UNAUTHENTICATED), creating no group", async () => {
    const channel = fresh("orders.anon");
    const sub = anonymous().subscribe({ channel, group: "billing", from: "earliest" });
    subscriptions.push(sub);
    expect(await refusal(sub.subscribed())).toEqual({ code: "UNAUTHENTICATED", reason: Reason.UNAUTHENTICATED });
    expect(groupOf(channel, "billing")).toBeUndefined();
  });

  it("refuses a group outside the identity's grant (NOT_PERMITTED), creating nothing", async () => {
    const channel = fresh("orders.created");
    const sub = asBilling().subscribe({ channel, group: "shipping", from: "earliest" });
    subscriptions.push(sub);
    expect(await refusal(sub.subscribed())).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    expect(groupOf(channel, "shipping")).toBeUndefined();
  });

  it("lets a subscriber set up its new group, but not change a group's settings without the settings grant", async () => {
    const channel = fresh("orders.settings");
    const first = asBilling().subscribe({ channel, group: "billing", from: "earliest", maxAttempts: 7 });
    expect((await first.subscribed()).maxAttempts).toBe(7);
    first.close();
    // Another open that sets other settings is refused, and the stored ones stay.
    const rewrite = asBilling().subscribe({ channel, group: "billing", maxAttempts: 1 });
    subscriptions.push(rewrite);
    expect(await refusal(rewrite.subscribed())).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    expect(groupOf(channel, "billing")?.maxAttempts).toBe(7);
    // An open that leaves them unset takes the group's.
    const plain = asBilling().subscribe({ channel, group: "billing" });
    subscriptions.push(plain);
    expect((await plain.subscribed()).maxAttempts).toBe(7);
  });

  it("refuses a dead-letter channel the identity may not publish to: its events would be written there", async () => {
    const channel = fresh("orders.dlqroute");
    const hijack = asBilling().subscribe({ channel, group: "billing", maxAttempts: 1, deadLetterChannel: "payments.approved" });
    subscriptions.push(hijack);
    expect(await refusal(hijack.subscribed())).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    expect(groupOf(channel, "billing")).toBeUndefined();
    const own = asBilling().subscribe({ channel, group: "billing", deadLetterChannel: "billing.dead" });
    subscriptions.push(own);
    expect((await own.subscribed()).deadLetterChannel).toBe("billing.dead");
  });

  it("lets an identity with the settings grant change them (the latest open wins)", async () => {
    const channel = fresh("orders.reader");
    const first = asToken(tokens.reader).subscribe({ channel, group: "reader", maxAttempts: 3 });
    expect((await first.subscribed()).maxAttempts).toBe(3);
    first.close();
    const second = asToken(tokens.reader).subscribe({ channel, group: "reader", maxAttempts: 9 });
    subscriptions.push(second);
    expect((await second.subscribed()).maxAttempts).toBe(9);
    expect(groupOf(channel, "reader")?.maxAttempts).toBe(9);
  });
});

describe("identities", () => {
  it("does not take a service certificate named local for the unix socket's user", async () => {
    const local = await ca.service("local");
    const c = client({ tls: ca.client(local) });
    expect(await refusal(c.publish({ channel: fresh("billing.local"), data: "x" }))).toEqual({ code: "UNAUTHENTICATED", reason: Reason.UNAUTHENTICATED });
  });
});

describe("weft.v1.Admin", () => {
  /** A group with one dead letter: billing publishes it, and nacks it past max attempts 1. */
  async function deadLetter(): Promise<{ channel: string; group: string }> {
    const channel = fresh("orders.dl");
    const c = asBilling();
    const sub = c.subscribe({ channel, group: "billing", from: "earliest", maxAttempts: 1 });
    subscriptions.push(sub);
    await sub.subscribed();
    await c.publish({ channel, data: "poison" });
    const [d] = await take(sub, 1, (x) => x.nack());
    expect(d).toBeDefined();
    const ops = admin({ token: tokens.ops });
    for (;;) {
      const page = await ops.listDeadLetters({ channel, group: "billing" });
      if (page.deadLetters.length === 1) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    return { channel, group: "billing" };
  }

  const calls: [string, (a: AdminClient, dl: { channel: string; group: string }) => Promise<unknown>][] = [
    ["ListChannels", (a) => a.listChannels()],
    ["ListGroups", (a, dl) => a.listGroups(dl.channel)],
    ["ListPeers", (a) => a.listPeers()],
    ["Stats", (a) => a.stats()],
    ["ListDeadLetters", (a, dl) => a.listDeadLetters({ channel: dl.channel, group: dl.group })],
    ["Redrive", (a, dl) => a.redrive({ channel: dl.channel, group: dl.group })],
    ["Purge", (a, dl) => a.purge({ channel: dl.channel, group: dl.group })],
  ];

  it.each(calls)("%s: UNAUTHENTICATED without credentials, NOT_PERMITTED without the admin grant; nothing changes", async (_name, call) => {
    const dl = await deadLetter();
    expect(await refusal(call(admin(), dl))).toEqual({ code: "UNAUTHENTICATED", reason: Reason.UNAUTHENTICATED });
    expect(await refusal(call(admin({ tls: billingTls }), dl))).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    expect(await refusal(call(admin({ token: tokens.reader }), dl))).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    // The dead letter is still there, pending, and nothing was redriven.
    const ops = admin({ token: tokens.ops });
    const page = await ops.listDeadLetters({ channel: dl.channel, group: dl.group });
    expect(page.deadLetters.length).toBe(1);
    expect(t.sidecar.log.head(dl.channel).last).toBe(1);
    // The admin identity may.
    await call(ops, dl);
  });
});

describe("HTTP", () => {
  function get(path: string, headers: Record<string, string> = {}, method = "GET", body?: string): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
    const address = t.sidecar.httpAddress!;
    const colon = address.lastIndexOf(":");
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        { host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path, method, headers, ca: readFileSync(ca.caPath), servername: "localhost" },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => (text += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
        },
      );
      req.once("error", reject);
      req.end(body);
    });
  }
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
  const basic = (token: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`someone:${token}`).toString("base64")}` });

  it("serves /metrics, /healthz and /readyz without credentials (probes and scrapers)", async () => {
    for (const path of ["/metrics", "/healthz", "/readyz"]) expect((await get(path)).status).toBe(200);
  });

  it.each(["/", "/api/overview"])("%s: 401 with a Basic challenge without a token, 403 without the admin grant, 200 with it", async (path) => {
    const none = await get(path);
    expect(none.status).toBe(401);
    expect(none.headers["www-authenticate"]).toMatch(/^Basic realm="weft"/);
    expect((await get(path, bearer("wrong"))).status).toBe(401);
    expect((await get(path, bearer(tokens.reader))).status).toBe(403);
    expect((await get(path, bearer(tokens.ops))).status).toBe(200);
    expect((await get(path, basic(tokens.ops))).status).toBe(200);
  });

  it("POST /api/dlq/redrive: refused without the admin grant, from Origin null and under another Host; nothing is redriven", async () => {
    const channel = fresh("orders.dl");
    const c = asBilling();
    const sub = c.subscribe({ channel, group: "billing", from: "earliest", maxAttempts: 1 });
    subscriptions.push(sub);
    await sub.subscribed();
    await c.publish({ channel, data: "poison" });
    await take(sub, 1, (x) => x.nack());
    const ops = admin({ token: tokens.ops });
    while ((await ops.listDeadLetters({ channel, group: "billing" })).deadLetters.length === 0) await new Promise((r) => setTimeout(r, 20));
    const body = JSON.stringify({ channel, group: "billing" });
    const json = { "content-type": "application/json" };
    const port = t.sidecar.httpAddress!.split(":").at(-1);

    expect((await get("/api/dlq/redrive", json, "POST", body)).status).toBe(401);
    expect((await get("/api/dlq/redrive", { ...json, ...bearer(tokens.reader) }, "POST", body)).status).toBe(403);
    const fromNull = await get("/api/dlq/redrive", { ...json, ...bearer(tokens.ops), origin: "null" }, "POST", body);
    expect({ status: fromNull.status, reason: JSON.parse(fromNull.body).error.reason }).toEqual({ status: 403, reason: "CROSS_ORIGIN" });
    const rebound = await get("/api/dlq/redrive", { ...json, ...bearer(tokens.ops), host: `attacker.example:${port}` }, "POST", body);
    expect({ status: rebound.status, reason: JSON.parse(rebound.body).error.reason }).toEqual({ status: 403, reason: "HOST_NOT_ALLOWED" });
    // Nothing was redriven: the channel still holds its one event.
    expect(t.sidecar.log.head(channel).last).toBe(1);

    const done = await get("/api/dlq/redrive", { ...json, ...bearer(tokens.ops) }, "POST", body);
    expect(done.status).toBe(200);
    expect(t.sidecar.log.head(channel).last).toBe(2);
  });
});

describe("without a policy (the loopback default)", () => {
  let open: TestSidecar;
  beforeAll(async () => {
    open = await startSidecar();
  });
  afterAll(async () => open?.dispose());

  it("allows every call without credentials", async () => {
    const c = open.client();
    expect((await c.publish({ channel: "any.channel", data: "x" })).sequence).toBe(1n);
    expect((await new AdminClient(open.address).listChannels()).channels.length).toBeGreaterThan(0);
  });

  it("refuses the dashboard under a Host name that is not this sidecar's (DNS rebinding)", async () => {
    const address = open.sidecar.httpAddress!;
    const colon = address.lastIndexOf(":");
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path: "/api/overview", headers: { host: `rebound.example:${address.slice(colon + 1)}` } }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.once("error", reject);
      req.end();
    });
    expect({ status: answer.status, reason: JSON.parse(answer.body).error.reason }).toEqual({ status: 403, reason: "HOST_NOT_ALLOWED" });
  });
});

describe("the unix socket", () => {
  it("is made 0600 and its callers are the identity local", async () => {
    const dir = await scratch();
    const socket = join(dir, "weft.sock");
    const s = await startSidecar({ listen: socket, http: "off", policy: { local: { publish: ["local.>"] } } });
    try {
      expect((await stat(socket)).mode & 0o777).toBe(0o600);
      const c = s.client();
      expect((await c.publish({ channel: "local.events", data: "x" })).sequence).toBe(1n);
      expect(await refusal(c.publish({ channel: "other.events", data: "x" }))).toEqual({ code: "PERMISSION_DENIED", reason: Reason.NOT_PERMITTED });
    } finally {
      await s.dispose();
    }
  });

  it("takes the configured socketMode", async () => {
    const dir = await scratch();
    const socket = join(dir, "weft.sock");
    const s = await startSidecar({ listen: socket, http: "off", socketMode: 0o660 });
    try {
      expect((await stat(socket)).mode & 0o777).toBe(0o660);
    } finally {
      await s.dispose();
    }
  });
});
