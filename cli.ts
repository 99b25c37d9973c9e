#!/usr/bin/env bun
// send-to-runpod: the thin command line over lib/. Help, dispatch to the commands, and the one
// place where errors become a line on stderr, a --json document and an exit code.
import { type ArgsDef, type CommandDef, defineCommand, type ParsedArgs, renderUsage } from "citty";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import pkg from "./package.json" with { type: "json" };
import { type Job, jobFailure } from "./lib/api.ts";
import {
  apiKeyFromConfigToml,
  connectionArgs,
  jobIdArg,
  type Options,
  type ParsedValues,
  parseArgv,
  reportArgs,
  requestExtras,
  resolveOptions,
  runArgs,
  type Sources,
  waitArgs,
} from "./lib/args.ts";
import { CliError, ExitCode, usageError } from "./lib/errors.ts";
import { describePlan, prepareRequest } from "./lib/io.ts";
import { describeHealth, isTerminal, progressText } from "./lib/poll.ts";
import { jsonReport, keepSecret, log, manifestRecord, newRecord, redact, type RunRecord, setVerbosity } from "./lib/report.ts";
import { clientFor, credentialsFor, follow, interruptible, type JobContext, noteOnRecord, runBatch, submitAndFollow, withBudget } from "./lib/run.ts";
import { writeFileAtomically } from "./lib/save.ts";
import sampleWorkflow from "./workflows/sample-txt2img.json" with { type: "file" };

// ---- Help ----------------------------------------------------------------------------------

const EXAMPLES = [
  "send-to-runpod --workflow workflows/sample-txt2img.json",
  "send-to-runpod --workflow workflows/img2img.json --images input/reference.png",
  "send-to-runpod --workflow workflows/inpaint.json --images input/photo.png input/mask.png --output renders",
  "send-to-runpod --workflow workflows/upscale.json --images-dir input --no-open --timeout 1200",
  "send-to-runpod --workflow flow.json --images a.png | xargs -n1 identify",
  'send-to-runpod --workflow flow.json --set 6.text="a red fox" --set 3.steps=30 --seed random',
  "send-to-runpod --workflow flow.json --dry-run --print-payload body.json",
  "send-to-runpod --workflow flow.json --dialect worker-comfyui --local",
  "send-to-runpod --workflow flow.json --no-wait          # prints the job id",
  "send-to-runpod wait JOB_ID --output renders           # resume, save as a normal run does",
  "send-to-runpod --workflow flow.json --json --manifest run.json",
  "send-to-runpod emulate --port 8000",
  "send-to-runpod demo",
];

const ENVIRONMENT = [
  ["RUNPOD_API_KEY", "API key (else [default] api_key of ~/.runpod/config.toml)"],
  ["RUNPOD_ENDPOINT_ID", "endpoint id"],
  ["RUNPOD_ENDPOINT_BASE_URL", "API base URL (https, or http for localhost)"],
  ["RUNPOD_DIALECT", "seed or worker-comfyui (--dialect)"],
  ["COMFY_ORG_API_KEY", "passed to worker-comfyui as comfy_org_api_key; never printed"],
  ["NO_COLOR", "no colours"],
  [".env", "a .env file in the working directory is read; flags beat the environment, which beats files"],
];

const EXIT_CODES = [
  ["0", "all outputs saved (subcommands: the request succeeded)"],
  ["1", "the job ended FAILED, CANCELLED or TIMED_OUT, or COMPLETED without outputs"],
  ["2", "usage or input error (flags, workflow, images)"],
  ["3", "credentials missing or rejected (401/403)"],
  ["4", "API or network error (404 for an unknown endpoint or an expired job; a /run whose fate is unknown)"],
  ["5", "--timeout ran out (the job is cancelled unless --no-cancel)"],
  ["6", "results could not be saved (the raw output is kept as job-<id>.json where possible)"],
  ["130", "interrupted by Ctrl-C (143 for SIGTERM); the job is cancelled"],
];

async function helpText(cmd: CommandDef<ArgsDef>, parent?: CommandDef<ArgsDef>): Promise<string> {
  const columns = (rows: string[][]) => rows.map(([a, b]) => `  ${a!.padEnd(26)} ${b}`).join("\n");
  let text = await renderUsage(cmd, parent);
  if (!parent) {
    // citty would show the subcommands as if they followed the flags.
    text = text.replace(/^(\S*USAGE\S*) .*$/m, (_, label: string) => `${label} send-to-runpod --workflow FILE [OPTIONS]\n      send-to-runpod <command> [OPTIONS]`);
    text += `\n\nENVIRONMENT\n\n${columns(ENVIRONMENT)}\n\nEXIT CODES\n\n${columns(EXIT_CODES)}\n\nEXAMPLES\n\n${EXAMPLES.map((e) => `  $ ${e}`).join("\n")}\n`;
  }
  return text;
}

// ---- Settings ------------------------------------------------------------------------------

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

/** Options once, validated, with logging set up from them. */
function optionsFrom(values: ParsedValues, from: Sources = sources()): Options {
  const options = resolveOptions(values, from);
  keepSecret(options.apiKey);
  keepSecret(options.comfyOrgApiKey);
  setVerbosity(options);
  return options;
}

