// The bench's harness: child processes (each one tracked, so all can be killed at the end), the
// emulator in its own process, a counting proxy, statistics, and the markdown table.
import type { Subprocess } from "bun";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..");
export const BINARY = join(ROOT, "dist", "send-to-runpod");
export const PEER = join(import.meta.dir, "baseline", "send_to_runpod.py");
export const WORKFLOWS = join(ROOT, "workflows");
/** Both clients wait this long between status checks (the default of both). */
export const POLL_INTERVAL_S = 2;

/** A feature this build does not have yet (an unknown flag): its row says "n/a (reason)". */
export class Unsupported extends Error {}

/** Wall-clock time in ms, comparable across processes: what the emulator's event log uses too. */
export const epochNow = () => performance.timeOrigin + performance.now();

/** Lets long steps say what they do; on stderr, so stdout is only the report. */
export const progress = (line: string) => process.stderr.write(`· ${line}\n`);

// ---- Child processes -------------------------------------------------------------------------

const live = new Set<Subprocess>();

/** SIGTERM to every child still running, then SIGKILL to those still there after a grace period. */
export async function killAll(graceMs = 2000): Promise<void> {
  const children = [...live];
  for (const child of children) child.kill("SIGTERM");
  const timer = setTimeout(() => children.forEach((child) => child.exitCode === null && child.kill("SIGKILL")), graceMs);
  await Promise.allSettled(children.map((child) => child.exited));
  clearTimeout(timer);
}

export interface RunResult {
  code: number;
  /** Spawn to exit, as seen by this process. */
  wallMs: number;
  /** epochNow() when the exit was seen. */
  exitAt: number;
  stdout: string;
  stderr: string;
  /** Peak resident memory of the process (Bun gives getrusage's ru_maxrss in bytes). */
  maxRssBytes: number | undefined;
}

export interface SpawnOptions {
  cwd: string;
  env?: Record<string, string>;
  /** A child still running then is killed and the run fails: the suite never hangs. */
  timeoutMs?: number;
}

/** This process's environment without the user's RunPod settings, which must not leak into a measurement. */
function childEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(RUNPOD_|COMFY_ORG_API_KEY$)/.test(name)));
  return { ...env, NO_COLOR: "1", ...extra };
}

