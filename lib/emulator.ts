// A local stand-in for a RunPod serverless endpoint (queue API under /v2/{endpointId}/), faithful
// to shared/reference/runpod-serverless-api.md, running the fake worker of emulator-worker.ts (the
// "seed" dialect) or RunPod's worker-comfyui handler of emulator-comfyui.ts. In local mode it is
// RunPod's local test server instead (`python handler.py --rp_serve_api`) running the same handlers.
//
// Layout: pure job transitions (decide) → `Endpoint`, the queue and workers as a discrete-event
// simulation driven by an explicit clock (no timers, no I/O) → `startEmulator`, the HTTP glue with
// one timer → `emulateCommand`, the CLI command. Injected faults are decided in emulator-faults.ts,
// RunPod's rate limits in emulator-rate-limits.ts.
import { closeSync, openSync, writeSync } from "node:fs";
import { defineCommand } from "citty";
import * as v from "valibot";
import { FRESH_COMFY, RECORDED_CHECKPOINTS, runComfyHandler } from "./emulator-comfyui.ts";
import { API_ROUTES, FaultPlan, cutConnection, faultAnswer, parseFaults, tooManyRequests } from "./emulator-faults.ts";
import type { ApiRoute, FaultName, FaultSpec, JobFaults, JobRoute } from "./emulator-faults.ts";
import { RATE_LIMIT_WINDOW_MS, RateLimiter, describeRateLimits, parseRateLimits } from "./emulator-rate-limits.ts";
import type { RateLimits } from "./emulator-rate-limits.ts";
import { isRecord, runHandler } from "./emulator-worker.ts";
import { CliError, ExitCode, usageError } from "./errors.ts";

/** The worker's handler: the original one (`seed`), or RunPod's official worker-comfyui 5.x. */
export type Dialect = "seed" | "worker-comfyui";

export interface EmulatorOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  endpointId: string;
  apiKey: string;
  /** Time a job waits in the queue before a free worker takes it. */
  queueDelayMs: number;
  /** Time a job whose workflow is valid runs (an invalid one fails at once, as validation does). */
  executionMs: number;
  /** Jobs run in parallel on this many workers; the rest wait IN_QUEUE, first in first out. */
  workers: number;
  /** How long finished /run jobs stay readable. */
  retentionMs: number;
  /** How long finished /runsync jobs stay readable. */
  syncRetentionMs: number;
  /** IN_PROGRESS progress reports ({"progress": "k/n"} in `output`) spread over a run. */
  progressUpdates: number;
  /** Replaces RunPod's result limits (10 MB for /run, 20 MB for /runsync): a bigger output leaves the job COMPLETED without `output`. */
  resultLimitBytes: number | undefined;
  /** Failures to inject (emulator-faults.ts); none by default. */
  faults: FaultSpec[];
  /** Seeds the draws of faults given as a rate, so a run repeats exactly. */
  faultSeed: number;
  /** The `Retry-After` of the rate-limit fault's 429s. */
  retryAfterSeconds: number;
  /** Which handler the workers run. */
  dialect: Dialect;
  /** worker-comfyui only: images go to an S3 bucket that the emulator serves itself, and come back as URLs. */
  s3: boolean;
  /** worker-comfyui only: the checkpoints its ComfyUI has (default: those of the worker the fixtures were recorded on). */
  checkpoints: readonly string[];
  /** Be RunPod's local test server (`handler.py --rp_serve_api`) rather than an endpoint. */
  localMode: boolean;
  /** Serve RunPod's long poll `/status-sync/{job}?wait=`; off, the route does not exist (404), as on endpoints without it. */
  statusSync: boolean;
  /**
   * RunPod's rate limits (emulator-rate-limits.ts): requests allowed per route in any window of
   * `rateLimitWindowMs` (a sliding window); more get a 429. None by default; not in local mode.
   */
  rateLimits?: RateLimits;
  /** The rate limits' window: RunPod's 10 s (shorter in tests). */
  rateLimitWindowMs: number;
  /** When set, each job's images are random noise whose PNG bytes add up to about this much (for benchmarks). */
  outputBytes?: number;
  /**
   * A file to append one JSON line to per job transition (`{"t", "event", "id"}`) and per request the
   * rate limits turn away (`{"t", "event": "rate-limited", "route"}`); `t` is the wall time in ms
   * (performance.timeOrigin + performance.now()) at which the change became visible. Not in local mode.
   */
  eventsFile?: string;
}

export interface RecordedRequest {
  method: string;
  /** e.g. "/v2/emulator/status/abc-u1" */
  path: string;
  query: Record<string, string>;
  /** 0 until the answer is sent (a /runsync or /stream still waiting, a slow answer held), or for good when no answer is (reset). */
  status: number;
  /** The parsed JSON body, when the route read one (a request turned away with 401 or 429 is not read). */
  body?: unknown;
  /** The injected faults that hit this request, when any did. */
  faults?: FaultName[];
  /** Set when the rate limits turned the request away (429). */
  rateLimited?: true;
}

export interface Emulator {
  /** Base URL ending in /v2, e.g. http://127.0.0.1:8000/v2; in local mode the server's root, e.g. http://127.0.0.1:8000 */
  url: string;
  endpointId: string;
  apiKey: string;
  /** Every request, in arrival order. Authorization headers are never kept. */
  requests: RecordedRequest[];
  /** How many times each injected fault hit (requests, or jobs for drop-output and expire); 0 for each one given. */
  faultsInjected: Partial<Record<FaultName, number>>;
  /** How many requests the rate limits turned away (not counting the rate-limit fault's). */
  readonly rateLimited: number;
  /** Closes every connection at once (a waiting /runsync or /stream is cut) and clears every timer. */
  stop(): Promise<void>;
}

export type JobStatus = "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED" | "FAILED" | "CANCELLED" | "TIMED_OUT";

/** What status, runsync and webhooks answer. */
export interface JobObject {
  id: string;
  status: JobStatus;
  delayTime?: number;
  executionTime?: number;
  workerId?: string;
  output?: unknown;
  error?: string;
  retries?: number;
}

export const DEFAULT_API_KEY = "emulator-key";

const DEFAULT_OPTIONS: EmulatorOptions = {
  host: "127.0.0.1",
  port: 8000,
  endpointId: "emulator",
  apiKey: DEFAULT_API_KEY,
  queueDelayMs: 300,
  executionMs: 1500,
  workers: 1,
  retentionMs: 30 * 60_000,
  syncRetentionMs: 60_000,
  progressUpdates: 3,
  resultLimitBytes: undefined,
  faults: [],
  faultSeed: 1,
  retryAfterSeconds: 1,
  dialect: "seed",
  s3: false,
  checkpoints: RECORDED_CHECKPOINTS,
  localMode: false,
  statusSync: true,
  rateLimits: undefined,
  rateLimitWindowMs: RATE_LIMIT_WINDOW_MS,
  outputBytes: undefined,
  eventsFile: undefined,
};

const MB = 1024 * 1024;
const BODY_LIMITS = { run: 10 * MB, runsync: 20 * MB } as const;
const RUNSYNC_DEFAULT_WAIT_MS = 90_000;
const STATUS_SYNC_DEFAULT_WAIT_MS = 90_000;
const WAIT_RANGE_MS = [1000, 300_000] as const;
const STREAM_HOLD_MS = 10_000;
const DEFAULT_EXECUTION_TIMEOUT_MS = 600_000;
const DEFAULT_TTL_MS = 24 * 3600_000;
const MAX_POLICY_MS = 7 * 24 * 3600_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

