import { beforeAll, describe, expect, it } from "vitest";
import { type K8sObject, type Rendered, type WeftFacts, apiTypeProblems, imageEnv, manifestProblems, podSpec, renderKustomization, sidecarContainer, weftFacts } from "./k8s-manifests.js";

// deploy/k8s against the sidecar it deploys: every flag, setting, port, route and mount in
// the manifests is checked against the CLI's and the sidecar's own definitions, so that a
// flag or port renamed on either side fails here. The mutations below show that each check
// bites. test/deploy/k8s-manifests.e2e.test.ts runs the manifest's command line for real.

let rendered: Rendered;
let facts: WeftFacts;

beforeAll(async () => {
  rendered = renderKustomization();
  facts = await weftFacts();
  console.log(`deploy/k8s rendered with ${rendered.renderer}; not checked here: ${rendered.unchecked.join("; ")}`);
  const image = imageEnv();
  console.log(
    image
      ? `the image's environment (deploy/container/Containerfile) is applied under each container's: ${Object.keys(image).join(", ")}`
      : "deploy/container/Containerfile is not in this tree: the image's own environment is not applied",
  );
});

/** A copy of the rendered objects, changed by `mutate` (given the copy's pod spec). */
function mutated(mutate: (pod: Record<string, unknown>, objects: K8sObject[]) => void): K8sObject[] {
  const objects = structuredClone(rendered.objects);
  mutate(podSpec(objects), objects);
  return objects;
}

function sidecarArgs(objects: K8sObject[]): string[] {
  return sidecarContainer(objects).args as string[];
}

function replaceArg(objects: K8sObject[], from: string, to: string): void {
  const args = sidecarArgs(objects);
  const i = args.findIndex((a) => a.startsWith(from));
  if (i < 0) throw new Error(`no argument starts with ${from}`);
  args[i] = to + args[i]!.slice(from.length);
}

