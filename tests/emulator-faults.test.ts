import { describe, expect, test } from "bun:test";
import { FaultPlan, faultAnswer, parseFaults } from "../lib/emulator-faults.ts";
import type { ApiRoute, FaultSpec } from "../lib/emulator-faults.ts";
import { thrown } from "./helpers.ts";

describe("parseFaults", () => {
  test.each<[string, FaultSpec[]]>([
    ["", []],
    ["  ", []],
    ["rate-limit", [{ name: "rate-limit", amount: { count: 1 } }]],
    ["rate-limit=3", [{ name: "rate-limit", amount: { count: 3 } }]],
    ["flaky@status=2", [{ name: "flaky", route: "status", amount: { count: 2 } }]],
    ["reset@run=25%", [{ name: "reset", route: "run", amount: { rate: 0.25 } }]],
    ["malformed@purge-queue=12.5%", [{ name: "malformed", route: "purge-queue", amount: { rate: 0.125 } }]],
    ["flaky=100%", [{ name: "flaky", amount: { rate: 1 } }]],
    ["slow=1500ms", [{ name: "slow", amount: { rate: 1 }, delayMs: 1500 }]],
    ["slow@status=2s", [{ name: "slow", route: "status", amount: { rate: 1 }, delayMs: 2000 }]],
    ["slow=0.5s:3", [{ name: "slow", amount: { count: 3 }, delayMs: 500 }]],
    ["slow@stream=100ms:50%", [{ name: "slow", route: "stream", amount: { rate: 0.5 }, delayMs: 100 }]],
    ["drop-output", [{ name: "drop-output", amount: { count: 1 } }]],
    ["expire@runsync=2", [{ name: "expire", route: "runsync", amount: { count: 2 } }]],
    [
      " rate-limit=3 , flaky@status=2,drop-output ",
      [
        { name: "rate-limit", amount: { count: 3 } },
        { name: "flaky", route: "status", amount: { count: 2 } },
        { name: "drop-output", amount: { count: 1 } },
      ],
    ],
    ["flaky,flaky@run", [{ name: "flaky", amount: { count: 1 } }, { name: "flaky", route: "run", amount: { count: 1 } }]],
  ])("%p", (text, specs) => {
    expect(parseFaults(text)).toEqual(specs);
  });

  const FAULTS = "the faults are rate-limit, flaky, slow, reset, malformed, drop-output, expire";
  const ROUTES = "the routes are run, runsync, status, status-sync, stream, cancel, retry, purge-queue, health";
  const SLOW = "slow takes a duration, then optionally a count or a rate: slow=1500ms, slow=2s, slow@status=2s:3, slow=0.5s:25%";
  test.each([
    ["flaky,,slow=1s", '--faults has an empty item: "flaky,,slow=1s"'],
    ["flaky,", '--faults has an empty item: "flaky,"'],
    ["flakey", `bad --faults item "flakey": unknown fault; ${FAULTS}`],
    ["Flaky", `bad --faults item "Flaky": unknown fault; ${FAULTS}`],
    ["@status", `bad --faults item "@status": unknown fault; ${FAULTS}`],
    ["flaky@stat", `bad --faults item "flaky@stat": unknown route "stat"; ${ROUTES}`],
    ["flaky@=2", `bad --faults item "flaky@=2": unknown route ""; ${ROUTES}`],
    ["flaky@status@run", `bad --faults item "flaky@status@run": unknown route "status@run"; ${ROUTES}`],
    ["expire@status", 'bad --faults item "expire@status": expire happens to jobs, so its route is the one that submits them: run or runsync'],
    ["drop-output@health=2", 'bad --faults item "drop-output@health=2": drop-output happens to jobs, so its route is the one that submits them: run or runsync'],
    ...["", "0", "-1", "1.5", "abc", "0%", "100.5%", "150%", "%", "2s", "2=3"].map((amount) => [
      `flaky=${amount}`,
      `bad --faults item "flaky=${amount}": the amount is a count from 1 (flaky=3) or a rate above 0% up to 100% (flaky=25%)`,
    ]),
    ...["slow", "slow@status", "slow=3", "slow=0s", "slow=2h", "slow=-1s", "slow=2s:0", "slow=2s:abc", "slow=2s:", "slow=1s:2:3"].map((item) => [
      item,
      `bad --faults item "${item}": ${SLOW}`,
    ]),
  ])("%p is a usage error", (text, message) => {
    expect(thrown(() => parseFaults(text))).toMatchObject({ message, exitCode: 2 });
  });
});

/** Which of `count` requests to `route` each fault of the plan hits: the names per request, "-" for none. */
function pattern(plan: FaultPlan, route: ApiRoute, count: number): string[] {
  return Array.from({ length: count }, () => plan.forRequest(route)?.names.join("+") ?? "-");
}

