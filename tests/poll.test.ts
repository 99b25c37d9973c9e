import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Health, Job } from "../lib/api.ts";
import { CliError, ExitCode } from "../lib/errors.ts";
import { createProgress, describeHealth, describeStatus, formatElapsed, isTerminal, longPollWaitMs, nextDelay, progressText, type ProgressStream, waitForJob } from "../lib/poll.ts";
import { responseJson } from "./helpers.ts";

const RESPONSES = join(import.meta.dir, "../../shared/fixtures/responses");
const fixtureJob = async (name: string) => (await Bun.file(join(RESPONSES, name)).json()) as Job;

describe("isTerminal", () => {
  const cases: [string, boolean][] = [
    ["COMPLETED", true],
    ["FAILED", true],
    ["CANCELLED", true],
    ["TIMED_OUT", true],
    ["IN_QUEUE", false],
    ["IN_PROGRESS", false],
    ["RUNNING", false],
    ["SOMETHING_NEW", false],
    ["completed", false],
    ["", false],
  ];
  for (const [status, terminal] of cases) {
    test(`${JSON.stringify(status)} → ${terminal}`, () => expect(isTerminal(status)).toBe(terminal));
  }
});

describe("progressText", () => {
  const long = { step: "x".repeat(200) };
  const cases: [unknown, string | undefined][] = [
    [undefined, undefined],
    [null, undefined],
    [{ progress: "4/10" }, "4/10"],
    [{ progress: 40 }, "40"],
    [{ progress: "4/10", message: "sampling" }, "4/10 sampling"],
    [{ progress: "4/10", status: "sampling" }, "4/10 sampling"],
    [{ message: "loading model" }, "loading model"],
    ["  step 3 of 20  ", "step 3 of 20"],
    ["   ", undefined],
    [7, "7"],
    [["a", 1], '["a",1]'],
    [{ node: "3", value: 4 }, '{"node":"3","value":4}'],
    [long, `${JSON.stringify(long).slice(0, 79)}…`],
  ];
  for (const [output, expected] of cases) {
    test(`${JSON.stringify(output)?.slice(0, 50)} → ${JSON.stringify(expected)?.slice(0, 50)}`, () => {
      expect(progressText(output)).toBe(expected);
    });
  }

  test("a long report is cut to 80 characters", () => {
    expect(progressText(long)).toHaveLength(80);
    expect(progressText(Array.from({ length: 100 }, (_, i) => i))!.endsWith("…")).toBe(true);
  });

  test("the fixture in-progress-with-progress.json", async () => {
    expect(progressText((await fixtureJob("in-progress-with-progress.json")).output)).toBe("4/10");
  });
});

describe("formatElapsed", () => {
  const cases: [number, string][] = [
    [0, "0s"],
    [999, "0s"],
    [1_000, "1s"],
    [59_999, "59s"],
    [60_000, "1m00s"],
    [61_000, "1m01s"],
    [599_000, "9m59s"],
    [3_600_000, "60m00s"],
  ];
  for (const [ms, expected] of cases) test(`${ms} ms → ${expected}`, () => expect(formatElapsed(ms)).toBe(expected));
});

describe("describeStatus", () => {
  const cases: [Pick<Job, "status" | "output">, number, string][] = [
    [{ status: "IN_QUEUE" }, 0, "IN_QUEUE 0s"],
    [{ status: "IN_PROGRESS", output: { progress: "4/10" } }, 12_000, "IN_PROGRESS 12s · 4/10"],
    [{ status: "IN_PROGRESS", output: "warming up" }, 75_000, "IN_PROGRESS 1m15s · warming up"],
    [{ status: "SOMETHING_NEW", output: { progress: "1/2" } }, 1_000, "SOMETHING_NEW 1s · 1/2"],
    // once terminal, output is the result, not progress
    [{ status: "COMPLETED", output: { images: ["iVBOR"] } }, 20_000, "COMPLETED 20s"],
    [{ status: "FAILED", output: { details: ["x"] } }, 3_000, "FAILED 3s"],
  ];
  for (const [job, elapsed, expected] of cases) {
    test(`${JSON.stringify(job)} at ${elapsed} ms → ${expected}`, () => expect(describeStatus(job, elapsed)).toBe(expected));
  }

  test("the fixture in-progress-with-progress.json", async () => {
    expect(describeStatus(await fixtureJob("in-progress-with-progress.json"), 4_000)).toBe("IN_PROGRESS 4s · 4/10");
  });
});

