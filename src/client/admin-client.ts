import { type DescMessage, type MessageInitShape, create } from "@bufbuild/protobuf";
import { Client, Metadata, type ServiceError, makeGenericClientConstructor } from "@grpc/grpc-js";
import {
  Admin,
  type ListChannelsResponse,
  ListChannelsRequestSchema,
  ListDeadLettersRequestSchema,
  type ListDeadLettersResponse,
  ListGroupsRequestSchema,
  type ListGroupsResponse,
  ListPeersRequestSchema,
  type ListPeersResponse,
  PurgeRequestSchema,
  type PurgeResponse,
  RedriveRequestSchema,
  type RedriveResponse,
  StatsRequestSchema,
  type StatsResponse,
} from "../gen/weft/v1/admin_pb.js";
import { typedServiceDefinition } from "../wire/service-definitions.js";
import { type ClientTls, clientCredentials } from "./credentials.js";
import { toClientError } from "./errors.js";

const AdminGrpcClient = makeGenericClientConstructor(typedServiceDefinition(Admin), "Admin");

export interface AdminClientOptions {
  /** How long each call may take, ms (DEADLINE_EXCEEDED after). Default 10 s. */
  timeoutMs?: number;
  /** TLS to the sidecar (its service API has TLS on); plaintext without. */
  tls?: ClientTls;
  /** A bearer token for a sidecar with a policy (`weft token` makes one). */
  token?: string;
}

/**
 * A client of a sidecar's operator API (weft.v1.Admin): one call per method, each
 * resolving with the response message or rejecting with a ClientError (code, reason,
 * field). `close()` is idempotent.
 */
export class AdminClient {
  private readonly client: Client;
  private readonly timeoutMs: number;

  /** @param address "host:port", "unix:/path" or an absolute unix socket path. */
  constructor(
    readonly address: string,
    options: AdminClientOptions = {},
  ) {
    const target = address.startsWith("/") ? `unix:${address}` : address;
    const secure = clientCredentials(options.tls, options.token);
    this.client = new AdminGrpcClient(target, secure.credentials, { "grpc.max_receive_message_length": -1, ...secure.options });
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Every channel of the sidecar, with its groups and dead-letter role. */
  listChannels(): Promise<ListChannelsResponse> {
    return this.call("ListChannels", ListChannelsRequestSchema, {});
  }

  /** The groups of `channel` at the sidecar. */
  listGroups(channel: string): Promise<ListGroupsResponse> {
    return this.call("ListGroups", ListGroupsRequestSchema, { channel });
  }

  /** The sidecar's peers. */
  listPeers(): Promise<ListPeersResponse> {
    return this.call("ListPeers", ListPeersRequestSchema, {});
  }

  /** A page of a group's pending dead letters. */
  listDeadLetters(request: MessageInitShape<typeof ListDeadLettersRequestSchema>): Promise<ListDeadLettersResponse> {
    return this.call("ListDeadLetters", ListDeadLettersRequestSchema, request);
  }

  /** Redrives dead letters to their group. */
  redrive(request: MessageInitShape<typeof RedriveRequestSchema>): Promise<RedriveResponse> {
    return this.call("Redrive", RedriveRequestSchema, request);
  }

  /** Purges dead letters. */
  purge(request: MessageInitShape<typeof PurgeRequestSchema>): Promise<PurgeResponse> {
    return this.call("Purge", PurgeRequestSchema, request);
  }

  /** The four counters now. */
  stats(): Promise<StatsResponse> {
    return this.call("Stats", StatsRequestSchema, {});
  }

  close(): void {
    this.client.close();
  }

  private call<I extends DescMessage, T>(method: string, schema: I, request: MessageInitShape<I>): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, (r: object, m: Metadata, o: object, cb: (e: ServiceError | null, r?: T) => void) => void>)[method]!;
      fn.call(this.client, create(schema, request), new Metadata(), { deadline: Date.now() + this.timeoutMs }, (error, response) =>
        error ? reject(toClientError(error)) : resolve(response!),
      );
    });
  }
}
