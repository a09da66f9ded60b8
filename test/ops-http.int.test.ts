import { once } from "node:events";
import { type IncomingHttpHeaders, request } from "node:http";
import { connect } from "node:net";
import { create } from "@bufbuild/protobuf";
import { type Client, type ClientReadableStream, type ServiceDefinition, type ServiceError, credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { service as healthDefinition } from "grpc-health-check";
import { afterEach, describe, expect, it } from "vitest";
import { holdNextAppend } from "./support/hold-append.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { MAX_URL_LENGTH } from "../src/ops/http-server.js";
import { eventually } from "./support/collect.js";
import { parseExposition } from "./support/prometheus.js";
import { RawMeshConnection } from "./support/raw-client.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP request with node:http (fetch refuses some of the requests sent here). */
function http(address: string, method: string, path: string): Promise<Answer> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Writes raw bytes on a new connection and returns everything the server sent before closing. */
async function raw(address: string, bytes: string | Buffer): Promise<string> {
  const colon = address.lastIndexOf(":");
  const socket = connect(Number(address.slice(colon + 1)), address.slice(0, colon));
  await once(socket, "connect");
  let answer = "";
  socket.setEncoding("latin1");
  socket.on("data", (c: string) => (answer += c));
  socket.on("error", () => {});
  socket.write(bytes);
  await Promise.race([once(socket, "close"), new Promise((r) => setTimeout(r, 5000))]);
  socket.destroy();
  return answer;
}

const HealthClient = makeGenericClientConstructor(healthDefinition as unknown as ServiceDefinition, "Health");
type Health = Client & {
  Check(request: { service: string }, callback: (err: ServiceError | null, res?: { status: string }) => void): void;
  Watch(request: { service: string }): ClientReadableStream<{ status: string }>;
};

function check(address: string): Promise<string> {
  const health = new HealthClient(address, credentials.createInsecure()) as unknown as Health;
  return new Promise<string>((resolve, reject) => health.Check({ service: "" }, (err, res) => (err ? reject(err) : resolve(res!.status)))).finally(() =>
    health.close(),
  );
}

/** A grpc.health.v1 Watch of the whole sidecar: the statuses seen so far, and a wait for one. */
function watchHealth(address: string) {
  const health = new HealthClient(address, credentials.createInsecure()) as unknown as Health;
  const call = health.Watch({ service: "" });
  const seen: string[] = [];
  call.on("data", (m: { status: string }) => seen.push(m.status));
  call.on("error", () => {});
  return {
    seen,
    until: (status: string) => eventually(() => seen.includes(status), 10_000, `health ${status}`),
    close: () => health.close(),
  };
}

describe("the sidecar's HTTP endpoints", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("serves /metrics in Prometheus text format, /healthz and /readyz", async () => {
    t = await startSidecar();
    const address = t.sidecar.httpAddress!;
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(address).not.toBe("127.0.0.1:0");

    const metrics = await http(address, "GET", "/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
    const families = parseExposition(metrics.body);
    for (const name of ["weft_events_published_total", "weft_events_stored_total", "weft_events_forwarded_total", "weft_events_acked_total"]) {
      expect(families.get(name), name).toMatchObject({ type: "counter" });
      expect(families.get(name)!.help).toBeTruthy();
    }
    expect(families.get("weft_publish_to_ack_seconds")!.type).toBe("histogram");
    expect(families.get("weft_group_backlog")!.type).toBe("gauge");

    expect(await http(address, "GET", "/healthz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await http(address, "GET", "/readyz")).toMatchObject({ status: 200, body: "ready\n" });
    expect(await check(t.address)).toBe("SERVING");
    // HEAD answers like GET, without a body; a query string is ignored.
    expect(await http(address, "HEAD", "/metrics")).toMatchObject({ status: 200, body: "" });
    expect(await http(address, "GET", "/readyz?verbose=1")).toMatchObject({ status: 200 });
  });

  it("answers 404 for other paths and 405 for other methods, and takes hostile requests without harm", async () => {
    t = await startSidecar();
    const address = t.sidecar.httpAddress!;
    // "/" is the dashboard (test/e2e-lang/dashboard.e2e.test.ts); nothing else is served by name.
    expect(await http(address, "GET", "/")).toMatchObject({ status: 200 });
    expect(await http(address, "GET", "/index.html")).toMatchObject({ status: 404 });
    expect(await http(address, "GET", "/metrics/extra")).toMatchObject({ status: 404 });
    expect(await http(address, "GET", "/METRICS")).toMatchObject({ status: 404 });
    const post = await http(address, "POST", "/metrics");
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
    expect((await http(address, "DELETE", "/readyz")).status).toBe(405);

    // A control character in the path is not echoed back as is.
    const odd = await http(address, "GET", `/${"%0d%0a".repeat(3)}x`);
    expect(odd.status).toBe(404);
    expect(odd.body).not.toMatch(/[\r]/);
    // Long targets: 414 past the limit; past the header limit node:http answers 431 itself.
    expect((await http(address, "GET", `/${"a".repeat(MAX_URL_LENGTH + 10)}`)).status).toBe(414);
    expect(await raw(address, `GET /${"a".repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431 /);
    // Not a path: an absolute URL, an asterisk.
    expect(await raw(address, "GET http://elsewhere/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw(address, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 /);
    // Garbage, an unknown method, binary bytes, a huge header: 400 or 431 and the connection closed.
    expect(await raw(address, "\x00\x01\x02 garbage\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw(address, "BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n")).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw(address, Buffer.from([0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a]))).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw(address, `GET /healthz HTTP/1.1\r\nX-Big: ${"b".repeat(64 * 1024)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431 /);
    // A request body on a GET route is read and dropped; keep-alive goes on after it.
    const pipelined = await raw(
      address,
      "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    expect(pipelined).toMatch(/^HTTP\/1\.1 405 [\s\S]*HTTP\/1\.1 200 [\s\S]*ok\n$/);

    // Still up, still ready.
    expect(await http(address, "GET", "/readyz")).toMatchObject({ status: 200, body: "ready\n" });
  });

  it("takes more routes (as the dashboard will), and a failing handler answers 500 without stopping the server", async () => {
    t = await startSidecar();
    const server = t.sidecar.http!;
    server.route("GET", "/hello", (_req, res, url) => {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end(`hello ${url.searchParams.get("name")}`);
    });
    server.route("POST", "/hello", () => {
      throw new Error("boom");
    });
    server.route("GET", "/later", async () => Promise.reject(new Error("later boom")));
    // A handler gets the request body to read.
    server.route("PUT", "/echo", async (req, res) => {
      let body = "";
      for await (const chunk of req) body += String(chunk);
      res.end(`got ${body}`);
    });
    const address = t.sidecar.httpAddress!;
    expect(await http(address, "GET", "/hello?name=weft")).toMatchObject({ status: 200, body: "hello weft" });
    expect(await http(address, "POST", "/hello")).toMatchObject({ status: 500, body: "internal error: boom\n" });
    expect(await http(address, "GET", "/later")).toMatchObject({ status: 500 });
    expect((await http(address, "PUT", "/hello")).headers.allow).toBe("GET, POST, HEAD");
    expect(await raw(address, "PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody")).toMatch(/got body$/);
    expect(await http(address, "GET", "/healthz")).toMatchObject({ status: 200 });
  });

  it("has no HTTP listener with http off", async () => {
    t = await startSidecar({ http: "off" });
    expect(t.sidecar.httpAddress).toBeUndefined();
    expect(t.sidecar.http).toBeUndefined();
  });

  it("answers /readyz 503 and gRPC health NOT_SERVING from the start of a graceful stop, while a publish batch drains", async () => {
    t = await startSidecar({ shutdownGraceMs: 10_000 });
    const address = t.sidecar.httpAddress!;
    expect(await http(address, "GET", "/readyz")).toMatchObject({ status: 200 });
    // Opened before the stop: a stopping server takes no new connections, gRPC or not.
    const health = watchHealth(t.address);
    await health.until("SERVING");
    // Hold the log's next append, so that the stop has a publish batch to wait for.
    const { appending, release } = holdNextAppend(t.sidecar.log);
    const conn = new RawMeshConnection(t.address);
    const pub = conn.publish();
    pub.send(1, [create(EventSchema, { id: "ready-1", source: "//test", type: "t", channel: "ready.drain", data: new TextEncoder().encode("x") })]);
    await appending;

    const stopped = t.sidecar.stop();
    try {
      // Stopping, but not stopped: the HTTP listener stays up until the end and says why it is not ready.
      const readyz = await http(address, "GET", "/readyz");
      expect(readyz.status).toBe(503);
      expect(readyz.body).toMatch(/^not ready: stopping/);
      await health.until("NOT_SERVING");
      expect(health.seen).toEqual(["SERVING", "NOT_SERVING"]);
      expect(await http(address, "GET", "/healthz")).toMatchObject({ status: 200, body: "ok\n" });
      expect((await http(address, "GET", "/metrics")).status).toBe(200);
    } finally {
      release();
    }
    expect((await pub.response()).results.map((r) => r.sequence)).toEqual([1n]);
    await stopped;
    // Stopped: the HTTP listener is closed last.
    await expect(http(address, "GET", "/healthz")).rejects.toMatchObject({ code: "ECONNREFUSED" });
    conn.close();
    health.close();
  });
});
