import { describe, expect, test } from "bun:test";
import { RUNPOD_RATE_LIMITS, RateLimiter, describeRateLimits, parseRateLimits } from "../lib/emulator-rate-limits.ts";
import type { RateLimits } from "../lib/emulator-rate-limits.ts";
import { thrown } from "./helpers.ts";

describe("parseRateLimits", () => {
  const RUNPOD = { run: 1000, runsync: 2000, status: 2000, "status-sync": 2000, stream: 2000, cancel: 100, "purge-queue": 2 };
  test("RunPod's documented numbers; health and retry unlimited", () => {
    expect(RUNPOD_RATE_LIMITS).toEqual(RUNPOD);
  });

  test.each<[string, RateLimits]>([
    ["", RUNPOD],
    ["  ", RUNPOD],
    ["run=20,status=200", { ...RUNPOD, run: 20, status: 200 }],
    [" run = 20 , status-sync=5 ", { ...RUNPOD, run: 20, "status-sync": 5 }],
    ["health=50", { ...RUNPOD, health: 50 }],
    ["retry=1,purge-queue=100", { ...RUNPOD, retry: 1, "purge-queue": 100 }],
  ])("%p", (text, limits) => {
    expect(parseRateLimits(text)).toEqual(limits);
  });

  test("does not change RunPod's numbers", () => {
    parseRateLimits("run=1");
    expect(RUNPOD_RATE_LIMITS.run).toBe(1000);
  });

  const ROUTES = "the routes are run, runsync, status, status-sync, stream, cancel, retry, purge-queue, health";
  test.each([
    ["run=2,", '--rate-limits has an empty item: "run=2,"'],
    [",", '--rate-limits has an empty item: ","'],
    ["runs=2", `bad --rate-limits item "runs=2": unknown route "runs"; ${ROUTES}`],
    ["=2", `bad --rate-limits item "=2": unknown route ""; ${ROUTES}`],
    ["run=2,run=3", 'bad --rate-limits item "run=3": run is given twice'],
    ...["run", "run=", "run=0", "run=-1", "run=1.5", "run=ten", "run=2=3"].map((item) => [
      item,
      `bad --rate-limits item "${item}": the limit is a whole number of requests per 10 s from 1 (run=20)`,
    ]),
  ])("%p is a usage error", (text, message) => {
    expect(thrown(() => parseRateLimits(text))).toMatchObject({ message, exitCode: 2 });
  });

  test("describeRateLimits says them in route order", () => {
    expect(describeRateLimits(parseRateLimits("health=9"))).toBe(
      "run 1000, runsync 2000, status 2000, status-sync 2000, stream 2000, cancel 100, purge-queue 2, health 9",
    );
  });
});

describe("RateLimiter", () => {
  /** What each request to `route` at the given times gets: "ok", or its Retry-After. */
  const admit = (limiter: RateLimiter, route: "run" | "status" | "health", times: number[]) =>
    times.map((now) => limiter.admit(route, now) ?? "ok");

  test("lets `limit` requests through per window, then answers the whole seconds until a slot frees", () => {
    const limiter = new RateLimiter({ run: 3 }, 10_000);
    expect(admit(limiter, "run", [0, 100, 200, 300, 1000, 8999, 9001])).toEqual(["ok", "ok", "ok", 10, 9, 2, 1]);
  });

  test("a sliding window: each slot frees a window after the request that took it", () => {
    const limiter = new RateLimiter({ run: 3 }, 1000);
    expect(admit(limiter, "run", [0, 500, 900, 999, 1000, 1100, 1499, 1500])).toEqual(["ok", "ok", "ok", 1, "ok", 1, 1, "ok"]);
  });

  test("requests turned away do not count", () => {
    const limiter = new RateLimiter({ status: 1 }, 1000);
    expect(admit(limiter, "status", [0, ...Array.from({ length: 50 }, (_, i) => 10 + i * 10), 1000, 1001])).toEqual(["ok", ...Array(50).fill(1), "ok", 1]);
  });

  test("routes are counted apart; a route without a limit is never turned away", () => {
    const limiter = new RateLimiter({ run: 1, status: 1 }, 1000);
    expect([...admit(limiter, "run", [0, 1]), ...admit(limiter, "status", [2, 3]), ...admit(limiter, "health", [4, 5, 6])]).toEqual(["ok", 1, "ok", 1, "ok", "ok", "ok"]);
  });

  test.each<[RateLimits, number, string]>([
    [{ run: 0 }, 1000, "the rate limit of run must be a whole number from 1, got 0"],
    [{ run: 1.5 }, 1000, "the rate limit of run must be a whole number from 1, got 1.5"],
    [{ run: 1 }, 0, "the rate limit window must be more than 0 ms, got 0"],
  ])("refuses %p with a window of %p ms", (limits, windowMs, message) => {
    expect(() => new RateLimiter(limits, windowMs)).toThrow(message);
  });
});
