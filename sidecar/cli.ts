import { logVerbosity, setLogVerbosity } from "@grpc/grpc-js";
import { Command, CommanderError, Option } from "commander";
import {
  CommandError,
  DEFAULT_ADDRESS,
  EXIT_FAILURE,
  EXIT_USAGE,
  addressArgument,
  durationArgument,
  usage,
  fromArgument,
  integerArgument,
  nameArgument,
} from "./commands/arguments.js";
import { addAdminCommands } from "./commands/admin-commands.js";
import { clientTlsOptions } from "./commands/client-tls.js";
import { note } from "./commands/output.js";
import { joinList, settingOptions } from "./settings/flags.js";
import { CONFIG_ENV } from "./settings/schema.js";
import { SOFTWARE_VERSION } from "./version.js";
import type { CertsOptions } from "./commands/certs.js";
import type { PublishOptions } from "./commands/publish.js";
import type { SidecarOptions } from "./commands/run-sidecar.js";
import type { SubscribeOptions } from "./commands/subscribe.js";

/** Most unacked deliveries a subscriber may ask for (the sidecar's limit). */
const MAX_IN_FLIGHT = 10_000;

/**
 * The `weft` command line: `weft sidecar`, `weft publish`, `weft subscribe`, and the operator
 * commands on weft.v1.Admin (`weft channels`, `groups`, `peers`, `dlq`, `stats`).
 * Each action stores its exit status in `exit.code`; commander's own errors are usage errors.
 * Commands load their modules when they run, so that help and usage errors answer quickly
 * and `publish` does not load LevelDB.
 */
