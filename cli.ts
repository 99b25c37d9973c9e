#!/usr/bin/env bun
// send-to-runpod: the thin command line over lib/. Dispatch, help, signals, and the one place
// where errors become a line on stderr, a --json document and an exit code.
import { type ArgsDef, type CommandDef, defineCommand, type ParsedArgs, renderUsage } from "citty";
import { createConsola } from "consola";
import { colors } from "consola/utils";
import { readFileSync } from "node:fs";
import { appendFile } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, join } from "node:path";
import pkg from "./package.json" with { type: "json" };
import { createClient, DEFAULT_RETRY, download, type Job, jobFailure, type RunpodClient } from "./lib/api.ts";
import {
  apiKeyFromConfigToml,
  connectionArgs,
  jobIdArg,
  type Options,
  type ParsedValues,
  parseArgv,
  reportArgs,
  requestExtras,
  requireCredentials,
  resolveOptions,
  runArgs,
  type Sources,
  waitArgs,
} from "./lib/args.ts";
import { CliError, ExitCode, usageError } from "./lib/errors.ts";
import { collectImages, describeFsError, describePlan, formatBytes, type Plan, prepareRequest, readWorkflow } from "./lib/io.ts";
import { describeTally, eachImageRuns, numberRuns, parseBatchFile, type RunSpec, runKey, runOutput, succeededRuns, type Tally } from "./lib/batch.ts";
import { createProgress, describeHealth, formatElapsed, isTerminal, progressText, waitForJob } from "./lib/poll.ts";
import { jsonReport, manifestRecord, newRecord, type RunRecord } from "./lib/report.ts";
import { keepRawOutput, openFiles, type OutputItem, outputItems, saveOutputs, sha256Hex, writeFileAtomically } from "./lib/save.ts";
import sampleWorkflow from "./workflows/sample-txt2img.json" with { type: "file" };

// ---- Logging: stderr, one line each; stdout carries only data (saved paths, ids, --json). ----

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
        process.stderr.write(`${icon ? `${paint(icon)} ` : ""}${redact(args.map(String).join(" "))}\n`);
      },
    },
  ],
});
const LEVEL = { quiet: 0, normal: 3, verbose: 4 } as const;

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
  for (const secret of [options.apiKey, options.comfyOrgApiKey]) if (secret) secrets.add(secret);
  log.level = options.quiet ? LEVEL.quiet : options.verbose ? LEVEL.verbose : LEVEL.normal;
  return options;
}

/**
 * A client whose requests all stop when `budget` aborts. Under a budget, transient failures are
 * retried until it runs out: an API outage shorter than --timeout must not cost the job.
 */
