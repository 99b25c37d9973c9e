// Running jobs: one from its plan to saved files (submit, wait, save, open) under the --timeout
// budget and Ctrl-C, and a batch of them in flight at once. The doing side of the default command
// and `wait`; the deciding is in args, io, workflow, api, poll, save and batch.
import { appendFile } from "node:fs/promises";
import { basename } from "node:path";
import { createClient, DEFAULT_RETRY, download, type Job, jobFailure, type RunpodClient } from "./api.ts";
import { type Options, requestExtras, requireCredentials } from "./args.ts";
import { describeTally, eachImageRuns, numberRuns, parseBatchFile, type RunSpec, runKey, runOutput, succeededRuns, type Tally } from "./batch.ts";
import { CliError, ExitCode, usageError } from "./errors.ts";
import { collectImages, describeFsError, formatBytes, type Plan, prepareRequest, readWorkflow } from "./io.ts";
import { createProgress, formatElapsed, isTerminal, waitForJob } from "./poll.ts";
import { jsonReport, log, manifestRecord, newRecord, redact, type RunRecord } from "./report.ts";
import { keepRawOutput, openFiles, type OutputItem, outputItems, saveOutputs, sha256Hex } from "./save.ts";

/**
 * A client whose requests all stop when `budget` aborts. Under a budget, transient failures are
 * retried until it runs out: an API outage shorter than --timeout must not cost the job.
 */
export function clientFor(options: Options, credentials: Credentials, budget?: AbortSignal): RunpodClient {
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

export const noteOnRecord = (record: RunRecord, plan: Plan) => {
  record.workflowSha256 = sha256Hex(JSON.stringify(plan.workflow));
  if (plan.seed) record.extra = { ...record.extra, seed: plan.seed.seed };
};

export type Credentials = { apiKey?: string; endpointId: string };

/** RunPod's local test server needs none; RunPod does, before any network call. */
export const credentialsFor = (options: Options): Credentials => (options.local ? { apiKey: undefined, endpointId: "local" } : requireCredentials(options));

/** What a job's run says as it goes: the log itself, or (in a batch) only its warnings and --verbose. */
export type Say = Pick<typeof log, "info" | "success" | "start" | "warn">;

export interface JobContext {
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

export async function interruptible(work: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const interrupt = onInterrupt();
  try {
    await work(interrupt.signal);
  } finally {
    interrupt.release();
  }
}

export async function submitAndFollow(plan: Plan, context: JobContext): Promise<void> {
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
export async function withBudget(context: JobContext, work: (client: RunpodClient, signal: AbortSignal) => Promise<void>): Promise<void> {
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
export async function follow(client: RunpodClient, context: JobContext, signal: AbortSignal): Promise<void> {
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

export async function runBatch(options: Options & { workflow: string }, record: RunRecord): Promise<void> {
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