const TERMINAL: ReadonlySet<JobStatus> = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]);
const RETRYABLE: ReadonlySet<JobStatus> = new Set(["FAILED", "TIMED_OUT"]);

interface JobRequest {
  input: Record<string, unknown>;
  webhook?: string;
  policy?: { executionTimeout?: number; ttl?: number };
}

/**
 * What a handler answers: its output (with the sampler steps that drive progress reports, when the
 * handler reports progress), or the job's error and what it returned beside it (kept as `output`).
 */
type WorkerResult = { output: unknown; steps?: number } | { error: string; output?: unknown };
/** A worker's handler. It may keep state from one job to the next, as a worker's ComfyUI keeps its files. */
type WorkerHandler = (jobId: string, input: unknown) => WorkerResult;
/** Starts the handler of a new worker; `workerId` is undefined on the local test server. */
type WorkerFactory = (workerId: string | undefined) => WorkerHandler;

/** One execution of a job on a worker, planned in full when it starts (the handler is synchronous). */
interface Run {
  readonly workerId: string;
  readonly startedAt: number;
  /** When the handler returns or executionTimeout stops it, whichever is first. */
  readonly endsAt: number;
  readonly timesOut: boolean;
  readonly result: WorkerResult;
  /** The result's output as JSON, serialized once: answers splice it in. */
  readonly outputJson: string | undefined;
  /** Its size in bytes, held against the result limit (measured here, so that ending the run costs nothing). */
  readonly outputSize: number;
  readonly progress: readonly { readonly at: number; readonly output: unknown }[];
}

interface Job {
  readonly id: string;
  readonly route: JobRoute;
  readonly input: Record<string, unknown>;
  readonly webhook: string | undefined;
  readonly executionTimeout: number;
  readonly ttl: number;
  readonly submittedAt: number;
  /** Submission, or the last retry: delayTime counts from here. */
  readonly enqueuedAt: number;
  readonly retries: number;
  readonly status: JobStatus;
  readonly run?: Run;
  readonly finishedAt?: number;
  readonly output?: unknown;
  readonly error?: string;
  /** Stream chunks not yet drained by /stream. */
  readonly stream: readonly unknown[];
  /** The injected faults it got when it was created. */
  readonly faults: JobFaults;
  /** Told the job as it ends on its worker: /runsync's waiting request, which must answer it even when the expire fault deletes it at once. */
  readonly onEnd?: (ended: Job) => void;
}

/** A job's transitions, as the events file names them. */
export type JobEvent = "submitted" | "started" | "completed" | "failed" | "timed-out" | "cancelled" | "retried";
/** The transitions of a job ending on its worker (a webhook is sent for these). */
const ENDINGS: ReadonlySet<JobEvent> = new Set(["completed", "failed", "timed-out"]);

interface Timing {
  queueDelayMs: number;
  executionMs: number;
  progressUpdates: number;
  retentionMs: Record<JobRoute, number>;
  resultLimitBytes: Record<JobRoute, number>;
}

// ---- Pure job transitions ------------------------------------------------------------------

function newJob(id: string, route: JobRoute, request: JobRequest, now: number, extras: Pick<Job, "faults" | "onEnd">): Job {
  return {
    ...extras,
    id,
    route,
    input: request.input,
    webhook: request.webhook,
    executionTimeout: request.policy?.executionTimeout ?? DEFAULT_EXECUTION_TIMEOUT_MS,
    ttl: request.policy?.ttl ?? DEFAULT_TTL_MS,
    submittedAt: now,
    enqueuedAt: now,
    retries: 0,
    status: "IN_QUEUE",
    stream: [],
  };
}

function planRun(job: Job, worker: WorkerSlot, startedAt: number, timing: Timing): Run {
  const result = worker.handle(job.id, job.input);
  const outputJson = result.output === undefined ? undefined : JSON.stringify(result.output);
  // A workflow that fails validation fails at once; a valid one "renders" for executionMs.
  const handlerMs = "error" in result ? 0 : timing.executionMs;
  const endsAt = startedAt + Math.min(handlerMs, job.executionTimeout);
  const progress =
    "error" in result || result.steps === undefined ? [] : progressReports(result.steps, timing.progressUpdates, startedAt, handlerMs);
  return {
    workerId: worker.id,
    startedAt,
    endsAt,
    timesOut: handlerMs > job.executionTimeout,
    result,
    outputJson,
    outputSize: Buffer.byteLength(outputJson ?? ""),
    progress: progress.filter((report) => report.at < endsAt),
  };
}

/** `count` reports spread evenly over the run, each saying how far the sampler got. */
function progressReports(steps: number, count: number, startedAt: number, durationMs: number): Run["progress"] {
  return Array.from({ length: count }, (_, i) => {
    const share = (i + 1) / (count + 1);
    const done = Math.max(1, Math.round(steps * share));
    return { at: startedAt + durationMs * share, output: { progress: `${done}/${steps}` } };
  });
}

function startJob(job: Job, run: Run): Job {
  return { ...job, status: "IN_PROGRESS", run };
}

/** The job at `run.endsAt`: the handler's answer, or TIMED_OUT. */
function endRun(job: Job, run: Run, resultLimitBytes: number): Job {
  const ended = { ...job, finishedAt: run.endsAt };
  if (run.timesOut) return { ...ended, status: "TIMED_OUT" };
  if ("error" in run.result) {
    const { error, output } = run.result;
    return output === undefined ? { ...ended, status: "FAILED", error } : { ...ended, status: "FAILED", error, output };
  }
  const output = run.result.output;
  // RunPod drops a result over its size limit and still reports COMPLETED.
  if (job.faults.dropOutput || run.outputSize > resultLimitBytes) return { ...ended, status: "COMPLETED" };
  return { ...ended, status: "COMPLETED", output, stream: [...job.stream, { output }] };
}

function cancelJob(job: Job, now: number): Job {
  return { ...job, status: "CANCELLED", finishedAt: now };
}

function retryJob(job: Job, now: number): Job {
  const { run: _run, finishedAt: _finishedAt, output: _output, error: _error, ...kept } = job;
  return { ...kept, status: "IN_QUEUE", enqueuedAt: now, retries: job.retries + 1, stream: [] };
}

/** When the job is deleted: its ttl (counted from submission, even mid-run), or retention after it ends (none under the expire fault). */
function expiresAt(job: Job, retentionMs: Record<JobRoute, number>): number {
  const ttlEnd = job.submittedAt + job.ttl;
  if (job.finishedAt === undefined) return ttlEnd;
  return Math.min(ttlEnd, job.finishedAt + (job.faults.expire ? 0 : retentionMs[job.route]));
}

function jobObject(job: Job, now: number): JobObject {
  const view: JobObject = { id: job.id, status: job.status };
  const run = job.run;
  if (run) view.delayTime = Math.round(run.startedAt - job.enqueuedAt);
  // Only a handler that returned reports its execution time (RunPod shows none on TIMED_OUT).
  if (run && job.finishedAt !== undefined && (job.status === "COMPLETED" || job.status === "FAILED")) {
    view.executionTime = Math.round(job.finishedAt - run.startedAt);
  }
  if (run) view.workerId = run.workerId;
  // A failed handler's error comes before what it returned beside it (worker-comfyui's details).
  if (job.error !== undefined) view.error = job.error;
  if (job.status === "IN_PROGRESS") {
    const latest = run?.progress.findLast((report) => report.at <= now);
    if (latest) view.output = latest.output;
  } else if (job.output !== undefined) {
    view.output = job.output;
  }
  if (job.retries > 0) view.retries = job.retries;
  return view;
}