export function buildProgram(exit: { code: number }): Command {
  const program = new Command("weft")
    .description("Weft: a gRPC streaming event mesh. A sidecar next to every service, a LevelDB log, nothing lost.")
    .version(SOFTWARE_VERSION)
    .exitOverride()
    .showHelpAfterError("(add --help for usage)")
    .configureHelp({ showGlobalOptions: false });

  const to = (): Option =>
    new Option("--to <address>", "the sidecar: host:port, /path.sock or unix:/path")
      .env("WEFT_ADDRESS")
      .default(DEFAULT_ADDRESS)
      .argParser(addressArgument);
  const timeout = (): Option =>
    new Option("--timeout <duration>", "how long to wait for a sidecar that accepts the connection to answer, e.g. 5s (a refused connection fails at once)")
      .default(5000, "5s")
      .argParser(durationArgument(100, 600_000));

  addSidecarOptions(
    program.command("sidecar").description("Run a sidecar: the service API (gRPC) over a LevelDB log."),
  )
    .addHelpText(
      "after",
      `
${SIDECAR_SETTINGS}
Stops gracefully on SIGINT or SIGTERM (a second one exits at once).`,
    )
    .action(async (o: SidecarOptions) => {
      const { sidecarCommand } = await import("./commands/run-sidecar.js");
      exit.code = await sidecarCommand(o);
    });

  addSidecarOptions(
    program
      .command("run")
      .usage("[sidecar options] -- <command> [args...]")
      .description("Run a command (a service) with a sidecar beside it for its lifetime; the command finds it in WEFT_ADDRESS.")
      .argument("[command...]", "the command and its arguments, after --"),
  )
    .addHelpText(
      "after",
      `
Examples:
  weft run --data-dir ./orders-data -- node orders-service.js
  weft run --listen /run/weft/orders.sock --http off -- python3 service.py --port 8080

The sidecar starts first, with the flags of \`weft sidecar\` (and its config file and
environment variables), and the command only once the sidecar listens; it gets the address
in WEFT_ADDRESS ("host:port" or "unix:/path", which grpc clients in any language take).
SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are passed on to the command,
which runs in its own session so that each reaches it once. When the command exits, the
sidecar stops gracefully and weft run exits with the command's status (128 + the signal's
number if a signal ended it).
Exit status: the command's; 1 if the sidecar cannot start (the command is not started) or
dies while the command runs (the command then gets SIGTERM); 2 for a usage error; 126 if
the command cannot be run; 127 if it is not found.

${SIDECAR_SETTINGS}`,
    )
    .action(async (argv: string[], o: SidecarOptions, command: Command) => {
      // Everything after "--" is the command's; nothing of it before.
      const raw = (command.parent as Command & { rawArgs: string[] }).rawArgs;
      if (argv.length === 0) throw usage("weft run needs a command after --: weft run [sidecar options] -- <command> [args...]");
      if (raw[raw.length - argv.length - 1] !== "--") {
        throw usage(`put the command after --, so that its own flags are not taken for weft's: weft run [sidecar options] -- ${argv.join(" ")}`);
      }
      const { runCommand } = await import("./commands/run.js");
      exit.code = await runCommand(argv, o);
    });

  program
    .command("publish")
    .description("Publish events and print the sequence the sidecar stored each one at.")
    .argument("<channel>", 'the channel, e.g. "orders.created"', nameArgument)
    .addOption(to())
    .option("--data <text>", "the event's data, as UTF-8 text")
    .option("--data-file <file>", "the event's data, the bytes of a file")
    .option("--key <key>", "the ordering key: events with one key are delivered in order")
    .option("--type <type>", 'the event type (default: "weft.event")')
    .option("--source <source>", 'the event source (default: "//weft-cli/HOSTNAME")')
    .option("--id <id>", "the event id; re-publishing an id is a duplicate (default: a random UUID)")
    .option("--count <n>", "publish n copies of --data or --data-file", integerArgument(1))
    .option("--json", 'print {"channel","sequence","id","duplicate"} per event')
    .addOption(timeout())
    .addHelpText(
      "after",
      `
Without --data or --data-file, each non-empty line of stdin is one event.
Prints one line per stored event, in order, as soon as it is acked (from a pipe too, while
input is still coming): "CHANNEL SEQUENCE", plus " duplicate" for a re-publish. At the
first event the sidecar rejects, prints its reason, stops reading input, reports the
events already sent, and exits 1.`,
    )
    .action(async (channel: string, o: PublishOptions) => {
      const { publishCommand } = await import("./commands/publish.js");
      exit.code = await publishCommand(channel, o);
    });

  program
    .command("subscribe")
    .description("Subscribe as a member of a group; print each event as a JSON line and ack it.")
    .argument("<channel>", 'the channel, e.g. "orders.created"', nameArgument)
    .requiredOption("--group <group>", 'the consumer group, e.g. "billing"', nameArgument)
    .addOption(to())
    .option("--from <position>", "where a new group starts: latest, earliest, a sequence, or an ISO 8601 time (default: latest)", fromArgument)
    .option("--count <n>", "exit after n events", integerArgument(1))
    .option("--max-in-flight <n>", `the most unacked events at once, 1 to ${MAX_IN_FLIGHT} (default: 100, or n of --count if smaller)`, integerArgument(1, MAX_IN_FLIGHT))
    .option("--json", "print JSON lines (the only format; accepted for explicitness)")
    .addOption(timeout())
    .addHelpText(
      "after",
      `
Prints one JSON line per event: {"id","sequence","attempt","channel","key","type","source","data"},
with "dataBase64" instead of "data" when the data is not UTF-8. Each event is acked once its
line is written. Runs until SIGINT or SIGTERM, or until --count events. When the sidecar
goes away it says so on stderr, reconnects until the sidecar is back, and says so again;
the group resumes where it left off (unacked events come again).`,
    )
    .action(async (channel: string, o: SubscribeOptions) => {
      const { subscribeCommand } = await import("./commands/subscribe.js");
      exit.code = await subscribeCommand(channel, o);
    });

  program
    .command("token")
    .description("Make a bearer token for a service, and the line that stores its hash in the config file.")
    .argument("<name>", "the identity the token stands for (the name the policy grants to)")
    .addHelpText(
      "after",
      `
Prints the token on stdout (give it to the service: authorization: Bearer TOKEN) and, on
stderr, the line for the config file's tokens section. The sidecar stores only the hash.`,
    )
    .action(async (name: string) => {
      const { tokenCommand } = await import("./commands/token.js");
      exit.code = await tokenCommand(name);
    });

  program
    .command("certs")
    .description("Make a development CA, and node and service certificates signed by it (with openssl).")
    .argument("<what>", 'what to make: "ca", "node" or "service"')
    .argument("[name]", "the node id (for node) or the service name (for service)")
    .option("--dir <dir>", "where the CA is and the files are written", "./weft-certs")
    .option("--trust-domain <domain>", "the CA's SPIFFE trust domain (ca only)", "weft.local")
    .option("--host <name,...>", "extra DNS names or IP addresses a node certificate names (node only); repeatable", joinList)
    .option("--days <n>", "how long the certificate is valid, days (default: 365 for a CA, 90 otherwise)", integerArgument(1, 3650))
    .addHelpText(
      "after",
      `
  weft certs ca                      ./weft-certs/ca.crt and ca.key (trust domain weft.local)
  weft certs node node-a             ./weft-certs/node-node-a.crt and .key (spiffe://weft.local/weft/node/node-a)
  weft certs service billing         ./weft-certs/service-billing.crt and .key (…/weft/service/billing)

Then: weft sidecar --tls-cert weft-certs/node-node-a.crt --tls-key weft-certs/node-node-a.key --tls-ca weft-certs/ca.crt
Running \`weft certs node\` again for the same node rotates its certificate (the sidecar picks it up).
For development and tests: in production, certificates come from your own CA (cert-manager, SPIRE, ...).`,
    )
    .action(async (what: string, name: string | undefined, o: CertsOptions) => {
      const { certsCommand } = await import("./commands/certs.js");
      exit.code = await certsCommand(what, name, o);
    });

  addAdminCommands(program, exit, { to, timeout });
  addClientTls(program);

  return program;
}

