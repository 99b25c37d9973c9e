// RunPod's rate limits for the emulator: so many requests per route per 10-second window, and a 429
// beyond them. Pure: parsing `--rate-limits`, and a `RateLimiter` that decides on an explicit clock
// (no timers, no I/O). emulator.ts applies the decisions. Unlike the rate-limit fault of
// emulator-faults.ts, which turns away the requests it is told to, this one counts.
import { API_ROUTES, isApiRoute } from "./emulator-faults.ts";
import type { ApiRoute } from "./emulator-faults.ts";
import { usageError } from "./errors.ts";

/** Requests allowed per route per window; a route not named is not limited. */
export type RateLimits = Partial<Record<ApiRoute, number>>;

/** RunPod's window. */
export const RATE_LIMIT_WINDOW_MS = 10_000;

/**
 * RunPod's documented limits per endpoint per 10 s. status-sync is assumed to share status's number,
 * and retry, which RunPod lists no limit for, is left unlimited like health.
 */
export const RUNPOD_RATE_LIMITS: Readonly<RateLimits> = {
  run: 1000,
  runsync: 2000,
  status: 2000,
  "status-sync": 2000,
  stream: 2000,
  cancel: 100,
  "purge-queue": 2,
};

/**
 * `--rate-limits [SPEC]`: empty (the bare flag) is RunPod's limits; otherwise comma-separated
 * `ROUTE=N` items that replace RunPod's number for those routes, the others keeping theirs.
 */
export function parseRateLimits(text: string): RateLimits {
  const limits: RateLimits = { ...RUNPOD_RATE_LIMITS };
  if (!text.trim()) return limits;
  const given = new Set<ApiRoute>();
  for (const raw of text.split(",")) {
    const item = raw.trim();
    if (!item) throw usageError(`--rate-limits has an empty item: "${text}"`);
    const bad = (why: string) => usageError(`bad --rate-limits item "${item}": ${why}`);
    const [, route = "", count] = /^([^=]*?)\s*(?:=\s*(.*))?$/s.exec(item) ?? [];
    if (!isApiRoute(route)) throw bad(`unknown route "${route}"; the routes are ${API_ROUTES.join(", ")}`);
    if (count === undefined || !/^\d+$/.test(count) || Number(count) < 1) {
      throw bad(`the limit is a whole number of requests per 10 s from 1 (${route}=20)`);
    }
    if (given.has(route)) throw bad(`${route} is given twice`);
    given.add(route);
    limits[route] = Number(count);
  }
  return limits;
}

/** The limits as the emulator says them: "run 1000, runsync 2000, …" in route order. */
export function describeRateLimits(limits: RateLimits): string {
  return API_ROUTES.filter((route) => limits[route] !== undefined)
    .map((route) => `${route} ${limits[route]}`)
    .join(", ");
}

/**
 * A sliding window per route: a request is let through when fewer than the route's limit were let
 * through in the `windowMs` before it. Requests turned away do not count, so a client that backs off
 * as told gets through.
 */
export class RateLimiter {
  /** When each request let through in the current window arrived, oldest first, by route. */
  private readonly passed = new Map<ApiRoute, number[]>();

  constructor(
    private readonly limits: RateLimits,
    private readonly windowMs: number,
  ) {
    for (const [route, limit] of Object.entries(limits)) {
      if (!Number.isInteger(limit) || (limit ?? 0) < 1) throw new TypeError(`the rate limit of ${route} must be a whole number from 1, got ${limit}`);
    }
    if (!(windowMs > 0)) throw new TypeError(`the rate limit window must be more than 0 ms, got ${windowMs}`);
  }

  /**
   * Takes a request to `route` arriving at `now` (ms): undefined when it may go (it then counts),
   * else the whole seconds until a slot frees, at least 1: its `Retry-After`.
   */
  admit(route: ApiRoute, now: number): number | undefined {
    const limit = this.limits[route];
    if (limit === undefined) return undefined;
    let times = this.passed.get(route);
    if (!times) this.passed.set(route, (times = []));
    let gone = 0;
    while (gone < times.length && times[gone]! <= now - this.windowMs) gone++;
    if (gone > 0) times.splice(0, gone);
    if (times.length < limit) {
      times.push(now);
      return undefined;
    }
    return Math.max(1, Math.ceil((times[0]! + this.windowMs - now) / 1000));
  }
}
