import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

// `npm run demo` as a user runs it: three sidecars with mutual TLS and a policy, services
// with certificates, and a tally that must come out right.
it("runs the demo's mesh with mutual TLS and a policy, and every order reaches every group", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", "examples/demo/run.ts", "--seconds", "2", "--verbose"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (out += s));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  expect(out).toContain("Peer links are mutual TLS");
  expect(out).toContain("orders may publish to orders.created; billing may read it as group billing, shipping may read it as group shipping");
  // Every sidecar serves HTTPS: it runs with TLS files, and links with the others by certificate.
  for (const node of ["east", "west", "north"]) expect(out).toMatch(new RegExp(`weft sidecar listening on \\S+ \\(node ${node}, .*http https://`));
  expect(out).toContain("OK: every order reached billing once and shipping once.");
  expect(code).toBe(0);
}, 120_000);
