import { describe, it } from "vitest";
import { INSTALL_HINT, PYTHON, pythonProblem } from "./python.js";

/**
 * `describe` for a suite that drives a sidecar from Python. Where PYTHON lacks grpcio,
 * protobuf or grpc_tools the suite is skipped with a message saying why and what to
 * install; in CI (CI set) it fails instead, so that a missing install step cannot pass.
 */
export function describeWithPython(name: string, body: () => void): void {
  const problem = pythonProblem();
  if (problem === undefined) {
    describe(name, body);
  } else if (process.env.CI) {
    describe(name, () => {
      it(`needs ${PYTHON} with grpcio, protobuf and grpc_tools (.ci/run installs them)`, () => {
        throw new Error(`${problem}; ${INSTALL_HINT}`);
      });
    });
  } else {
    console.warn(`Skipping "${name}": ${problem}; ${INSTALL_HINT}.`);
    describe.skip(name, body);
  }
}
