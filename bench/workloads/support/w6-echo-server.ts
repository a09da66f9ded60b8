/**
 * The W6 ceiling's server: a raw grpc-js bidi stream that echoes every message back as it
 * is, no log, no decoding. Run as a child process (`node --import tsx w6-echo-server.ts`);
 * prints "listening PORT" on stdout and serves until killed.
 */
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { echoService } from "./w6-echo.js";

const server = new Server({ "grpc-node.flow_control_window": 16 * 1024 * 1024 });
server.addService(echoService, {
  Echo(call: ServerDuplexStream<Buffer, Buffer>) {
    call.on("data", (b: Buffer) => call.write(b));
    call.on("end", () => call.end());
    call.on("error", () => {});
  },
});
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`listening ${port}\n`);
});
