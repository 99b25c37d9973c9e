#!/usr/bin/env bun
// send-to-runpod: the thin command line over lib/. Dispatch, help, signals, and the one place
// where errors become a line on stderr and an exit code.
import { type ArgsDef, type CommandDef, defineCommand, type ParsedArgs, renderUsage } from "citty";
import { createConsola } from "consola";
import { colors } from "consola/utils";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { basename, join } from "node:path";
import pkg from "./package.json" with { type: "json" };
import { createClient, jobFailure, type Job } from "./lib/api.ts";
import { apiKeyFromConfigToml, type ParsedValues, parseArgv, requireCredentials, resolveRunOptions, runArgs, type Sources } from "./lib/args.ts";
import { CliError, ExitCode } from "./lib/errors.ts";
import { buildJobInput, collectImages, encodeImages, readWorkflow } from "./lib/io.ts";
import { createProgress, formatElapsed, isTerminal, waitForJob } from "./lib/poll.ts";
import { decodeImages, formatBytes, openFiles, saveImages } from "./lib/save.ts";
import sampleWorkflow from "./workflows/sample-txt2img.json" with { type: "file" };

// Logs and progress go to stderr, one line each; stdout carries only the saved paths.
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
const redact = (text: string) => [...secrets].reduce((out, secret) => out.replaceAll(secret, "***"), text);
const log = createConsola({
  level: 3,
  reporters: [
    {
      log: ({ type, args }) => {
        const [icon, paint] = ICONS[type] ?? ["", (s: string) => s];
        const text = redact(args.map(String).join(" "));
        process.stderr.write(`${icon ? `${paint(icon)} ` : ""}${text}\n`);
      },
    },
  ],
});

const EXAMPLES = [
  "send-to-runpod --workflow workflows/sample-txt2img.json",
  "send-to-runpod --workflow workflows/img2img.json --images input/reference.png",
  "send-to-runpod --workflow workflows/inpaint.json --images input/photo.png input/mask.png --output renders",
  "send-to-runpod --workflow workflows/upscale.json --images-dir input --no-open --timeout 1200",
  "send-to-runpod --workflow flow.json --images a.png | xargs -n1 identify",
  "send-to-runpod emulate --port 8000",
  "send-to-runpod demo",
];

const ENVIRONMENT = [
  ["RUNPOD_API_KEY", "API key (else [default] api_key of ~/.runpod/config.toml)"],
  ["RUNPOD_ENDPOINT_ID", "endpoint id"],
  ["RUNPOD_ENDPOINT_BASE_URL", "API base URL (https, or http for localhost)"],
  ["NO_COLOR", "no colours"],
  [".env", "a .env file in the working directory is read; flags beat the environment, which beats files"],
];

const EXIT_CODES = [
  ["0", "all outputs saved"],
  ["1", "the job ended FAILED, CANCELLED or TIMED_OUT, or COMPLETED without outputs"],
  ["2", "usage or input error (flags, workflow, images)"],
  ["3", "credentials missing or rejected (401/403)"],
  ["4", "API or network error (including 404 for an unknown endpoint)"],
  ["5", "--timeout ran out (the job is cancelled)"],
  ["6", "results could not be saved"],
  ["130", "interrupted by Ctrl-C (143 for SIGTERM); the job is cancelled"],
];

const sources = (): Sources => ({
  env: process.env,
  configApiKey: () => {
    try {
      return apiKeyFromConfigToml(readFileSync(join(process.env.HOME || homedir(), ".runpod", "config.toml"), "utf8"));
    } catch {
      return undefined;
    }
  },
});

// Loaded lazily: `emulate` pulls in the server only when asked for.
const SUBCOMMANDS: Record<string, () => Promise<CommandDef<ArgsDef>>> = {
  emulate: () => import("./lib/emulator.ts").then((m) => m.emulateCommand as CommandDef<ArgsDef>),
  demo: async () => demoCommand as CommandDef<ArgsDef>,
};

const mainCommand = defineCommand({
  meta: { name: "send-to-runpod", version: pkg.version, description: "Run a ComfyUI workflow on a RunPod serverless endpoint and save the images" },
  args: runArgs,
  subCommands: SUBCOMMANDS,
});

