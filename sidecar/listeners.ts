/**
 * What a sidecar listens with: the gRPC service and peer servers (with health and
 * reflection) and the HTTP listener with its routes. Sidecar.start imports this module while
 * the log opens, so the time its modules take to load overlaps LevelDB's open.
 */
export { PeerServer } from "../src/grpc/peer-server.js";
export { ServiceServer } from "../src/grpc/server.js";
export { HttpServer, serveOperations } from "../src/ops/http-server.js";
export { serveDashboard } from "../src/dashboard/index.js";