/** Runs a command to its end; stdout and stderr are collected (never left to fill a pipe). */
export async function run(cmd: string[], { cwd, env, timeoutMs = 120_000 }: SpawnOptions): Promise<RunResult> {
  const started = performance.now();
  const child = Bun.spawn(cmd, { cwd, env: childEnv(env), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  live.add(child);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  try {
    const stdout = new Response(child.stdout).text();
    const stderr = new Response(child.stderr).text();
    const code = await child.exited;
    const exitAt = epochNow();
    const wallMs = performance.now() - started;
    if (timedOut) throw new Error(`${basename(cmd[0]!)} ${cmd[1] ?? ""} still running after ${timeoutMs / 1000} s: killed`);
    return { code, wallMs, exitAt, stdout: await stdout, stderr: await stderr, maxRssBytes: child.resourceUsage()?.maxRSS };
  } finally {
    clearTimeout(timer);
    live.delete(child);
  }
}

/** The last meaningful line a child wrote on stderr: its error message. */
export const lastLine = (text: string) =>
  text
    .split("\n")
    .map((line) => line.replace(/^[✖⚠ℹ✔›]\s*/u, "").trim())
    .filter(Boolean)
    .at(-1) ?? "";

/** Exit 2 with "unknown option" is a feature this build lacks; any other failure is a failure. */
export function checkExit(result: RunResult, what: string): RunResult {
  if (result.code === 0) return result;
  const message = lastLine(result.stderr);
  if (result.code === 2 && /unknown (option|argument|command)/i.test(result.stderr)) throw new Unsupported(`${what}: ${message}`);
  throw new Error(`${what} exited ${result.code}: ${message}`);
}

// ---- The emulator, in its own process ----------------------------------------------------------

export interface EmulatorEvent {
  t: number;
  event: string;
  id?: string;
  [key: string]: unknown;
}

export interface Emulator {
  /** What a client needs: RUNPOD_ENDPOINT_BASE_URL, RUNPOD_ENDPOINT_ID, RUNPOD_API_KEY. */
  env: Record<string, string>;
  baseUrl: string;
  /** Every line of the --events log so far (empty without one). */
  events(): EmulatorEvent[];
  stop(): Promise<void>;
}

let emulatorCount = 0;

/**
 * `send-to-runpod emulate --port 0 FLAGS`, run in `dir`, ready once its `export` lines are out. With
 * `events`, it also gets `--events FILE` (in `dir`). A flag it does not know makes it exit 2: Unsupported.
 */
export async function startEmulator(flags: string[], { dir, events = false }: { dir: string; events?: boolean }): Promise<Emulator> {
  const eventsFile = events ? join(dir, `events-${process.pid}-${++emulatorCount}.jsonl`) : undefined;
  if (eventsFile) rmSync(eventsFile, { force: true }); // the emulator appends
  // The given flags last, so that one whose value is optional (--rate-limits) may end the line bare.
  const cmd = [BINARY, "emulate", "--port", "0", ...(eventsFile ? ["--events", eventsFile] : []), ...flags];
  const child = Bun.spawn(cmd, { cwd: dir, env: childEnv(), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  live.add(child);
  let stderr = "";
  const stderrDrained = (async () => {
    for await (const chunk of child.stderr) stderr = (stderr + new TextDecoder().decode(chunk)).slice(-4000);
  })();
  const env: Record<string, string> = {};
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 15_000);
  try {
    while (Object.keys(env).length < 3) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      for (const match of text.matchAll(/^export (\w+)=(.*)$/gm)) env[match[1]!] = match[2]!;
    }
  } finally {
    clearTimeout(deadline);
  }
  if (Object.keys(env).length < 3) {
    const code = await child.exited;
    await stderrDrained;
    live.delete(child);
    const message = `emulate ${flags.join(" ")}: ${lastLine(stderr) || `exited ${code}`}`;
    throw code === 2 && /unknown option/i.test(stderr) ? new Unsupported(message) : new Error(message);
  }
  // Nothing more is expected on stdout; keep draining it so the emulator can never block on it.
  void (async () => {
    while (!(await reader.read()).done);
  })();
  return {
    env,
    baseUrl: env.RUNPOD_ENDPOINT_BASE_URL!,
    events: () => (eventsFile ? readEvents(eventsFile) : []),
    stop: async () => {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
      await child.exited;
      clearTimeout(timer);
      live.delete(child);
    },
  };
}

function readEvents(file: string): EmulatorEvent[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.trim())
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as EmulatorEvent];
      } catch {
        return []; // a line still being written
      }
    });
}

/** The moment the emulator marked this job COMPLETED; the log is re-read briefly in case its line lags. */
export async function completedAt(emulator: Emulator, jobId: string): Promise<number> {
  for (let tries = 0; tries < 20; tries++) {
    const event = emulator.events().find((e) => e.event === "completed" && e.id === jobId);
    if (event) return event.t;
    await Bun.sleep(25);
  }
  throw new Error(`no "completed" event for job ${jobId} in the emulator's event log`);
}

// ---- A counting proxy --------------------------------------------------------------------------

export interface Proxy {
  /** Client settings pointing at the proxy instead of the emulator. */
  env: Record<string, string>;
  /** Requests per route ("run", "status", "status-sync", …) and, per route, per HTTP status. */
  counts: Map<string, number>;
  answers: Map<string, number[]>;
  /** Job ids seen in request paths, in order. */
  jobIds: string[];
  reset(): void;
  stop(): void;
}

const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"];

