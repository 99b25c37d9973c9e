// Waiting for a job, and showing the wait: one animated line on a terminal, a line per change elsewhere.
import type { Health, Job } from "./api.ts";
import { abortableSleep } from "./api.ts";

const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]);
/** Unknown statuses count as still running, as RunPod's own clients treat them. */
export const isTerminal = (status: string) => TERMINAL.has(status);

export interface WaitOptions {
  status: () => Promise<Job>;
  /**
   * RunPod's long poll (`/status-sync?wait=`): answers once the job is terminal or `waitMs` ran out.
   * Resolves undefined when the endpoint has no such route; plain polling then takes over for good.
   */
  statusSync?: (waitMs: number) => Promise<Job | undefined>;
  pollIntervalMs: number;
  /** Aborting it ends the wait with its reason (Ctrl-C, the --timeout deadline). */
  signal?: AbortSignal;
  onUpdate?: (job: Job) => void;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Plain polling starts quick and slows down: 250 ms, then ×1.5, up to --poll-interval. */
export function nextDelay(previousMs: number | undefined, pollIntervalMs: number): number {
  return Math.min(previousMs === undefined ? FIRST_DELAY_MS : previousMs * 1.5, pollIntervalMs);
}
const FIRST_DELAY_MS = 250;
/** A long poll answered faster than this was not held. */
const QUICK_ANSWER_MS = 100;

/** How long one long poll may hold: about a poll interval, so progress still shows on time (RunPod allows 1–90 s). */
export const longPollWaitMs = (pollIntervalMs: number) => Math.min(Math.max(pollIntervalMs, 1000), 90_000);

/** Until the job is terminal. An `output` seen before that is a progress report, never the result. */
export async function waitForJob({ status, statusSync, pollIntervalMs, signal, onUpdate, sleep = abortableSleep }: WaitOptions): Promise<Job> {
  let longPoll = statusSync !== undefined;
  let delay: number | undefined;
  for (;;) {
    if (signal?.aborted) throw signal.reason;
    let job: Job | undefined;
    if (longPoll) {
      const asked = performance.now();
      job = await statusSync!(longPollWaitMs(pollIntervalMs));
      if (!job) {
        longPoll = false;
        delay = undefined; // plain polling starts quick
        continue;
      }
      // A server that does not hold the request (a proxy, one that ignores `wait`) must not be asked in a tight loop.
      if (!isTerminal(job.status) && performance.now() - asked < QUICK_ANSWER_MS) await sleep((delay = nextDelay(delay, pollIntervalMs)), signal);
    } else {
      delay = nextDelay(delay, pollIntervalMs);
      await sleep(delay, signal);
      job = await status();
    }
    onUpdate?.(job);
    if (isTerminal(job.status)) return job;
  }
}

/** What a worker's progress_update payload says, in one short line. */
export function progressText(output: unknown): string | undefined {
  if (output === undefined || output === null) return undefined;
  if (typeof output === "string") return output.trim() || undefined;
  if (typeof output === "object" && !Array.isArray(output)) {
    const { progress, message, status } = output as Record<string, unknown>;
    const text = [progress, message ?? status].filter((x) => typeof x === "string" || typeof x === "number").join(" ");
    if (text) return text;
  }
  const json = JSON.stringify(output);
  return json.length > 80 ? `${json.slice(0, 79)}…` : json;
}

export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/** "IN_PROGRESS 12s · 4/10" — progress shown only while the job is not terminal. */
export function describeStatus(job: Pick<Job, "status" | "output">, elapsedMs: number): string {
  const progress = isTerminal(job.status) ? undefined : progressText(job.output);
  return [`${job.status} ${formatElapsed(elapsedMs)}`, progress].filter(Boolean).join(" · ");
}

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface Progress {
  update(job: Pick<Job, "status" | "output">): void;
  stop(): void;
}

const FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";

/** On a terminal: one redrawn line. Elsewhere (pipes, cron, CI): a plain line per change of status or progress. */
export function createProgress(stream: ProgressStream, { color, now = Date.now }: { color: boolean; now?: () => number }): Progress {
  const started = now();
  let current: Pick<Job, "status" | "output"> = { status: "IN_QUEUE" };
  if (!stream.isTTY) {
    let lastSaid = "";
    return {
      update(job) {
        const said = `${job.status} ${isTerminal(job.status) ? "" : (progressText(job.output) ?? "")}`;
        if (said === lastSaid) return;
        lastSaid = said;
        stream.write(`${describeStatus(job, now() - started)}\n`);
      },
      stop() {},
    };
  }
  let frame = 0;
  let stopped = false;
  const draw = () => {
    const spinner = FRAMES[frame++ % FRAMES.length];
    const text = describeStatus(current, now() - started);
    stream.write(`\r\x1b[2K${color ? `\x1b[36m${spinner}\x1b[39m` : spinner} ${text}`);
  };
  const timer = setInterval(draw, 80);
  timer.unref?.();
  draw();
  return {
    update(job) {
      current = job;
      if (!stopped) draw();
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      stream.write("\r\x1b[2K");
    },
  };
}

/** Why jobs sit in the queue is the question health answers (pain point 2 of the reference). */
export function describeHealth({ jobs, workers }: Health): string[] {
  const list = (counts: Record<string, number>) => Object.entries(counts).map(([name, n]) => `${n} ${name}`).join(", ");
  const lines = [Object.keys(jobs).length > 0 && `jobs: ${list(jobs)}`, `workers: ${list(workers)}`].filter((line) => typeof line === "string");
  const free = (workers.idle ?? 0) + (workers.ready ?? 0);
  if ((jobs.inQueue ?? 0) > 0 && free === 0) {
    const why = [
      workers.running && `${workers.running} busy`,
      workers.throttled && `${workers.throttled} throttled: no GPU of this type is free`,
      workers.initializing && `${workers.initializing} still starting`,
    ].filter(Boolean);
    lines.push(`jobs are queued and no worker is free${why.length ? ` (${why.join("; ")})` : ""}`);
  }
  return lines;
}
