// Fault injection for the emulator: the ways a RunPod endpoint, or a proxy in front of it, fails a
// client, each shaped exactly as the client would meet it. Pure: parsing the `--faults` list, and a
// `FaultPlan` that decides, request by request and job by job, which faults hit (counters and a
// seeded PRNG, no clock, no I/O). emulator.ts applies the decisions.
import { usageError } from "./errors.ts";

export const API_ROUTES = ["run", "runsync", "status", "status-sync", "stream", "cancel", "retry", "purge-queue", "health"] as const;
/** A route of RunPod's queue API. */
export type ApiRoute = (typeof API_ROUTES)[number];
/** The routes that create jobs. */
export type JobRoute = "run" | "runsync";

/** Which of the requests (or jobs) a fault could hit get it: the first `count`, or each with probability `rate` (0 < rate ≤ 1). */
export type FaultAmount = { count: number } | { rate: number };

/** Faults that replace a request's answer; a request gets at most one of them. */
type AnswerFaultName = "rate-limit" | "flaky" | "reset" | "malformed";
/** Faults that happen to a job rather than to a request. */
type JobFaultName = "drop-output" | "expire";

/** One fault to inject. Without a route it hits every route; a job fault's route is the one that submits the job. */
export type FaultSpec =
  | { name: AnswerFaultName; route?: ApiRoute; amount: FaultAmount }
  | { name: "slow"; route?: ApiRoute; amount: FaultAmount; delayMs: number }
  | { name: JobFaultName; route?: JobRoute; amount: FaultAmount };

export type FaultName = FaultSpec["name"];

const FAULT_NAMES: readonly FaultName[] = ["rate-limit", "flaky", "slow", "reset", "malformed", "drop-output", "expire"];
const JOB_FAULTS: ReadonlySet<FaultName> = new Set(["drop-output", "expire"]);
const ANSWER_FAULTS: ReadonlySet<FaultName> = new Set(["rate-limit", "flaky", "reset", "malformed"]);

const isFaultName = (name: string): name is FaultName => (FAULT_NAMES as readonly string[]).includes(name);
const isJobFault = (name: FaultName): name is JobFaultName => JOB_FAULTS.has(name);
const isAnswerFault = (name: FaultName): name is AnswerFaultName => ANSWER_FAULTS.has(name);
export const isApiRoute = (route: string): route is ApiRoute => (API_ROUTES as readonly string[]).includes(route);
const isJobRoute = (route: string): route is JobRoute => route === "run" || route === "runsync";

// ---- Parsing -----------------------------------------------------------------------------------

/**
 * `NAME[@ROUTE][=AMOUNT]`, comma-separated. AMOUNT is a count (`3`) or a rate (`25%`), 1 when absent;
 * slow's is a duration (`1500ms`, `2s`), for every request unless a count or rate follows a colon
 * (`2s:3`, `2s:25%`). An empty text is no faults.
 */
export function parseFaults(text: string): FaultSpec[] {
  if (!text.trim()) return [];
  return text.split(",").map((item) => parseFault(item.trim(), text));
}

function parseFault(item: string, list: string): FaultSpec {
  if (!item) throw usageError(`--faults has an empty item: "${list}"`);
  const bad = (why: string) => usageError(`bad --faults item "${item}": ${why}`);
  // Always matches: the name runs to the first "@" or "=", the route to the first "=" after it.
  const [, name = "", route, amountText] = /^([^@=]*)(?:@([^=]*))?(?:=(.*))?$/s.exec(item) ?? [];

  if (!isFaultName(name)) throw bad(`unknown fault; the faults are ${FAULT_NAMES.join(", ")}`);
  if (route !== undefined && !isApiRoute(route)) throw bad(`unknown route "${route}"; the routes are ${API_ROUTES.join(", ")}`);

  if (name === "slow") {
    const slow = /^(\d+(?:\.\d+)?)(ms|s)(?::(.*))?$/.exec(amountText ?? "");
    const delayMs = slow ? Number(slow[1]) * (slow[2] === "s" ? 1000 : 1) : 0;
    const amount = slow?.[3] === undefined ? { rate: 1 } : parseAmount(slow[3]);
    if (delayMs <= 0 || !amount) throw bad("slow takes a duration, then optionally a count or a rate: slow=1500ms, slow=2s, slow@status=2s:3, slow=0.5s:25%");
    return { name, ...(route && { route }), amount, delayMs };
  }
  const amount = amountText === undefined ? { count: 1 } : parseAmount(amountText);
  if (!amount) throw bad(`the amount is a count from 1 (${name}=3) or a rate above 0% up to 100% (${name}=25%)`);
  if (!isJobFault(name)) return { name, ...(route && { route }), amount };
  if (route !== undefined && !isJobRoute(route)) throw bad(`${name} happens to jobs, so its route is the one that submits them: run or runsync`);
  return { name, ...(route && { route }), amount };
}

function parseAmount(text: string): FaultAmount | undefined {
  if (/^\d+$/.test(text)) return Number(text) >= 1 ? { count: Number(text) } : undefined;
  const percent = /^(\d+(?:\.\d+)?)%$/.exec(text);
  const rate = percent ? Number(percent[1]) / 100 : 0;
  return rate > 0 && rate <= 1 ? { rate } : undefined;
}

// ---- Deciding ----------------------------------------------------------------------------------