/**
 * jobObject as JSON text. A final output is spliced in as its run serialized it, so that answering a
 * job with 20 MB of images does not encode them again each time (`output` is followed only by `retries`).
 */
function jobText(job: Job, now: number): string {
  const view = jobObject(job, now);
  const outputJson = job.status === "IN_PROGRESS" ? undefined : job.run?.outputJson;
  if (view.output === undefined || outputJson === undefined) return JSON.stringify(view);
  const { output: _output, retries, ...head } = view;
  return `${JSON.stringify(head).slice(0, -1)},"output":${outputJson}${retries === undefined ? "" : `,"retries":${retries}`}}`;
}

// ---- The endpoint: queue and workers, simulated on an explicit clock ------------------------

interface WorkerSlot {
  readonly id: string;
  readonly handle: WorkerHandler;
  jobId: string | undefined;
  freeSince: number;
}

interface EndpointEvents {
  /** A job changed, told the moment the change is made: nothing can see it before. */
  changed(job: Job, event: JobEvent): void;
  /** A job was deleted (ttl, retention, purge-queue). */
  deleted(jobId: string): void;
}

type RetryOutcome = { retried: Job } | { refused: Job } | undefined;

/**
 * Every method takes `now` and first replays, in time order, what happened since the last call
 * (starts, ends, expiries), so answers are exact whatever the timer's jitter.
 */
class Endpoint {
  private readonly jobs = new Map<string, Job>();
  private readonly workers: WorkerSlot[];
  private readonly totals = { completed: 0, failed: 0, retried: 0 };

  constructor(
    private readonly timing: Timing,
    workerCount: number,
    now: number,
    newWorker: WorkerFactory,
    private readonly events: EndpointEvents,
  ) {
    this.workers = Array.from({ length: workerCount }, () => {
      const id = workerId();
      return { id, handle: newWorker(id), jobId: undefined, freeSince: now };
    });
  }

  submit(route: JobRoute, request: JobRequest, now: number, extras: Pick<Job, "faults" | "onEnd">): Job {
    this.advance(now);
    const prefix = route === "runsync" ? "sync-" : "";
    const job = newJob(`${prefix}${crypto.randomUUID()}-u1`, route, request, now, extras);
    this.jobs.set(job.id, job);
    this.events.changed(job, "submitted");
    this.advance(now);
    return this.jobs.get(job.id) ?? job;
  }

  find(id: string, now: number): Job | undefined {
    this.advance(now);
    return this.jobs.get(id);
  }

  cancel(id: string, now: number): Job | undefined {
    const job = this.find(id, now);
    if (!job || TERMINAL.has(job.status)) return job;
    this.freeWorkerOf(job, now);
    const cancelled = cancelJob(job, now);
    this.jobs.set(id, cancelled);
    this.events.changed(cancelled, "cancelled");
    this.advance(now);
    return cancelled;
  }

  retry(id: string, now: number): RetryOutcome {
    const job = this.find(id, now);
    if (!job) return undefined;
    if (!RETRYABLE.has(job.status)) return { refused: job };
    const retried = retryJob(job, now);
    this.jobs.set(id, retried);
    this.totals.retried++;
    this.events.changed(retried, "retried");
    this.advance(now);
    return { retried };
  }

  purgeQueue(now: number): number {
    this.advance(now);
    const queued = [...this.jobs.values()].filter((job) => job.status === "IN_QUEUE");
    for (const job of queued) this.delete(job.id);
    return queued.length;
  }

  /** Takes the buffered stream chunks. */
  drainStream(id: string, now: number): { job: Job; chunks: readonly unknown[] } | undefined {
    const job = this.find(id, now);
    if (!job) return undefined;
    this.jobs.set(id, { ...job, stream: [] });
    return { job, chunks: job.stream };
  }

  health(now: number) {
    this.advance(now);
    const count = (status: JobStatus) => [...this.jobs.values()].filter((job) => job.status === status).length;
    const running = this.workers.filter((worker) => worker.jobId !== undefined).length;
    return {
      jobs: {
        completed: this.totals.completed,
        failed: this.totals.failed,
        inProgress: count("IN_PROGRESS"),
        inQueue: count("IN_QUEUE"),
        retried: this.totals.retried,
      },
      workers: { idle: this.workers.length - running, running },
    };
  }

  /** When something next happens on its own, if anything will. */
  nextEventAt(): number | undefined {
    return this.nextEvent()?.at;
  }

  advance(now: number): void {
    for (let event = this.nextEvent(); event && event.at <= now; event = this.nextEvent()) event.apply();
  }

  /** The earliest pending event; on a tie, expiry beats end beats start. */
  private nextEvent(): { at: number; apply: () => void } | undefined {
    let next: { at: number; apply: () => void } | undefined;
    const consider = (at: number, apply: () => void) => {
      if (!next || at < next.at) next = { at, apply };
    };
    for (const job of this.jobs.values()) {
      const expiry = expiresAt(job, this.timing.retentionMs);
      consider(expiry, () => this.expire(job, expiry));
      const run = job.run;
      if (job.status === "IN_PROGRESS" && run) consider(run.endsAt, () => this.end(job, run));
    }
    const start = this.nextStart();
    if (start) consider(start.at, () => this.start(start.job, start.worker, start.at));
    return next;
  }

  /** The oldest queued job on the longest-idle worker, once its queue delay has passed. */
  private nextStart(): { job: Job; worker: WorkerSlot; at: number } | undefined {
    let worker: WorkerSlot | undefined;
    for (const candidate of this.workers) {
      if (candidate.jobId === undefined && (!worker || candidate.freeSince < worker.freeSince)) worker = candidate;
    }
    let job: Job | undefined;
    for (const candidate of this.jobs.values()) {
      if (candidate.status === "IN_QUEUE" && (!job || candidate.enqueuedAt < job.enqueuedAt)) job = candidate;
    }
    if (!worker || !job) return undefined;
    return { job, worker, at: Math.max(job.enqueuedAt + this.timing.queueDelayMs, worker.freeSince) };
  }

  private start(job: Job, worker: WorkerSlot, at: number): void {
    worker.jobId = job.id;
    const started = startJob(job, planRun(job, worker, at, this.timing));
    this.jobs.set(job.id, started);
    this.events.changed(started, "started");
  }

  private end(job: Job, run: Run): void {
    this.freeWorkerOf(job, run.endsAt);
    const ended = endRun(job, run, this.timing.resultLimitBytes[job.route]);
    this.jobs.set(job.id, ended);
    if (ended.status === "COMPLETED") this.totals.completed++;
    else this.totals.failed++;
    this.events.changed(ended, ended.status === "COMPLETED" ? "completed" : ended.status === "TIMED_OUT" ? "timed-out" : "failed");
    job.onEnd?.(ended);
  }

  private expire(job: Job, at: number): void {
    this.freeWorkerOf(job, at);
    this.delete(job.id);
  }

  private delete(id: string): void {
    this.jobs.delete(id);
    this.events.deleted(id);
  }

  private freeWorkerOf(job: Job, at: number): void {
    const worker = this.workers.find((candidate) => candidate.jobId === job.id);
    if (worker) {
      worker.jobId = undefined;
      worker.freeSince = at;
    }
  }
}

/** Looks like RunPod's 14-character worker ids. */
function workerId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from(crypto.getRandomValues(new Uint8Array(14)), (byte) => alphabet[byte % alphabet.length]).join("");
}

// ---- HTTP ------------------------------------------------------------------------------------