const demoCommand = defineCommand({
  meta: { name: "demo", description: "run the sample workflow on a built-in emulator and save the image in ./output" },
  args: { output: runArgs.output, "no-open": runArgs["no-open"], verbose: runArgs.verbose },
  async run({ data }: { data?: ParsedValues }) {
    const { startEmulator } = await import("./lib/emulator.ts");
    const emulator = startEmulator({ port: 0, executionMs: 1200 });
    log.info(`Emulated RunPod endpoint on ${emulator.url}`);
    try {
      await sendWorkflow(
        { ...data, workflow: [sampleWorkflow as unknown as string], "base-url": [emulator.url], "endpoint-id": [emulator.endpointId], "api-key": [emulator.apiKey] },
        { env: {}, configApiKey: () => undefined },
      );
    } finally {
      await emulator.stop();
    }
  },
});

/** The default command: submit, wait, save, open. */
async function sendWorkflow(values: ParsedValues, from: Sources): Promise<void> {
  const options = resolveRunOptions(values, from);
  if (options.apiKey) secrets.add(options.apiKey);
  if (options.verbose) log.level = 4;
  const workflow = await readWorkflow(options.workflow);
  const { images, warnings } = await collectImages(options.images, options.imagesDirs);
  for (const warning of warnings) log.warn(warning);
  const referenceImages = await encodeImages(images);
  const { apiKey, endpointId } = requireCredentials(options);

  const stop = new AbortController();
  const client = createClient({
    baseUrl: options.baseUrl,
    endpointId,
    apiKey,
    signal: stop.signal,
    onRequest: options.verbose ? (r) => log.debug(`${r.method} ${r.path} → ${r.status} (${r.ms} ms)`) : undefined,
  });
  const imageCount = images.length ? ` with ${images.length} reference image${images.length > 1 ? "s" : ""}` : "";
  log.start(`Submitting ${basename(options.workflow)}${imageCount} to endpoint ${endpointId}`);
  const started = Date.now();
  let job: Job = await client.run(buildJobInput(workflow, referenceImages));
  log.info(`Job ${job.id} ${job.status}`);

  const releaseSignals = onSignals(stop);
  const deadline = setTimeout(() => stop.abort(new CliError(`no result after ${options.timeoutMs / 1000} s (--timeout)`, ExitCode.timeout)), options.timeoutMs - (Date.now() - started));
  const progress = createProgress(process.stderr, { color: !process.env.NO_COLOR && process.env.TERM !== "dumb" });
  try {
    if (!isTerminal(job.status)) {
      job = await waitForJob({
        status: () => client.status(job.id),
        pollIntervalMs: options.pollIntervalMs,
        signal: stop.signal,
        onUpdate: (update) => {
          job = update;
          progress.update(update);
        },
      });
    }
  } catch (error) {
    progress.stop();
    if (!stop.signal.aborted) throw error;
    throw await cancelAfterAbort(stop.signal.reason, job, options.baseUrl, endpointId, apiKey);
  } finally {
    progress.stop();
    clearTimeout(deadline);
    releaseSignals();
  }

  if (job.status !== "COMPLETED") throw jobFailure(job);
  const duration = (ms: number) => (ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : formatElapsed(ms));
  const timing = [job.delayTime !== undefined && `queued ${duration(job.delayTime)}`, job.executionTime !== undefined && `ran ${duration(job.executionTime)}`].filter(Boolean).join(", ");
  log.success(`Job ${job.id} COMPLETED in ${duration(Date.now() - started)}${timing ? ` (${timing})` : ""}`);

  const saved = await saveImages(decodeImages(job.output, job.id), options.output, new Date());
  for (const file of saved) {
    process.stdout.write(`${file.path}\n`);
    log.info(`Saved ${basename(file.path)} (${formatBytes(file.bytes)})`);
  }
  const total = saved.reduce((sum, file) => sum + file.bytes, 0);
  log.success(`${saved.length} file${saved.length > 1 ? "s" : ""} (${formatBytes(total)}) in ${options.output}`);

  if (options.open && process.stdout.isTTY) {
    for (const failure of await openFiles(saved.map((file) => file.path))) log.warn(`could not open ${failure}`);
  }
}