describe("deploy/k8s", () => {
  it("renders a StatefulSet, a headless Service and a PodDisruptionBudget", () => {
    expect(rendered.objects.map((o) => `${String(o.kind)}/${String((o.metadata as { name: string }).name)}`).sort()).toEqual([
      "PodDisruptionBudget/weft-example",
      "Service/weft-peers",
      "StatefulSet/weft-example",
    ]);
  });

  it("agrees with the sidecar's flags, settings, ports, routes and hardening", async () => {
    const { problems, setup } = await manifestProblems(rendered.objects, facts);
    expect(problems).toEqual([]);
    // What the checks resolved, as the sidecar would see it in pod weft-example-0.
    expect(setup!.config).toMatchObject({
      nodeId: "weft-example-0",
      listen: "127.0.0.1:7420",
      peerListen: "0.0.0.0:7421",
      http: "0.0.0.0:7422",
      dataDir: "/var/lib/weft",
      peersDns: ["weft-peers:7421"],
      fsync: true,
      maxStoredBytes: 8 * 1024 ** 3,
      shutdownGraceMs: 10_000,
    });
    expect(setup!.tls).toEqual({
      cert: "/etc/weft/tls/node-weft-example-0.crt",
      key: "/etc/weft/tls/node-weft-example-0.key",
      ca: "/etc/weft/tls/ca.crt",
    });
  });

  it("has only fields the Kubernetes API has, with values of their types", () => {
    expect(apiTypeProblems(rendered.objects)).toEqual([]);
  });

  it("runs the sidecar as a native sidecar and pins the image the docs name", () => {
    const sidecar = sidecarContainer(rendered.objects);
    expect(sidecar.restartPolicy).toBe("Always");
    const images = [sidecar, ...(podSpec(rendered.objects).containers as { image: string }[])].map((c) => (c as { image: string }).image);
    if (rendered.renderer === "kubectl kustomize") expect(new Set(images)).toEqual(new Set(["weft-mesh:0.2.0"]));
  });

  it("reads the TLS Secret's files at 0440 and gives the service only the CA", () => {
    const volumes = podSpec(rendered.objects).volumes as { name: string; secret?: { defaultMode?: number; items?: { key: string }[] } }[];
    // YAML 1.1 (kubectl) and 1.2 (this parser) read 0440 differently: the manifest says 288.
    expect(volumes.find((v) => v.name === "tls")?.secret?.defaultMode).toBe(0o440);
    expect(volumes.find((v) => v.name === "ca")?.secret?.items?.map((i) => i.key)).toEqual(["ca.crt"]);
  });

  describe("fails when the manifests and the sidecar disagree", () => {
    async function problemsOf(objects: K8sObject[], with_: WeftFacts = facts): Promise<string> {
      return (await manifestProblems(objects, with_)).problems.join("\n");
    }

    it("a flag the CLI does not have", async () => {
      const objects = mutated((_pod, o) => replaceArg(o, "--peer-listen=", "--peers-listen="));
      expect(await problemsOf(objects)).toContain("--peers-listen is not a flag of weft sidecar");
    });

    it("a flag renamed in the CLI", async () => {
      const renamed = new Map(facts.sidecarFlags);
      renamed.delete("--peers-dns");
      renamed.set("--peer-dns", { takesValue: true });
      expect(await problemsOf(rendered.objects, { ...facts, sidecarFlags: renamed })).toContain("--peers-dns is not a flag of weft sidecar");
    });

    it("a value the sidecar refuses", async () => {
      const objects = mutated((_pod, o) => replaceArg(o, "--http=0.0.0.0:7422", "--http=0.0.0.0:74220"));
      expect(await problemsOf(objects)).toContain("the sidecar refuses its configuration: flag --http");
    });

    it("a listener port the container does not declare", async () => {
      const objects = mutated((_pod, o) => replaceArg(o, "--peer-listen=0.0.0.0:7421", "--peer-listen=0.0.0.0:7431"));
      const problems = await problemsOf(objects);
      expect(problems).toContain("its listeners beyond loopback are http=7422/TCP, peer=7431/TCP");
      expect(problems).toContain("--peers-dns dials port 7421, but peers listen on 7431");
    });

    it("a probe on another port or path", async () => {
      const objects = mutated((_pod, o) => {
        const sidecar = sidecarContainer(o) as { livenessProbe: { httpGet: { port: unknown } }; readinessProbe: { httpGet: { path: string } } };
        sidecar.livenessProbe.httpGet.port = 8080;
        sidecar.readinessProbe.httpGet.path = "/ready";
      });
      const problems = await problemsOf(objects);
      expect(problems).toContain("livenessProbe probes port 8080 (8080), not the HTTP listener's 7422");
      expect(problems).toContain("readinessProbe asks for /ready, which the sidecar does not answer");
    });

    it("a probe over HTTP while the listener speaks HTTPS", async () => {
      const objects = mutated((_pod, o) => {
        (sidecarContainer(o) as { startupProbe: { httpGet: { scheme: string } } }).startupProbe.httpGet.scheme = "HTTP";
      });
      expect(await problemsOf(objects)).toContain("startupProbe uses HTTP, but the HTTP listener speaks HTTPS (TLS is on)");
    });

    it("an environment variable the sidecar does not read", async () => {
      const objects = mutated((_pod, o) => {
        (sidecarContainer(o).env as { name: string }[]).find((e) => e.name === "WEFT_SHUTDOWN_GRACE")!.name = "WEFT_SHUTDOWN_GRACE_PERIOD";
      });
      expect(await problemsOf(objects)).toContain("env WEFT_SHUTDOWN_GRACE_PERIOD of the sidecar is not a setting the sidecar reads");
    });

    it("a node id that is not the pod's name, or an undefined $(VAR)", async () => {
      const objects = mutated((_pod, o) => {
        const env = sidecarContainer(o).env as { name: string }[];
        env.find((e) => e.name === "WEFT_NODE_ID")!.name = "NODE_ID";
      });
      const problems = await problemsOf(objects);
      expect(problems).toContain("WEFT_NODE_ID does not come from the pod's name");
      expect(problems).toContain("refers to $(WEFT_NODE_ID), which the container's env does not define");
    });

    it("a data directory that is not the persistent volume", async () => {
      const objects = mutated((_pod, o) => replaceArg(o, "--data-dir=/var/lib/weft", "--data-dir=/var/lib/weft-data"));
      expect(await problemsOf(objects)).toContain("no volume is mounted at the data directory /var/lib/weft-data");
    });

    it("a storage quota as large as the volume", async () => {
      const objects = mutated((_pod, o) => replaceArg(o, "--max-stored-bytes=8GiB", "--max-stored-bytes=10GiB"));
      expect(await problemsOf(objects)).toContain("maxStoredBytes (10737418240) is not set below the data volume's size (10Gi)");
    });

    it("a Service that is not headless, or on another port", async () => {
      const objects = mutated((_pod, o) => {
        const spec = o.find((x) => x.kind === "Service")!.spec as { clusterIP?: string; ports: { port: number }[] };
        delete spec.clusterIP;
        spec.ports[0]!.port = 7000;
      });
      const problems = await problemsOf(objects);
      expect(problems).toContain("Service weft-peers is not headless");
      expect(problems).toContain("Service weft-peers has no port 7421");
    });

    it("a container without the hardening", async () => {
      const objects = mutated((pod) => {
        const example = (pod.containers as { securityContext: Record<string, unknown> }[])[0]!;
        example.securityContext.readOnlyRootFilesystem = false;
        delete example.securityContext.capabilities;
        delete (sidecarContainer([{ kind: "StatefulSet", spec: { template: { spec: pod } } }]).securityContext as Record<string, unknown>).runAsUser;
        (pod.securityContext as Record<string, unknown>).runAsUser = 0;
      });
      const problems = await problemsOf(objects);
      expect(problems).toContain("container example: readOnlyRootFilesystem is not true");
      expect(problems).toContain("container example: capabilities do not drop ALL");
      expect(problems).toContain("container weft: runAsUser is not a numeric non-root user");
    });

    it("a field the Kubernetes API does not have, or a value of another type", () => {
      const objects = mutated((pod, o) => {
        sidecarContainer(o).restartPolice = "Always";
        (pod.securityContext as Record<string, unknown>).runAsUser = "10001";
        delete (o.find((x) => x.kind === "Service")!.spec as { ports: { port?: number }[] }).ports[0]!.port;
      });
      const problems = apiTypeProblems(objects).join("\n");
      expect(problems).toContain("'\"restartPolice\"' does not exist in type 'Container'");
      expect(problems).toContain("Type 'string' is not assignable to type 'number'");
      expect(problems).toContain("Property 'port' is missing");
    });

    it("an image that listens everywhere, and a manifest that does not say otherwise", async () => {
      // As deploy/container's image does: every listener on 0.0.0.0 unless told otherwise.
      const image = { WEFT_LISTEN: "0.0.0.0:7420", WEFT_PEER_LISTEN: "0.0.0.0:7421", WEFT_HTTP: "0.0.0.0:7422", WEFT_DATA_DIR: "/var/lib/weft" };
      expect((await manifestProblems(rendered.objects, facts, image)).problems).toEqual([]);
      const objects = mutated((_pod, o) => {
        const args = sidecarArgs(o);
        args.splice(args.findIndex((a) => a.startsWith("--listen=")), 1);
      });
      const problems = (await manifestProblems(objects, facts, image)).problems.join("\n");
      expect(problems).toContain("the sidecar would refuse to start: listen 0.0.0.0:7420 is beyond loopback without a policy");
      expect(problems).toContain("the service API listens on 0.0.0.0:7420");
    });

    it("a grace period shorter than the sidecar's graceful stop", async () => {
      const objects = mutated((pod) => (pod.terminationGracePeriodSeconds = 12));
      expect(await problemsOf(objects)).toContain("terminationGracePeriodSeconds 12 leaves less than 10 s beyond the sidecar's shutdownGrace (10000 ms)");
    });

    it("a service that calls another address than the sidecar's", async () => {
      const objects = mutated((pod) => {
        ((pod.containers as { env: { name: string; value: string }[] }[])[0]!.env.find((e) => e.name === "WEFT_ADDRESS")!).value = "127.0.0.1:7520";
      });
      expect(await problemsOf(objects)).toContain("container example calls 127.0.0.1:7520, but the sidecar listens on 127.0.0.1:7420");
    });
  });
});