/**
 * The clock the endpoint is simulated on, and the events file's: wall time in ms since the epoch,
 * with sub-ms precision, so that a transition's `t` is the moment it became visible.
 */
const wallClock = () => performance.timeOrigin + performance.now();

const policyMs = (name: string) =>
  v.optional(
    v.pipe(
      v.number(`policy.${name} must be a number of milliseconds`),
      v.gtValue(0, `policy.${name} must be more than 0`),
      v.maxValue(MAX_POLICY_MS, `policy.${name} must be at most ${MAX_POLICY_MS} (7 days)`),
    ),
  );

const JobRequestSchema = v.object(
  {
    input: v.custom<Record<string, unknown>>(isRecord, "input is required and must be a JSON object"),
    webhook: v.optional(v.pipe(v.string("webhook must be a URL"), v.url("webhook must be a URL"))),
    policy: v.optional(
      v.object(
        {
          executionTimeout: policyMs("executionTimeout"),
          ttl: policyMs("ttl"),
          lowPriority: v.optional(v.boolean("policy.lowPriority must be true or false")),
        },
        "policy must be a JSON object",
      ),
    ),
  },
  // valibot reports a missing key with the object's message; the body itself is checked before.
  "input is required and must be a JSON object",
);

const json = (body: unknown, status = 200) => Response.json(body, { status });
const jsonText = (text: string) => new Response(text, { headers: { "content-type": "application/json;charset=utf-8" } });
const plainText = (text: string, status: number, headers: Record<string, string> = {}) =>
  new Response(text, { status, headers: { "content-type": "text/plain; charset=utf-8", ...headers } });
// RunPod's router answers unknown paths like Go's default mux.
const pageNotFound = () => plainText("404 page not found", 404);
const jobNotFound = () => json({ error: "request does not exist" }, 404);

/** A `wait` query value in milliseconds: `fallback` when absent, undefined when invalid. */
function readWait(url: URL, fallback: number): number | undefined {
  const raw = url.searchParams.get("wait");
  if (raw === null) return fallback;
  const ms = Number(raw);
  return /^\d+$/.test(raw) && ms >= WAIT_RANGE_MS[0] && ms <= WAIT_RANGE_MS[1] ? ms : undefined;
}
const badWait = () => json({ error: `wait is invalid; must be between ${WAIT_RANGE_MS[0]} and ${WAIT_RANGE_MS[1]}` }, 400);

/** The body's bytes, or undefined once it passes `limit` (read no further). */
async function readBodyWithin(request: Request, limit: number): Promise<Uint8Array | undefined> {
  if (Number(request.headers.get("content-length")) > limit) return undefined;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body ?? []) {
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// ---- RunPod's local test server (runpod-python's rp_fastapi: FastAPI behind uvicorn) ---------------

type LocalRoute = "run" | "runsync" | "status" | "stream";
/** Its routes, at the root, POST only; whether each takes a job id. (No cancel, retry, purge-queue or health.) */
const LOCAL_ROUTES: Record<LocalRoute, boolean> = { run: false, runsync: false, status: true, stream: true };

function matchLocalRoute(path: string): { name: LocalRoute; jobId: string } | undefined {
  const match = /^\/(run|runsync|status|stream)(?:\/([^/]+))?$/.exec(path);
  const name = match?.[1] as LocalRoute | undefined;
  if (!name || LOCAL_ROUTES[name] !== (match?.[2] !== undefined)) return undefined;
  const raw = match?.[2] ?? "";
  try {
    return { name, jobId: decodeURIComponent(raw) };
  } catch {
    return { name, jobId: raw };
  }
}

interface LocalRequest {
  input: Record<string, unknown>;
  webhook: string | undefined;
}

/**
 * The body of /run or /runsync checked as FastAPI checks it against rp_fastapi's `DefaultRequest`
 * dataclass (`input: Dict[str, Any]`, `webhook: Optional[str]`): the request, or pydantic's errors
 * for a 422 (with the body, when it was JSON).
 */
function parseLocalRequest(text: string): { request: LocalRequest; body: unknown } | { errors: unknown[]; body?: unknown } {
  if (text === "") return { errors: [{ type: "missing", loc: ["body"], msg: "Field required", input: null }] };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { errors: [{ type: "json_invalid", loc: ["body", 0], msg: "JSON decode error", input: {}, ctx: { error: "Expecting value" } }] };
  }
  if (!isRecord(body)) {
    const error = { type: "dataclass_type", loc: ["body"], msg: "Input should be a dictionary or an instance of DefaultRequest", input: body };
    return { errors: [{ ...error, ctx: { class_name: "DefaultRequest" } }], body };
  }
  const errors: unknown[] = [];
  if (!("input" in body)) errors.push({ type: "missing", loc: ["body", "input"], msg: "Field required", input: body });
  else if (!isRecord(body.input)) errors.push({ type: "dict_type", loc: ["body", "input"], msg: "Input should be a valid dictionary", input: body.input });
  const webhook = body.webhook ?? undefined;
  if (webhook !== undefined && typeof webhook !== "string") {
    errors.push({ type: "string_type", loc: ["body", "webhook"], msg: "Input should be a valid string", input: webhook });
  }
  if (errors.length > 0) return { errors, body };
  return { request: { input: body.input as Record<string, unknown>, webhook: webhook as string | undefined }, body };
}

// ---- The S3 bucket of --s3 ---------------------------------------------------------------------------