/** Ctrl-C or SIGTERM aborts the wait (the job is then cancelled); a second Ctrl-C exits at once. */
function onSignals(stop: AbortController): () => void {
  const interrupt = () => {
    if (stop.signal.aborted) process.exit(ExitCode.interrupted);
    stop.abort(new CliError("interrupted", ExitCode.interrupted));
  };
  const terminate = () => stop.abort(new CliError("terminated", ExitCode.terminated));
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", terminate);
  return () => {
    process.off("SIGINT", interrupt);
    process.off("SIGTERM", terminate);
  };
}

/** Nobody should keep paying for a job they gave up on: cancel it, and say what happened to it. */
async function cancelAfterAbort(reason: unknown, job: Job, baseUrl: string, endpointId: string, apiKey: string): Promise<unknown> {
  if (!(reason instanceof CliError)) return reason;
  if (isTerminal(job.status)) return reason;
  log.info(`Cancelling job ${job.id} (it was ${job.status})`);
  try {
    const cancelled = await createClient({ baseUrl, endpointId, apiKey, requestTimeoutMs: 10_000, retry: { attempts: 3, baseDelayMs: 300, maxDelayMs: 2000 } }).cancel(job.id);
    return new CliError(`${reason.message}; job ${job.id} ${cancelled.status === "CANCELLED" ? "cancelled" : `is ${cancelled.status}`}`, reason.exitCode);
  } catch (error) {
    return new CliError(`${reason.message}; cancelling job ${job.id} failed (${(error as Error).message}), it may still run`, reason.exitCode);
  }
}

async function helpText(cmd: CommandDef<ArgsDef>, parent?: CommandDef<ArgsDef>): Promise<string> {
  const columns = (rows: string[][]) => rows.map(([a, b]) => `  ${a!.padEnd(26)} ${b}`).join("\n");
  let text = await renderUsage(cmd, parent);
  if (!parent) {
    text += `\nENVIRONMENT\n\n${columns(ENVIRONMENT)}\n\nEXIT CODES\n\n${columns(EXIT_CODES)}\n\nEXAMPLES\n\n${EXAMPLES.map((e) => `  $ ${e}`).join("\n")}\n`;
  }
  return text;
}

export async function main(argv: readonly string[]): Promise<number> {
  // Only a first word that names a subcommand is one; `--workflow emulate.json` never is.
  const sub = argv[0] !== undefined && Object.hasOwn(SUBCOMMANDS, argv[0]) ? await SUBCOMMANDS[argv[0]]!() : undefined;
  const cmd = (sub ?? mainCommand) as CommandDef<ArgsDef>;
  const rawArgs = sub ? argv.slice(1) : argv;
  const flags = rawArgs.slice(0, rawArgs.includes("--") ? rawArgs.indexOf("--") : undefined);
  const verbose = flags.includes("--verbose");
  try {
    if (flags.includes("--help") || flags.includes("-h")) {
      process.stdout.write(await helpText(cmd, sub && (mainCommand as CommandDef<ArgsDef>)));
      return ExitCode.ok;
    }
    if (!sub && flags.includes("--version")) {
      process.stdout.write(`${pkg.version}\n`);
      return ExitCode.ok;
    }
    const def = (cmd.args ?? {}) as ArgsDef;
    const values = parseArgv(rawArgs, def);
    if (sub) await sub.run!({ rawArgs: [...rawArgs], args: { _: [], ...cittyValues(values, def) } as unknown as ParsedArgs, cmd: sub, data: values });
    else await sendWorkflow(values, sources());
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CliError) {
      log.error(error.message);
      if (verbose && error.detail) log.log(error.detail);
      return error.exitCode;
    }
    log.error(`unexpected error: ${(error as Error)?.message ?? error}${verbose ? "" : " (run with --verbose for details)"}`);
    if (verbose) log.log((error as Error)?.stack ?? "");
    return ExitCode.jobFailed;
  }
}

/** citty-style values for subcommands: one value per flag, defaults filled in. */
function cittyValues(values: ParsedValues, def: ArgsDef): Record<string, string | boolean> {
  const entries = Object.entries(def).map(([name, arg]) => {
    const value = values[name];
    return [name, Array.isArray(value) ? value.at(-1)! : (value ?? arg.default)] as const;
  });
  return Object.fromEntries(entries.filter(([, value]) => value !== undefined)) as Record<string, string | boolean>;
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
