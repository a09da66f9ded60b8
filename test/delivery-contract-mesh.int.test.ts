import { describeDeliveryContract } from "./conformance/delivery-contract.js";
import { settled, startMesh } from "./support/mesh.js";

// A mesh of three: events are published on A; subscribers talk to B and C, so every event
// crosses a peer link, is stored as a relay copy, and its ack travels back to A.
describeDeliveryContract("a mesh of three sidecars", async () => {
  const [a, b, c] = await startMesh(["a", "b", "c"]);
  const subscribers = [b!, c!];
  return {
    publisher: () => a!.client(),
    subscriber: (i) => subscribers[i % 2]!.client(),
    settled: (channel, group) => settled(a!, subscribers, channel, group),
    sharedLog: false,
    dispose: async () => {
      for (const s of [a, b, c]) await s!.dispose();
    },
  };
});
