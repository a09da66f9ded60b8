// The `weft` command's entry, which sidecar/bin/weft.js imports: runs the command line and
// exits with its status. cli.ts itself has no side effects, so tests can import buildProgram.
import { main } from "./cli.js";

const code = await main(process.argv);
process.exitCode = code;
// Exit once the event loop drains (flushing stdout and the last acks); never linger on a handle.
setTimeout(() => process.exit(code), 3000).unref();