export interface RequestFaults {
  /** Every fault that hit the request, in list order (for the request log). */
  names: FaultName[];
  /** How long the answer is held (slow); 0 when it is not. */
  delayMs: number;
  /** The fault that replaces the answer, and how many times that fault hit before (flaky and malformed cycle through their forms). */
  answer?: { name: AnswerFaultName; nth: number };
}

export interface JobFaults {
  /** The job ends COMPLETED without `output`. */
  dropOutput: boolean;
  /** The job is deleted the moment it ends. */
  expire: boolean;
}

interface ArmedFault {
  readonly spec: FaultSpec;
  readonly random: () => number;
  /** Requests or jobs this fault could have hit so far. */
  seen: number;
}

/**
 * Decides which faults hit each request (at its arrival) and each job (at its creation).
 *
 * Faults are tried in the order given. A request takes at most one answer fault (rate-limit, flaky,
 * reset, malformed) and one slow, a job at most one of each job fault: a fault only sees, and counts,
 * the requests or jobs that reach it still free of its kind, so `rate-limit=2,flaky=1` answers
 * 429, 429, then 502.
 */
export class FaultPlan {
  /** How many times each fault hit, by name; every fault of the plan starts at 0. */
  readonly injected: Partial<Record<FaultName, number>> = {};
  private readonly armed: ArmedFault[];

  constructor(specs: readonly FaultSpec[], seed: number) {
    // One PRNG per fault: its sequence of draws is its own, however often the others drew.
    this.armed = specs.map((spec, index) => ({ spec, random: mulberry32(seed + index * 0x9e3779b9), seen: 0 }));
    for (const { name } of specs) this.injected[name] = 0;
  }

  /** The faults of a request that reached `route` (authorised, known route, allowed method); undefined when none hit. */
  forRequest(route: ApiRoute): RequestFaults | undefined {
    const hits = this.hit("request", route);
    if (hits.length === 0) return undefined;
    const faults: RequestFaults = { names: hits.map(({ spec }) => spec.name), delayMs: 0 };
    for (const { spec, nth } of hits) {
      if (spec.name === "slow") faults.delayMs = spec.delayMs;
      else if (isAnswerFault(spec.name)) faults.answer = { name: spec.name, nth };
    }
    return faults;
  }

  /** The faults of a job being created by `route`. */
  forJob(route: JobRoute): JobFaults {
    const names = this.hit("job", route).map(({ spec }) => spec.name);
    return { dropOutput: names.includes("drop-output"), expire: names.includes("expire") };
  }

  /** Draws every fault of the stage that could hit this request or job, counting those that do. */
  private hit(stage: "request" | "job", route: ApiRoute): { spec: FaultSpec; nth: number }[] {
    const hits: { spec: FaultSpec; nth: number }[] = [];
    const taken = new Set<string>();
    for (const fault of this.armed) {
      const { spec } = fault;
      const kind = isAnswerFault(spec.name) ? "answer" : spec.name;
      if (isJobFault(spec.name) !== (stage === "job") || (spec.route ?? route) !== route || taken.has(kind)) continue;
      const seen = fault.seen++;
      if (!("count" in spec.amount ? seen < spec.amount.count : fault.random() < spec.amount.rate)) continue;
      taken.add(kind);
      const nth = this.injected[spec.name] ?? 0;
      this.injected[spec.name] = nth + 1;
      hits.push({ spec, nth });
    }
    return hits;
  }
}

/** A small, fast, seedable PRNG (Mulberry32): uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// ---- The answers -------------------------------------------------------------------------------

/**
 * What a request hit by an answer fault gets instead of its answer, or "reset" when it gets no HTTP
 * answer at all (see `cutConnection`).
 */
export function faultAnswer(answer: NonNullable<RequestFaults["answer"]>, retryAfterSeconds: number): Response | "reset" {
  switch (answer.name) {
    case "rate-limit":
      return tooManyRequests(retryAfterSeconds);
    case "flaky":
      return flakyAnswer(answer.nth);
    case "malformed":
      return malformedAnswer(answer.nth);
    case "reset":
      return "reset";
  }
}

/** RunPod's 429: without a body (one once crashed its own Python SDK), with `Retry-After` in seconds. */
export function tooManyRequests(retryAfterSeconds: number): Response {
  return new Response(null, { status: 429, headers: { "retry-after": String(retryAfterSeconds) } });
}

/** In turn, a 5xx as a proxy (plain text), an overloaded API (a JSON error) and a crashed worker (no body) give it. */
function flakyAnswer(nth: number): Response {
  switch (nth % 3) {
    case 0:
      return new Response("502 Bad Gateway", { status: 502, headers: { "content-type": "text/plain; charset=utf-8" } });
    case 1:
      return Response.json({ error: "service unavailable" }, { status: 503 });
    default:
      return new Response(null, { status: 500 });
  }
}

/** In turn, a 200 carrying a proxy's error page, and one carrying JSON that is no answer of RunPod's. */
function malformedAnswer(nth: number): Response {
  return nth % 2 === 0
    ? new Response("<html>upstream error</html>", { headers: { "content-type": "text/html; charset=utf-8" } })
    : Response.json({ ok: true });
}

/**
 * A response that is never sent: its body errors before the first byte, so Bun closes the socket
 * without even a status line and the client's fetch rejects (ECONNRESET), as when a proxy or the
 * network drops the connection. The error carries no reason, which keeps Bun from logging it.
 */
export function cutConnection(): Response {
  return new Response(new ReadableStream({ start: (controller) => controller.error() }));
}
