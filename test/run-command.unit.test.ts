import { describe, expect, it } from "vitest";
import { EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, clientAddress, commandProblem } from "../sidecar/commands/run.js";

describe("weft run, without processes", () => {
  it.each([
    ["127.0.0.1:7420", "127.0.0.1:7420"],
    ["0.0.0.0:7420", "127.0.0.1:7420"],
    ["[::]:7420", "[::1]:7420"],
    ["[::1]:7420", "[::1]:7420"],
    ["10.1.2.3:7420", "10.1.2.3:7420"],
    ["unix:/run/weft/a.sock", "unix:/run/weft/a.sock"],
    ["/run/weft/a.sock", "unix:/run/weft/a.sock"],
  ])("hands the service %s as %s", (bound, expected) => {
    expect(clientAddress(bound)).toBe(expected);
  });

  it("finds a command as a shell does, and says why one cannot run", () => {
    expect(commandProblem("sh")).toBeUndefined();
    expect(commandProblem(process.execPath)).toBeUndefined();
    expect(commandProblem("weft-no-such-command")).toMatchObject({ exitCode: EXIT_NOT_FOUND, message: 'cannot run "weft-no-such-command": not found on PATH' });
    expect(commandProblem("/no/such/file")).toMatchObject({ exitCode: EXIT_NOT_FOUND, message: 'cannot run "/no/such/file": no such file' });
    expect(commandProblem("/")).toMatchObject({ exitCode: EXIT_NOT_EXECUTABLE });
    expect(commandProblem("")).toMatchObject({ exitCode: EXIT_NOT_FOUND, message: "the command is empty" });
  });
});