const s3Error = (status: number, code: string, message: string, key?: string) =>
  new Response(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message>` +
      `${key === undefined ? "" : `<Key>${key}</Key>`}<RequestId>${crypto.randomUUID().replaceAll("-", "").slice(0, 16).toUpperCase()}</RequestId></Error>`,
    { status, headers: { "content-type": "application/xml" } },
  );

/**
 * worker-comfyui's S3 upload (runpod's rp_upload with BUCKET_ENDPOINT_URL), with the bucket served by
 * the emulator itself under /s3/: presigned URLs, no auth, GET only. An object lives as long as its
 * job; on the local test server, which keeps no jobs, for `lifetimeMs` after the upload.
 */
class Bucket {
  /** The server's origin, known once it listens. */
  origin = "";
  private readonly objects = new Map<string, { bytes: Uint8Array; jobId: string; until: number }>();
  private readonly secret = crypto.getRandomValues(new Uint8Array(32));

  constructor(private readonly lifetimeMs: number | undefined) {}

  /** rp_upload.upload_image: the key is `<MM-YY>/<job id>/<8 hex><extension>` (the file's own name is dropped); a presigned URL. */
  put(jobId: string, filename: string, bytes: Uint8Array, now: number): string {
    for (const [key, object] of this.objects) if (object.until <= now) this.objects.delete(key);
    const date = new Date(now);
    const bucket = `${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getFullYear() % 100).padStart(2, "0")}`;
    const extension = /\.[^./]*$/.exec(filename)?.[0] ?? "";
    const key = `${bucket}/${jobId}/${crypto.randomUUID().slice(0, 8)}${extension}`;
    this.objects.set(key, { bytes, jobId, until: this.lifetimeMs === undefined ? Infinity : now + this.lifetimeMs });
    const query = new URLSearchParams({ "X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Expires": "604800", "X-Amz-Signature": this.sign(key) });
    return `${this.origin}/s3/${key}?${query}`;
  }

  deleteJob(jobId: string): void {
    for (const [key, object] of this.objects) if (object.jobId === jobId) this.objects.delete(key);
  }

  /** S3's answer to a request for /s3/<key>: the object for a GET with the URL's signature, else S3's XML error. */
  answer(method: string, url: URL, now: number): Response {
    const key = url.pathname.slice("/s3/".length);
    const signature = url.searchParams.get("X-Amz-Signature");
    if (signature === null) return s3Error(403, "AccessDenied", "Access Denied");
    // The URL is signed for GET: any other method, or another signature, does not match it.
    if (method !== "GET" || signature !== this.sign(key)) {
      return s3Error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.");
    }
    const object = this.objects.get(key);
    if (!object || object.until <= now) return s3Error(404, "NoSuchKey", "The specified key does not exist.", key);
    const type = `image/${key.slice(key.lastIndexOf(".") + 1)}`;
    return new Response(object.bytes, { headers: { "content-type": type } });
  }

  private sign(key: string): string {
    return new Bun.CryptoHasher("sha256", this.secret).update(key).digest("hex");
  }
}

/** The workers' handler: a stateless call of the original one, or worker-comfyui with its ComfyUI's files kept per worker. */
function workerFactory(config: EmulatorOptions, bucket: Bucket | undefined): WorkerFactory {
  const { outputBytes } = config;
  if (config.dialect === "seed") return () => (_jobId, input) => runHandler(input, { outputBytes });
  const s3 = bucket && ((file: { jobId: string; filename: string; bytes: Uint8Array }) => bucket.put(file.jobId, file.filename, file.bytes, wallClock()));
  return (workerId) => {
    let state = FRESH_COMFY;
    return (jobId, input) => {
      const run = runComfyHandler(input, state, { jobId, workerId, checkpoints: config.checkpoints, s3, outputBytes });
      state = run.state;
      return run.result;
    };
  };
}

/** The events file could not be opened. */
export class EventsFileError extends Error {}

/** `eventsFile`: JSON lines written synchronously, in order, each stamped with the wall time of its writing. */
class EventLog {
  private fd: number | undefined;

  constructor(path: string) {
    try {
      this.fd = openSync(path, "a");
    } catch (error) {
      throw new EventsFileError(`cannot write the events file ${path}: ${(error as Error).message}`);
    }
  }

  write(entry: { event: JobEvent; id: string } | { event: "rate-limited"; route: ApiRoute }): void {
    if (this.fd === undefined) return;
    // The moment of the change, read as it is written.
    const t = wallClock();
    writeSync(this.fd, `${JSON.stringify({ t, ...entry })}\n`);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

interface Waiter {
  ready: (now: number) => boolean;
  deadline: number;
  resolve: () => void;
}

interface RouteContext {
  request: Request;
  url: URL;
  jobId: string;
  record: RecordedRequest;
  now: number;
}

export function startEmulator(options: Partial<EmulatorOptions> = {}): Emulator {
  const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
  const config: EmulatorOptions = { ...DEFAULT_OPTIONS, ...given };
  if (config.s3 && config.dialect !== "worker-comfyui") throw new TypeError("the s3 option needs the worker-comfyui dialect");
  if (config.localMode && (config.rateLimits || config.eventsFile !== undefined)) {
    throw new TypeError("the rateLimits and eventsFile options are for an endpoint, not localMode");
  }
  if (config.outputBytes !== undefined && !(config.outputBytes > 0 && Number.isFinite(config.outputBytes))) {
    throw new TypeError(`the outputBytes option must be a number of bytes above 0, got ${config.outputBytes}`);
  }
  const timing: Timing = {
    queueDelayMs: config.queueDelayMs,
    executionMs: config.executionMs,
    progressUpdates: config.progressUpdates,
    retentionMs: { run: config.retentionMs, runsync: config.syncRetentionMs },
    resultLimitBytes: {
      run: config.resultLimitBytes ?? BODY_LIMITS.run,
      runsync: config.resultLimitBytes ?? BODY_LIMITS.runsync,
    },
  };
  const requests: RecordedRequest[] = [];
  const faults = new FaultPlan(config.faults, config.faultSeed);
  const limiter = config.rateLimits && new RateLimiter(config.rateLimits, config.rateLimitWindowMs);
  let rateLimited = 0;
  const waiters = new Set<Waiter>();
  const webhookCalls = new Set<AbortController>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopping: Promise<void> | undefined;

  // Opened before anything else, so that a file that cannot be written leaves nothing running.
  const events = config.eventsFile === undefined ? undefined : new EventLog(config.eventsFile);
  const bucket = config.s3 ? new Bucket(config.localMode ? config.retentionMs : undefined) : undefined;
  const newWorker = workerFactory(config, bucket);
  const endpoint = new Endpoint(timing, config.workers, wallClock(), newWorker, {
    changed(job, event) {
      events?.write({ event, id: job.id });
      if (job.webhook && ENDINGS.has(event)) deliverWebhook(job.webhook, jobText(job, wallClock()));
    },
    deleted: (id) => bucket?.deleteJob(id),
  });

  /** Best effort, one attempt (RunPod retries twice, 10 s apart; not emulated; the local server sends `{"output"}` once). */
  function deliverWebhook(url: string, body: string): void {
    const call = new AbortController();
    webhookCalls.add(call);
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      signal: call.signal,
    })
      .then((response) => response.body?.cancel())
      .catch(() => {})
      .finally(() => webhookCalls.delete(call));
  }

  /** Brings the simulation to `now`, answers the waiters that can be answered, and arms the one timer. */
  function sync(now: number): void {
    endpoint.advance(now);
    for (const waiter of waiters) {
      if (stopping || now >= waiter.deadline || waiter.ready(now)) {
        waiters.delete(waiter);
        waiter.resolve();
      }
    }
    clearTimeout(timer);
    timer = undefined;
    if (stopping) return;
    const next = Math.min(endpoint.nextEventAt() ?? Infinity, ...[...waiters].map((waiter) => waiter.deadline));
    // Rounded up: a timer that fired a fraction of a millisecond early would only have to be armed again.
    if (next !== Infinity) timer = setTimeout(() => sync(wallClock()), Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(next - now))));
  }

  function waitUntil(ready: (now: number) => boolean, deadline: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    waiters.add({ ready, deadline, resolve });
    sync(wallClock());
    return promise;
  }

  /** Holds an answer back (the slow fault); stop() releases it at once. */
  const hold = async (ms: number) => {
    if (ms > 0) await waitUntil(() => false, wallClock() + ms);
  };

  const isSettled = (id: string) => (now: number) => {
    const job = endpoint.find(id, now);
    return !job || TERMINAL.has(job.status);
  };

  /**
   * A long poll on the request's job (`?wait=`, `defaultWaitMs` when absent, held at most `maxHoldMs`):
   * 400 for a bad wait, 404 for an unknown job; otherwise `answer` once `ready` holds or the wait runs out.
   */
  async function holdOnJob(
    { url, jobId, now }: RouteContext,
    defaultWaitMs: number,
    maxHoldMs: number,
    ready: (now: number) => boolean,
    answer: (now: number) => Response,
  ): Promise<Response> {
    const wait = readWait(url, defaultWaitMs);
    if (wait === undefined) return badWait();
    if (!endpoint.find(jobId, now)) return jobNotFound();
    await waitUntil(ready, now + Math.min(wait, maxHoldMs));
    return answer(wallClock());
  }

  /** What status answers: the job object, or 404 for a job that does not exist (or no longer does). */
  function jobAnswer(id: string, now: number): Response {
    const job = endpoint.find(id, now);
    return job ? jsonText(jobText(job, now)) : jobNotFound();
  }

  async function readJobRequest(ctx: RouteContext, route: JobRoute): Promise<JobRequest | Response> {
    const limit = BODY_LIMITS[route];
    const bytes = await readBodyWithin(ctx.request, limit);
    if (!bytes) {
      return json({ error: `request body exceeds the ${limit / MB} MB limit of /${route} (${limit} bytes)` }, 413);
    }
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return json({ error: "the request body is not valid JSON" }, 400);
    }
    ctx.record.body = body;
    if (!isRecord(body)) return json({ error: "the request body must be a JSON object" }, 400);
    const parsed = v.safeParse(JobRequestSchema, body);
    return parsed.success ? parsed.output : json({ error: parsed.issues[0].message }, 400);
  }

  type Handler = (ctx: RouteContext) => Response | Promise<Response>;
  const routes: Record<ApiRoute, { methods: readonly string[]; takesJobId: boolean; handle: Handler }> = {
    run: {
      methods: ["POST"],
      takesJobId: false,
      async handle(ctx) {
        const request = await readJobRequest(ctx, "run");
        if (request instanceof Response) return request;
        const job = endpoint.submit("run", request, wallClock(), { faults: faults.forJob("run") });
        return json({ id: job.id, status: "IN_QUEUE" });
      },
    },
    runsync: {
      methods: ["POST"],
      takesJobId: false,
      async handle(ctx) {
        const wait = readWait(ctx.url, RUNSYNC_DEFAULT_WAIT_MS);
        if (wait === undefined) return badWait();
        const request = await readJobRequest(ctx, "runsync");
        if (request instanceof Response) return request;
        const submittedAt = wallClock();
        let ended: Job | undefined;
        const { id } = endpoint.submit("runsync", request, submittedAt, {
          faults: faults.forJob("runsync"),
          onEnd: (job) => (ended = job),
        });
        await waitUntil(isSettled(id), submittedAt + wait);
        const now = wallClock();
        // A job the expire fault deleted as it ended is still this request's answer: RunPod hands the result over first.
        const job = endpoint.find(id, now) ?? ended;
        return job ? jsonText(jobText(job, now)) : jobNotFound();
      },
    },
    status: {
      methods: ["GET", "POST"],
      takesJobId: true,
      handle: ({ jobId, now }) => jobAnswer(jobId, now),
    },
    "status-sync": {
      methods: ["GET", "POST"],
      takesJobId: true,
      // The long poll: the job object once it is terminal, or as it is when `wait` runs out.
      handle: (ctx) => holdOnJob(ctx, STATUS_SYNC_DEFAULT_WAIT_MS, Infinity, isSettled(ctx.jobId), (now) => jobAnswer(ctx.jobId, now)),
    },
    stream: {
      methods: ["GET", "POST"],
      takesJobId: true,
      handle({ jobId, ...ctx }) {
        const hasNews = (at: number) => {
          const job = endpoint.find(jobId, at);
          return !job || job.stream.length > 0 || TERMINAL.has(job.status);
        };
        return holdOnJob({ jobId, ...ctx }, STREAM_HOLD_MS, STREAM_HOLD_MS, hasNews, (now) => {
          const drained = endpoint.drainStream(jobId, now);
          if (!drained) return jobNotFound();
          const { job, chunks } = drained;
          return json({ status: job.status, stream: chunks, ...(job.error === undefined ? {} : { error: job.error }) });
        });
      },
    },
    cancel: {
      methods: ["POST"],
      takesJobId: true,
      handle({ jobId, now }) {
        const job = endpoint.cancel(jobId, now);
        return job ? json({ id: job.id, status: job.status }) : jobNotFound();
      },
    },
    retry: {
      methods: ["POST"],
      takesJobId: true,
      handle({ jobId, now }) {
        const outcome = endpoint.retry(jobId, now);
        if (!outcome) return jobNotFound();
        if ("refused" in outcome) {
          const { status } = outcome.refused;
          return json({ error: `job ${jobId} is ${status}; only FAILED or TIMED_OUT jobs can be retried` }, 400);
        }
        return json({ id: outcome.retried.id, status: outcome.retried.status });
      },
    },
    "purge-queue": {
      methods: ["POST"],
      takesJobId: false,
      handle({ now }) {
        return json({ removed: endpoint.purgeQueue(now), status: "completed" });
      },
    },
    health: {
      methods: ["GET"],
      takesJobId: false,
      handle({ now }) {
        return json(endpoint.health(now));
      },
    },
  };

  /** The route's answer, or what an injected fault makes of it: "reset" when no HTTP answer is to be sent. */
  async function answer(request: Request, url: URL, record: RecordedRequest): Promise<Response | "reset"> {
    if (request.headers.get("authorization") !== `Bearer ${config.apiKey}`) return new Response(null, { status: 401 });
    const match = /^\/v2\/([^/]+)\/([^/]+)(?:\/([^/]+))?$/.exec(url.pathname);
    const name = match?.[1] === config.endpointId ? API_ROUTES.find((known) => known === match[2]) : undefined;
    const jobId = match?.[3];
    const exists = name !== undefined && (name !== "status-sync" || config.statusSync);
    if (!exists || routes[name].takesJobId !== (jobId !== undefined)) return pageNotFound();
    const route = routes[name];
    if (!route.methods.includes(request.method)) {
      return plainText("405 method not allowed", 405, { allow: route.methods.join(", ") });
    }
    const now = wallClock();
    // RunPod's limiter turns a request away before the route (or anything behind the limiter) sees it.
    const retryAfter = limiter?.admit(name, now);
    if (retryAfter !== undefined) {
      record.rateLimited = true;
      rateLimited++;
      events?.write({ event: "rate-limited", route: name });
      return tooManyRequests(retryAfter);
    }
    const ctx: RouteContext = { request, url, jobId: jobId ?? "", record, now };
    return withFaults(name, record, () => route.handle(ctx));
  }

  /** `act` (the route acting and answering) under the injected faults that hit a request of `route`. */
  async function withFaults(route: ApiRoute, record: RecordedRequest, act: () => Response | Promise<Response>): Promise<Response | "reset"> {
    // Decided on arrival, before anything is awaited, so that "the first N requests" follows arrival order.
    const hit = faults.forRequest(route);
    if (!hit) return act();
    record.faults = hit.names;
    const { answer: fault, delayMs } = hit;
    // A rate limiter turns a request away before the route acts on it...
    if (fault?.name === "rate-limit") {
      await hold(delayMs);
      return faultAnswer(fault, config.retryAfterSeconds);
    }
    // ...while the other faults spoil or lose the answer of a route that did act (a /run under flaky
    // or reset has created its job), and slow holds it back.
    const routeAnswer = await act();
    await hold(delayMs);
    return fault ? faultAnswer(fault, config.retryAfterSeconds) : routeAnswer;
  }

  // Local mode: jobs stored by /run, each run (and forgotten) by its first /status.
  const localJobs = new Map<string, LocalRequest>();
  const localWorker = newWorker(undefined);
  let localTurn: Promise<unknown> = Promise.resolve();

  /** The local server runs the handler inside its event loop: while one request runs a job, no other is served. */
  function inTurn(work: () => Promise<Response>): Promise<Response> {
    const turn = localTurn.then(work);
    localTurn = turn.catch(() => {});
    return turn;
  }

  /** Runs a job to its end within the request, as the local server does (the handler takes executionMs when it succeeds). */
  async function runLocally(id: string, { input, webhook }: LocalRequest): Promise<Response> {
    const result = localWorker(id, input);
    // run_job keeps only `error` of a failure: what the handler returned beside it is dropped.
    if ("error" in result) return json({ id, status: "FAILED", error: result.error });
    await hold(config.executionMs);
    if (webhook) deliverWebhook(webhook, JSON.stringify({ output: result.output }));
    return json({ id, status: "COMPLETED", output: result.output });
  }

  const localJobNotFound = (id: string) => json({ id, status: "FAILED", error: "Job ID not found" });

  async function readLocalRequest(ctx: RouteContext): Promise<LocalRequest | Response> {
    const parsed = parseLocalRequest(await ctx.request.text());
    if (parsed.body !== undefined) ctx.record.body = parsed.body;
    return "request" in parsed ? parsed.request : json({ detail: parsed.errors }, 422);
  }

  const localRoutes: Record<LocalRoute, (ctx: RouteContext) => Promise<Response>> = {
    async run(ctx) {
      const request = await readLocalRequest(ctx);
      if (request instanceof Response) return request;
      const id = `test-${crypto.randomUUID()}`;
      localJobs.set(id, request);
      return json({ id, status: "IN_PROGRESS" });
    },
    async runsync(ctx) {
      const request = await readLocalRequest(ctx);
      return request instanceof Response ? request : runLocally(`test-${crypto.randomUUID()}`, request);
    },
    async status({ jobId }) {
      const job = localJobs.get(jobId);
      if (!job) return localJobNotFound(jobId);
      const answered = await runLocally(jobId, job);
      localJobs.delete(jobId);
      return answered;
    },
    async stream({ jobId }) {
      if (!localJobs.has(jobId)) return localJobNotFound(jobId);
      // Only a generator handler streams, and neither handler is one; the job stays stored.
      return json({ id: jobId, status: "FAILED", error: "Stream not supported, handler must be a generator." });
    },
  };

  /** RunPod's local test server: FastAPI's 404, 405 and trailing-slash redirect, no auth. */
  async function localAnswer(request: Request, url: URL, record: RecordedRequest): Promise<Response | "reset"> {
    const route = matchLocalRoute(url.pathname);
    if (!route) {
      // Starlette's redirect_slashes: a path that matches once a trailing slash is dropped (or added) is redirected.
      const other = url.pathname.endsWith("/") ? url.pathname.replace(/\/+$/, "") : `${url.pathname}/`;
      if (url.pathname !== "/" && matchLocalRoute(other)) {
        return new Response(null, { status: 307, headers: { location: `${url.origin}${other}${url.search}` } });
      }
      return json({ detail: "Not Found" }, 404);
    }
    if (request.method !== "POST") return Response.json({ detail: "Method Not Allowed" }, { status: 405, headers: { allow: "POST" } });
    const ctx: RouteContext = { request, url, jobId: route.jobId, record, now: wallClock() };
    return withFaults(route.name, record, () => inTurn(() => localRoutes[route.name](ctx)));
  }

  const server = Bun.serve({
    hostname: config.host,
    port: config.port,
    // Bodies over RunPod's limits must reach `answer`, which rejects them with RunPod's 413.
    maxRequestBodySize: 4 * BODY_LIMITS.runsync,
    async fetch(request, server) {
      // /runsync and /stream may hold a request for minutes; Bun's idle timeout would cut it.
      server.timeout(request, 0);
      const url = new URL(request.url);
      const record: RecordedRequest = {
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        status: 0,
      };
      requests.push(record);
      const response =
        bucket && url.pathname.startsWith("/s3/")
          ? bucket.answer(request.method, url, wallClock())
          : await (config.localMode ? localAnswer : answer)(request, url, record);
      // A connection cut without an answer keeps the status 0 of a request never answered.
      if (response !== "reset") record.status = response.status;
      sync(wallClock());
      return response === "reset" ? cutConnection() : response;
    },
  });

  if (bucket) bucket.origin = server.url.origin;

  return {
    url: config.localMode ? server.url.origin : new URL("v2", server.url).href,
    endpointId: config.endpointId,
    apiKey: config.apiKey,
    requests,
    faultsInjected: faults.injected,
    get rateLimited() {
      return rateLimited;
    },
    stop() {
      stopping ??= (async () => {
        clearTimeout(timer);
        for (const waiter of waiters) waiter.resolve();
        waiters.clear();
        for (const call of webhookCalls) call.abort();
        await server.stop(true);
        events?.close();
      })();
      return stopping;
    },
  };
}

// ---- The `emulate` command ---------------------------------------------------------------------

/** What the benchmark settings change, said once at start-up (nothing when none is given). */
function settingLines(options: Partial<EmulatorOptions>): string[] {
  const lines: string[] = [];
  if (options.statusSync === false) lines.push("No status-sync route (404): clients must poll /status");
  if (options.rateLimits) lines.push(`Rate limits per 10 s: ${describeRateLimits(options.rateLimits)}`);
  const { outputBytes, resultLimitBytes } = options;
  if (outputBytes !== undefined) {
    lines.push(`Each job's images take about ${outputBytes} bytes (random noise)`);
    // Base64 takes 4 bytes for 3: the result RunPod weighs is that much bigger than the images.
    const limit = resultLimitBytes ?? BODY_LIMITS.run;
    if ((outputBytes * 4) / 3 > limit) {
      lines.push(`Note: as base64 that is over the result limit of ${limit} bytes, so /run jobs end COMPLETED without output; raise it with --result-limit`);
    }
  }
  if (resultLimitBytes !== undefined) lines.push(`Results over ${resultLimitBytes} bytes are dropped (the job ends COMPLETED without output)`);
  if (options.eventsFile !== undefined) lines.push(`Appending job events to ${options.eventsFile}`);
  return lines;
}