/** A loopback proxy (Bun.serve, port 0) in front of an emulator: forwards every request unchanged and counts them by route. */
export function startProxy(emulator: Emulator): Proxy {
  const target = new URL(emulator.baseUrl);
  const counts = new Map<string, number>();
  const answers = new Map<string, number[]>();
  const jobIds: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      const url = new URL(request.url);
      // /v2/{endpoint}/{route}/{id}
      const [, , , route = "?", id] = url.pathname.split("/");
      counts.set(route, (counts.get(route) ?? 0) + 1);
      if (id && !jobIds.includes(id)) jobIds.push(id);
      const headers = new Headers(request.headers);
      for (const name of HOP_BY_HOP) headers.delete(name);
      const upstream = await fetch(`${target.origin}${url.pathname}${url.search}`, {
        method: request.method,
        headers,
        body: request.method === "GET" || request.method === "HEAD" ? undefined : await request.arrayBuffer(),
        redirect: "manual",
      });
      answers.set(route, [...(answers.get(route) ?? []), upstream.status]);
      const answerHeaders = new Headers(upstream.headers);
      for (const name of HOP_BY_HOP) answerHeaders.delete(name);
      return new Response(upstream.body, { status: upstream.status, headers: answerHeaders });
    },
  });
  return {
    env: { ...emulator.env, RUNPOD_ENDPOINT_BASE_URL: `http://127.0.0.1:${server.port}${target.pathname}` },
    counts,
    answers,
    jobIds,
    reset() {
      counts.clear();
      answers.clear();
      jobIds.length = 0;
    },
    stop: () => void server.stop(true),
  };
}

// ---- Statistics and formatting -----------------------------------------------------------------

