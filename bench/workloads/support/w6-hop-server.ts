/**
 * The raw two-hop row's servers (W6-1k-raw-2hop): the path of two hops without Weft, in
 * three processes as Weft's is (the client, A, B). Run as a child process
 * (`node --import tsx w6-hop-server.ts [NEXT]`); prints "listening PORT" on stdout and
 * serves until killed.
 *
 * - With NEXT (A, the relay): every message of a stream is written, as it is, to one stream
 *   to NEXT.
 * - Without (B, the sink): a stream opened with metadata `role: sub` receives every message
 *   that comes on the other streams; nothing is echoed.
 *
 * No log, no decoding, no acks: what the machine costs a message that crosses two hops.
 */
import { type ClientDuplexStream, Server, ServerCredentials, type ServerDuplexStream, credentials } from "@grpc/grpc-js";
import { EchoClient, echoService } from "./w6-echo.js";

const next = process.argv[2];
const WINDOW = { "grpc-node.flow_control_window": 16 * 1024 * 1024 };
let sub: ServerDuplexStream<Buffer, Buffer> | undefined;

const server = new Server(WINDOW);
server.addService(echoService, {
  Echo(call: ServerDuplexStream<Buffer, Buffer>) {
    call.on("error", () => {});
    call.on("end", () => call.end());
    if (next) {
      const client = new EchoClient(next, credentials.createInsecure(), WINDOW);
      const out = (client as unknown as { Echo(): ClientDuplexStream<Buffer, Buffer> }).Echo();
      out.on("error", () => {});
      call.on("data", (b: Buffer) => out.write(b));
      call.on("end", () => (out.end(), client.close()));
      return;
    }
    if (call.metadata.get("role")[0] === "sub") {
      sub = call;
      // Answers the subscription, so the client knows it is in place.
      call.write(Buffer.alloc(0));
      return;
    }
    call.on("data", (b: Buffer) => sub?.write(b));
  },
});
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`listening ${port}\n`);
});
