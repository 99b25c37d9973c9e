// What a run tells: lines on stderr for people; for machines, the --json document on stdout and the
// --manifest record on disk. Both are built from one RunRecord, filled in as the run goes, so a
// failure still reports everything known up to it (above all the job id).
import { createConsola } from "consola";
import { colors } from "consola/utils";
import type { Job } from "./api.ts";
import { type CliError, ExitCode } from "./errors.ts";
import type { SavedFile } from "./save.ts";

export interface RunRecord {
  command: string;
  endpointId?: string;
  /** --manifest FILE, once the options are known. */
  manifestPath?: string;
  job?: Job;
  workflowSha256?: string;
  saved: SavedFile[];
  /** Command-specific data for --json (health counts, how many jobs a purge removed). */
  extra?: Record<string, unknown>;
}

export const newRecord = (command: string): RunRecord => ({ command, saved: [] });

/** The --json document (README "JSON output"): stable keys, always all present. */
export function jsonReport(record: RunRecord, error: CliError | undefined) {
  const { job } = record;
  const fixed = {
    ok: error === undefined,
    command: record.command,
    jobId: job?.id ?? null,
    status: job?.status ?? null,
    delayTime: job?.delayTime ?? null,
    executionTime: job?.executionTime ?? null,
    outputs: record.saved.map(({ path, bytes, type, sha256 }) => ({ path, bytes, type, sha256 })),
    error: error ? { code: error.code, message: error.message } : null,
    exitCode: error ? error.exitCode : ExitCode.ok,
  };
  // The fixed keys come first and keep their values; command-specific ones follow.
  return Object.assign({}, fixed, record.extra, fixed);
}

/** The --manifest record: enough to audit or resume a run later. */
export function manifestRecord(record: RunRecord, error: CliError | undefined, finishedAt: Date) {
  const { job } = record;
  return {
    jobId: job?.id ?? null,
    endpointId: record.endpointId ?? null,
    status: job?.status ?? null,
    delayTime: job?.delayTime ?? null,
    executionTime: job?.executionTime ?? null,
    workflowSha256: record.workflowSha256 ?? null,
    files: record.saved.map(({ path, bytes, sha256, type, filename }) => ({ path, bytes, sha256, type, ...(filename && { workerFilename: filename }) })),
    error: error ? { code: error.code, message: error.message } : null,
    exitCode: error ? error.exitCode : ExitCode.ok,
    ...(record.extra?.seed !== undefined && { seed: record.extra.seed }),
    finishedAt: finishedAt.toISOString(),
  };
}

// ---- For people: stderr, one line each; stdout carries only data (saved paths, ids, --json). ----

const ICONS: Record<string, [string, (s: string) => string]> = {
  error: ["✖", colors.red],
  warn: ["⚠", colors.yellow],
  success: ["✔", colors.green],
  start: ["◐", colors.magenta],
  info: ["ℹ", colors.cyan],
  debug: ["›", colors.gray],
};
/** The key must never be printed, even if a server echoes it back in an error body. */
const secrets = new Set<string>();
export const keepSecret = (secret: string | undefined) => void (secret && secrets.add(secret));
export const redact = (text: string) => [...secrets].reduce((out, secret) => out.replaceAll(secret, "***"), text);
export const log = createConsola({
  level: 3,
  reporters: [
    {
      log: ({ type, args }) => {
        const [icon, paint] = ICONS[type] ?? ["", (s: string) => s];
        process.stderr.write(`${icon ? `${paint(icon)} ` : ""}${redact(args.map(String).join(" "))}\n`);
      },
    },
  ],
});
const LEVEL = { quiet: 0, normal: 3, verbose: 4 } as const;
export const setVerbosity = ({ quiet, verbose }: { quiet: boolean; verbose: boolean }) => {
  log.level = quiet ? LEVEL.quiet : verbose ? LEVEL.verbose : LEVEL.normal;
};