const secondsArg = (flag: string) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.nonEmpty(`--${flag} must be a number of seconds`),
    v.transform(Number),
    v.number(`--${flag} must be a number of seconds`),
    v.finite(`--${flag} must be a number of seconds`),
    v.minValue(0, `--${flag} must be 0 or more`),
    v.transform((seconds) => seconds * 1000),
  );

const integerArg = (flag: string, min: number, max: number) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^\d+$/, `--${flag} must be a whole number from ${min} to ${max}`),
    v.transform(Number),
    v.minValue(min, `--${flag} must be a whole number from ${min} to ${max}`),
    v.maxValue(max, `--${flag} must be a whole number from ${min} to ${max}`),
  );

const SIZE_UNITS: Record<string, number> = { "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9 };
const MAX_SIZE = 1e9;

/** A size in bytes with decimal units: `500000`, `1MB`, `1.5 mb`, `2GB` (1 MB = 1,000,000 bytes). */
const sizeArg = (flag: string) => {
  const message = `--${flag} must be a size from 1 byte to 1GB, such as 1MB, 20MB or 500000 (bytes; 1MB = 1000000)`;
  return v.optional(
    v.pipe(
      v.string(),
      v.trim(),
      v.regex(/^\d+(?:\.\d+)?\s*(?:b|kb|mb|gb)?$/i, message),
      v.transform((text) => {
        const [, amount = "", unit = ""] = /^([\d.]+)\s*(\w*)$/.exec(text) ?? [];
        return Math.round(Number(amount) * (SIZE_UNITS[unit.toLowerCase()] ?? Number.NaN));
      }),
      v.minValue(1, message),
      v.maxValue(MAX_SIZE, message),
    ),
  );
};

const EmulateArgsSchema = v.object({
  host: v.pipe(v.string(), v.trim(), v.nonEmpty("--host must not be empty")),
  port: integerArg("port", 0, 65535),
  endpointId: v.pipe(
    v.string(),
    v.regex(/^[A-Za-z0-9_-]+$/, "--endpoint-id may only hold letters, digits, '-' and '_'"),
  ),
  apiKey: v.pipe(v.string(), v.nonEmpty("--api-key must not be empty")),
  queueDelayMs: secondsArg("queue-delay"),
  executionMs: secondsArg("execution-time"),
  workers: integerArg("workers", 1, 64),
  faultSeed: integerArg("fault-seed", 0, 2 ** 32 - 1),
  dialect: v.picklist(["seed", "worker-comfyui"], "--dialect must be seed or worker-comfyui"),
  s3: v.boolean(),
  localMode: v.boolean(),
  statusSync: v.boolean(),
  outputBytes: sizeArg("output-bytes"),
  resultLimitBytes: sizeArg("result-limit"),
  eventsFile: v.optional(v.pipe(v.string(), v.nonEmpty("--events needs a file name"))),
});

export const emulateCommand = defineCommand({
  meta: {
    name: "emulate",
    description: "run a local emulator of a RunPod serverless endpoint (to try the CLI without an account)",
  },
  args: {
    host: { type: "string", valueHint: "address", description: "Interface to listen on", default: "127.0.0.1" },
    port: { type: "string", valueHint: "port", description: "Port to listen on (0 picks a free one)", default: "8000" },
    "endpoint-id": {
      type: "string",
      valueHint: "id",
      description: "Endpoint id expected in request paths",
      default: "emulator",
    },
    "api-key": {
      type: "string",
      valueHint: "key",
      description: `API key clients must send (default: $RUNPOD_API_KEY if set, else ${DEFAULT_API_KEY})`,
    },
    "queue-delay": {
      type: "string",
      valueHint: "seconds",
      description: "Time a job waits in the queue before it starts",
      default: "0.3",
    },
    "execution-time": { type: "string", valueHint: "seconds", description: "Time a job runs", default: "1.5" },
    workers: {
      type: "string",
      valueHint: "n",
      description: "Jobs run at the same time; more wait in the queue",
      default: "1",
    },
    faults: {
      type: "string",
      valueHint: "list",
      description: "Failures to inject: NAME[@ROUTE][=AMOUNT],... e.g. rate-limit=3,flaky@status=2,drop-output",
    },
    "fault-seed": {
      type: "string",
      valueHint: "n",
      description: "Seed of the random draws of faults given as a rate (P%), so a run repeats exactly",
      default: "1",
    },
    dialect: {
      type: "string",
      valueHint: "seed|worker-comfyui",
      description: "The worker's handler: the original one (seed), or RunPod's official worker-comfyui 5.x",
      default: "seed",
    },
    s3: {
      type: "boolean",
      description: "worker-comfyui: images go to an S3 bucket served by the emulator and come back as URLs",
    },
    "local-mode": {
      type: "boolean",
      description: "Be RunPod's local test server (handler.py --rp_serve_api): routes at the root, POST only, no auth",
    },
    "no-status-sync": {
      type: "boolean",
      description: "No long-poll route /status-sync (404), as on endpoints without it: clients must poll /status",
    },
    "rate-limits": {
      type: "string",
      valueHint: "route=n,...",
      description: "RunPod's rate limits per route per 10 s, 429 beyond; the flag alone: RunPod's numbers; ROUTE=N items replace some",
    },
    "output-bytes": {
      type: "string",
      valueHint: "size",
      description: "Each job's images are random noise taking about this many bytes in all (1MB, 20MB; 1MB = 1000000)",
    },
    "result-limit": {
      type: "string",
      valueHint: "size",
      description: "Drop results larger than this as JSON, the job COMPLETED without output (default RunPod's 10 MiB, 20 MiB for /runsync)",
    },
    events: {
      type: "string",
      valueHint: "file",
      description: "Append a JSON line per job transition and per rate-limited request: {t (ms since the epoch), event, id|route}",
    },
  },
  async run({ args }) {
    const envKey = process.env.RUNPOD_API_KEY || undefined;
    const keySource = args["api-key"] !== undefined ? "flag" : envKey !== undefined ? "env" : "default";
    const parsed = v.safeParse(EmulateArgsSchema, {
      host: args.host,
      port: args.port,
      endpointId: args["endpoint-id"],
      apiKey: args["api-key"] ?? envKey ?? DEFAULT_API_KEY,
      queueDelayMs: args["queue-delay"],
      executionMs: args["execution-time"],
      workers: args.workers,
      faultSeed: args["fault-seed"],
      dialect: args.dialect,
      s3: args.s3 === true,
      localMode: args["local-mode"] === true,
      // citty reads --no-status-sync as status-sync=false; send-to-runpod's own parser as no-status-sync=true.
      statusSync: args["no-status-sync"] !== true && (args as Record<string, unknown>)["status-sync"] !== false,
      outputBytes: args["output-bytes"],
      resultLimitBytes: args["result-limit"],
      eventsFile: args.events,
    });
    if (!parsed.success) throw usageError(parsed.issues[0].message);
    const rateLimitSpec = args["rate-limits"];
    const options = {
      ...parsed.output,
      faults: parseFaults(args.faults ?? ""),
      rateLimits: rateLimitSpec === undefined ? undefined : parseRateLimits(rateLimitSpec),
    };
    if (options.s3 && options.dialect !== "worker-comfyui") {
      throw usageError("--s3 needs --dialect worker-comfyui (the original handler returns base64 only)");
    }
    if (options.localMode && (options.rateLimits || options.eventsFile !== undefined)) {
      const flag = options.rateLimits ? "--rate-limits" : "--events";
      throw usageError(`${flag} is for an emulated endpoint, not --local-mode (the local test server has no queue and no rate limits)`);
    }

    let emulator: Emulator;
    try {
      emulator = startEmulator(options);
    } catch (error) {
      if (error instanceof EventsFileError) throw usageError(error.message);
      const inUse = (error as { code?: string }).code === "EADDRINUSE";
      const reason = inUse ? "the port is in use" : error instanceof Error ? error.message : String(error);
      throw new CliError(`cannot listen on ${options.host}:${options.port}: ${reason}`, ExitCode.usage);
    }
    const plural = options.workers === 1 ? "" : "s";
    const comfyui = options.dialect === "worker-comfyui";
    const handler = comfyui ? `, worker-comfyui handler${options.s3 ? " with S3 uploads" : ""}` : "";
    process.stderr.write(
      options.localMode
        ? `RunPod local test server emulator on ${emulator.url}${handler}; Ctrl-C stops it\n`
        : `RunPod emulator on ${emulator.url} — endpoint ${emulator.endpointId}, ${options.workers} worker${plural}${handler}; Ctrl-C stops it\n`,
    );
    if (options.faults.length > 0) process.stderr.write(`Injecting faults: ${args.faults?.trim()} (seed ${options.faultSeed})\n`);
    for (const line of settingLines(options)) process.stderr.write(`${line}\n`);
    if (options.localMode) {
      // No endpoint id, no key: the client is told where the server is instead.
      process.stdout.write(`Pass --local ${emulator.url}${comfyui ? " --dialect worker-comfyui" : ""} to send-to-runpod\n`);
    } else {
      process.stdout.write(`export RUNPOD_ENDPOINT_BASE_URL=${emulator.url}\nexport RUNPOD_ENDPOINT_ID=${emulator.endpointId}\n`);
      // Never echo a key that came from the user: only the public built-in one is printed.
      if (keySource === "default") process.stdout.write(`export RUNPOD_API_KEY=${DEFAULT_API_KEY}\n`);
      else process.stderr.write(`Clients must send the API key given in ${keySource === "flag" ? "--api-key" : "RUNPOD_API_KEY"}\n`);
    }

    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        resolve();
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    await emulator.stop();
  },
});
