import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { status } from "@grpc/grpc-js";
import type { Registry } from "prom-client";
import type { SidecarAdmin } from "../admin/index.js";
import { WeftError } from "../contract/errors.js";
import { OPEN_ACCESS } from "../security/access.js";
import type { HttpServer } from "../ops/http-server.js";
import { type Overview, buildOverview, groupCountsFromMetrics } from "./overview.js";
import { type DashboardAccess, admit, fromError, isRefusal, sendRefusal } from "./dashboard-guard.js";
import { RateHistory } from "./rate-history.js";

/** Largest request body the dashboard's API reads, bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/** The page: one file, its CSS and JS inline, nothing loaded from elsewhere. */
const PAGE = readFileSync(new URL("./dashboard.html", import.meta.url), "utf8");

/**
 * Only this page may run scripts and only this sidecar may be fetched: the dashboard works
 * offline and a redrive cannot be posted from another site's page.
 */
const PAGE_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export interface DashboardOptions {
  admin: SidecarAdmin;
  /** The sidecar's Prometheus registry: the per-group rates of the drain estimate are read from it. */
  metrics: { registry: Registry };
  version: string;
  notReady: () => string | undefined;
  /** Rate history to keep: samples and interval (default 300 at 1000 ms: five minutes). */
  history?: { capacity?: number; intervalMs?: number };
  /** Who may use it (dashboard-guard.ts). Default: loopback clients, under loopback names. */
  guard?: DashboardAccess;
}

/** The running dashboard: stop its sampling when the sidecar stops. */
export interface Dashboard {
  readonly history: RateHistory;
  /** Stops sampling the rates. Idempotent. */
  stop(): void;
}

/**
 * The dashboard on the sidecar's HTTP server, and the JSON API it uses:
 *
 * - `GET /`: the page (HTML with inline CSS and JS; polls /api/overview every second).
 * - `GET /api/overview`: the {@link Overview} (no query parameters; any is a 400).
 * - `POST /api/dlq/redrive`: `{"channel", "group", "sequences"?: [n, ...]}` as
 *   application/json; redrives the group's dead letters (those named, or all pending) with
 *   SidecarAdmin.redrive, and answers `{"redriven": [...], "more"}`.
 *
 * Refusals are JSON `{"error": {"code", "reason", "field", "message"}}`: 400 for bad input,
 * 404 for an unknown channel, group or dead letter, 413 for a body over MAX_BODY_BYTES,
 * 403 for a cross-origin POST, 503 while stopping. Unknown paths and methods are the
 * server's 404 and 405. Starts sampling the four rates each second (a ring buffer of
 * the last five minutes), so a page opened now shows them at once.
 */
export function serveDashboard(http: HttpServer, options: DashboardOptions): Dashboard {
  const history = new RateHistory({
    read: () => options.admin.stats(),
    readGroups: () => groupCountsFromMetrics(options.metrics.registry),
    ...options.history,
  });
  history.start();
  const sources = { admin: options.admin, history, version: options.version, notReady: options.notReady };

  // One overview at a time, shared by the requests that arrive while it is made or just after.
  let latest: { at: number; overview: Promise<Overview> } | undefined;
  const overview = (): Promise<Overview> => {
    const now = Date.now();
    if (!latest || now - latest.at > 250) {
      const made = buildOverview(sources);
      latest = { at: now, overview: made };
      made.catch(() => {
        if (latest?.overview === made) latest = undefined;
      });
    }
    return latest.overview;
  };

  const guard: DashboardAccess = options.guard ?? { access: OPEN_ACCESS, hosts: [], address: http.address };

  http.route("GET", "/", (request, response) => {
    const caller = admit(request, guard);
    if (isRefusal(caller)) return sendRefusal(response, caller, true);
    response.writeHead(200, {
      "Content-Type": "text/html; charset=utf-8",
      "Content-Length": Buffer.byteLength(PAGE),
      "Cache-Control": "no-store",
      "Content-Security-Policy": PAGE_POLICY,
      "X-Content-Type-Options": "nosniff",
    });
    response.end(PAGE);
  });

  http.route("GET", "/api/overview", async (request, response, url) => {
    const caller = admit(request, guard);
    if (isRefusal(caller)) return sendRefusal(response, caller);
    const unknown = [...url.searchParams.keys()];
    if (unknown.length > 0) return refuse(response, 400, "INVALID_ARGUMENT", "INVALID_PARAMETER", unknown[0]!, "GET /api/overview takes no query parameters");
    await answer(response, overview);
  });

  http.route("POST", "/api/dlq/redrive", async (request, response) => {
    const caller = admit(request, guard);
    if (isRefusal(caller)) return sendRefusal(response, caller);
    const body = await readJson(request, response);
    if (body === undefined) return;
    const { channel, group, sequences } = body as Record<string, unknown>;
    if (typeof channel !== "string") return refuse(response, 400, "INVALID_ARGUMENT", "INVALID_CHANNEL", "channel", "channel must be a string, the dead letters' channel");
    if (typeof group !== "string") return refuse(response, 400, "INVALID_ARGUMENT", "INVALID_GROUP", "group", "group must be a string, the group that dead-lettered them");
    if (sequences !== undefined && !(Array.isArray(sequences) && sequences.length > 0 && sequences.every((s) => typeof s === "number"))) {
      return refuse(response, 400, "INVALID_ARGUMENT", "INVALID_SEQUENCE", "sequences", "sequences must be a non-empty array of dead-letter sequences (numbers), or left out for every pending one");
    }
    const extra = Object.keys(body).filter((k) => !["channel", "group", "sequences"].includes(k));
    if (extra.length > 0) return refuse(response, 400, "INVALID_ARGUMENT", "INVALID_PARAMETER", extra[0]!, `unknown field ${JSON.stringify(extra[0])}; use channel, group and sequences`);
    try {
      guard.access.check(caller, "admin", channel);
    } catch (e) {
      if (e instanceof WeftError) return sendRefusal(response, fromError(e));
      throw e;
    }
    await answer(response, async () => {
      const result = await options.admin.redrive(channel, group, sequences === undefined ? {} : { sequences: sequences as number[] });
      latest = undefined; // the next overview shows the redrive
      return result;
    });
  });

  return {
    history,
    stop: () => history.stop(),
  };
}