export function median(values: number[]): number {
  if (values.length === 0) throw new Error("median of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function formatMs(ms: number): string {
  if (Math.abs(ms) < 10) return `${ms.toFixed(1)} ms`;
  if (Math.abs(ms) < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export const MiB = 1024 * 1024;
export const formatBytes = (bytes: number) => (bytes >= MiB ? `${(bytes / MiB).toFixed(1)} MiB` : `${Math.round(bytes / 1024)} KiB`);
export const formatCount = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(1));

export function formatRatio(ours: number, peer: number): string {
  if (peer === 0) return ours === 0 ? "1×" : "—";
  const r = ours / peer;
  return `${r >= 10 ? r.toFixed(0) : r.toPrecision(2)}×`;
}

// ---- Outcomes and the table ----------------------------------------------------------------------

/** A measurement, or why there is none: "n/a (…)" for a missing feature, "failed (…)" otherwise. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; text: string };

export async function attempt<T>(measure: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await measure() };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, text: error instanceof Unsupported ? `n/a (${message})` : `failed (${message})` };
  }
}

export const map = <T, U>(outcome: Outcome<T>, f: (value: T) => U): Outcome<U> => (outcome.ok ? { ok: true, value: f(outcome.value) } : outcome);

/** The median of one figure of each sample. */
export const medianOf = <T>(samples: Outcome<T[]>, figure: (sample: T) => number): Outcome<number> =>
  map(samples, (list) => median(list.map(figure)));

/**
 * Each sampler `runs` times, after `warmup` rounds that are not kept, interleaved so that any drift
 * of the machine hits all alike. A sampler that fails is dropped, and its outcome is that failure.
 */
export async function sample<K extends string, T>(runs: number, samplers: Record<K, () => Promise<T>>, warmup = 0): Promise<Record<K, Outcome<T[]>>> {
  const keys = Object.keys(samplers) as K[];
  const results = Object.fromEntries(keys.map((key) => [key, { ok: true, value: [] as T[] }])) as Record<K, Outcome<T[]>>;
  for (let round = -warmup; round < runs; round++) {
    for (const key of keys) {
      const kept = results[key];
      if (!kept.ok) continue;
      const taken = await attempt(samplers[key]);
      if (!taken.ok) results[key] = taken;
      else if (round >= 0) kept.value.push(taken.value);
    }
  }
  return results;
}

export interface Row {
  scenario: string;
  measure: string;
  ours: string;
  peer: string;
  ratio: string;
  runs: string;
}

/** A row comparing two numbers; the ratio is ours ÷ peer, both measured in this run. */
export function compareRow(
  scenario: string,
  measure: string,
  ours: Outcome<number>,
  peer: Outcome<number> | undefined,
  format: (value: number) => string,
  runs: string,
): Row {
  const cell = (o: Outcome<number> | undefined) => (o === undefined ? "—" : o.ok ? format(o.value) : o.text);
  return {
    scenario,
    measure,
    ours: cell(ours),
    peer: cell(peer),
    ratio: ours.ok && peer?.ok ? formatRatio(ours.value, peer.value) : "—",
    runs,
  };
}

export function renderTable(rows: Row[]): string {
  const escape = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");
  const header = ["scenario", "measure", "send-to-runpod", "peer (Python baseline)", "ours ÷ peer", "runs (median of)"];
  const lines = [header, header.map(() => "---"), ...rows.map((r) => [r.scenario, r.measure, r.ours, r.peer, r.ratio, r.runs])];
  return lines.map((cells) => `| ${cells.map(escape).join(" | ")} |`).join("\n");
}

// ---- The two clients, run the same way -----------------------------------------------------------

export interface Context {
  quick: boolean;
  /** Uncounted runs before the measured ones (file caches, the emulator's first answers). */
  warmup: number;
  /** The bench's temporary folder: clients and emulators run there (so no .env of the project is read). */
  tmp: string;
}

let dirCount = 0;
/** A new empty folder under the bench's temporary one. */
export function freshDir(ctx: Context, prefix: string): string {
  const dir = join(ctx.tmp, `${prefix}-${++dirCount}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export interface Job {
  workflow: string;
  images?: string[];
  /** RUNPOD_ENDPOINT_BASE_URL and friends: an emulator's or a proxy's. */
  env: Record<string, string>;
  /** Extra flags, for our client only. */
  extra?: string[];
}

export interface Client {
  label: string;
  command(job: Job, output: string): string[];
}

/** The compiled binary, with the same poll interval as the peer. */
export const OURS: Client = {
  label: "send-to-runpod",
  command: ({ workflow, images = [], extra = [] }, output) => [
    BINARY,
    "--workflow",
    workflow,
    ...(images.length > 0 ? ["--images", ...images] : []),
    "--output",
    output,
    "--no-open",
    "--poll-interval",
    String(POLL_INTERVAL_S),
    ...extra,
  ],
};

/** bench/baseline/send_to_runpod.py: requests, a fixed sleep between status checks. */
export const BASELINE: Client = {
  label: "send_to_runpod.py",
  command: ({ workflow, images = [] }, output) => [
    "python3",
    PEER,
    "--workflow",
    workflow,
    ...(images.length > 0 ? ["--images", ...images] : []),
    "--output",
    output,
    "--poll-interval",
    String(POLL_INTERVAL_S),
  ],
};

export interface JobRun extends RunResult {
  outputFiles: number;
  outputBytes: number;
}

/** One whole run of a client, to its exit; a failure throws. Its output folder is removed afterwards. */
export async function runJob(ctx: Context, client: Client, job: Job, timeoutMs?: number): Promise<JobRun> {
  const output = freshDir(ctx, "out");
  try {
    const result = checkExit(await run(client.command(job, output), { cwd: ctx.tmp, env: job.env, timeoutMs }), client.label);
    const files = listFiles(output);
    if (files.length === 0) throw new Error(`${client.label} saved nothing`);
    return { ...result, outputFiles: files.length, outputBytes: files.reduce((sum, file) => sum + statSync(file).size, 0) };
  } finally {
    rmSync(output, { recursive: true, force: true });
  }
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile());
}
