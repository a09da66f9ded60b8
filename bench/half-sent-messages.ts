/**
 * A client that starts many large request messages and never finishes them, against a real
 * `weft sidecar` process: what the sidecar's RSS does, with the receive budget
 * (maxPartialMessageBytes, default 64 MiB) and without it (set so high it never cuts).
 *
 *   npx tsx bench/half-sent-messages.ts [streams=40] [connections=1] [--budget-only]
 *
 * Each stream is a weft.v1.Mesh/Publish call whose one message announces 16 MiB (the
 * default maxMessageBytes) and sends all of it but the last KiB.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../test/support/free-port.js";
import { grpcRequest } from "../test/support/raw-http2.js";

const STREAMS = Number(process.argv[2] ?? 40);
const CONNECTIONS = Number(process.argv[3] ?? 1);
const MESSAGE = 16 * 1024 * 1024 - 5;
const SENT = MESSAGE - 1024;

const rss = (pid: number): { rss: number; hwm: number } => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)![1]) * 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
};
const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(0)} MiB`;

async function run(label: string, env: Record<string, string>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "weft-half-sent-"));
  const port = await freePort();
  const child = spawn(process.execPath, ["sidecar/bin/weft.js", "sidecar", "--data-dir", dir, "--listen", `127.0.0.1:${port}`, "--peer-listen", "127.0.0.1:0", "--http", "off", "--log-level", "warn"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let cuts = 0;
  child.stderr.on("data", (b: Buffer) => (cuts += (b.toString().match(/"reason":"RECEIVE_BUDGET"/g) ?? []).length));
  try {
    for (let i = 0; ; i++) {
      const up = await new Promise<boolean>((resolve) => {
        const s = connect(`http://127.0.0.1:${port}`);
        s.on("connect", () => (s.destroy(), resolve(true)));
        s.on("error", () => resolve(false));
      });
      if (up) break;
      if (i > 200) throw new Error("the sidecar did not start");
      await sleep(100);
    }
    await sleep(1000);
    const before = rss(child.pid!);
    const body = Buffer.alloc(SENT, 0x61);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(MESSAGE, 1);
    const sessions = Array.from({ length: CONNECTIONS }, () => {
      const s = connect(`http://127.0.0.1:${port}`);
      s.on("error", () => {});
      return s;
    });
    let refused = 0;
    await Promise.all(
      Array.from({ length: STREAMS }, (_, i) => {
        const stream = grpcRequest(sessions[i % CONNECTIONS]!, "/weft.v1.Mesh/Publish");
        return new Promise<void>((resolve) => {
          stream.on("close", () => {
            // ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED to a gRPC client.
            if (stream.rstCode === 11) refused++;
            resolve();
          });
          stream.write(prefix);
          stream.write(body, () => resolve());
          setTimeout(resolve, 60_000).unref();
        });
      }),
    );
    await sleep(3000);
    const after = rss(child.pid!);
    console.log(
      `${label}: ${STREAMS} streams on ${CONNECTIONS} connection(s), ${mib(SENT)} of a ${mib(MESSAGE)} message each: RSS ${mib(before.rss)} -> ${mib(after.rss)} (peak ${mib(after.hwm)}); ${refused} refused with RESOURCE_EXHAUSTED, ${cuts} cuts logged`,
    );
    for (const s of sessions) s.destroy();
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    await rm(dir, { recursive: true, force: true });
  }
}

if (!process.argv.includes("--budget-only")) await run("no budget (maxPartialMessageBytes 64GiB)", { WEFT_MAX_PARTIAL_MESSAGE_BYTES: "64GiB" });
await run("default budget (maxPartialMessageBytes 64MiB)", {});
