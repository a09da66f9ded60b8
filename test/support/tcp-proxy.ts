import { once } from "node:events";
import { type Server, type Socket, connect, createServer } from "node:net";

/**
 * A TCP proxy on loopback in front of `target`, for link faults: `cut()` drops every open
 * connection (new ones are accepted), `pause()` refuses new connections until `resume()`,
 * `hold()` keeps what the target sends from the clients until `release()`.
 */
export class TcpProxy {
  /** Connections accepted and connected through, ever. */
  accepted = 0;
  /** Connections refused while paused. */
  refused = 0;
  /** Connections dropped by `cut()`. */
  dropped = 0;
  private paused = false;
  /** While set, what the target sends waits here, per connection, in order. */
  private held: Map<Socket, Buffer[]> | undefined;
  private readonly open = new Set<{ client: Socket; upstream: Socket }>();

  private constructor(
    private readonly server: Server,
    readonly target: { host: string; port: number },
  ) {
    server.on("connection", (client) => this.accept(client));
  }

  /** Starts a proxy on 127.0.0.1 (port 0: any free port) to `target` ("host:port"). */
  static async start(target: string, port = 0): Promise<TcpProxy> {
    const i = target.lastIndexOf(":");
    const server = createServer();
    const proxy = new TcpProxy(server, { host: target.slice(0, i), port: Number(target.slice(i + 1)) });
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    return proxy;
  }

  /** "127.0.0.1:port", to give the dialing side. */
  get address(): string {
    return `127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Open connections now. */
  get connections(): number {
    return this.open.size;
  }

  /** Destroys every open connection, both sides; returns how many. New connections are accepted. */
  cut(): number {
    const n = this.open.size;
    for (const pair of [...this.open]) this.drop(pair);
    this.dropped += n;
    return n;
  }

  /** Closes each new connection at once until `resume()`. Open connections stay. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  /**
   * Holds what the target sends on every connection, open or new, until `release()`; but a
   * new connection's first chunk passes (an HTTP/2 server's preface, before any call).
   */
  hold(): void {
    this.held ??= new Map();
  }

  /** Sends what was held, in order, and passes everything through again. */
  release(): void {
    const held = this.held;
    this.held = undefined;
    for (const [client, chunks] of held ?? []) for (const chunk of chunks) if (!client.destroyed) client.write(chunk);
  }

  /** Stops listening and drops every connection. Idempotent. */
  async close(): Promise<void> {
    this.cut();
    if (!this.server.listening) return;
    const closed = once(this.server, "close");
    this.server.close();
    await closed;
  }

  private accept(client: Socket): void {
    if (this.paused) {
      this.refused++;
      client.destroy();
      return;
    }
    this.accepted++;
    client.setNoDelay(true);
    const upstream = connect(this.target.port, this.target.host);
    upstream.setNoDelay(true);
    const pair = { client, upstream };
    this.open.add(pair);
    client.pipe(upstream);
    let first = true;
    upstream.on("data", (chunk: Buffer) => {
      // The first chunk is an HTTP/2 server's preface: without it the client sends nothing.
      if (this.held && !first) this.held.set(client, [...(this.held.get(client) ?? []), chunk]);
      else if (!client.destroyed) client.write(chunk);
      first = false;
    });
    const end = (): void => this.drop(pair);
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  }

  private drop(pair: { client: Socket; upstream: Socket }): void {
    if (!this.open.delete(pair)) return;
    pair.client.destroy();
    pair.upstream.destroy();
  }
}
