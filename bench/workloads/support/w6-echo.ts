/** The raw echo service of W6's ceiling: bytes in, the same bytes out, one message each. */
import { type ServiceDefinition, makeGenericClientConstructor } from "@grpc/grpc-js";

const identity = (b: Buffer): Buffer => b;
export const echoService: ServiceDefinition = {
  Echo: {
    path: "/weft.bench.Echo/Echo",
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
export const EchoClient = makeGenericClientConstructor(echoService, "Echo");
