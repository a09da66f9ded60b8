import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { tokenHash } from "../../src/security/access.js";
import { type TestCa, testCa } from "../support/certs.js";
import { type TestSidecar, startSidecar } from "../support/sidecar.js";
import { REPO, runPython } from "./support/python.js";
import { describeWithPython } from "./support/python-suite.js";

/**
 * A Python service through its real gRPC library against a sidecar with TLS and a policy
 * (docs/security.md, docs/clients.md): known by its client certificate, kept to its grants,
 * refused without credentials or with a token the sidecar does not know; an admin token in
 * the metadata works from Python as from TypeScript.
 */

const SCRIPT = join(REPO, "test/e2e-lang/python/secure_client.py");

interface Case {
  case: string;
  results: unknown[];
  status: { code: string; reason: string };
}

describeWithPython("a Python service and a sidecar with TLS and a policy", () => {
  let ca: TestCa;
  let t: TestSidecar;
  const cases = new Map<string, Case>();
  const token = randomBytes(16).toString("hex");

  beforeAll(async () => {
    ca = await testCa();
    const service = await ca.service("py-billing");
    t = await startSidecar({
      nodeId: "py-secure",
      tls: await ca.node("py-secure"),
      tokens: { ops: tokenHash(token) },
      policy: { "py-billing": { publish: ["py.>"] }, ops: { admin: [">"] } },
    });
    const run = await runPython(SCRIPT, ["--address", t.address, "--ca", ca.caPath, "--cert", service.cert, "--key", service.key, "--token", token, "--prefix", "py"]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    for (const line of run.lines) {
      const c = JSON.parse(line) as Case;
      cases.set(c.case, c);
    }
  });
  afterAll(async () => {
    await t?.dispose();
  });

  it("publishes to a channel its certificate's identity is granted", () => {
    expect(cases.get("certificate, granted channel")).toEqual({ case: "certificate, granted channel", results: [{ sequence: "1" }], status: { code: "OK", reason: "" } });
  });

  it("gets a per-event PERMISSION_DENIED (NOT_PERMITTED) elsewhere, and nothing is stored", () => {
    expect(cases.get("certificate, other channel")?.results).toEqual([{ error: { code: 7, reason: "NOT_PERMITTED" } }]);
    expect(t.sidecar.log.channels()).not.toContain("other.py");
  });

  it("is UNAUTHENTICATED without credentials or with an unknown token, and nothing is stored", () => {
    expect(cases.get("no credentials")?.status).toEqual({ code: "UNAUTHENTICATED", reason: "UNAUTHENTICATED" });
    expect(cases.get("unknown token")?.status).toEqual({ code: "UNAUTHENTICATED", reason: "INVALID_TOKEN" });
    expect(t.sidecar.log.channels().filter((c) => c.startsWith("py.") && c !== "py.granted")).toEqual([]);
  });

  it("lists channels with an admin token in the metadata", () => {
    expect(cases.get("token, admin")).toEqual({ case: "token, admin", results: ["py.granted"], status: { code: "OK", reason: "" } });
  });
});
