import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { createServer as createSecureServer } from "node:https";
import type { AddressInfo } from "node:net";

/** An HTTP method a route answers. HEAD is answered by the GET route, without a body. */
export type HttpMethod = "GET" | "POST" | "PUT" | "DELETE";

/**
 * Answers one request. `url` is the parsed request URL (path and query). A handler that
 * throws or rejects gets a 500 (or its connection cut when it had begun answering); the
 * server goes on.
 */
export type RouteHandler = (request: IncomingMessage, response: ServerResponse, url: URL) => void | Promise<void>;

/** The PEM certificate chain, private key and CA certificates an HTTPS listener serves. */
export interface ServedKeys {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

/** Where an HTTPS listener gets its keys, and hears of rotated ones (security's TlsFiles is one). */
export interface KeySource {
  /** The keys in force. */
  readonly material: ServedKeys;
  /** Told each time new keys are put in force. */
  onChange(listener: (material: ServedKeys) => void): void;
}

/** Longest request target accepted; longer ones get 414 without being parsed. */
export const MAX_URL_LENGTH = 8 * 1024;

/**
 * The sidecar's HTTP listener: a small router over node:http for operators' endpoints
 * (metrics, health probes, and later the dashboard). Routes are exact paths; an unknown
 * path is 404, a known path with another method 405 with an Allow header, a request target
 * that is not a path 400. Nothing a client sends stops the server.
 */
export class HttpServer {
  private readonly routes = new Map<string, Map<string, RouteHandler>>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    /** The bound address, "host:port" with the real port when 0 was asked for. */
    readonly address: string,
  ) {
    server.on("request", (request: IncomingMessage, response: ServerResponse) => void this.handle(request, response));
  }

  /**
   * Listens on `address` ("host:port"; an IPv6 host in brackets; port 0 picks a free port).
   * With TLS files it serves HTTPS with the sidecar's certificate (no client certificate is
   * asked for), and takes new files for new connections as they are reloaded.
   * @throws the listen error (EADDRINUSE, EACCES, ...) when the address cannot be bound.
   */
  static async start(address: string, tls?: KeySource): Promise<HttpServer> {
    const colon = address.lastIndexOf(":");
    const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
    const port = Number(address.slice(colon + 1));
    const options = { maxHeaderSize: 16 * 1024, requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 };
    let server: Server;
    if (tls) {
      const secure = createSecureServer({ ...options, cert: tls.material.cert, key: tls.material.key, ca: tls.material.ca });
      tls.onChange((m) => secure.setSecureContext({ cert: m.cert, key: m.key, ca: m.ca }));
      // A client that fails the handshake is cut; the server goes on.
      secure.on("tlsClientError", (_error, socket) => socket.destroy());
      server = secure;
    } else {
      server = createServer(options);
    }
    // A malformed request gets 400 (or 431 for huge headers) and its connection closed.
    server.on("clientError", (error: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return void socket.destroy();
      const code = error.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      socket.end(`HTTP/1.1 ${code}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = server.address() as AddressInfo;
    return new HttpServer(server, `${host.includes(":") ? `[${host}]` : host}:${bound.port}`);
  }

  /** Answers `method` on `path` (exact, e.g. "/metrics") with `handler`; a later route for the same pair replaces it. */
  route(method: HttpMethod, path: string, handler: RouteHandler): void {
    let byMethod = this.routes.get(path);
    if (!byMethod) this.routes.set(path, (byMethod = new Map()));
    byMethod.set(method, handler);
  }

  /**
   * Stops accepting connections, lets requests being answered finish for up to `graceMs`,
   * then cuts what is left (long-lived streams such as server-sent events). Idempotent.
   */
  close(graceMs = 1000): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.server.closeAllConnections(), graceMs);
      this.server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      this.server.closeIdleConnections();
    });
    return this.closing;
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const target = request.url ?? "";
    if (target.length > MAX_URL_LENGTH) return text(response, 414, `the request target is longer than ${MAX_URL_LENGTH} characters\n`);
    if (!target.startsWith("/")) return text(response, 400, "the request target must be a path\n");
    let url: URL;
    try {
      url = new URL(target, "http://sidecar");
    } catch {
      return text(response, 400, "the request target is not a valid path\n");
    }
    const byMethod = this.routes.get(url.pathname);
    if (!byMethod) return text(response, 404, `no such path: ${printable(url.pathname)}\n`);
    const method = request.method === "HEAD" ? "GET" : (request.method ?? "");
    const handler = byMethod.get(method);
    if (!handler) {
      const allow = [...byMethod.keys()];
      if (allow.includes("GET")) allow.push("HEAD");
      response.setHeader("Allow", allow.join(", "));
      return text(response, 405, `${printable(request.method ?? "")} is not allowed on ${printable(url.pathname)}; use ${allow.join(", ")}\n`);
    }
    try {
      // The handler reads the request body if it wants one; node:http drops what is left unread.
      await handler(request, response, url);
    } catch (e) {
      if (!response.headersSent) text(response, 500, `internal error: ${(e as Error)?.message ?? String(e)}\n`);
      else response.destroy();
    }
  }
}

/**
 * The operators' routes: GET /metrics (Prometheus text), GET /healthz (200 "ok" while the
 * process runs: liveness) and GET /readyz (200 "ready", or 503 and `notReady()`'s reason:
 * readiness, the same answer as grpc.health.v1 on the service port).
 */
export function serveOperations(
  http: HttpServer,
  options: { metrics: { contentType: string; render(): Promise<string> }; notReady: () => string | undefined },
): void {
  http.route("GET", "/metrics", async (_request, response) => {
    const body = await options.metrics.render();
    response.writeHead(200, { "Content-Type": options.metrics.contentType, "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
    response.end(body);
  });
  http.route("GET", "/healthz", (_request, response) => text(response, 200, "ok\n"));
  http.route("GET", "/readyz", (_request, response) => {
    const reason = options.notReady();
    if (reason === undefined) text(response, 200, "ready\n");
    else text(response, 503, `not ready: ${reason}\n`);
  });
}

/** Answers with a plain-text body (a request body, if any, is left for node:http to drop). */
export function text(response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
  response.end(body);
}

/** A client's text, shortened and without control characters, fit to echo in an answer. */
function printable(s: string): string {
  const clean = s.replace(/[\u0000-\u001f\u007f]/g, "?");
  return clean.length > 100 ? `${clean.slice(0, 100)}…` : clean;
}
