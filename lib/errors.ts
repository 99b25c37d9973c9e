// The exit-code contract (README "Exit codes"): every failure the user can meet is a CliError
// carrying one of these codes and one line of text.
export const ExitCode = {
  ok: 0,
  jobFailed: 1,
  usage: 2,
  credentials: 3,
  api: 4,
  timeout: 5,
  save: 6,
  interrupted: 130,
  terminated: 143,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The stable `error.code` of --json when a more precise one is not given. */
const CODE_OF_EXIT: Record<ExitCode, string> = {
  0: "ok",
  1: "job_failed",
  2: "usage",
  3: "credentials",
  4: "api",
  5: "timeout",
  6: "save_failed",
  130: "interrupted",
  143: "terminated",
};

export class CliError extends Error {
  override readonly name = "CliError";
  /** Stable, for scripts reading --json (README "JSON output"). */
  readonly code: string;
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    /** Extra lines shown only with --verbose (tracebacks, raw bodies). */
    readonly detail?: string,
    code?: string,
  ) {
    super(message);
    this.code = code ?? CODE_OF_EXIT[exitCode];
  }
}

export const usageError = (message: string) => new CliError(message, ExitCode.usage);
