// The `weft` command's entry, which sidecar/bin/weft.js imports: runs the command line and
// exits with its status. cli.ts itself has no side effects, so tests can import buildProgram.
import { main } from "./cli.js";

dropWarning("DEP0123");
const code = await main(process.argv);
process.exitCode = code;
// Exit once the event loop drains (flushing stdout and the last acks); never linger on a handle.
setTimeout(() => process.exit(code), 3000).unref();

/**
 * Keeps one Node warning off stderr. DEP0123 ("Setting the TLS ServerName to an IP
 * address…") comes from grpc-js, which names the host it dials as the TLS server name even
 * when that is an IP address (grpc/grpc-node#1919); a sidecar or a client dialing one with
 * TLS is normal here, and the certificate is still checked against the address or SPIFFE
 * id. Left in, the line lands among the sidecar's JSON log lines and the CLI's output.
 */
function dropWarning(code: string): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const [, typeOrOptions, codeArg] = args;
    const given = typeof typeOrOptions === "object" && typeOrOptions !== null ? (typeOrOptions as { code?: string }).code : codeArg;
    if (given !== code) emit(...args);
  }) as typeof process.emitWarning;
}
