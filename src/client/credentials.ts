import { type ChannelCredentials, type ChannelOptions, type Interceptor, InterceptingCall, credentials } from "@grpc/grpc-js";

/**
 * TLS to a sidecar whose service API has TLS on (docs/security.md). PEM contents, not paths.
 */
export interface ClientTls {
  /** The CA that signed the sidecar's certificate. Default: the system's trusted CAs. */
  ca?: Buffer | string | undefined;
  /** This service's certificate (mutual TLS: the sidecar knows the service by it); with `key`. */
  cert?: Buffer | string | undefined;
  /** The certificate's private key; with `cert`. */
  key?: Buffer | string | undefined;
  /**
   * The name the sidecar's certificate must carry, when it is not the host dialed (a
   * sidecar reached by IP address whose certificate names "localhost", say).
   */
  serverName?: string | undefined;
}

/**
 * An interceptor that sends `token` as `authorization: Bearer TOKEN` on every call, for a
 * sidecar with a policy (docs/security.md). It works over plaintext too: a sidecar on
 * loopback may take tokens without TLS.
 */
export function bearerToken(token: string): Interceptor {
  if (token.length === 0 || /[\s\x00-\x1f]/.test(token)) throw new TypeError("a token is non-empty text without spaces or control characters");
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/** The credentials and channel options a client of a sidecar connects with: plaintext without `tls`. */
export function clientCredentials(tls: ClientTls | undefined, token?: string): { credentials: ChannelCredentials; options: ChannelOptions } {
  const withToken: ChannelOptions = token === undefined ? {} : { interceptors: [bearerToken(token)] };
  if (!tls) return { credentials: credentials.createInsecure(), options: withToken };
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw new TypeError("tls.cert and tls.key go together: give both or neither");
  const pem = (v: Buffer | string | undefined): Buffer | null => (v === undefined ? null : Buffer.from(v));
  return {
    credentials: credentials.createSsl(pem(tls.ca), pem(tls.key), pem(tls.cert)),
    options: { ...withToken, ...(tls.serverName ? { "grpc.ssl_target_name_override": tls.serverName, "grpc.default_authority": tls.serverName } : {}) },
  };
}