// ---- The default command: submit, wait, save, open ------------------------------------------

async function sendWorkflow(values: ParsedValues, record: RunRecord, from?: Sources): Promise<void> {
  const options = optionsFrom(values, from);
  if (!options.workflow) throw usageError("--workflow FILE is required");
  // A batch writes its manifest itself, a line per run; a single run's is one document, written at the end.
  if (options.batchFile || options.eachImage !== undefined || options.repeat !== undefined) return runBatch({ ...options, workflow: options.workflow }, record);
  record.manifestPath = options.manifest;
  const plan = await prepareRequest({ ...options, workflow: options.workflow, extras: requestExtras(options) });
  for (const note of plan.notes) log.info(note);
  for (const warning of plan.warnings) log.warn(warning);
  if (plan.seed) log.info(`Seed ${plan.seed.seed}${plan.seed.random ? " (random)" : ""}`);
  noteOnRecord(record, plan);
  if (options.printPayload === "-") process.stdout.write(`${redact(plan.body)}\n`);
  else if (options.printPayload) await writeFileAtomically(options.printPayload, `${redact(plan.body)}\n`);
  if (options.dryRun) {
    record.extra = { ...record.extra, dryRun: { nodes: Object.keys(plan.workflow).length, images: plan.images.map(({ name, bytes }) => ({ name, bytes })), bodyBytes: plan.bodyBytes, dialect: plan.dialect } };
    if (!options.json && options.printPayload !== "-") process.stdout.write(`${describePlan(plan).join("\n")}\n`);
    log.success("Dry run: nothing was sent");
    return;
  }
  const credentials = credentialsFor(options);
  record.endpointId = credentials.endpointId;
  await interruptible((parent) => submitAndFollow(plan, { options, credentials, record, parent, output: { dir: options.output, prefix: "" }, say: log }));
}

// ---- Subcommands on a known job or the endpoint ---------------------------------------------

type Action = (values: ParsedValues, record: RunRecord) => Promise<void>;

/** Options, credentials and a client, for subcommands that act on the endpoint. */
function connect(values: ParsedValues, record: RunRecord) {
  const options = optionsFrom(values);
  record.manifestPath = options.manifest;
  const credentials = credentialsFor(options);
  record.endpointId = credentials.endpointId;
  return { options, credentials, client: clientFor(options, credentials) };
}

function requireJobId(options: Options): string {
  if (!options.jobId) throw usageError("missing JOB_ID (the id printed when the job was submitted)");
  return options.jobId;
}

/** One line on stdout (the status), the rest on stderr. */
function showJob(job: Job, options: Options): void {
  if (!options.json) process.stdout.write(`${job.status}\n`);
  const progress = isTerminal(job.status) ? undefined : progressText(job.output);
  const said = [job.status, progress, job.delayTime !== undefined && `queued ${job.delayTime} ms`, job.executionTime !== undefined && `ran ${job.executionTime} ms`];
  log.info(`Job ${job.id}: ${said.filter(Boolean).join(", ")}`);
  if (job.status === "FAILED" || job.status === "TIMED_OUT") log.info(jobFailure(job).message);
}

const statusAction: Action = async (values, record) => {
  const { options, client } = connect(values, record);
  record.job = await client.status(requireJobId(options));
  showJob(record.job, options);
};

const waitAction: Action = async (values, record) => {
  const { options, credentials } = connect(values, record);
  const jobId = requireJobId(options);
  await interruptible(async (parent) => {
    const context: JobContext = { options, credentials, record, parent, output: { dir: options.output, prefix: "" }, say: log };
    await withBudget(context, async (client, signal) => {
      record.job = await client.status(jobId);
      log.info(`Job ${jobId} ${record.job.status}`);
      await follow(client, context, signal);
    });
  });
};

const cancelAction: Action = async (values, record) => {
  const { options, client } = connect(values, record);
  record.job = await client.cancel(requireJobId(options));
  showJob(record.job, options);
};

const retryAction: Action = async (values, record) => {
  const { options, client } = connect(values, record);
  record.job = await client.retry(requireJobId(options));
  showJob(record.job, options);
  log.info(`Follow it with: send-to-runpod wait ${record.job.id}`);
};

const healthAction: Action = async (values, record) => {
  const { options, client } = connect(values, record);
  const health = await client.health();
  record.extra = { health };
  if (!options.json) process.stdout.write(`${describeHealth(health).join("\n")}\n`);
};

const purgeAction: Action = async (values, record) => {
  const { options, client, credentials } = connect(values, record);
  if (!options.yes) {
    if (!process.stdin.isTTY || !process.stderr.isTTY) throw usageError("purge-queue removes every queued job: pass --yes to confirm (no terminal to ask on)");
    const sure = await log.prompt(`Remove every queued job of endpoint ${credentials.endpointId}?`, { type: "confirm", initial: false, cancel: "default" });
    if (sure !== true) throw usageError("purge-queue not confirmed; nothing removed");
  }
  const removed = await client.purgeQueue();
  record.extra = { removed };
  if (!options.json) process.stdout.write(`${removed}\n`);
  log.success(`Removed ${removed} queued job${removed === 1 ? "" : "s"}`);
};

