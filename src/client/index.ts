export { connect, WeftClient, type ConnectOptions } from "./client.js";
export { ClientError } from "./errors.js";
export type { EventInput, Published } from "./publisher.js";
export { Subscription, type Delivery, type From, type SubscribeOptions, type SubscriptionStatus } from "./subscription.js";
export { AdminClient, type AdminClientOptions } from "./admin-client.js";
export type { ClientTls } from "./credentials.js";
