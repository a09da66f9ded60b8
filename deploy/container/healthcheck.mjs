#!/usr/bin/env node
// The image's HEALTHCHECK: exits 0 when the sidecar's GET /healthz answers 200, else 1 with
// the reason on stderr. It asks the HTTP listener that WEFT_HTTP names (default
// 127.0.0.1:7422), on loopback when that is a wildcard address.
//
// The listener speaks HTTPS when the sidecar has TLS and HTTP otherwise, and which one a
// config file chose is not visible from here: both are tried at once and either 200 is
// healthy. The HTTPS request does not check the certificate: it asks whether this
// container's own process is alive, not who it is (as Kubernetes' probes do).
import http from "node:http";
import https from "node:https";

const TIMEOUT_MS = 4000;

const setting = process.env.WEFT_HTTP?.trim() || "127.0.0.1:7422";
if (setting === "off") fail("WEFT_HTTP is off: the sidecar has no /healthz to ask; run the container without a health check (--no-healthcheck)");

const split = setting.lastIndexOf(":");
let host = setting.slice(0, split).replace(/^\[(.*)\]$/, "$1");
const port = Number(setting.slice(split + 1));
if (split < 0 || !Number.isInteger(port) || port < 1 || port > 65535) fail(`WEFT_HTTP=${setting} is not host:port with a port 1-65535`);
if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
if (host === "::") host = "::1";

/** GET /healthz with one protocol; resolves with the status line's outcome, rejects with why not. */
function probe(client, scheme) {
  return new Promise((resolve, reject) => {
    const request = client.get(
      { host, port, path: "/healthz", timeout: TIMEOUT_MS, rejectUnauthorized: false, headers: { "user-agent": "weft-healthcheck" } },
      (response) => {
        response.resume();
        if (response.statusCode === 200) resolve(`${scheme}: 200`);
        else reject(new Error(`${scheme}: ${response.statusCode} ${response.statusMessage ?? ""}`.trim()));
      },
    );
    request.on("timeout", () => request.destroy(new Error(`${scheme}: no answer within ${TIMEOUT_MS} ms`)));
    request.on("error", (e) => reject(new Error(`${scheme}: ${e.code ?? e.message}`)));
  });
}

const url = `${host.includes(":") ? `[${host}]` : host}:${port}/healthz`;
try {
  await Promise.any([probe(http, "http"), probe(https, "https")]);
  process.exit(0);
} catch (e) {
  fail(`GET ${url} failed: ${e.errors.map((x) => x.message).join("; ")}`);
}

function fail(message) {
  process.stderr.write(`weft healthcheck: ${message}\n`);
  process.exit(1);
}
