import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Client, credentials } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ClientError, type Published } from "../src/client/index.js";
import { take } from "./support/collect.js";
import { type TestSidecar, startSidecar, tempDir } from "./support/sidecar.js";

const raw = (b: Buffer) => b;

/** Calls a unary method with hand-encoded bytes. */
function unary(client: Client, path: string, request: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(path, raw, raw, Buffer.from(request), (err, res) => (err ? reject(err) : resolve(res!))),
  );
}

/** Fields of a message as [field number, value] pairs (varints as numbers, the rest as bytes). */
function fields(bytes: Uint8Array): [number, number | Uint8Array][] {
  const r = new BinaryReader(bytes);
  const out: [number, number | Uint8Array][] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (wt === WireType.Varint) out.push([no, r.int32()]);
    else if (wt === WireType.LengthDelimited) out.push([no, r.bytes()]);
    else r.skip(wt, no);
  }
  return out;
}

describe("service server", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("answers grpc.health.v1.Health/Check with SERVING for the server and for weft.v1.Mesh", async () => {
    t = await startSidecar();
    const client = new Client(t.address, credentials.createInsecure());
    const serving = await unary(client, "/grpc.health.v1.Health/Check", new Uint8Array());
    expect(fields(serving)).toEqual([[1, 1]]); // status: SERVING
    const mesh = await unary(client, "/grpc.health.v1.Health/Check", new BinaryWriter().tag(1, WireType.LengthDelimited).string("weft.v1.Mesh").finish());
    expect(fields(mesh)).toEqual([[1, 1]]);
    client.close();
  });

  it("lists weft.v1.Mesh through server reflection and serves its file descriptor", async () => {
    t = await startSidecar();
    const client = new Client(t.address, credentials.createInsecure());
    const ask = (field: number, value: string): Promise<Buffer> =>
      new Promise((resolve, reject) => {
        const call = client.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", raw, raw);
        call.on("data", (b: Buffer) => {
          resolve(b);
          call.end();
        });
        call.on("error", reject);
        call.write(Buffer.from(new BinaryWriter().tag(field, WireType.LengthDelimited).string(value).finish()));
      });
    // list_services = 7 → list_services_response = 6 { service = 1 { name = 1 } }
    const listed = fields(await ask(7, "*")).find(([no]) => no === 6)![1] as Uint8Array;
    const names = fields(listed).map(([, s]) => Buffer.from(fields(s as Uint8Array)[0]![1] as Uint8Array).toString());
    expect(names).toContain("weft.v1.Mesh");
    // file_containing_symbol = 4 → file_descriptor_response = 4 { file_descriptor_proto = 1 }
    const files = fields(fields(await ask(4, "weft.v1.Mesh")).find(([no]) => no === 4)![1] as Uint8Array).map((f) =>
      fromBinary(FileDescriptorProtoSchema, f[1] as Uint8Array),
    );
    const mesh = files.find((f) => f.name === "weft/v1/mesh.proto")!;
    expect(mesh.service.map((s) => s.name)).toEqual(["Mesh"]);
    expect(files.map((f) => f.name)).toContain("weft/v1/event.proto");
    client.close();
  });

  it("shuts down gracefully: what was acked is stored, streams end with UNAVAILABLE", async () => {
    t = await startSidecar();
    const channel = "shutdown.orders";
    const pub = t.client();
    const sub = t.client().subscribe({ channel, group: "g", from: "earliest", reconnect: false });
    await sub.subscribed();
    const acked: Published[] = [];
    const pending = Array.from({ length: 20 }, () =>
      pub.publishMany(Array.from({ length: 50 }, () => ({ channel, data: "x" }))).then((r) => acked.push(...r), () => {}),
    );
    while (acked.length < 100) await new Promise((r) => setTimeout(r, 1));
    await t.sidecar.stop();
    const ended = await sub.closed;
    expect(ended).toBeInstanceOf(ClientError);
    expect(ended!.reason).toBe("SHUTTING_DOWN");
    pub.close();
    await Promise.all(pending);
    await t.restart();
    const audit = t.client().subscribe({ channel, group: "audit", from: "earliest", maxInFlight: 1000 });
    const got = await take(audit, acked.length);
    const stored = new Set(got.map((d) => d.event.id));
    expect(acked.filter((p) => !stored.has(p.id))).toEqual([]);
    audit.close();
  });

  it("refuses Subscribe streams past maxSubscriptions with RESOURCE_EXHAUSTED, and takes new ones once some close", async () => {
    t = await startSidecar({ maxSubscriptions: 2 });
    const c = t.client();
    const open = [1, 2].map(() => c.subscribe({ channel: "limit.test", group: "g" }));
    await Promise.all(open.map((s) => s.subscribed()));
    const third = c.subscribe({ channel: "limit.test", group: "g" });
    await expect(third.subscribed()).rejects.toMatchObject({ code: 8, reason: "TOO_MANY_SUBSCRIPTIONS" });
    open[0]!.close();
    await open[0]!.closed;
    // The sidecar frees the slot when it sees the stream end; the client may be a moment ahead.
    let fourth = c.subscribe({ channel: "limit.test", group: "g", reconnect: false });
    while ((await fourth.subscribed().then(() => "ok", (e: ClientError) => e.reason)) === "TOO_MANY_SUBSCRIPTIONS") {
      fourth = c.subscribe({ channel: "limit.test", group: "g", reconnect: false });
    }
    expect(await fourth.subscribed()).toMatchObject({ group: "g" });
    fourth.close();
    open[1]!.close();
  });

  it("listens on a unix socket", async () => {
    const dir = await tempDir();
    t = await startSidecar({ listen: join(dir, "weft.sock") });
    expect(t.address).toBe(`unix:${join(dir, "weft.sock")}`);
    const c = t.client();
    const sub = c.subscribe({ channel: "unix.test", group: "g", from: "earliest" });
    await c.publish({ channel: "unix.test", data: "over a socket file" });
    const [d] = await take(sub, 1);
    expect(d!.text()).toBe("over a socket file");
    sub.close();
  });
});
