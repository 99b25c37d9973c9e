// RunPod's queue API: run, status, cancel. Deciding (retry or not, which error) is pure;
// `createClient` is the thin part that touches the network.
import { FetchError, ofetch } from "ofetch";
import * as v from "valibot";
import { CliError, ExitCode } from "./errors.ts";

const JobSchema = v.looseObject({
  id: v.string(),
  status: v.string(),
  delayTime: v.optional(v.number()),
  executionTime: v.optional(v.number()),
  output: v.optional(v.unknown()),
  error: v.optional(v.unknown()),
});
export type Job = v.InferOutput<typeof JobSchema>;

const HealthSchema = v.looseObject({
  jobs: v.optional(v.record(v.string(), v.number()), {}),
  workers: v.record(v.string(), v.number()),
});
export type Health = v.InferOutput<typeof HealthSchema>;
const PurgeSchema = v.looseObject({ removed: v.number() });

export type Operation = "run" | "status" | "cancel" | "retry" | "health" | "purge-queue";
/** Safe to send again whatever happened to the first one. */
const IDEMPOTENT: ReadonlySet<Operation> = new Set(["status", "cancel", "health"]);

export type Failure =
  | { kind: "http"; status: number; body: string; retryAfter?: string | null }
  | { kind: "network"; code?: string; message: string }
  | { kind: "timeout" }
  /** A 200 that is not the expected answer (a proxy's page, a half-written body). */
  | { kind: "malformed"; error: CliError };

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}
export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 250, maxDelayMs: 15_000 };
const RUN_ATTEMPTS = 3;

/** Failures after which the request certainly was not acted on, so even /run may be sent again. */
const neverReachedServer = (f: Failure) =>
  (f.kind === "http" && f.status === 429) || (f.kind === "network" && ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN"].includes(f.code ?? ""));

const isTransient = (f: Failure) =>
  f.kind !== "http" || f.status === 408 || f.status === 429 || f.status >= 500;

/** Milliseconds to wait before the next attempt, or undefined to give up. `attempt` counts from 1. */
export function retryDelay(op: Operation, failure: Failure, attempt: number, policy: RetryPolicy, random = Math.random): number | undefined {
  if (attempt >= policy.attempts) return undefined;
  if (!(IDEMPOTENT.has(op) ? isTransient(failure) : neverReachedServer(failure))) return undefined;
  const hinted = failure.kind === "http" ? parseRetryAfter(failure.retryAfter) : undefined;
  if (hinted !== undefined) return Math.min(hinted, policy.maxDelayMs);
  const ceiling = Math.min(policy.baseDelayMs * 2 ** (attempt - 1), policy.maxDelayMs);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Retry-After: delta seconds or an HTTP date. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Math.round(Number(value) * 1000);
  if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} /.test(value.trim())) return undefined;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The most useful text of an error body: {"error"}, {"message"}, {"detail"}, plain text, or nothing. */