/** Answers 200 with `make()`'s JSON, or its WeftError as a JSON refusal. */
async function answer(response: ServerResponse, make: () => Promise<unknown>): Promise<void> {
  let value: unknown;
  try {
    value = await make();
  } catch (e) {
    if (!(e instanceof WeftError)) throw e;
    const http = HTTP_STATUS[e.code] ?? 500;
    return refuse(response, http, status[e.code] ?? String(e.code), e.reason, e.field, e.message.replace(/^[A-Z_]+: /, ""));
  }
  json(response, 200, value);
}

/** gRPC status codes of WeftError as HTTP statuses. */
const HTTP_STATUS: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.OUT_OF_RANGE]: 400,
  [status.RESOURCE_EXHAUSTED]: 400,
  [status.NOT_FOUND]: 404,
  [status.FAILED_PRECONDITION]: 409,
  [status.ALREADY_EXISTS]: 409,
  [status.UNAVAILABLE]: 503,
};

/**
 * The request's body as a JSON object, or undefined after refusing it: it must be
 * application/json (a cross-site form cannot send that without the sidecar's consent), from
 * this origin when the browser says one (`Origin: null`, which sandboxed pages and some
 * redirects send, is not this origin), at most MAX_BODY_BYTES, and a JSON object.
 */
async function readJson(request: IncomingMessage, response: ServerResponse): Promise<Record<string, unknown> | undefined> {
  const origin = request.headers.origin;
  if (origin !== undefined) {
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {
      host = undefined;
    }
    if (host !== request.headers.host) {
      refuse(response, 403, "PERMISSION_DENIED", "CROSS_ORIGIN", "Origin", `requests from ${origin} are refused; use the dashboard this sidecar serves`);
      return undefined;
    }
  }
  const type = (request.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/json") {
    refuse(response, 400, "INVALID_ARGUMENT", "INVALID_CONTENT_TYPE", "Content-Type", `the body must be application/json, not ${JSON.stringify(type || "(none)")}`);
    return undefined;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      refuse(response, 413, "RESOURCE_EXHAUSTED", "BODY_TOO_LARGE", "", `the body is longer than ${MAX_BODY_BYTES} bytes`);
      return undefined;
    }
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (e) {
    refuse(response, 400, "INVALID_ARGUMENT", "MALFORMED_JSON", "", `the body is not JSON: ${(e as Error).message}`);
    return undefined;
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    refuse(response, 400, "INVALID_ARGUMENT", "MALFORMED_JSON", "", 'the body must be a JSON object: {"channel": ..., "group": ...}');
    return undefined;
  }
  return body as Record<string, unknown>;
}

function refuse(response: ServerResponse, http: number, code: string, reason: string, field: string, message: string): void {
  json(response, http, { error: { code, reason, field, message } });
}

function json(response: ServerResponse, http: number, value: unknown): void {
  const body = JSON.stringify(value);
  response.writeHead(http, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
  response.end(body);
}
