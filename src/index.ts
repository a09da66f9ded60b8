/** Weft's public TypeScript API: the client, and the library parts a sidecar is made of. */
export { connect, WeftClient, ClientError, Subscription } from "./client/index.js";
export type { ConnectOptions, Delivery, EventInput, From, Published, SubscribeOptions, SubscriptionStatus } from "./client/index.js";
export { EventLog } from "./log/event-log.js";
export { DeliveryEngine } from "./delivery/delivery-engine.js";
export { ServiceServer } from "./grpc/server.js";
export { Reason, WeftError } from "./contract/errors.js";
