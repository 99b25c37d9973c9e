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

export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    /** Extra lines shown only with --verbose (tracebacks, raw bodies). */
    readonly detail?: string,
  ) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError(message, ExitCode.usage);