function clientFor(options: Options, credentials: Credentials, budget?: AbortSignal): RunpodClient {
  return createClient({
    baseUrl: options.baseUrl,
    ...credentials,
    local: options.local,
    signal: budget,
    retry: budget ? { ...DEFAULT_RETRY, attempts: Infinity } : DEFAULT_RETRY,
    onRequest: options.verbose ? (r) => log.debug(`${r.method} ${r.path} → ${r.status} (${r.ms} ms)`) : undefined,
    onRetry: (error, waitMs) => log.warn(`${error.message}; trying again in ${(waitMs / 1000).toFixed(1)} s`),
  });
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

const noteOnRecord = (record: RunRecord, plan: Plan) => {
  record.workflowSha256 = sha256Hex(JSON.stringify(plan.workflow));
  if (plan.seed) record.extra = { ...record.extra, seed: plan.seed.seed };
};

type Credentials = { apiKey?: string; endpointId: string };

/** RunPod's local test server needs none; RunPod does, before any network call. */
const credentialsFor = (options: Options): Credentials => (options.local ? { apiKey: undefined, endpointId: "local" } : requireCredentials(options));

/** What a job's run says as it goes: the log itself, or (in a batch) only its warnings and --verbose. */
type Say = Pick<typeof log, "info" | "success" | "start" | "warn">;

interface JobContext {
  options: Options;
  credentials: Credentials;
  record: RunRecord;
  /** Aborted by Ctrl-C or SIGTERM (and, in a batch, for every run at once). */
  parent: AbortSignal;
  output: { dir: string; prefix: string };
  say: Say;
  /** Each status seen; a single run shows them as progress, a batch counts them. */
  onUpdate?: (job: Job) => void;
}

/** Ctrl-C or SIGTERM aborts what runs under the signal (its jobs are then cancelled); a second Ctrl-C exits at once. */
function onInterrupt(): { signal: AbortSignal; release: () => void } {
  const stop = new AbortController();
  const interrupt = () => {
    if (stop.signal.aborted) process.exit(ExitCode.interrupted);
    stop.abort(new CliError("interrupted", ExitCode.interrupted));
  };
  const terminate = () => stop.abort(new CliError("terminated", ExitCode.terminated));
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", terminate);
  return {
    signal: stop.signal,
    release: () => {
      process.off("SIGINT", interrupt);
      process.off("SIGTERM", terminate);
    },
  };
}

async function interruptible(work: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const interrupt = onInterrupt();
  try {
    await work(interrupt.signal);
  } finally {
    interrupt.release();
  }
}

async function submitAndFollow(plan: Plan, context: JobContext): Promise<void> {
  const { options, credentials, record, say } = context;
  await withBudget(context, async (client, signal) => {
    const imageCount = plan.images.length ? ` with ${plan.images.length} image${plan.images.length > 1 ? "s" : ""}` : "";
    say.start(`Submitting ${basename(plan.file)}${imageCount} (${formatBytes(plan.bodyBytes)}) to ${options.local ? `the local test server at ${options.baseUrl}` : `endpoint ${credentials.endpointId}`}`);
    // A submission is never cut short: a job whose answer was on its way when Ctrl-C came would run
    // unseen. It finishes (within its own request deadline), and the job is then cancelled if need be.
    record.job = await clientFor(options, credentials).run(plan.body);
    if (signal.aborted) throw signal.reason;
    say.info(`Job ${record.job.id} ${record.job.status}`);
    if (!options.wait) {
      if (!options.json) process.stdout.write(`${record.job.id}\n`);
      say.info(`Not waiting; follow it with: send-to-runpod wait ${record.job.id}`);
      return;
    }
    await follow(client, context, signal);
  });
}

/**
 * Runs `work` under the job's --timeout budget, within `parent`: either stops every request, and a
 * job still queued or running is cancelled (unless --no-cancel on a timeout).
 */
async function withBudget(context: JobContext, work: (client: RunpodClient, signal: AbortSignal) => Promise<void>): Promise<void> {
  const { options, credentials, record, parent } = context;
  const stop = new AbortController();
  const deadline = setTimeout(() => stop.abort(new CliError(`no result after ${options.timeoutMs / 1000} s (--timeout)`, ExitCode.timeout)), options.timeoutMs);
  const forward = () => stop.abort(parent.reason);
  if (parent.aborted) forward();
  parent.addEventListener("abort", forward, { once: true });
  try {
    await work(clientFor(options, credentials, stop.signal), stop.signal);
  } catch (error) {
    if (!stop.signal.aborted) throw stillRunningHint(error, record.job, options);
    throw await afterAbort(stop.signal.reason, context);
  } finally {
    clearTimeout(deadline);
    parent.removeEventListener("abort", forward);
  }
}

/** Losing touch with a job is not losing the job: say how to pick it up again. */
function stillRunningHint(error: unknown, job: Job | undefined, options: Options): unknown {
  const lostTouch = error instanceof CliError && (error.exitCode === ExitCode.api || error.exitCode === ExitCode.credentials) && error.code !== "job_not_found";
  if (!lostTouch || !job || isTerminal(job.status)) return error;
  const resume = `; job ${job.id} may still be running: resume with send-to-runpod wait ${job.id} --output ${options.output}`;
  return new CliError(`${error.message}${resume}`, error.exitCode, error.detail, error.code);
}

/** Nobody should keep paying for a job they gave up on: cancel it, and say what became of it. */
async function afterAbort(reason: unknown, { options, credentials, record: { job }, say }: JobContext): Promise<unknown> {
  if (!(reason instanceof CliError)) return reason;
  if (!job) return new CliError(`${reason.message} while submitting; the job may or may not have been created`, reason.exitCode);
  if (isTerminal(job.status)) return reason;
  if (reason.exitCode === ExitCode.timeout && !options.cancelOnTimeout) {
    return new CliError(`${reason.message}; job ${job.id} is still ${job.status}: resume with send-to-runpod wait ${job.id} --output ${options.output}`, reason.exitCode);
  }
  say.info(`Cancelling job ${job.id} (it was ${job.status})`);
  try {
    const cancelled = await createClient({ baseUrl: options.baseUrl, ...credentials, local: options.local, requestTimeoutMs: 10_000, retry: { attempts: 3, baseDelayMs: 300, maxDelayMs: 2000 } }).cancel(job.id);
    return new CliError(`${reason.message}; job ${job.id} ${cancelled.status === "CANCELLED" ? "cancelled" : `is ${cancelled.status}`}`, reason.exitCode);
  } catch (error) {
    // RunPod's local test server has no cancel route: nothing is billed there, so it is only worth a warning.
    if (error instanceof CliError && error.code === "not_supported_locally") {
      say.warn(`the local test server cannot cancel job ${job.id}; it may still run there`);
      return reason;
    }
    return new CliError(`${reason.message}; cancelling job ${job.id} failed (${(error as Error).message}), it may still run`, reason.exitCode);
  }
}

/** From a known job to saved files: wait, check, save, report, open. Shared by the default command, `wait` and batches. */
async function follow(client: RunpodClient, context: JobContext, signal: AbortSignal): Promise<void> {
  const { options, record, say, output } = context;
  const progress = context.onUpdate ? undefined : createProgress(process.stderr, { color: !process.env.NO_COLOR && process.env.TERM !== "dumb" });
  try {
    if (!isTerminal(record.job!.status)) {
      record.job = await waitForJob({
        status: () => client.status(record.job!.id),
        // The local test server runs a job on its first status call, and has no long poll.
        statusSync: options.local ? undefined : (waitMs) => client.statusSync(record.job!.id, waitMs),
        pollIntervalMs: options.pollIntervalMs,
        signal,
        onUpdate: (job) => {
          record.job = job;
          context.onUpdate?.(job);
          if (!options.quiet) progress?.update(job);
        },
      });
    }
  } finally {
    progress?.stop();
  }
  const job = record.job!;
  if (job.status !== "COMPLETED") throw jobFailure(job);
  const timing = [job.delayTime !== undefined && `queued ${duration(job.delayTime)}`, job.executionTime !== undefined && `ran ${duration(job.executionTime)}`].filter(Boolean).join(", ");
  say.success(`Job ${job.id} COMPLETED${timing ? ` (${timing})` : ""}`);

  const { items, warnings } = outputItems(job.output, job.id);
  for (const warning of warnings) say.warn(`the worker warns: ${warning}`);
  const fetched = await Promise.all(items.map((item) => fetchOutput(item, options.maxOutputBytes, signal, say)));
  const hash = options.json || Boolean(options.manifest ?? options.resume);
  const { saved, problems } = await saveOutputs(fetched, output.dir, new Date(), options.maxOutputBytes, output.prefix, hash);
  record.saved = saved;
  for (const file of saved) {
    if (!options.json) process.stdout.write(`${file.path}\n`);
    say.info(`Saved ${basename(file.path)} (${formatBytes(file.bytes)})`);
  }
  if (problems.length) throw await unsaved(job, output.dir, saved.length, problems);
  const total = saved.reduce((sum, file) => sum + file.bytes, 0);
  say.success(`${saved.length} file${saved.length > 1 ? "s" : ""} (${formatBytes(total)}) in ${output.dir}`);

  if (options.open && !options.json && !context.onUpdate && process.stdout.isTTY) {
    for (const failure of await openFiles(saved.map((file) => file.path))) say.warn(`could not open ${failure}`);
  }
}

const duration = (ms: number) => (ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : formatElapsed(ms));

/** An output left at a URL (worker-comfyui with S3) is downloaded; a failure is a problem of that output only. */
async function fetchOutput(item: OutputItem, maxBytes: number, signal: AbortSignal, say: Say): Promise<OutputItem> {
  if (item.url === undefined || item.problem) return item;
  try {
    say.info(`Downloading ${new URL(item.url).host}/…${item.filename ? ` (${item.filename})` : ""}`);
    return { ...item, bytes: await download(item.url, { maxBytes, signal }) };
  } catch (error) {
    if (signal.aborted) throw error;
    return { ...item, problem: (error as Error).message };
  }
}

/** Exit 6, with the job's raw answer kept beside the outputs so nothing paid for is lost. */
async function unsaved(job: Job, dir: string, savedCount: number, problems: string[]): Promise<CliError> {
  const kept = await keepRawOutput(dir, job).then(
    (path) => `the raw output is in ${path}`,
    () => "the raw output could not be written either",
  );
  const fetchAgain = `fetch it again with send-to-runpod wait ${job.id} (RunPod keeps results 30 minutes)`;
  return new CliError(`job ${job.id}: saved ${savedCount} of ${savedCount + problems.length} outputs; ${problems.join("; ")}; ${kept}; ${fetchAgain}`, ExitCode.save);
}

// ---- Batches -----------------------------------------------------------------------------------

/** One submission every 10 ms at most: RunPod allows 1000 /run per 10 s, and 429s are better avoided than absorbed. */
const SUBMIT_SPACING_MS = 10;

async function runBatch(options: Options & { workflow: string }, record: RunRecord): Promise<void> {
  const runs = await planBatch(options);
  const skipped = options.resume ? succeededRuns(await Bun.file(options.resume).text().catch(() => "")) : new Set<string>();
  const todo = runs.filter((run) => !skipped.has(`${run.index}:${runKey(run)}`));
  const done = runs.length - todo.length;
  if (options.resume) log.info(`Resuming: ${done} of ${runs.length} runs already succeeded (${options.resume})`);
  const manifest = options.manifest ?? options.resume;
  const credentials = options.dryRun ? undefined : credentialsFor(options);
  record.endpointId = credentials?.endpointId;

  const tally: Tally = { queued: todo.length, running: 0, done: 0, failed: 0 };
  const failures: { run: RunSpec; error: CliError }[] = [];
  const reports: unknown[] = [];
  const started = Date.now();
  const progress = batchProgress(tally, started, options);
  const interrupt = onInterrupt();
  const quiet: Say = { info: log.debug, success: log.debug, start: log.debug, warn: log.warn };
  const encoded = new Map<string, Promise<string>>();
  let nextSubmit = 0;
  const pace = async () => {
    const now = Date.now();
    const at = Math.max(now, nextSubmit);
    nextSubmit = at + SUBMIT_SPACING_MS;
    if (at > now) await Bun.sleep(at - now);
  };

  async function perform(run: RunSpec): Promise<void> {
    const runRecord = newRecord("run");
    runRecord.endpointId = credentials?.endpointId;
    let failure: CliError | undefined;
    tally.queued--;
    tally.running++;
    try {
      const plan = await prepareRequest({
        ...options,
        images: options.eachImage !== undefined ? run.images : [...options.images, ...run.images],
        imagesDirs: options.eachImage !== undefined ? [] : options.imagesDirs,
        sets: [...options.sets, ...run.sets],
        extras: requestExtras(options),
        encoded,
      });
      for (const warning of plan.warnings) log.debug(`run ${run.index}: ${warning}`);
      noteOnRecord(runRecord, plan);
      if (credentials) {
        await pace();
        const output = runOutput(options.output, run, runs.length, options.flat);
        await submitAndFollow(plan, { options, credentials, record: runRecord, parent: interrupt.signal, output, say: quiet, onUpdate: () => progress.draw() });
      }
    } catch (error) {
      failure = error instanceof CliError ? error : new CliError(`unexpected error: ${(error as Error).message}`, ExitCode.jobFailed, (error as Error).stack, "internal");
      if (!interrupt.signal.aborted) failures.push({ run, error: failure });
    } finally {
      tally.running--;
      if (failure) tally.failed++;
      else tally.done++;
      progress.finished(run, runRecord, failure);
      const about = { run: { index: run.index, label: run.label, key: runKey(run) } };
      reports.push({ ...about, ...jsonReport(runRecord, failure) });
      if (manifest && runRecord.job) {
        await appendFile(manifest, `${redact(JSON.stringify({ ...about, ...manifestRecord(runRecord, failure, new Date()) }))}\n`).catch((error: Error) => log.warn(`could not write the manifest ${manifest}: ${error.message}`));
      }
    }
  }

  try {
    let next = 0;
    const lanes = Array.from({ length: Math.min(options.concurrency, todo.length) }, async () => {
      while (next < todo.length && !interrupt.signal.aborted) await perform(todo[next++]!);
    });
    await Promise.all(lanes);
  } finally {
    interrupt.release();
    progress.stop();
    record.extra = { ...record.extra, runs: reports };
  }
  const summary = `${tally.done} of ${todo.length} runs succeeded${done ? ` (${done} skipped: already done)` : ""} in ${duration(Date.now() - started)}`;
  if (interrupt.signal.aborted) {
    const reason = interrupt.signal.reason as CliError;
    throw new CliError(`${reason.message}: ${summary}; the jobs in flight were cancelled, the rest not started${manifest ? `; resume with --resume ${manifest}` : ""}`, reason.exitCode);
  }
  if (failures.length) {
    const named = failures.slice(0, 10).map(({ run, error }) => `\n  • run ${run.index} (${run.label}): ${error.message.split("\n")[0]}`).join("");
    const more = failures.length > 10 ? `\n  • … and ${failures.length - 10} more` : "";
    throw new CliError(`${failures.length} of ${todo.length} runs failed; ${summary}${named}${more}`, ExitCode.jobFailed, undefined, "batch_failed");
  }
  log.success(options.dryRun ? `Dry run: ${todo.length} runs checked, nothing sent` : summary);
}

/** The runs of --batch, --each-image and --repeat, checked before any is sent. */
async function planBatch(options: Options & { workflow: string }): Promise<RunSpec[]> {
  if (options.batchFile && options.eachImage !== undefined) throw usageError("--batch and --each-image do not go together: put the images in the batch file");
  let base: Omit<RunSpec, "index">[] = [{ label: "", sets: [], images: [] }];
  if (options.batchFile) {
    const text = await Bun.file(options.batchFile).text().catch((error) => {
      throw usageError(`cannot read batch file ${options.batchFile}: ${describeFsError(error)}`);
    });
    base = parseBatchFile(text, options.batchFile);
  } else if (options.eachImage !== undefined) {
    const { images } = await collectImages(options.images, options.imagesDirs);
    if (images.length === 0) throw usageError("--each-image needs images: --images or --images-dir");
    base = eachImageRuns(images, (await readWorkflow(options.workflow)).workflow, options.eachImage || undefined);
  }
  return numberRuns(base, options.repeat ?? 1);
}

/** On a terminal, one line of counts; elsewhere, one line per finished run. */
function batchProgress(tally: Tally, started: number, options: Options) {
  const live = process.stderr.isTTY && !options.quiet;
  const draw = () => {
    if (live) process.stderr.write(`\r\x1b[2K${describeTally(tally, Date.now() - started)}`);
  };
  const timer = live ? setInterval(draw, 250) : undefined;
  timer?.unref?.();
  return {
    draw,
    finished(run: RunSpec, record: RunRecord, failure: CliError | undefined) {
      if (live) process.stderr.write("\r\x1b[2K");
      const what = `run ${run.index} (${run.label})`;
      if (failure) log.error(`${what}: ${failure.message.split("\n")[0]}`);
      else if (!live) log.success(`${what}: ${record.saved.length} file${record.saved.length === 1 ? "" : "s"}${record.job ? `, job ${record.job.id}` : ""}`);
      draw();
    },
    stop() {
      clearInterval(timer);
      if (live) process.stderr.write("\r\x1b[2K");
    },
  };
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
