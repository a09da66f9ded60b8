import { readFile } from "node:fs/promises";
import { Option } from "commander";
import type { ClientTls } from "../../src/client/index.js";
import { usage } from "./arguments.js";

/** The TLS options of the commands that call a sidecar, as commander parses them. */
export interface ClientTlsOptions {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** A bearer token (--token, WEFT_TOKEN). */
  token?: string;
}

/** The options themselves: files, each with its environment variable. */
export function clientTlsOptions(): Option[] {
  return [
    new Option("--tls-ca <file>", "TLS: the CA that signed the sidecar's certificate (PEM)").env("WEFT_CLIENT_TLS_CA"),
    new Option("--tls-cert <file>", "mutual TLS: this client's certificate (PEM), with --tls-key").env("WEFT_CLIENT_TLS_CERT"),
    new Option("--tls-key <file>", "mutual TLS: the certificate's private key (PEM), with --tls-cert").env("WEFT_CLIENT_TLS_KEY"),
    new Option("--token <token>", "a bearer token, for a sidecar with a policy (weft token makes one)").env("WEFT_TOKEN"),
  ];
}

/**
 * Reads the files the TLS options name. Undefined without any (plaintext).
 * @throws CommandError (usage) naming a file that cannot be read, or a cert without its key.
 */
export async function readClientTls(o: ClientTlsOptions): Promise<ClientTls | undefined> {
  if (o.tlsCa === undefined && o.tlsCert === undefined && o.tlsKey === undefined) return undefined;
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw usage("--tls-cert and --tls-key go together: give both or neither");
  const read = async (flag: string, path: string | undefined): Promise<Buffer | undefined> => {
    if (path === undefined) return undefined;
    try {
      return await readFile(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw usage(`${flag} ${path}: ${code === "ENOENT" ? "does not exist" : `cannot be read (${(e as Error).message})`}`);
    }
  };
  return { ca: await read("--tls-ca", o.tlsCa), cert: await read("--tls-cert", o.tlsCert), key: await read("--tls-key", o.tlsKey) };
}