const demoAction: Action = async (values, record) => {
  const { startEmulator } = await import("./lib/emulator.ts");
  const emulator = startEmulator({ port: 0, executionMs: 1200 });
  log.info(`Emulated RunPod endpoint on ${emulator.url}`);
  try {
    const given = { workflow: [sampleWorkflow as unknown as string], "base-url": [emulator.url], "endpoint-id": [emulator.endpointId], "api-key": [emulator.apiKey] };
    await sendWorkflow({ ...values, ...given }, record, { env: {}, configApiKey: () => undefined });
  } finally {
    await emulator.stop();
  }
};

// ---- Commands ----------------------------------------------------------------------------

interface Command {
  def: () => Promise<CommandDef<ArgsDef>>;
  /** Our commands; a plain citty command (emulate) runs its own `run`. */
  action?: Action;
}

const command = (name: string, description: string, args: ArgsDef, action: Action): Command => ({
  def: async () => defineCommand({ meta: { name, description }, args }),
  action,
});

const jobArgs = { ...jobIdArg, ...connectionArgs, ...reportArgs };

const SUBCOMMANDS: Record<string, Command> = {
  status: command("status", "one look at a job", jobArgs, statusAction),
  wait: command("wait", "resume waiting for a job and save its results as a normal run does", { ...jobIdArg, ...waitArgs, ...connectionArgs, ...reportArgs }, waitAction),
  cancel: command("cancel", "cancel a queued or running job", jobArgs, cancelAction),
  retry: command("retry", "queue a FAILED or TIMED_OUT job again (same id)", jobArgs, retryAction),
  health: command("health", "jobs and workers of the endpoint: why jobs wait", { ...connectionArgs, ...reportArgs }, healthAction),
  "purge-queue": command(
    "purge-queue",
    "remove every queued job (asks first; --yes when not on a terminal)",
    { yes: { type: "boolean", description: "do not ask" }, ...connectionArgs, ...reportArgs },
    purgeAction,
  ),
  // Loaded lazily: `emulate` pulls in the server only when asked for.
  emulate: { def: () => import("./lib/emulator.ts").then((m) => m.emulateCommand as CommandDef<ArgsDef>) },
  demo: command("demo", "run the sample workflow on a built-in emulator and save the image in ./output", { output: waitArgs.output, "no-open": waitArgs["no-open"], ...reportArgs }, demoAction),
};

const mainCommand = defineCommand({
  meta: { name: "send-to-runpod", version: pkg.version, description: "Run a ComfyUI workflow on a RunPod serverless endpoint and save the images" },
  args: runArgs,
  subCommands: Object.fromEntries(Object.entries(SUBCOMMANDS).map(([name, { def }]) => [name, def])),
});

export async function main(argv: readonly string[]): Promise<number> {
  // Only a first word that names a subcommand is one; `--workflow status.json` never is.
  const name = argv[0] !== undefined && Object.hasOwn(SUBCOMMANDS, argv[0]) ? argv[0] : undefined;
  const sub = name ? SUBCOMMANDS[name] : undefined;
  const cmd = sub ? await sub.def() : (mainCommand as CommandDef<ArgsDef>);
  const rawArgs = sub ? argv.slice(1) : argv;
  const flags = rawArgs.slice(0, rawArgs.includes("--") ? rawArgs.indexOf("--") : undefined);
  const verbose = flags.includes("--verbose");
  const json = flags.includes("--json") || flags.includes("--json=true");
  const record = newRecord(name ?? "run");
  let failure: CliError | undefined;
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
    if (!sub) await sendWorkflow(values, record);
    else if (sub.action) await sub.action(values, record);
    else await cmd.run!({ rawArgs: [...rawArgs], args: { _: [], ...cittyValues(values, def) } as unknown as ParsedArgs, cmd });
  } catch (error) {
    failure = error instanceof CliError ? error : new CliError(`unexpected error: ${(error as Error)?.message ?? error}${verbose ? "" : " (run with --verbose for details)"}`, ExitCode.jobFailed, (error as Error)?.stack, "internal");
    log.error(failure.message);
    if (verbose && failure.detail) log.log(failure.detail);
  }
  await writeManifest(record, failure);
  if (json) process.stdout.write(`${redact(JSON.stringify(jsonReport(record, failure)))}\n`);
  return failure?.exitCode ?? ExitCode.ok;
}

/** --manifest FILE, written whatever the outcome once a job exists, so a failed run is on record too. */
async function writeManifest(record: RunRecord, failure: CliError | undefined): Promise<void> {
  const path = record.manifestPath;
  if (!path || !record.job) return;
  try {
    await writeFileAtomically(path, `${redact(JSON.stringify(manifestRecord(record, failure, new Date()), null, 2))}\n`);
  } catch (error) {
    log.warn(`could not write the manifest ${path}: ${(error as Error).message}`);
  }
}

/** citty-style values for a plain citty command: one value per flag, defaults filled in. */
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
