import { describeDeliveryContract } from "./conformance/delivery-contract.js";
import { startSidecar } from "./support/sidecar.js";

// One sidecar: publisher and subscribers all talk to it, each over its own connection.
describeDeliveryContract("one sidecar", async () => {
  const t = await startSidecar();
  return {
    publisher: () => t.client(),
    subscriber: () => t.client(),
    sharedLog: true,
    dispose: () => t.dispose(),
  };
});