describe("FaultPlan", () => {
  test("no faults: no request or job is ever hit, and nothing is counted", () => {
    const plan = new FaultPlan([], 1);
    expect(pattern(plan, "run", 3)).toEqual(["-", "-", "-"]);
    expect(plan.forJob("run")).toEqual({ dropOutput: false, expire: false });
    expect(plan.injected).toEqual({});
  });

  test("a count hits exactly the first N requests of its route; the others are not counted", () => {
    const plan = new FaultPlan(parseFaults("flaky@status=2"), 1);
    expect(pattern(plan, "run", 2)).toEqual(["-", "-"]);
    expect(pattern(plan, "status", 4)).toEqual(["flaky", "flaky", "-", "-"]);
    expect(plan.injected).toEqual({ flaky: 2 });
  });

  test("a fault without a route hits every route", () => {
    const plan = new FaultPlan(parseFaults("rate-limit=3"), 1);
    expect([plan.forRequest("health"), plan.forRequest("cancel"), plan.forRequest("run"), plan.forRequest("run")].map((hit) => hit?.answer?.name)).toEqual([
      "rate-limit",
      "rate-limit",
      "rate-limit",
      undefined,
    ]);
  });

  test("a rate hits about its share, the same requests for the same seed, others for another seed", () => {
    const draw = (seed: number) => pattern(new FaultPlan(parseFaults("reset=50%"), seed), "status", 200);
    const first = draw(7);
    expect(draw(7)).toEqual(first);
    expect(draw(8)).not.toEqual(first);
    const hits = first.filter((hit) => hit === "reset").length;
    expect(hits).toBeGreaterThan(70);
    expect(hits).toBeLessThan(130);
  });

  test("100% hits every request", () => {
    expect(pattern(new FaultPlan(parseFaults("malformed=100%"), 3), "health", 5)).toEqual(Array(5).fill("malformed"));
  });

  test("answer faults take turns in list order: a request gets at most one, and only the ones it reaches count it", () => {
    const plan = new FaultPlan(parseFaults("rate-limit=2,flaky=1,reset@cancel"), 1);
    expect(pattern(plan, "status", 4)).toEqual(["rate-limit", "rate-limit", "flaky", "-"]);
    expect(pattern(plan, "cancel", 2)).toEqual(["reset", "-"]);
    expect(plan.injected).toEqual({ "rate-limit": 2, flaky: 1, reset: 1 });
  });

  test("slow adds its delay to whatever answer fault hits, and the first slow that applies wins", () => {
    const plan = new FaultPlan(parseFaults("slow@status=150ms:1,slow=2s,flaky@status"), 1);
    expect(plan.forRequest("status")).toEqual({ names: ["slow", "flaky"], delayMs: 150, answer: { name: "flaky", nth: 0 } });
    expect(plan.forRequest("status")).toEqual({ names: ["slow"], delayMs: 2000 });
    expect(plan.forRequest("run")).toEqual({ names: ["slow"], delayMs: 2000 });
    expect(plan.injected).toEqual({ slow: 3, flaky: 1 });
  });

  test("nth counts the hits of a fault across all its items (flaky and malformed cycle through their forms)", () => {
    const plan = new FaultPlan(parseFaults("flaky@run=1,flaky@status=2"), 1);
    expect([plan.forRequest("run"), plan.forRequest("status"), plan.forRequest("status")].map((hit) => hit?.answer?.nth)).toEqual([0, 1, 2]);
  });

  test("job faults hit jobs, never requests, counted per job and scoped by the submitting route", () => {
    const plan = new FaultPlan(parseFaults("drop-output=2,expire@runsync"), 1);
    expect(pattern(plan, "run", 3)).toEqual(["-", "-", "-"]);
    expect(plan.forJob("run")).toEqual({ dropOutput: true, expire: false });
    expect(plan.forJob("runsync")).toEqual({ dropOutput: true, expire: true });
    expect(plan.forJob("runsync")).toEqual({ dropOutput: false, expire: false });
    expect(plan.injected).toEqual({ "drop-output": 2, expire: 1 });
  });

  test("request faults never hit jobs", () => {
    const plan = new FaultPlan(parseFaults("flaky=100%,slow=1s"), 1);
    expect(plan.forJob("run")).toEqual({ dropOutput: false, expire: false });
    expect(plan.injected).toEqual({ flaky: 0, slow: 0 });
  });
});

describe("faultAnswer", () => {
  const read = async (answer: Response | "reset") =>
    answer === "reset" ? "reset" : { status: answer.status, headers: Object.fromEntries(answer.headers), body: await answer.text() };

  test("rate-limit: 429, an empty body and Retry-After in (decimal) seconds", async () => {
    expect(await read(faultAnswer({ name: "rate-limit", nth: 0 }, 0.05))).toEqual({ status: 429, headers: { "retry-after": "0.05" }, body: "" });
    expect((await read(faultAnswer({ name: "rate-limit", nth: 1 }, 1))) as object).toMatchObject({ headers: { "retry-after": "1" } });
  });

  test("flaky: 502 in plain text, 503 with a JSON error, 500 without a body, in turn", async () => {
    const answers = await Promise.all([0, 1, 2, 3].map((nth) => read(faultAnswer({ name: "flaky", nth }, 1))));
    expect(answers).toEqual([
      { status: 502, headers: { "content-type": "text/plain; charset=utf-8" }, body: "502 Bad Gateway" },
      { status: 503, headers: { "content-type": "application/json;charset=utf-8" }, body: '{"error":"service unavailable"}' },
      { status: 500, headers: {}, body: "" },
      { status: 502, headers: { "content-type": "text/plain; charset=utf-8" }, body: "502 Bad Gateway" },
    ]);
  });

  test("malformed: a 200 with an HTML page, then with JSON that is not a job, in turn", async () => {
    const answers = await Promise.all([0, 1, 2].map((nth) => read(faultAnswer({ name: "malformed", nth }, 1))));
    expect(answers).toEqual([
      { status: 200, headers: { "content-type": "text/html; charset=utf-8" }, body: "<html>upstream error</html>" },
      { status: 200, headers: { "content-type": "application/json;charset=utf-8" }, body: '{"ok":true}' },
      { status: 200, headers: { "content-type": "text/html; charset=utf-8" }, body: "<html>upstream error</html>" },
    ]);
  });

  test("reset: no HTTP answer at all", () => {
    expect(faultAnswer({ name: "reset", nth: 0 }, 1)).toBe("reset");
  });
});