export function errorBodyMessage(body: string): string | undefined {
  const text = body.trim();
  if (!text) return undefined;
  try {
    const data = JSON.parse(text) as unknown;
    if (typeof data === "string") return data;
    if (data && typeof data === "object") {
      for (const key of ["error", "message", "detail"] as const) {
        const value = (data as Record<string, unknown>)[key];
        if (typeof value === "string" && value.trim()) return value;
        if (value !== undefined && value !== null && typeof value !== "string") return JSON.stringify(value);
      }
    }
  } catch {
    // not JSON: plain text
  }
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

export interface Target {
  endpointId: string;
  jobId?: string;
  baseUrl: string;
  local?: boolean;
}

/** A failure that will not be retried → the one line and exit code the user sees. */
const DOING: Record<Operation, string> = {
  run: "submitting the job",
  status: "checking job",
  cancel: "cancelling job",
  retry: "retrying job",
  health: "checking the endpoint's health",
  "purge-queue": "purging the queue",
};
/** What may have happened when a request that is not safe to repeat got no clear answer. */
const FATE_UNKNOWN: Partial<Record<Operation, string>> = {
  run: "; the job may or may not have been created, so check the endpoint (send-to-runpod health) before submitting again",
  retry: "; the job may or may not have been queued again: check it with send-to-runpod status",
  "purge-queue": "; the queue may or may not have been purged: check it with send-to-runpod health",
};

export function failureToError(op: Operation, failure: Failure, target: Target): CliError {
  const what = target.jobId ? `${DOING[op]} ${target.jobId}` : DOING[op];
  // 408 too: behind a proxy it can come after the request was taken.
  const unclear = !neverReachedServer(failure) && (failure.kind !== "http" || failure.status >= 500 || failure.status === 408);
  const fate = (unclear && FATE_UNKNOWN[op]) || "";
  if (failure.kind === "malformed") {
    const { message, exitCode, detail } = failure.error;
    return new CliError(`${what}: ${message}${fate}`, exitCode, detail, fate ? `${op === "run" ? "submission" : "request"}_unknown` : failure.error.code);
  }
  if (failure.kind !== "http") {
    const reason = failure.kind === "timeout" ? "no answer within the request deadline" : failure.message;
    return new CliError(`${what} failed: ${reason} (${target.baseUrl})${fate}`, ExitCode.api, undefined, fate ? `${op === "run" ? "submission" : "request"}_unknown` : "network");
  }
  const { status } = failure;
  const said = errorBodyMessage(failure.body);
  const suffix = `HTTP ${status}${said ? `: ${said}` : ""}`;
  if (status === 405) return new CliError(`${what} failed (${suffix}): this server does not take that request`, ExitCode.api, undefined, "method_not_allowed");
  if (status === 401 || status === 403) {
    return new CliError(`RunPod rejected the API key (${suffix}); check RUNPOD_API_KEY or --api-key`, ExitCode.credentials, undefined, "credentials_rejected");
  }
  if (status === 404 && target.local) {
    return op === "run" || op === "status"
      ? new CliError(`nothing answers ${op} at ${target.baseUrl} (${suffix}): --local takes the server's root URL, such as http://localhost:8000`, ExitCode.api, undefined, "endpoint_not_found")
      : new CliError(`RunPod's local test server has no /${op} route (${suffix}): it offers only run, runsync and status`, ExitCode.api, undefined, "not_supported_locally");
  }
  if (status === 404) {
    return target.jobId
      ? new CliError(`job ${target.jobId} no longer exists (${suffix}): it expired (RunPod keeps results 30 minutes after completion) or never existed`, ExitCode.api, undefined, "job_not_found")
      : new CliError(`endpoint "${target.endpointId}" not found at ${target.baseUrl} (${suffix}); check RUNPOD_ENDPOINT_ID`, ExitCode.api, undefined, "endpoint_not_found");
  }
  if (status === 413) return new CliError(`the request is too large for RunPod (${suffix}); /run accepts at most 10 MB`, ExitCode.usage, undefined, "request_too_large");
  return new CliError(`${what} failed (${suffix})${fate}`, ExitCode.api, undefined, fate ? `${op === "run" ? "submission" : "request"}_unknown` : "http_error");
}

export interface RequestLine {
  method: string;
  path: string;
  status: number | string;
  ms: number;
}

export interface ClientOptions extends Target {
  /** Absent only for RunPod's local test server, which checks none. */
  apiKey?: string;
  /**
   * RunPod's local test server (`--rp_serve_api`): routes at the root without an endpoint id,
   * every route POST, and no authentication.
   */
  local?: boolean;
  /** Per request; an upload gets one more second per MB of body. */
  requestTimeoutMs?: number;
  retry?: RetryPolicy;
  /** Aborts every request and retry wait (Ctrl-C, the --timeout deadline). */
  signal?: AbortSignal;
  /** One call per HTTP exchange, for --verbose. The key is never part of it. */
  onRequest?: (line: RequestLine) => void;
  /** Before each wait for another attempt: what went wrong, and how long until the next try. */
  onRetry?: (error: CliError, waitMs: number) => void;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export type RunpodClient = ReturnType<typeof createClient>;

export function createClient(options: ClientOptions) {
  const { baseUrl, endpointId, apiKey, requestTimeoutMs = 30_000, retry = DEFAULT_RETRY, signal, onRequest, onRetry, sleep = abortableSleep } = options;
  const endpointUrl = options.local ? baseUrl : `${baseUrl}/${encodeURIComponent(endpointId)}`;

  async function attempt(method: "GET" | "POST", path: string, body: string | undefined, timeoutExtraMs: number): Promise<{ text?: string; failure?: Failure }> {
    const started = performance.now();
    const line = (status: number | string) => onRequest?.({ method, path: new URL(endpointUrl + path).pathname, status, ms: Math.round(performance.now() - started) });
    // An upload gets a second more per MB; a long poll, the time it may be held.
    const timeout = AbortSignal.timeout(requestTimeoutMs + timeoutExtraMs + Math.floor(Buffer.byteLength(body ?? "") / 1e6) * 1000);
    try {
      const response = await ofetch.raw(endpointUrl + path, {
        method,
        body,
        headers: {
          accept: "application/json",
          ...(apiKey && !options.local && { authorization: `Bearer ${apiKey}` }),
          ...(body !== undefined && { "content-type": "application/json" }),
        },
        responseType: "text",
        retry: 0,
        ignoreResponseError: true,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      line(response.status);
      const text = String(response._data ?? "");
      if (!response.ok) return { failure: { kind: "http", status: response.status, body: text, retryAfter: response.headers.get("retry-after") } };
      return { text };
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      line("no answer");
      if (timeout.aborted) return { failure: { kind: "timeout" } };
      const cause = error instanceof FetchError ? (error.cause as NodeJS.ErrnoException | undefined) : undefined;
      return { failure: { kind: "network", code: cause?.code, message: cause?.message ?? (error as Error).message } };
    }
  }

  async function call<T>(op: Operation, parse: (text: string) => T, path: string, { jobId, payload, timeoutExtraMs = 0 }: { jobId?: string; payload?: string; timeoutExtraMs?: number } = {}): Promise<T> {
    const method = (op === "status" || op === "health") && !options.local ? "GET" : "POST";
    // A submission that cannot get through soon is better reported than held up: fewer tries for /run.
    const policy = op === "run" ? { ...retry, attempts: Math.min(retry.attempts, RUN_ATTEMPTS) } : retry;
    for (let n = 1; ; n++) {
      const answer = await attempt(method, path, payload, timeoutExtraMs);
      let failure = answer.failure;
      if (!failure) {
        try {
          return parse(answer.text!);
        } catch (error) {
          if (!(error instanceof CliError)) throw error;
          failure = { kind: "malformed", error };
        }
      }
      const wait = retryDelay(op, failure, n, policy);
      const error = failureToError(op, failure, { baseUrl, endpointId, jobId, local: options.local });
      if (wait === undefined) throw error;
      onRetry?.(error, wait);
      await sleep(wait, signal);
    }
  }
  const jobPath = (route: string, jobId: string) => `/${route}/${encodeURIComponent(jobId)}`;

  return {
    /** POST /run with the request body already serialized (its size was checked against RunPod's limit). */
    run: (body: string) => call("run", parseJob, "/run", { payload: body }),
    status: (jobId: string) => call("status", parseJob, jobPath("status", jobId), { jobId }),
    /** The long poll, or undefined when this endpoint has no status-sync route (404 or 405 there). */
    statusSync: async (jobId: string, waitMs: number): Promise<Job | undefined> => {
      try {
        return await call("status", parseJob, `${jobPath("status-sync", jobId)}?wait=${waitMs}`, { jobId, timeoutExtraMs: waitMs });
      } catch (error) {
        const missing = ["job_not_found", "method_not_allowed", ...(options.local ? ["endpoint_not_found"] : [])];
        if (error instanceof CliError && missing.includes(error.code)) return undefined;
        throw error;
      }
    },
    cancel: (jobId: string) => call("cancel", parseJob, jobPath("cancel", jobId), { jobId }),
    retry: (jobId: string) => call("retry", parseJob, jobPath("retry", jobId), { jobId, payload: "{}" }),
    health: () => call("health", (text) => parseAnswer(HealthSchema, text, "health"), "/health"),
    purgeQueue: () => call("purge-queue", (text) => parseAnswer(PurgeSchema, text, "purge-queue").removed, "/purge-queue", { payload: "{}" }),
  };
}

function parseAnswer<T extends v.GenericSchema>(schema: T, text: string, route: string): v.InferOutput<T> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new CliError(`RunPod's /${route} answered with something that is not JSON: ${JSON.stringify(text.slice(0, 120))}`, ExitCode.api, undefined, "malformed_response");
  }
  const parsed = v.safeParse(schema, data);
  if (!parsed.success) throw new CliError(`RunPod's /${route} answered in an unknown shape: ${JSON.stringify(data).slice(0, 200)}`, ExitCode.api, undefined, "malformed_response");
  return parsed.output;
}

/** A 200 must carry a job: `id` and `status`. */
export function parseJob(text: string): Job {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new CliError(`RunPod answered with something that is not JSON: ${JSON.stringify(text.slice(0, 120))}`, ExitCode.api, undefined, "malformed_response");
  }
  const parsed = v.safeParse(JobSchema, data);
  if (!parsed.success) throw new CliError(`RunPod answered without a job id and status: ${JSON.stringify(data).slice(0, 200)}`, ExitCode.api, undefined, "malformed_response");
  return parsed.output;
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;
/** https anywhere; plain http only where nothing crosses a network (the emulator, a local server). */
export const isSecureOrLoopback = (url: URL) => url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.test(url.hostname));

export interface DownloadOptions {
  maxBytes: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

const DOWNLOAD_RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 500, maxDelayMs: 4000 };

/** An output a worker left at a URL (S3): https only (http for loopback), never more than `maxBytes`. */
export async function download(url: string, { maxBytes, timeoutMs = 120_000, signal, sleep = abortableSleep }: DownloadOptions): Promise<Uint8Array> {
  const target = URL.canParse(url) ? new URL(url) : undefined;
  if (!target || !isSecureOrLoopback(target)) throw new Error(`will not download ${JSON.stringify(url.slice(0, 80))}: only https URLs (http for localhost)`);
  const timeout = AbortSignal.timeout(timeoutMs);
  const stop = signal ? AbortSignal.any([signal, timeout]) : timeout;
  const where = `${target.host}${target.pathname}`;
  try {
    for (let attempt = 1; ; attempt++) {
      const failure = await fetchOnce(url, where, maxBytes, stop);
      if (failure instanceof Uint8Array) return failure;
      // S3 answers a busy moment with 503 SlowDown: worth another try, as a dropped connection is.
      const wait = retryDelay("status", failure, attempt, DOWNLOAD_RETRY);
      if (wait === undefined) {
        const status = failure.kind === "http" ? failure.status : undefined;
        throw new Error(`downloading ${where} failed: ${status ? `HTTP ${status}${status === 403 ? " (presigned URLs expire after 7 days)" : ""}` : failure.kind === "network" ? failure.message : "no answer"}`);
      }
      await sleep(wait, stop);
    }
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (timeout.aborted) throw new Error(`downloading ${where} took longer than ${timeoutMs / 1000} s`);
    throw error;
  }
}

/** One GET: the bytes, a failure worth describing, or a throw for what no retry mends (too big, a bad redirect). */
async function fetchOnce(url: string, where: string, maxBytes: number, stop: AbortSignal): Promise<Uint8Array | Failure> {
  let response: Awaited<ReturnType<typeof ofetch.raw>>;
  try {
    response = await ofetch.raw(url, { responseType: "stream", retry: 0, ignoreResponseError: true, signal: stop });
  } catch (error) {
    if (stop.aborted) throw error;
    const cause = error instanceof FetchError ? (error.cause as NodeJS.ErrnoException | undefined) : undefined;
    return { kind: "network", code: cause?.code, message: cause?.message ?? (error as Error).message };
  }
  const stream = response._data as ReadableStream<Uint8Array>;
  const refuse = async (why: string) => {
    await stream?.cancel();
    return new Error(why);
  };
  if (!response.ok) {
    await stream?.cancel();
    return { kind: "http", status: response.status, body: "", retryAfter: response.headers.get("retry-after") };
  }
  if (response.redirected && !isSecureOrLoopback(new URL(response.url))) throw await refuse(`${where} redirected to a URL that is not https`);
  const declared = Number(response.headers.get("content-length"));
  if (declared > maxBytes) throw await refuse(`${where} is ${declared} bytes, over --max-output-bytes`);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > maxBytes) throw new Error(`${where} is over --max-output-bytes (${maxBytes} bytes)`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** A job that ended other than COMPLETED → one line; a Python traceback is kept for --verbose. */
export function jobFailure(job: Job): CliError {
  const took = job.executionTime !== undefined ? ` after ${(job.executionTime / 1000).toFixed(1)} s` : "";
  const details = (job.output as { details?: unknown } | undefined)?.details;
  const detailLines = Array.isArray(details) ? details.map(String) : typeof details === "string" ? [details] : [];
  let reason = typeof job.error === "string" ? job.error : job.error === undefined ? "" : JSON.stringify(job.error);
  let traceback: string | undefined;
  try {
    const raised = JSON.parse(reason) as { error_type?: string; error_message?: string; error_traceback?: string };
    if (raised && typeof raised === "object" && (raised.error_type || raised.error_message)) {
      reason = [raised.error_type?.replace(/^<class '(.*)'>$/, "$1"), raised.error_message].filter(Boolean).join(": ");
      traceback = raised.error_traceback;
    }
  } catch {
    // a plain message
  }
  const [said = "", raw] = reason.split(/\. Raw response: /, 2);
  const lines = said.split("\n").map((l) => l.trim()).filter(Boolean);
  // A message ending in ":" says nothing alone: its lines (ComfyUI's node errors) are the point.
  const listed = lines[0]?.endsWith(":") ? lines.slice(1).map((line) => line.replace(/^•\s*/, "")) : [];
  const nodeLines = nodeErrorLines(said);
  const bullets = nodeLines.length ? nodeLines : listed.map((line) => truncate(line, 200) + failureHint(line));
  const headline = bullets.length ? lines[0]!.replace(/:$/, "") : lines[0];
  const firstLine = [headline && headline + failureHint(headline), ...detailLines.map((d) => truncate(d.trim(), 200) + failureHint(d))].filter(Boolean).join(" — ");
  return new CliError(
    `job ${job.id} ended ${job.status}${took}${firstLine ? `: ${firstLine}` : ""}${bullets.map((line) => `\n  • ${line}`).join("")}`,
    ExitCode.jobFailed,
    [lines.slice(1).join("\n"), raw && `raw response: ${raw}`, traceback].filter(Boolean).join("\n") || undefined,
    `job_${job.status.toLowerCase()}`,
  );
}

/** worker-comfyui's "Workflow validation failed" → one line per node, with a hint for the common causes. */
export function nodeErrorLines(reason: string): string[] {
  if (!/^Workflow validation failed/.test(reason)) return [];
  return [...reason.matchAll(/^• Node (\S+) \(errors\): (.*)$/gm)].map(([, id, errors = ""]) => {
    const types = [...errors.matchAll(/'type': '([^']+)'/g)].map((m) => m[1]!);
    const details = [...errors.matchAll(/'details': (?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')/g)].map((m) => m[1] ?? m[2] ?? "").filter(Boolean);
    const classType = reason.split("\n").find((line) => line.startsWith(`• Node ${id} (class_type): `))?.split("): ")[1];
    const text = details.map((d) => truncate(d, 160)).join("; ") || types.join(", ");
    return `node ${id}${classType ? ` (${classType})` : ""}: ${text}${failureHint(text, types)}`;
  });
}

/** What usually fixes it, from the failures users meet most (comfyui-workflows.md). */
function failureHint(text: string, types: readonly string[] = []): string {
  if (types.includes("value_not_in_list") && /\b\w*(ckpt|lora|vae|unet|clip|control_net|model)\w*_name\b/i.test(text)) {
    return " (models belong under /runpod-volume/models/<type>/ on the network volume, not /runpod-volume/<type>/)";
  }
  if (/Invalid image file/.test(text)) return " (send that file with --images, or put it in --input-dir)";
  if (/^Failed to upload one or more input images/.test(text)) return " (worker-comfyui makes no sub-folders: send images under plain names)";
  if (/custom node may not be installed/.test(text)) return " (the worker image lacks that custom node)";
  if (/^Prompt has no outputs/.test(text)) return " (add a SaveImage node)";
  return "";
}

const truncate = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
