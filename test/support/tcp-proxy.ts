import { once } from "node:events";
import { type Server, type Socket, connect, createServer } from "node:net";

/**
 * A TCP proxy on loopback in front of `target`, for link faults: `cut()` drops every open
 * connection (new ones are accepted), `pause()` refuses new connections until `resume()`.
 */
export class TcpProxy {
  /** Connections accepted and connected through, ever. */
  accepted = 0;
  /** Connections refused while paused. */
  refused = 0;
  /** Connections dropped by `cut()`. */
  dropped = 0;
  private paused = false;
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
    upstream.pipe(client);
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
