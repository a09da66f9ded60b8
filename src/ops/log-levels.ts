// The names of log levels and formats, apart from the logger: settings and the command line
// read them without loading pino.

/** Log levels, most verbose first; "silent" logs nothing. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How records are written: one JSON object per line, or one line of text for people. */
export const LOG_FORMATS = ["json", "pretty"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