describe("waitForJob", () => {
  /** A status function answering the given jobs in turn, counting its calls. */
  function statuses(...jobs: Job[]) {
    const calls = { count: 0 };
    const status = async () => {
      const job = jobs[calls.count++];
      if (!job) throw new Error("asked for more statuses than scripted");
      return job;
    };
    return { status, calls };
  }
  const job = (status: string, extra: Partial<Job> = {}): Job => ({ id: "j", status, ...extra });
  const instantSleep = (asked: number[]) => async (ms: number, signal?: AbortSignal) => {
    asked.push(ms);
    if (signal?.aborted) throw signal.reason;
  };

  test("returns the first terminal job; unknown statuses and progress output keep it waiting", async () => {
    const final = job("COMPLETED", { output: { images: ["AAAA"] } });
    const { status, calls } = statuses(
      job("IN_QUEUE"),
      job("IN_PROGRESS", { output: { progress: "1/10" } }),
      job("RUNNING"),
      job("IN_PROGRESS", { output: { images: ["not the result"] } }),
      final,
      job("FAILED"),
    );
    const asked: number[] = [];
    const updates: Job[] = [];
    const result = await waitForJob({ status, pollIntervalMs: 1_500, sleep: instantSleep(asked), onUpdate: (j) => updates.push(j) });
    expect(result).toBe(final);
    expect(calls.count).toBe(5);
    // quick at first, then ×1.5 up to the poll interval (lib/poll.ts nextDelay)
    expect(asked).toEqual([250, 375, 562.5, 843.75, 1_265.625]);
    expect(Math.max(...asked)).toBeLessThanOrEqual(1_500);
    expect(updates.map((j) => j.status)).toEqual(["IN_QUEUE", "IN_PROGRESS", "RUNNING", "IN_PROGRESS", "COMPLETED"]);
    expect(updates[4]).toBe(final);
  });

  // RunPod's local test server forgets a job once its result was read: the wait must stop at the first COMPLETED.
  test("the recorded answers of RunPod's local test server: stops at COMPLETED, never asks again (the next answer is \"Job ID not found\")", async () => {
    const [running, completed, forgotten] = await Promise.all(
      ["02-run-img2img.json", "04-status-POST-completed.json", "05-status-POST-again.json"].map((name) => responseJson<Job>(`worker-comfyui-local/${name}`)),
    );
    const { status, calls } = statuses(running!, completed!, forgotten!);
    const result = await waitForJob({ status, pollIntervalMs: 100, sleep: instantSleep([]) });
    expect(result).toBe(completed!);
    expect(calls.count).toBe(2);
    expect(describeStatus(running!, 3_000)).toBe("IN_PROGRESS 3s"); // no output, no timings: just the status
  });

  for (const terminal of ["FAILED", "CANCELLED", "TIMED_OUT"]) {
    test(`${terminal} ends the wait too`, async () => {
      const { status, calls } = statuses(job("IN_QUEUE"), job(terminal), job("COMPLETED"));
      const result = await waitForJob({ status, pollIntervalMs: 100, sleep: instantSleep([]) });
      expect(result.status).toBe(terminal);
      expect(calls.count).toBe(2);
    });
  }

  test("an abort (from onUpdate) rejects with the reason and asks for no more statuses", async () => {
    const controller = new AbortController();
    const reason = new CliError("no result after 1 s (--timeout)", ExitCode.timeout);
    const { status, calls } = statuses(job("IN_QUEUE"), job("IN_PROGRESS"), job("IN_PROGRESS"), job("COMPLETED"));
    const updates: string[] = [];
    const outcome = await waitForJob({
      status,
      pollIntervalMs: 10,
      signal: controller.signal,
      sleep: instantSleep([]),
      onUpdate: (j) => {
        updates.push(j.status);
        if (updates.length === 2) controller.abort(reason);
      },
    }).catch((error: unknown) => error);
    expect(outcome).toBe(reason);
    expect(calls.count).toBe(2);
  });

  test("with the real sleep, an abort ends a long poll interval at once", async () => {
    const controller = new AbortController();
    const reason = new Error("interrupted");
    const { status, calls } = statuses(job("COMPLETED"));
    const started = performance.now();
    setTimeout(() => controller.abort(reason), 5);
    const outcome = await waitForJob({ status, pollIntervalMs: 60_000, signal: controller.signal }).catch((error: unknown) => error);
    expect(outcome).toBe(reason);
    expect(calls.count).toBe(0);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  test("an already-aborted signal asks for nothing", async () => {
    const reason = new Error("already");
    const { status, calls } = statuses(job("COMPLETED"));
    expect(await waitForJob({ status, pollIntervalMs: 60_000, signal: AbortSignal.abort(reason) }).catch((e: unknown) => e)).toBe(reason);
    expect(calls.count).toBe(0);
  });

  test("an error from status ends the wait with that error", async () => {
    const failure = new CliError("checking job j failed (HTTP 500)", ExitCode.api);
    const outcome = await waitForJob({
      status: async () => {
        throw failure;
      },
      pollIntervalMs: 10,
      sleep: instantSleep([]),
    }).catch((error: unknown) => error);
    expect(outcome).toBe(failure);
  });
});

describe("nextDelay", () => {
  const cases: [previous: number | undefined, interval: number, delay: number][] = [
    // quick first check, then ×1.5
    [undefined, 2_000, 250],
    [250, 2_000, 375],
    [375, 2_000, 562.5],
    [562.5, 2_000, 843.75],
    // capped at the poll interval
    [1_265.625, 2_000, 1_898.4375],
    [1_898.4375, 2_000, 2_000],
    [1_500, 2_000, 2_000],
    [2_000, 2_000, 2_000],
    [undefined, 60_000, 250],
    [40_000, 60_000, 60_000],
    // an interval at or below the first delay caps it at once
    [undefined, 250, 250],
    [250, 250, 250],
    [undefined, 100, 100],
    [100, 100, 100],
    [undefined, 249, 249],
  ];
  for (const [previous, interval, delay] of cases) {
    test(`after ${previous ?? "nothing"}, interval ${interval} → ${delay}`, () => expect(nextDelay(previous, interval)).toBe(delay));
  }

  test("the sequence grows and never passes the interval", () => {
    for (const interval of [100, 250, 300, 1_000, 2_000, 5_000, 90_000]) {
      const delays: number[] = [];
      let delay: number | undefined;
      for (let i = 0; i < 40; i++) delays.push((delay = nextDelay(delay, interval)));
      expect(delays[0]).toBe(Math.min(250, interval));
      expect(delays.at(-1)).toBe(interval);
      for (const [i, d] of delays.entries()) {
        expect(d).toBeLessThanOrEqual(interval);
        if (i > 0) expect(d).toBeGreaterThanOrEqual(delays[i - 1]!);
      }
    }
  });
});

describe("longPollWaitMs", () => {
  // about a poll interval, within what RunPod allows (1–90 s)
  const cases: [number, number][] = [
    [100, 1_000],
    [999, 1_000],
    [1_000, 1_000],
    [1_001, 1_001],
    [2_000, 2_000],
    [30_000, 30_000],
    [89_999, 89_999],
    [90_000, 90_000],
    [90_001, 90_000],
    [600_000, 90_000],
  ];
  for (const [interval, wait] of cases) test(`interval ${interval} → wait ${wait}`, () => expect(longPollWaitMs(interval)).toBe(wait));
});

describe("waitForJob with a long poll (statusSync)", () => {
  const job = (status: string, extra: Partial<Job> = {}): Job => ({ id: "j", status, ...extra });
  /** A statusSync answering the given jobs (or undefined: no such route) in turn, recording the waits asked for. */
  function longPolls(...answers: (Job | undefined)[]) {
    const waits: number[] = [];
    const statusSync = async (waitMs: number) => {
      if (waits.length >= answers.length) throw new Error("asked for more long polls than scripted");
      return answers[waits.push(waitMs) - 1];
    };
    return { statusSync, waits };
  }
  function polls(...jobs: Job[]) {
    const calls = { count: 0 };
    const status = async () => {
      const next = jobs[calls.count++];
      if (!next) throw new Error("asked for more statuses than scripted");
      return next;
    };
    return { status, calls };
  }
  /** A sleep that records what it was asked and returns at once. */
  const fakeSleep = () => {
    const asked: number[] = [];
    return { asked, sleep: async (ms: number, signal?: AbortSignal) => {
      asked.push(ms);
      if (signal?.aborted) throw signal.reason;
    } };
  };

  test("long polls until terminal, no plain status, every answer reported; answers not held get a pause", async () => {
    const final = job("COMPLETED", { output: { images: ["AAAA"] } });
    const { statusSync, waits } = longPolls(job("IN_QUEUE"), job("IN_PROGRESS", { output: { progress: "3/10" } }), final, job("FAILED"));
    const { status, calls } = polls();
    const { asked, sleep } = fakeSleep();
    const updates: Job[] = [];
    const result = await waitForJob({ status, statusSync, pollIntervalMs: 2_000, sleep, onUpdate: (j) => updates.push(j) });
    expect(result).toBe(final);
    expect(waits).toEqual([2_000, 2_000, 2_000]);
    expect(asked).toEqual([250, 375]); // the fake answers at once: not held, so not asked again at once
    expect(calls.count).toBe(0);
    expect(updates.map((j) => j.status)).toEqual(["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]);
  });

  const waitFor: [number, number][] = [
    [100, 1_000],
    [500, 1_000],
    [2_000, 2_000],
    [10_000, 10_000],
    [120_000, 90_000],
  ];
  for (const [interval, wait] of waitFor) {
    test(`--poll-interval ${interval} ms → each long poll asks to be held ${wait} ms (longPollWaitMs)`, async () => {
      const { statusSync, waits } = longPolls(job("IN_PROGRESS"), job("COMPLETED"));
      await waitForJob({ status: polls().status, statusSync, pollIntervalMs: interval, sleep: fakeSleep().sleep });
      expect(waits).toEqual([wait, wait]);
      expect(wait).toBe(longPollWaitMs(interval));
    });
  }

  for (const terminal of ["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]) {
    test(`${terminal} on the first answer: one long poll, nothing else`, async () => {
      const { statusSync, waits } = longPolls(job(terminal), job("COMPLETED"));
      const { status, calls } = polls();
      const { asked, sleep } = fakeSleep();
      expect((await waitForJob({ status, statusSync, pollIntervalMs: 2_000, sleep })).status).toBe(terminal);
      expect([waits.length, calls.count, asked.length]).toEqual([1, 0, 0]);
    });
  }

  test("no status-sync route (undefined on the first long poll) → plain polling for good, with the adaptive delays", async () => {
    const { statusSync, waits } = longPolls(undefined);
    const final = job("COMPLETED");
    const { status, calls } = polls(job("IN_QUEUE"), job("IN_PROGRESS"), job("IN_PROGRESS"), job("IN_PROGRESS"), job("IN_PROGRESS"), job("IN_PROGRESS"), job("IN_PROGRESS"), final);
    const { asked, sleep } = fakeSleep();
    const updates: string[] = [];
    expect(await waitForJob({ status, statusSync, pollIntervalMs: 2_000, sleep, onUpdate: (j) => updates.push(j.status) })).toBe(final);
    expect(waits).toEqual([2_000]); // never asked again (the scripted statusSync would throw)
    expect(calls.count).toBe(8);
    expect(asked).toEqual([250, 375, 562.5, 843.75, 1_265.625, 1_898.4375, 2_000, 2_000]);
    expect(updates).toEqual(["IN_QUEUE", ...Array(6).fill("IN_PROGRESS"), "COMPLETED"]);
  });

  test("a route that goes away mid-wait → plain polling from then on, starting quick again", async () => {
    const { statusSync, waits } = longPolls(job("IN_QUEUE"), job("IN_PROGRESS"), undefined);
    const { status, calls } = polls(job("IN_PROGRESS"), job("COMPLETED"));
    const { asked, sleep } = fakeSleep();
    const updates: string[] = [];
    expect((await waitForJob({ status, statusSync, pollIntervalMs: 1_000, sleep, onUpdate: (j) => updates.push(j.status) })).status).toBe("COMPLETED");
    expect(waits).toEqual([1_000, 1_000, 1_000]);
    expect(calls.count).toBe(2);
    expect(asked).toEqual([250, 375, 250, 375]); // two pauses after unheld long polls, then plain polling from the start
    expect(updates).toEqual(["IN_QUEUE", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]); // the undefined is not an update
  });

  test("an error from the long poll ends the wait with that error: no fallback, no plain status", async () => {
    const failure = new CliError("checking job j failed (HTTP 500: boom)", ExitCode.api);
    let longPollCount = 0;
    const { status, calls } = polls(job("COMPLETED"));
    const { asked, sleep } = fakeSleep();
    const outcome = await waitForJob({
      status,
      statusSync: async () => {
        if (++longPollCount === 2) throw failure;
        return job("IN_PROGRESS");
      },
      pollIntervalMs: 2_000,
      sleep,
    }).catch((error: unknown) => error);
    expect(outcome).toBe(failure);
    expect([longPollCount, calls.count, asked.length]).toEqual([2, 0, 1]); // one pause after the first, unheld, answer
  });

  // The client shares the signal (cli.ts clientFor): a long poll in flight rejects with its reason.
  test("an abort while a long poll is held rejects at once with the reason", async () => {
    const controller = new AbortController();
    const reason = new CliError("interrupted", ExitCode.interrupted);
    let longPollCount = 0;
    const statusSync = (waitMs: number) => {
      longPollCount++;
      return new Promise<Job | undefined>((resolve, reject) => {
        const timer = setTimeout(() => resolve(job("IN_PROGRESS")), waitMs);
        controller.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(controller.signal.reason);
        }, { once: true });
      });
    };
    const started = performance.now();
    setTimeout(() => controller.abort(reason), 5);
    const outcome = await waitForJob({ status: polls().status, statusSync, pollIntervalMs: 60_000, signal: controller.signal }).catch((error: unknown) => error);
    expect(outcome).toBe(reason);
    expect(longPollCount).toBe(1);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  test("after falling back, an abort from onUpdate ends the plain polling", async () => {
    const controller = new AbortController();
    const reason = new Error("deadline");
    const { statusSync } = longPolls(undefined);
    const { status, calls } = polls(job("IN_QUEUE"), job("IN_PROGRESS"), job("COMPLETED"));
    const outcome = await waitForJob({
      status,
      statusSync,
      pollIntervalMs: 10,
      signal: controller.signal,
      sleep: fakeSleep().sleep,
      onUpdate: () => controller.abort(reason),
    }).catch((error: unknown) => error);
    expect(outcome).toBe(reason);
    expect(calls.count).toBe(1);
  });

  // lib/poll.ts waitForJob: in long-poll mode `signal` is never checked (only the plain-poll sleep takes it), so an abort between long polls does not end the wait.
  test("an abort from onUpdate between long polls ends the wait with its reason, asking no more", async () => {
    const controller = new AbortController();
    const reason = new Error("deadline");
    const { statusSync, waits } = longPolls(job("IN_QUEUE"), job("IN_PROGRESS"), job("COMPLETED"));
    const outcome = await waitForJob({
      status: polls().status,
      statusSync,
      pollIntervalMs: 2_000,
      signal: controller.signal,
      sleep: fakeSleep().sleep,
      onUpdate: () => controller.abort(reason),
    }).catch((error: unknown) => error);
    expect(outcome).toBe(reason);
    expect(waits).toHaveLength(1);
  });

  // lib/poll.ts waitForJob: same cause: an already-aborted signal still sends a long poll (plain polling sends nothing).
  test("an already-aborted signal asks for nothing", async () => {
    const reason = new Error("already");
    const { statusSync, waits } = longPolls(job("COMPLETED"));
    expect(await waitForJob({ status: polls().status, statusSync, pollIntervalMs: 2_000, signal: AbortSignal.abort(reason) }).catch((e: unknown) => e)).toBe(reason);
    expect(waits).toEqual([]);
  });
});

/** A stream that records every write; `now` is a clock the test moves. */
function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  const stream: ProgressStream = { isTTY, write: (text: string) => writes.push(text) };
  const clock = { t: 1_000_000 };
  return { stream, writes, clock, now: () => clock.t };
}

const COLOUR = /\x1b\[\d+(;\d+)*m/;

describe("createProgress, not a terminal", () => {
  test("one plain line per change of status or progress, nothing for repeats", () => {
    const { stream, writes, clock, now } = fakeStream(false);
    const progress = createProgress(stream, { color: true, now });
    expect(writes).toEqual([]);
    const at = (s: number, job: Pick<Job, "status" | "output">) => {
      clock.t = 1_000_000 + s * 1_000;
      progress.update(job);
    };
    at(0, { status: "IN_QUEUE" });
    at(2, { status: "IN_QUEUE" });
    at(4, { status: "IN_PROGRESS" });
    at(6, { status: "IN_PROGRESS" });
    at(7, { status: "IN_PROGRESS", output: { progress: "4/10" } });
    at(8, { status: "IN_PROGRESS", output: { progress: "4/10" } });
    at(9, { status: "IN_PROGRESS", output: { progress: "5/10" } });
    at(70, { status: "COMPLETED", output: { images: ["AAAA"] } });
    at(72, { status: "COMPLETED", output: { images: ["AAAA"] } });
    progress.stop();
    expect(writes).toEqual(["IN_QUEUE 0s\n", "IN_PROGRESS 4s\n", "IN_PROGRESS 7s · 4/10\n", "IN_PROGRESS 9s · 5/10\n", "COMPLETED 1m10s\n"]);
    expect(writes.join("")).not.toMatch(COLOUR);
    expect(writes.join("")).not.toContain("\r");
  });

  test("the fixture's progress report is shown", async () => {
    const { stream, writes, now } = fakeStream(false);
    createProgress(stream, { color: false, now }).update(await fixtureJob("in-progress-with-progress.json"));
    expect(writes).toEqual(["IN_PROGRESS 0s · 4/10\n"]);
  });

  test("a stream without isTTY counts as not a terminal", () => {
    const writes: string[] = [];
    const progress = createProgress({ write: (t: string) => writes.push(t) }, { color: false, now: () => 0 });
    progress.update({ status: "IN_QUEUE" });
    progress.stop();
    expect(writes).toEqual(["IN_QUEUE 0s\n"]);
  });
});

describe("createProgress, on a terminal", () => {
  test("redraws one line with \\r\\x1b[2K and clears it on stop", () => {
    const { stream, writes, clock, now } = fakeStream(true);
    const progress = createProgress(stream, { color: false, now });
    clock.t += 3_000;
    progress.update({ status: "IN_PROGRESS", output: { progress: "4/10" } });
    progress.stop();
    expect(writes).toEqual(["\r\x1b[2K⠋ IN_QUEUE 0s", "\r\x1b[2K⠙ IN_PROGRESS 3s · 4/10", "\r\x1b[2K"]);
    expect(writes.join("")).not.toContain("\n");
  });

  test("no colour escape codes when color is false; cyan spinner when true", () => {
    const plain = fakeStream(true);
    const p1 = createProgress(plain.stream, { color: false, now: plain.now });
    p1.update({ status: "IN_PROGRESS" });
    p1.stop();
    expect(plain.writes.join("")).not.toMatch(COLOUR);

    const coloured = fakeStream(true);
    const p2 = createProgress(coloured.stream, { color: true, now: coloured.now });
    p2.update({ status: "IN_PROGRESS" });
    p2.stop();
    expect(coloured.writes[0]).toBe("\r\x1b[2K\x1b[36m⠋\x1b[39m IN_QUEUE 0s");
    expect(coloured.writes.at(-1)).toBe("\r\x1b[2K");
  });

  test("after stop: no more drawing, and a second stop writes nothing", () => {
    const { stream, writes, now } = fakeStream(true);
    const progress = createProgress(stream, { color: false, now });
    progress.stop();
    const count = writes.length;
    progress.update({ status: "COMPLETED" });
    progress.stop();
    expect(writes).toHaveLength(count);
    expect(writes.at(-1)).toBe("\r\x1b[2K");
  });

  test("a terminal status shows no progress", () => {
    const { stream, writes, now } = fakeStream(true);
    const progress = createProgress(stream, { color: false, now });
    progress.update({ status: "COMPLETED", output: { images: ["AAAA"] } });
    progress.stop();
    expect(writes[1]).toBe("\r\x1b[2K⠙ COMPLETED 0s");
  });
});

describe("describeHealth", () => {
  const STUCK = /^jobs are queued and no worker is free/;
  const cases: [string, Health, string | undefined][] = [
    ["throttled and starting, none free", { jobs: { inQueue: 3 }, workers: { idle: 0, running: 0, throttled: 2, initializing: 1 } }, "jobs are queued and no worker is free (2 throttled: no GPU of this type is free; 1 still starting)"],
    ["only throttled", { jobs: { inQueue: 1 }, workers: { idle: 0, throttled: 2 } }, "jobs are queued and no worker is free (2 throttled: no GPU of this type is free)"],
    ["only starting", { jobs: { inQueue: 1 }, workers: { initializing: 4 } }, "jobs are queued and no worker is free (4 still starting)"],
    ["no workers at all", { jobs: { inQueue: 2 }, workers: {} }, "jobs are queued and no worker is free"],
    ["an idle worker", { jobs: { inQueue: 3 }, workers: { idle: 1, throttled: 2 } }, undefined],
    ["a ready worker", { jobs: { inQueue: 3 }, workers: { ready: 1, initializing: 1 } }, undefined],
    ["nothing queued", { jobs: { inQueue: 0, completed: 5 }, workers: { throttled: 5 } }, undefined],
    ["no job counts", { jobs: {}, workers: { throttled: 5 } }, undefined],
  ];
  for (const [what, health, explanation] of cases) {
    test(`${what} → ${explanation ?? "no explanation"}`, () => {
      const lines = describeHealth(health);
      expect(lines.slice(2)).toEqual(explanation ? [explanation] : []);
      expect(lines.filter((line) => STUCK.test(line))).toHaveLength(explanation ? 1 : 0);
    });
  }

  test("the counts, in the order RunPod gives them", () => {
    expect(describeHealth({ jobs: { inQueue: 0, completed: 12 }, workers: { idle: 2, running: 1 } })).toEqual(["jobs: 0 inQueue, 12 completed", "workers: 2 idle, 1 running"]);
  });

  test("the fixture health.json: its counts", async () => {
    const health = await responseJson<Health>("health.json");
    const lines = describeHealth(health);
    expect(lines.slice(0, 2)).toEqual(["jobs: 12 completed, 1 failed, 1 inProgress, 3 inQueue, 0 retried", "workers: 0 idle, 1 initializing, 0 ready, 1 running, 2 throttled"]);
    // the same endpoint with a worker free: healthy, nothing to explain
    expect(describeHealth({ ...health, workers: { ...health.workers, idle: 1 } })).toHaveLength(2);
  });

  // The running worker is busy with the job in progress; the queued ones wait for throttled and starting workers.
  test("the fixture health.json: 3 queued, no free worker → the explanation names the throttled and starting workers", async () => {
    const explanation = describeHealth(await responseJson<Health>("health.json")).find((line) => STUCK.test(line));
    expect(explanation).toBeDefined();
    expect(explanation).toContain("2 throttled");
    expect(explanation).toContain("1 still starting");
  });
});