/** Settings of a sidecar, for the help of the commands that start one. */
const SIDECAR_SETTINGS = `Settings come from, lowest precedence first: defaults, the config file, environment
variables, flags. Each setting of the config file has an environment variable: WEFT_ and
its name in upper snake case (WEFT_DATA_DIR, WEFT_LISTEN, WEFT_FSYNC, WEFT_MAX_EVENT_BYTES,
WEFT_DEDUP_WINDOW, WEFT_RETENTION_MAX_AGE, WEFT_NODE_ID, WEFT_PEERS, WEFT_LOG_LEVEL, ...).
WEFT_CONFIG names a config file.
Durations are ms or e.g. "500ms", "30s", "10m", "7d"; sizes are bytes or e.g. "512KiB", "1MiB".
The same --peers list on every sidecar, each one's own address included, forms one mesh.
A listener beyond loopback needs TLS (--tls-cert, --tls-key, --tls-ca; \`weft certs\` makes a
development CA), or --insecure. TLS files are read again when they change, or on SIGHUP.`;

/** Adds the options of a sidecar (`weft sidecar`, `weft run`) to `command`. */
function addSidecarOptions(command: Command): Command {
  command.option("--config <file>", `a YAML or JSON config file (env: ${CONFIG_ENV})`);
  for (const option of settingOptions()) command.addOption(option);
  return command;
}

/** Gives every command that calls a sidecar (it has --to) the client TLS options. */
function addClientTls(command: Command): void {
  for (const c of command.commands) {
    if (c.options.some((o) => o.long === "--to")) for (const o of clientTlsOptions()) c.addOption(o);
    addClientTls(c);
  }
}

/** Runs the command line and returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  // grpc-js logs connection errors to stderr itself; the commands say what went wrong.
  if (!process.env.GRPC_VERBOSITY) setLogVerbosity(logVerbosity.NONE);
  // A closed stdout is reported by the write that failed (see commands/output.ts).
  process.stdout.on("error", () => {});
  const exit = { code: 0 };
  const program = buildProgram(exit);
  try {
    await program.parseAsync(argv);
    return exit.code;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : EXIT_USAGE; // commander printed it
    if (e instanceof CommandError) {
      note(`error: ${e.message}`);
      if (e.exitCode === EXIT_USAGE) note("(add --help for usage)");
      return e.exitCode;
    }
    note(`error: unexpected failure: ${(e as Error)?.stack ?? String(e)}`);
    return EXIT_FAILURE;
  }
}
