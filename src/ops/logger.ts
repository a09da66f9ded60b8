import { pino } from "pino";
import type { LogFormat, LogLevel } from "./log-levels.js";

export { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "./log-levels.js";

/**
 * The fields of a record besides `time`, `level` and `msg`. The named ones mean the same in
 * every record; others may be added by the record that needs them. An `err` field holds an
 * Error and is written as {type, message, stack}.
 */
export interface LogFields {
  /** This sidecar's node id (set once on the sidecar's logger, not per call). */
  node?: string;
  /** The peer's node id. */
  peer?: string;
  /** A peer address (host:port) when the peer's node id is not known yet. */
  address?: string;
  channel?: string;
  group?: string;
  /** A stable reason code (see docs/errors.md), when there is one. */
  reason?: string;
  err?: unknown;
  [field: string]: unknown;
}

/**
 * Where the sidecar's components write what operators should know. A narrow seam over pino:
 * components depend on this, not on pino. Methods never throw.
 */
export interface Logger {
  trace(fields: LogFields, msg: string): void;
  debug(fields: LogFields, msg: string): void;
  info(fields: LogFields, msg: string): void;
  warn(fields: LogFields, msg: string): void;
  error(fields: LogFields, msg: string): void;
  fatal(fields: LogFields, msg: string): void;
  /** A logger that adds `fields` to each of its records. */
  child(fields: LogFields): Logger;
  /** Whether records of `level` are written (to skip building costly fields). */
  enabled(level: Exclude<LogLevel, "silent">): boolean;
}

/** Where records go: anything with a `write` of one line (stderr by default). */
export interface LogDestination {
  write(line: string): unknown;
}

export interface LoggerOptions {
  /** The least severe level written. Default "info". */
  level?: LogLevel;
  /** Default "json". */
  format?: LogFormat;
  /** Default process.stderr (synchronous for files and pipes, so nothing is lost at exit). */
  destination?: LogDestination;
}

/**
 * A logger writing one record per line: JSON `{"level":"info","time":"ISO 8601","pid":…,
 * "msg":…, …fields}` or, with format "pretty", `TIME LEVEL msg field=value …`.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const out = options.destination ?? process.stderr;
  const destination = options.format === "pretty" ? prettyDestination(out) : out;
  const logger = pino(
    {
      level: options.level ?? "info",
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Level names, not pino's numbers: read by people and by any log tool without a mapping.
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
  return new PinoLogger(logger);
}

/** A logger that writes nothing (tests, embedders that log elsewhere). */
export const SILENT_LOGGER: Logger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  fatal() {},
  child: () => SILENT_LOGGER,
  enabled: () => false,
};

class PinoLogger implements Logger {
  constructor(private readonly p: pino.Logger) {}
  trace(fields: LogFields, msg: string): void {
    this.p.trace(fields, msg);
  }
  debug(fields: LogFields, msg: string): void {
    this.p.debug(fields, msg);
  }
  info(fields: LogFields, msg: string): void {
    this.p.info(fields, msg);
  }
  warn(fields: LogFields, msg: string): void {
    this.p.warn(fields, msg);
  }
  error(fields: LogFields, msg: string): void {
    this.p.error(fields, msg);
  }
  fatal(fields: LogFields, msg: string): void {
    this.p.fatal(fields, msg);
  }
  child(fields: LogFields): Logger {
    return new PinoLogger(this.p.child(fields));
  }
  enabled(level: Exclude<LogLevel, "silent">): boolean {
    return this.p.isLevelEnabled(level);
  }
}

/** Turns each JSON record into `TIME LEVEL msg field=value …` for a person at a terminal. */
function prettyDestination(out: LogDestination): LogDestination {
  return {
    write(line: string) {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return out.write(line);
      }
      const { time, level, msg, pid: _pid, err, ...fields } = record;
      let text = `${String(time)} ${String(level).toUpperCase().padEnd(5)} ${String(msg ?? "")}`;
      for (const [k, v] of Object.entries(fields)) text += ` ${k}=${typeof v === "string" && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`;
      if (err && typeof err === "object") {
        const e = err as { message?: unknown; stack?: unknown };
        text += ` err=${JSON.stringify(e.message)}`;
        if (typeof e.stack === "string") text += `\n${e.stack}`;
      }
      return out.write(`${text}\n`);
    },
  };
}
