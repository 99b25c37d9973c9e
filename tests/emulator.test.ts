import { afterAll, afterEach, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { runCommand } from "citty";
import { EventsFileError, emulateCommand, startEmulator } from "../lib/emulator.ts";
import type { Emulator, EmulatorOptions } from "../lib/emulator.ts";
import { parseFaults } from "../lib/emulator-faults.ts";
import { CliError } from "../lib/errors.ts";
import { removeTempDirs, tempDir } from "./helpers.ts";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures");
const TINY_PNG = Buffer.from(await Bun.file(join(FIXTURES, "tiny.png")).arrayBuffer()).toString("base64");
const WORKFLOWS_DIR = new URL("../workflows/", import.meta.url);
const TXT2IMG: Record<string, unknown> = await Bun.file(new URL("sample-txt2img.json", WORKFLOWS_DIR)).json();
const VALID_INPUT = { workflow: TXT2IMG };
const FAILING_INPUT = { workflow: {} }; // "Prompt has no outputs", at once
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-u1$/;
const SYNC_JOB_ID = /^sync-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-u1$/;
const MB = 1024 * 1024;

let emulator: Emulator | undefined;
afterEach(async () => {
  await emulator?.stop();
  emulator = undefined;
});
afterAll(removeTempDirs);

/** An emulator on a free port with short timings; afterEach stops it. */
function start(options: Partial<EmulatorOptions> = {}): Emulator {
  emulator = startEmulator({ port: 0, queueDelayMs: 20, executionMs: 40, ...options });
  return emulator;
}

interface CallOptions {
  method?: string;
  body?: unknown;
  rawBody?: RequestInit["body"];
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** A request to `{url}/{endpointId}/{path}`, authorised unless headers say otherwise. */
function call(emu: Emulator, path: string, { method, body, rawBody, headers, signal }: CallOptions = {}): Promise<Response> {
  return fetch(`${emu.url}/${emu.endpointId}/${path}`, {
    method: method ?? (body === undefined && rawBody === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${emu.apiKey}`, "content-type": "application/json", ...headers },
    body: rawBody ?? (body === undefined ? undefined : JSON.stringify(body)),
    signal,
  });
}

async function callJson(emu: Emulator, path: string, options?: CallOptions): Promise<{ status: number; body: any }> {
  const response = await call(emu, path, options);
  return { status: response.status, body: await response.json() };
}

async function submit(emu: Emulator, input: unknown = VALID_INPUT, extra: Record<string, unknown> = {}): Promise<string> {
  const { status, body } = await callJson(emu, "run", { body: { input, ...extra } });
  expect(status).toBe(200);
  return body.id;
}

const jobStatus = async (emu: Emulator, id: string) => (await callJson(emu, `status/${id}`)).body;

/** Polls `read` every 5 ms until `done` holds (or 2 s pass) and returns the last value. */
async function until<T>(read: () => Promise<T>, done: (value: NoInfer<T>) => boolean): Promise<T> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await Bun.sleep(5);
  }
}

/** The wall clock the events file uses: ms since the epoch, sub-ms precision. */
const wallClock = () => performance.timeOrigin + performance.now();
const eventsPath = () => join(tempDir(), "events.jsonl");
interface LoggedEvent {
  t: number;
  event: string;
  id?: string;
  route?: string;
}
const readEvents = async (path: string): Promise<LoggedEvent[]> =>
  (await Bun.file(path).text())
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line));
const loggedAt = (events: LoggedEvent[], id: string, event: string) => events.find((logged) => logged.id === id && logged.event === event)?.t ?? Number.NaN;

/** The decoded bytes of a job's images, whichever shape they come in. */
const imageBytes = (output: { images: (string | { data: string })[] }) =>
  output.images.map((image) => Buffer.from(typeof image === "string" ? image : image.data, "base64"));
const totalBytes = (images: Uint8Array[]) => images.reduce((sum, image) => sum + image.length, 0);

const statusIs = (...statuses: string[]) => (job: { status?: string }) => statuses.includes(job.status ?? "");
const settle = (emu: Emulator, id: string) =>
  until(() => jobStatus(emu, id), statusIs("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"));

describe("a job's life", () => {
  test("/run queues it; status shows IN_QUEUE, IN_PROGRESS with progress, then COMPLETED with PNGs", async () => {
    const emu = start({ queueDelayMs: 40, executionMs: 120, progressUpdates: 3 });
    const accepted = await callJson(emu, "run", { body: { input: VALID_INPUT } });
    expect(accepted.status).toBe(200);
    expect(Object.keys(accepted.body)).toEqual(["id", "status"]);
    expect(accepted.body.id).toMatch(JOB_ID);
    expect(accepted.body.status).toBe("IN_QUEUE");
    const id: string = accepted.body.id;

    expect(await jobStatus(emu, id)).toEqual({ id, status: "IN_QUEUE" });
    const progressing = await until(() => jobStatus(emu, id), (job) => job.output !== undefined || job.status === "COMPLETED");
    expect(progressing).toEqual({
      id,
      status: "IN_PROGRESS",
      delayTime: 40,
      workerId: expect.stringMatching(/^[a-z0-9]{14}$/),
      output: { progress: expect.stringMatching(/^\d+\/25$/) },
    });
    const done = await settle(emu, id);
    expect(Object.keys(done)).toEqual(["id", "status", "delayTime", "executionTime", "workerId", "output"]);
    expect(done).toMatchObject({ id, status: "COMPLETED", delayTime: 40, executionTime: 120, workerId: progressing.workerId });
    expect(done.output.images).toHaveLength(1);
    expect(Buffer.from(done.output.images[0], "base64").subarray(1, 4).toString()).toBe("PNG");
  });

  test("a failing handler makes the job FAILED with its message and no output", async () => {
    const emu = start();
    const done = await settle(emu, await submit(emu, FAILING_INPUT));
    expect(Object.keys(done)).toEqual(["id", "status", "delayTime", "executionTime", "workerId", "error"]);
    expect(done).toMatchObject({ status: "FAILED", error: "Prompt has no outputs" });
  });

  test("status also answers POST", async () => {
    const emu = start();
    const id = await submit(emu);
    expect(await callJson(emu, `status/${id}`, { method: "POST" })).toEqual({ status: 200, body: { id, status: "IN_QUEUE" } });
  });

  test("a result over the size limit leaves the job COMPLETED without output", async () => {
    const emu = start({ resultLimitBytes: 100 });
    const id = await submit(emu);
    const done = await settle(emu, id);
    expect(done.status).toBe("COMPLETED");
    expect("output" in done).toBe(false);
    expect((await callJson(emu, `stream/${id}`)).body).toEqual({ status: "COMPLETED", stream: [] });
  });

  test("the webhook receives the final job object by POST", async () => {
    const received: { method: string; body: unknown }[] = [];
    const receiver = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      async fetch(request) {
        received.push({ method: request.method, body: await request.json() });
        return new Response("ok");
      },
    });
    try {
      const emu = start();
      const id = await submit(emu, VALID_INPUT, { webhook: receiver.url.href });
      const done = await settle(emu, id);
      await until(async () => received.length, (count) => count > 0);
      expect(received).toEqual([{ method: "POST", body: done }]);
    } finally {
      await receiver.stop(true);
    }
  });
});

describe("auth and routing", () => {
  const routes: [string, string][] = [
    ["POST", "run"],
    ["POST", "runsync"],
    ["GET", "status/x"],
    ["GET", "status-sync/x"],
    ["GET", "stream/x"],
    ["POST", "cancel/x"],
    ["POST", "retry/x"],
    ["POST", "purge-queue"],
    ["GET", "health"],
  ];
  const badAuth: [string, Record<string, string>][] = [
    ["no key", { authorization: "" }],
    ["a wrong key", { authorization: "Bearer nope" }],
    ["the key without Bearer", { authorization: "emulator-key" }],
    ["another scheme", { authorization: "Basic emulator-key" }],
  ];

  test.each(badAuth)("%s gets 401 with no body on every route", async (_, headers) => {
    const emu = start();
    for (const [method, path] of routes) {
      const response = await call(emu, path, { method, headers, body: method === "POST" ? { input: {} } : undefined });
      expect([path, response.status, await response.text()]).toEqual([path, 401, ""]);
    }
    expect(emu.requests.every((request) => request.status === 401)).toBe(true);
  });

  test.each([
    ["an unknown endpoint", "/v2/other/health"],
    ["an unknown route", "/v2/emulator/jobs"],
    ["status without a job id", "/v2/emulator/status"],
    ["status-sync without a job id", "/v2/emulator/status-sync"],
    ["extra path segments", "/v2/emulator/status/a/b"],
    ["a job id on health", "/v2/emulator/health/x"],
    ["no /v2 prefix", "/emulator/health"],
  ])("%s answers 404 in plain text", async (_, path) => {
    const emu = start();
    const response = await fetch(new URL(path, emu.url), { headers: { authorization: `Bearer ${emu.apiKey}` } });
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toStartWith("text/plain");
    expect(await response.text()).toBe("404 page not found");
  });

  test.each(["status/nope", "status-sync/nope", "stream/nope", "cancel/nope", "retry/nope"])("an unknown job on %s answers 404 with a JSON error", async (path) => {
    const emu = start();
    const method = path.startsWith("status") || path.startsWith("stream") ? "GET" : "POST";
    expect(await callJson(emu, path, { method })).toEqual({ status: 404, body: { error: "request does not exist" } });
  });

  test.each([
    ["GET", "run"],
    ["GET", "runsync"],
    ["PUT", "status/x"],
    ["PUT", "status-sync/x"],
    ["DELETE", "stream/x"],
    ["GET", "cancel/x"],
    ["GET", "retry/x"],
    ["GET", "purge-queue"],
    ["POST", "health"],
  ])("%s %s answers 405", async (method, path) => {
    const emu = start();
    const response = await call(emu, path, { method });
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBeTruthy();
  });

  test("requests are recorded in arrival order, with query and parsed body, never the key", async () => {
    const emu = start({ apiKey: "secret-key-123" });
    const id = await submit(emu, VALID_INPUT, { policy: { ttl: 60_000 } });
    await call(emu, `status/${id}?verbose=1`);
    await call(emu, "health", { headers: { authorization: "Bearer wrong" } });
    expect(emu.requests).toEqual([
      { method: "POST", path: "/v2/emulator/run", query: {}, status: 200, body: { input: VALID_INPUT, policy: { ttl: 60_000 } } },
      { method: "GET", path: `/v2/emulator/status/${id}`, query: { verbose: "1" }, status: 200 },
      { method: "GET", path: "/v2/emulator/health", query: {}, status: 401 },
    ]);
    expect(JSON.stringify(emu.requests)).not.toContain("secret-key-123");
    expect(emu.faultsInjected).toEqual({});
  });
});

describe("request bodies", () => {
  test.each([
    ["invalid JSON", "{input:", "the request body is not valid JSON"],
    ["an empty body", "", "the request body is not valid JSON"],
    ["an array", "[]", "the request body must be a JSON object"],
    ["no input", "{}", "input is required and must be a JSON object"],
    ["input as a string", '{"input": "x"}', "input is required and must be a JSON object"],
    ["input as an array", '{"input": []}', "input is required and must be a JSON object"],
    ["a webhook that is not a URL", '{"input": {}, "webhook": "here"}', "webhook must be a URL"],
    ["policy as a number", '{"input": {}, "policy": 5}', "policy must be a JSON object"],
    ["a ttl that is a string", '{"input": {}, "policy": {"ttl": "10s"}}', "policy.ttl must be a number of milliseconds"],
    ["a negative executionTimeout", '{"input": {}, "policy": {"executionTimeout": -1}}', "policy.executionTimeout must be more than 0"],
  ])("%s answers 400", async (_, rawBody, error) => {
    const emu = start();
    for (const path of ["run", "runsync"]) {
      expect(await callJson(emu, path, { rawBody })).toEqual({ status: 400, body: { error } });
    }
  });

  test("/run refuses an 11 MB body with 413; /runsync takes it and refuses 21 MB", async () => {
    const emu = start();
    const padded = (size: number) => JSON.stringify({ input: { ...VALID_INPUT, padding: "x".repeat(size) } });
    expect(await callJson(emu, "run", { rawBody: padded(11 * MB) })).toEqual({
      status: 413,
      body: { error: "request body exceeds the 10 MB limit of /run (10485760 bytes)" },
    });
    expect(await callJson(emu, "runsync", { rawBody: padded(21 * MB) })).toEqual({
      status: 413,
      body: { error: "request body exceeds the 20 MB limit of /runsync (20971520 bytes)" },
    });
    const accepted = await callJson(emu, "runsync", { rawBody: padded(11 * MB) });
    expect([accepted.status, accepted.body.status]).toEqual([200, "COMPLETED"]);
  });

  test("a streamed body without Content-Length is cut off at the limit too", async () => {
    const emu = start();
    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 11; i++) controller.enqueue(new Uint8Array(MB).fill(0x20));
        controller.close();
      },
    });
    expect((await call(emu, "run", { rawBody: chunks })).status).toBe(413);
  });
});

describe("runsync", () => {
  test("answers the finished job, with a sync- id", async () => {
    const emu = start();
    const { status, body } = await callJson(emu, "runsync?wait=5000", { body: { input: VALID_INPUT } });
    expect(status).toBe(200);
    expect(body).toMatchObject({ status: "COMPLETED", delayTime: 20, executionTime: 40 });
    expect(body.id).toMatch(SYNC_JOB_ID);
    expect(body.output.images).toHaveLength(1);
    expect(await jobStatus(emu, body.id)).toEqual(body);
  });

  test.each(["999", "300001", "abc", "", "1e4"])("wait=%p answers RunPod's 400", async (wait) => {
    const emu = start();
    const expected = await Bun.file(join(FIXTURES, "responses/error-400-wait.json")).json();
    expect(await callJson(emu, `runsync?wait=${wait}`, { body: { input: VALID_INPUT } })).toEqual({ status: 400, body: expected });
    expect(await callJson(emu, `stream/any?wait=${wait}`)).toEqual({ status: 400, body: expected });
    expect(await callJson(emu, `status-sync/any?wait=${wait}`)).toEqual({ status: 400, body: expected });
  });

  test("when wait runs out, runsync and status-sync answer the unfinished job; an empty stream holds for its wait", async () => {
    const emu = start({ executionMs: 5000 });
    const runningId = await submit(emu);
    const started = Date.now();
    const [sync, stream, statusSync] = await Promise.all([
      callJson(emu, "runsync?wait=1000", { body: { input: VALID_INPUT } }),
      callJson(emu, `stream/${runningId}?wait=1000`),
      callJson(emu, `status-sync/${runningId}?wait=1000`),
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
    expect(sync.status).toBe(200);
    expect(sync.body).toEqual({ id: expect.stringMatching(SYNC_JOB_ID), status: "IN_QUEUE" });
    expect(stream.body).toEqual({ status: "IN_PROGRESS", stream: [] });
    expect(statusSync).toEqual({ status: 200, body: { id: runningId, status: "IN_PROGRESS", delayTime: 20, workerId: expect.any(String) } });
    expect(await jobStatus(emu, sync.body.id)).toEqual(sync.body);
  });
});

describe("stream", () => {
  test("holds until the job ends, gives the output as one chunk, then nothing more", async () => {
    const emu = start();
    const id = await submit(emu);
    const first = await callJson(emu, `stream/${id}`);
    expect(first.status).toBe(200);
    expect(first.body.status).toBe("COMPLETED");
    expect(first.body.stream).toHaveLength(1);
    expect(first.body.stream[0].output.images).toHaveLength(1);
    expect((await callJson(emu, `stream/${id}`, { method: "POST" })).body).toEqual({ status: "COMPLETED", stream: [] });
  });

  test("a FAILED job's stream carries its error", async () => {
    const emu = start();
    const id = await submit(emu, FAILING_INPUT);
    expect((await callJson(emu, `stream/${id}?wait=2000`)).body).toEqual({
      status: "FAILED",
      stream: [],
      error: "Prompt has no outputs",
    });
  });
});

describe("cancel", () => {
  test("a queued job: CANCELLED, never started", async () => {
    const emu = start({ queueDelayMs: 10_000 });
    const id = await submit(emu);
    expect(await callJson(emu, `cancel/${id}`, { method: "POST" })).toEqual({ status: 200, body: { id, status: "CANCELLED" } });
    expect(await jobStatus(emu, id)).toEqual({ id, status: "CANCELLED" });
    expect((await callJson(emu, `cancel/${id}`, { method: "POST" })).body).toEqual({ id, status: "CANCELLED" });
  });

  test("a running job: CANCELLED, its worker freed for the next job", async () => {
    const emu = start({ executionMs: 5000 });
    const id = await submit(emu);
    await until(() => jobStatus(emu, id), statusIs("IN_PROGRESS"));
    expect((await callJson(emu, `cancel/${id}`, { method: "POST" })).body).toEqual({ id, status: "CANCELLED" });
    const cancelled = await jobStatus(emu, id);
    expect(cancelled).toEqual({ id, status: "CANCELLED", delayTime: 20, workerId: expect.any(String) });
    expect((await callJson(emu, "health")).body.workers).toEqual({ idle: 1, running: 0 });
    const next = await submit(emu);
    expect(await until(() => jobStatus(emu, next), statusIs("IN_PROGRESS"))).toMatchObject({ status: "IN_PROGRESS", delayTime: 20 });
  });

  test("a finished job: answers its status unchanged", async () => {
    const emu = start();
    const id = await submit(emu);
    const done = await settle(emu, id);
    expect((await callJson(emu, `cancel/${id}`, { method: "POST" })).body).toEqual({ id, status: "COMPLETED" });
    expect(await jobStatus(emu, id)).toEqual(done);
  });
});

describe("retry", () => {
  test("puts a FAILED job back in the queue under the same id, counting retries", async () => {
    const emu = start();
    const id = await submit(emu, FAILING_INPUT);
    await settle(emu, id);
    expect(await callJson(emu, `retry/${id}`, { method: "POST" })).toEqual({ status: 200, body: { id, status: "IN_QUEUE" } });
    expect(await jobStatus(emu, id)).toEqual({ id, status: "IN_QUEUE", retries: 1 });
    expect(await settle(emu, id)).toMatchObject({ id, status: "FAILED", retries: 1, delayTime: 20 });
    expect((await callJson(emu, "health")).body.jobs).toMatchObject({ failed: 2, retried: 1 });
  });

  test("works on a TIMED_OUT job", async () => {
    const emu = start();
    const id = await submit(emu, VALID_INPUT, { policy: { executionTimeout: 10 } });
    expect((await settle(emu, id)).status).toBe("TIMED_OUT");
    expect((await callJson(emu, `retry/${id}`, { method: "POST" })).body).toEqual({ id, status: "IN_QUEUE" });
  });

  test.each([
    ["COMPLETED", {}],
    ["IN_QUEUE", { queueDelayMs: 10_000 }],
  ])("refuses a %s job with 400", async (status, options) => {
    const emu = start(options);
    const id = await submit(emu);
    if (status === "COMPLETED") await settle(emu, id);
    expect(await callJson(emu, `retry/${id}`, { method: "POST" })).toEqual({
      status: 400,
      body: { error: `job ${id} is ${status}; only FAILED or TIMED_OUT jobs can be retried` },
    });
  });
});

describe("queue and workers", () => {
  test("purge-queue removes queued jobs only", async () => {
    const emu = start({ executionMs: 5000 });
    const running = await submit(emu);
    await until(() => jobStatus(emu, running), statusIs("IN_PROGRESS"));
    const queued = [await submit(emu), await submit(emu)];
    expect(await callJson(emu, "purge-queue", { method: "POST" })).toEqual({ status: 200, body: { removed: 2, status: "completed" } });
    for (const id of queued) expect((await call(emu, `status/${id}`)).status).toBe(404);
    expect((await jobStatus(emu, running)).status).toBe("IN_PROGRESS");
  });

  test("health counts jobs and workers", async () => {
    const emu = start({ workers: 2, executionMs: 5000 });
    expect(await callJson(emu, "health")).toEqual({
      status: 200,
      body: { jobs: { completed: 0, failed: 0, inProgress: 0, inQueue: 0, retried: 0 }, workers: { idle: 2, running: 0 } },
    });
    await settle(emu, await submit(emu, FAILING_INPUT));
    const running = await submit(emu);
    await until(() => jobStatus(emu, running), statusIs("IN_PROGRESS"));
    await submit(emu);
    await submit(emu);
    expect((await callJson(emu, "health")).body).toEqual({
      jobs: { completed: 0, failed: 1, inProgress: 1, inQueue: 2, retried: 0 },
      workers: { idle: 1, running: 1 },
    });
  });

  test("with 2 workers the 3rd job waits IN_QUEUE until one is free", async () => {
    const emu = start({ workers: 2, executionMs: 100 });
    const ids = [await submit(emu), await submit(emu), await submit(emu)];
    const [first, second] = await Promise.all(ids.slice(0, 2).map((id) => until(() => jobStatus(emu, id), statusIs("IN_PROGRESS"))));
    expect(first.workerId).not.toBe(second.workerId);
    expect(await jobStatus(emu, ids[2] ?? "")).toEqual({ id: ids[2], status: "IN_QUEUE" });
    const third = await settle(emu, ids[2] ?? "");
    expect(third.status).toBe("COMPLETED");
    expect(third.delayTime).toBeGreaterThan(20); // waited for a worker, not only the queue delay
    expect([first.workerId, second.workerId]).toContain(third.workerId);
  });

  test("one worker takes jobs first in, first out", async () => {
    const emu = start({ executionMs: 30 });
    const ids = [await submit(emu), await submit(emu), await submit(emu)];
    const delays = [];
    for (const id of ids) delays.push((await settle(emu, id)).delayTime);
    expect(delays[0]).toBeLessThan(delays[1]);
    expect(delays[1]).toBeLessThan(delays[2]);
  });
});

describe("time limits", () => {
  test("executionTimeout makes a long job TIMED_OUT and frees the worker", async () => {
    const emu = start({ executionMs: 1000 });
    const id = await submit(emu, VALID_INPUT, { policy: { executionTimeout: 30 } });
    const started = Date.now();
    const done = await settle(emu, id);
    expect(Date.now() - started).toBeLessThan(500);
    expect(done).toEqual({ id, status: "TIMED_OUT", delayTime: 20, workerId: expect.any(String) });
    expect((await callJson(emu, "health")).body.workers).toEqual({ idle: 1, running: 0 });
  });

  test("finished /run and /runsync jobs are deleted after their retention", async () => {
    const emu = start({ retentionMs: 50, syncRetentionMs: 50 });
    const id = await submit(emu);
    await settle(emu, id);
    const sync = (await callJson(emu, "runsync", { body: { input: VALID_INPUT } })).body;
    expect(sync.status).toBe("COMPLETED");
    for (const jobId of [id, sync.id]) {
      const gone = await until(() => call(emu, `status/${jobId}`), (response) => response.status === 404);
      expect(await gone.json()).toEqual({ error: "request does not exist" });
      expect((await call(emu, `stream/${jobId}`)).status).toBe(404);
    }
  });

  test("retention is the one of the route: a /run job outlives a /runsync one", async () => {
    const emu = start({ retentionMs: 60_000, syncRetentionMs: 50 });
    const sync = (await callJson(emu, "runsync", { body: { input: VALID_INPUT } })).body;
    const id = await submit(emu);
    await settle(emu, id);
    await until(() => call(emu, `status/${sync.id}`), (response) => response.status === 404);
    await Bun.sleep(60);
    expect((await jobStatus(emu, id)).status).toBe("COMPLETED");
  });

  test("ttl deletes a job even mid-run, freeing its worker", async () => {
    const emu = start({ executionMs: 5000 });
    const id = await submit(emu, VALID_INPUT, { policy: { ttl: 80 } });
    await until(() => jobStatus(emu, id), statusIs("IN_PROGRESS"));
    await until(() => call(emu, `status/${id}`), (response) => response.status === 404);
    expect((await callJson(emu, "health")).body.workers).toEqual({ idle: 1, running: 0 });
  });

  test("ttl deletes a queued job", async () => {
    const emu = start({ queueDelayMs: 10_000 });
    const id = await submit(emu, VALID_INPUT, { policy: { ttl: 30 } });
    await until(() => call(emu, `status/${id}`), (response) => response.status === 404);
    expect((await callJson(emu, "health")).body.jobs.inQueue).toBe(0);
  });
});

describe("the sample workflows", () => {
  let shared: Emulator;
  beforeAll(() => {
    shared = startEmulator({ port: 0, queueDelayMs: 5, executionMs: 20, workers: 4 });
  });
  afterAll(() => shared.stop());

  const samples = readdirSync(WORKFLOWS_DIR).filter((name) => name.endsWith(".json"));
  test("are all here", () => {
    expect(samples).toEqual(["img2img.json", "inpaint.json", "sample-txt2img.json", "upscale.json"]);
  });

  test.each(samples)("%s succeeds with the images it names, and names each one missing", async (name) => {
    const workflow: Record<string, { class_type: string; inputs: { image?: string } }> = await Bun.file(
      new URL(name, WORKFLOWS_DIR),
    ).json();
    const needed = Object.values(workflow)
      .filter((node) => node.class_type === "LoadImage" || node.class_type === "LoadImageMask")
      .map((node) => node.inputs.image ?? "");
    const reference_images = Object.fromEntries(needed.map((image) => [image, TINY_PNG]));
    const done = await callJson(shared, "runsync", { body: { input: { workflow, reference_images, return_base64: true } } });
    expect(done.body.status).toBe("COMPLETED");
    expect(done.body.output.images).toHaveLength(1);
    expect(Buffer.from(done.body.output.images[0], "base64").subarray(1, 4).toString()).toBe("PNG");

    if (needed.length === 0) return;
    const failed = await callJson(shared, "runsync", { body: { input: { workflow, return_base64: true } } });
    expect(failed.body.status).toBe("FAILED");
    expect(failed.body.error).toStartWith("Prompt outputs failed validation:");
    for (const image of needed) expect(failed.body.error).toContain(`Invalid image file: ${image}`);
  });
});

describe("the worker-comfyui dialect", () => {
  const comfy = (options: Partial<EmulatorOptions> = {}) => start({ dialect: "worker-comfyui", ...options });
  const IMG2IMG = (image: string) => ({
    ...TXT2IMG,
    "10": { class_type: "LoadImage", inputs: { image } },
    "11": { class_type: "VAEEncode", inputs: { pixels: ["10", 0], vae: ["1", 2] } },
    "12": { class_type: "SaveImage", inputs: { filename_prefix: "ref", images: ["11", 0] } },
  });
  const fixture = (name: string) => Bun.file(join(FIXTURES, "responses", name)).json();
  /** The keys of a job object as a fixture has them (fixtures leave workerId out). */
  const keysOf = (job: object) => Object.keys(job).filter((key) => key !== "workerId");

  test("a handler error: FAILED with the error at the top and the details under output, in the fixture's key order", async () => {
    const emu = comfy();
    const input = { workflow: IMG2IMG("masks/ref.png"), images: [{ name: "masks/ref.png", image: TINY_PNG }] };
    const done = await settle(emu, await submit(emu, input));
    const expected = await fixture("worker-comfyui-5-upload-subfolder.json");
    expect(keysOf(done)).toEqual(Object.keys(expected));
    expect(done).toMatchObject({ status: "FAILED", error: expected.error, output: expected.output, workerId: expect.any(String) });
  });

  test("a retried failure answers its output before retries, as a first one does", async () => {
    const emu = comfy();
    const input = { workflow: IMG2IMG("masks/ref.png"), images: [{ name: "masks/ref.png", image: TINY_PNG }] };
    const id = await submit(emu, input);
    const first = await settle(emu, id);
    await callJson(emu, `retry/${id}`, { method: "POST" });
    const again = await until(() => jobStatus(emu, id), (job) => job.status === "FAILED" && job.retries === 1);
    expect(Object.keys(again)).toEqual(["id", "status", "delayTime", "executionTime", "workerId", "error", "output", "retries"]);
    expect(again).toMatchObject({ error: first.error, output: first.output });
  });

  test("a validation error: FAILED with the worker's message and no output, as recorded", async () => {
    const emu = comfy();
    const workflow = structuredClone(TXT2IMG) as Record<string, { inputs: Record<string, unknown> }>;
    workflow["1"]!.inputs.ckpt_name = "does-not-exist.safetensors";
    const done = (await callJson(emu, "runsync", { body: { input: { workflow } } })).body;
    const expected = await fixture("worker-comfyui-5-validation-failed.json");
    expect(keysOf(done)).toEqual(Object.keys(expected));
    expect(done.error).toBe(expected.error.replaceAll("Node 4", "Node 1").replace("['9']", "['7']"));
  });

  test("a success: {filename, type, data} images; no progress while running; each worker keeps its ComfyUI's files", async () => {
    const emu = comfy({ executionMs: 150 });
    const input = { workflow: IMG2IMG("ref.png"), images: [{ name: "ref.png", image: TINY_PNG }] };
    const id = await submit(emu, input);
    const running = await until(() => jobStatus(emu, id), statusIs("IN_PROGRESS", "COMPLETED"));
    expect(running).toEqual({ id, status: "IN_PROGRESS", delayTime: 20, workerId: expect.any(String) });
    const done = await settle(emu, id);
    expect(done.output).toEqual({
      images: [
        { filename: "txt2img_00001_.png", type: "base64", data: expect.stringMatching(/^iVBORw0KGgo/) },
        { filename: "ref_00001_.png", type: "base64", data: expect.stringMatching(/^iVBORw0KGgo/) },
      ],
    });
    // The image uploaded by the first job is still on the worker, and the counters go on.
    const again = await settle(emu, await submit(emu, { workflow: IMG2IMG("ref.png") }));
    expect(again.output.images.map((image: { filename: string }) => image.filename)).toEqual(["txt2img_00002_.png", "ref_00002_.png"]);
  });

  test("S3: images come back as presigned URLs to the emulator, served without a key, GET only, gone with their job", async () => {
    const emu = comfy({ s3: true, syncRetentionMs: 150 });
    const done = (await callJson(emu, "runsync", { body: { input: VALID_INPUT } })).body;
    const [image] = done.output.images;
    expect(image).toEqual({ filename: "txt2img_00001_.png", type: "s3_url", data: expect.stringContaining(`/s3/`) });
    const url = new URL(image.data);
    expect(url.origin).toBe(new URL(emu.url).origin);
    expect(url.pathname).toMatch(new RegExp(`^/s3/\\d\\d-\\d\\d/${done.id}/[0-9a-f]{8}\\.png$`));

    const download = await fetch(url);
    expect([download.status, download.headers.get("content-type")]).toEqual([200, "image/png"]);
    expect(Buffer.from(await download.arrayBuffer()).subarray(1, 4).toString()).toBe("PNG");
    const refused = async (target: URL | string, init?: RequestInit) => {
      const response = await fetch(target, init);
      return [response.status, /<Code>(\w+)<\/Code>/.exec(await response.text())?.[1]];
    };
    expect(await refused(`${url.origin}${url.pathname}`)).toEqual([403, "AccessDenied"]);
    expect(await refused(url.href.replace(/Signature=\w/, "Signature=x"))).toEqual([403, "SignatureDoesNotMatch"]);
    expect(await refused(url, { method: "POST" })).toEqual([403, "SignatureDoesNotMatch"]);

    await until(() => call(emu, `status/${done.id}`), (response) => response.status === 404);
    expect(await refused(url)).toEqual([404, "NoSuchKey"]);
  });

  test("s3 without the worker-comfyui dialect is refused", () => {
    expect(() => startEmulator({ port: 0, s3: true })).toThrow("the s3 option needs the worker-comfyui dialect");
  });
});

describe("fault injection", () => {
  /** The status, content type, Retry-After and body of an answer; without an answer, the error's code or name. */
  async function answerOf(response: Promise<Response>) {
    return response.then(
      async (answer) => ({
        status: answer.status,
        type: answer.headers.get("content-type"),
        retryAfter: answer.headers.get("retry-after"),
        body: await answer.text(),
      }),
      // A network error carries a code (ECONNRESET); an abort only its name (TimeoutError).
      (error: Error & { code?: unknown }) => (typeof error.code === "string" ? error.code : error.name),
    );
  }
  const queued = async (emu: Emulator) => (await callJson(emu, "health")).body.jobs.inQueue;
  const RUN = { body: { input: VALID_INPUT } };

  test("rate-limit: 429 with an empty body and Retry-After; the /run turned away creates no job", async () => {
    const emu = start({ faults: parseFaults("rate-limit@run"), retryAfterSeconds: 0.05, queueDelayMs: 10_000 });
    expect(await answerOf(call(emu, "run", RUN))).toEqual({ status: 429, type: null, retryAfter: "0.05", body: "" });
    expect(await queued(emu)).toBe(0);
    await submit(emu);
    expect(await queued(emu)).toBe(1);
    expect(emu.requests[0]).toEqual({ method: "POST", path: "/v2/emulator/run", query: {}, status: 429, faults: ["rate-limit"] });
    expect(emu.faultsInjected).toEqual({ "rate-limit": 1 });
  });

  test("flaky: 502 in plain text, 503 with a JSON error, 500 without a body; each lost /run did create its job", async () => {
    const emu = start({ faults: parseFaults("flaky@run=3"), queueDelayMs: 10_000 });
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await answerOf(call(emu, "run", RUN)));
    expect(answers).toEqual([
      { status: 502, type: "text/plain; charset=utf-8", retryAfter: null, body: "502 Bad Gateway" },
      { status: 503, type: "application/json;charset=utf-8", retryAfter: null, body: '{"error":"service unavailable"}' },
      { status: 500, type: null, retryAfter: null, body: "" },
    ]);
    expect(await queued(emu)).toBe(3);
    await submit(emu);
    expect(emu.requests.map((request) => [request.status, request.faults, request.body])).toEqual([
      [502, ["flaky"], RUN.body],
      [503, ["flaky"], RUN.body],
      [500, ["flaky"], RUN.body],
      [200, undefined, undefined],
      [200, undefined, RUN.body],
    ]);
  });

  test("reset: fetch rejects, with no HTTP answer; the /run did create its job; the next request is answered", async () => {
    const emu = start({ faults: parseFaults("reset@run"), queueDelayMs: 10_000 });
    expect(await answerOf(call(emu, "run", RUN))).toBe("ECONNRESET");
    expect(await queued(emu)).toBe(1);
    expect(emu.requests[0]).toMatchObject({ path: "/v2/emulator/run", status: 0, faults: ["reset"] });
    await submit(emu);
    expect(emu.faultsInjected).toEqual({ reset: 1 });
  });

  test("reset of a GET on a reused connection: Bun's fetch retries it once by itself, so it takes two resets to reject", async () => {
    const emu = start({ faults: parseFaults("reset@status=3") });
    const id = await submit(emu); // leaves a keep-alive connection to reuse
    expect(await answerOf(call(emu, `status/${id}`))).toBe("ECONNRESET");
    expect(emu.requests.map((request) => request.status)).toEqual([200, 0, 0]);
    await submit(emu);
    expect((await call(emu, `status/${id}`)).status).toBe(200);
    expect(emu.requests.map((request) => request.status)).toEqual([200, 0, 0, 200, 0, 200]);
  });

  test("malformed: a 200 with an HTML page, then with JSON that is not a job, then the real answer", async () => {
    const emu = start({ faults: parseFaults("malformed@status=2") });
    const id = await submit(emu);
    expect(await answerOf(call(emu, `status/${id}`))).toEqual({ status: 200, type: "text/html; charset=utf-8", retryAfter: null, body: "<html>upstream error</html>" });
    expect(await callJson(emu, `status/${id}`)).toEqual({ status: 200, body: { ok: true } });
    expect((await jobStatus(emu, id)).id).toBe(id);
  });

  test("slow: the route acts at once but its answer is held, so a client deadline trips first", async () => {
    const emu = start({ faults: parseFaults("slow@run=150ms:1,slow@status=100ms"), queueDelayMs: 10_000 });
    let started = Date.now();
    expect(await answerOf(call(emu, "run", { ...RUN, signal: AbortSignal.timeout(50) }))).toBe("TimeoutError");
    expect(Date.now() - started).toBeLessThan(140);
    expect(await queued(emu)).toBe(1); // created before the answer was held
    started = Date.now();
    const id = await submit(emu);
    expect(Date.now() - started).toBeLessThan(100); // only the first /run was slow
    started = Date.now();
    expect(await jobStatus(emu, id)).toEqual({ id, status: "IN_QUEUE" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    await until(async () => emu.requests[0]?.status, (status) => status === 200);
    expect(emu.faultsInjected).toEqual({ slow: 2 });
  });

  test("a count hits exactly the first N requests of its route; other routes are untouched", async () => {
    const emu = start({ faults: parseFaults("flaky@status=2") });
    const id = await submit(emu);
    const statuses = [];
    for (const path of [`status/${id}`, "health", `status/${id}`, `status/${id}`, `status/${id}`]) statuses.push((await call(emu, path)).status);
    expect(statuses).toEqual([502, 200, 503, 200, 200]);
    expect(emu.requests.map((request) => request.faults ?? [])).toEqual([[], ["flaky"], [], ["flaky"], [], []]);
  });

  test("a rate hits the same requests on two emulators with the same seed", async () => {
    async function statuses(seed: number): Promise<number[]> {
      const emu = startEmulator({ port: 0, faults: parseFaults("flaky@health=50%"), faultSeed: seed });
      try {
        const seen = [];
        for (let i = 0; i < 16; i++) seen.push((await call(emu, "health")).status);
        return seen;
      } finally {
        await emu.stop();
      }
    }
    const first = await statuses(5);
    expect(await statuses(5)).toEqual(first);
    expect(await statuses(6)).not.toEqual(first);
    expect(first).toContain(200);
    expect(first.some((status) => status >= 500)).toBe(true);
  });

  test("only requests that reach a route are eligible: a 401, 404 or 405 is neither hit nor counted", async () => {
    const emu = start({ faults: parseFaults("rate-limit") });
    expect((await call(emu, "health", { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    expect((await call(emu, "jobs")).status).toBe(404);
    expect((await call(emu, "health", { method: "POST" })).status).toBe(405);
    expect(emu.faultsInjected).toEqual({ "rate-limit": 0 });
    expect((await call(emu, "health")).status).toBe(429);
  });

  test("drop-output: the job ends COMPLETED without output, only for the jobs it hits", async () => {
    const emu = start({ faults: parseFaults("drop-output@run") });
    const [dropped, kept] = [await submit(emu), await submit(emu)];
    const done = await settle(emu, dropped);
    expect(Object.keys(done)).toEqual(["id", "status", "delayTime", "executionTime", "workerId"]);
    expect(done.status).toBe("COMPLETED");
    expect((await callJson(emu, `stream/${dropped}`)).body).toEqual({ status: "COMPLETED", stream: [] });
    expect((await settle(emu, kept)).output.images).toHaveLength(1);
    expect((await callJson(emu, "runsync", RUN)).body.output.images).toHaveLength(1); // scoped to /run jobs
    expect(emu.faultsInjected).toEqual({ "drop-output": 1 });
  });

  test("drop-output on /runsync: the answer is COMPLETED without output", async () => {
    const emu = start({ faults: parseFaults("drop-output@runsync") });
    const { body } = await callJson(emu, "runsync", RUN);
    expect(body).toEqual({ id: expect.stringMatching(SYNC_JOB_ID), status: "COMPLETED", delayTime: 20, executionTime: 40, workerId: expect.any(String) });
  });

  test("expire: the job is gone as soon as it ends; status and stream answer 404", async () => {
    const emu = start({ faults: parseFaults("expire@run") });
    const [expired, kept] = [await submit(emu), await submit(emu)];
    const seen: string[] = [];
    const look = async () => {
      const answer = await callJson(emu, `status/${expired}`);
      seen.push(answer.body.status ?? answer.status);
      return answer;
    };
    expect(await until(look, (answer) => answer.status === 404)).toEqual({ status: 404, body: { error: "request does not exist" } });
    expect(seen).toContain("IN_PROGRESS");
    expect(seen).not.toContain("COMPLETED"); // deleted in the same instant it ended
    expect(await callJson(emu, `stream/${expired}`)).toEqual({ status: 404, body: { error: "request does not exist" } });
    expect((await callJson(emu, "health")).body.jobs.completed).toBeGreaterThanOrEqual(1); // it did complete
    expect((await settle(emu, kept)).status).toBe("COMPLETED"); // only the jobs it hits
    expect(emu.faultsInjected).toEqual({ expire: 1 });
  });

  test("expire on /runsync: the answer still carries the result, then the job is gone", async () => {
    const emu = start({ faults: parseFaults("expire@runsync"), queueDelayMs: 0 });
    const { body } = await callJson(emu, "runsync", RUN);
    expect(body).toMatchObject({ status: "COMPLETED", output: { images: [expect.any(String)] } });
    expect(await callJson(emu, `status/${body.id}`)).toEqual({ status: 404, body: { error: "request does not exist" } });
  });

  test("several faults at once, as a client meets them", async () => {
    const emu = start({ faults: parseFaults("rate-limit@run=1,flaky@status=1,slow@health=50ms,drop-output"), retryAfterSeconds: 0.01 });
    expect((await call(emu, "run", RUN)).status).toBe(429);
    const id = await submit(emu);
    expect((await call(emu, `status/${id}`)).status).toBe(502);
    const done = await settle(emu, id);
    expect([done.status, "output" in done]).toEqual(["COMPLETED", false]);
    const started = Date.now();
    expect((await callJson(emu, "health")).body.jobs.completed).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(50);
    expect(emu.faultsInjected).toEqual({ "rate-limit": 1, flaky: 1, slow: 1, "drop-output": 1 });
    expect(emu.requests.filter((request) => request.faults).map((request) => [request.path.split("/")[3], request.faults])).toEqual([
      ["run", ["rate-limit"]],
      ["status", ["flaky"]],
      ["health", ["slow"]],
    ]);
  });

  test("stop releases a held answer at once", async () => {
    const emu = start({ faults: parseFaults("slow@health=10s") });
    const pending = answerOf(call(emu, "health"));
    await until(async () => emu.requests.length, (count) => count > 0);
    const started = Date.now();
    await emu.stop();
    expect(Date.now() - started).toBeLessThan(500);
    expect(await pending).toBe("ECONNRESET");
  });
});

describe("status-sync", () => {
  test.each([
    ["GET", "?wait=5000"],
    ["POST", ""],
  ])("%s holds until the job ends, then answers it as status does, a few ms after its completion (wait %p)", async (method, query) => {
    const file = eventsPath();
    const emu = start({ executionMs: 150, eventsFile: file });
    const id = await submit(emu);
    const sent = wallClock();
    const answer = await callJson(emu, `status-sync/${id}${query}`, { method });
    const arrived = wallClock();
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ id, status: "COMPLETED", delayTime: 20, executionTime: 150, output: { images: [expect.any(String)] } });
    expect(answer.body).toEqual(await jobStatus(emu, id));
    const completedAt = loggedAt(await readEvents(file), id, "completed");
    expect(completedAt - sent).toBeGreaterThan(150);
    expect(arrived - completedAt).toBeGreaterThanOrEqual(0);
    expect(arrived - completedAt).toBeLessThan(30);
  });

  test("answers a FAILED job, and a job cancelled while it waits, at once", async () => {
    const emu = start({ executionMs: 5000 });
    const failed = await submit(emu, FAILING_INPUT);
    expect((await callJson(emu, `status-sync/${failed}?wait=5000`)).body).toMatchObject({ id: failed, status: "FAILED", error: "Prompt has no outputs" });
    const id = await submit(emu);
    const pending = callJson(emu, `status-sync/${id}?wait=5000`);
    await until(() => jobStatus(emu, id), statusIs("IN_PROGRESS"));
    const cancelledAt = Date.now();
    await call(emu, `cancel/${id}`, { method: "POST" });
    expect(await pending).toEqual({ status: 200, body: { id, status: "CANCELLED", delayTime: 20, workerId: expect.any(String) } });
    expect(Date.now() - cancelledAt).toBeLessThan(100);
  });

  test("a job deleted while it waits (its ttl) answers 404 like status", async () => {
    const emu = start({ executionMs: 5000 });
    const id = await submit(emu, VALID_INPUT, { policy: { ttl: 100 } });
    const started = Date.now();
    expect(await callJson(emu, `status-sync/${id}?wait=5000`)).toEqual({ status: 404, body: { error: "request does not exist" } });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  test("under the expire fault the job is gone as it ends: a waiting status-sync answers 404, as status then does", async () => {
    const emu = start({ faults: parseFaults("expire@run") });
    const id = await submit(emu);
    expect(await callJson(emu, `status-sync/${id}?wait=5000`)).toEqual({ status: 404, body: { error: "request does not exist" } });
    expect((await callJson(emu, "health")).body.jobs.completed).toBe(1);
  });

  test("switched off, the route does not exist: 404 in plain text like any unknown route, never counted by faults", async () => {
    const emu = start({ statusSync: false, faults: parseFaults("flaky@status-sync") });
    const id = await submit(emu);
    for (const method of ["GET", "POST"]) {
      const response = await call(emu, `status-sync/${id}?wait=5000`, { method });
      expect([response.status, response.headers.get("content-type"), await response.text()]).toEqual([404, "text/plain; charset=utf-8", "404 page not found"]);
    }
    expect((await jobStatus(emu, id)).id).toBe(id);
    expect(emu.faultsInjected).toEqual({ flaky: 0 });
  });

  test("faults hit it as the route status-sync: a rate-limit at once, a flaky answer after the route held", async () => {
    const emu = start({ faults: parseFaults("rate-limit@status-sync=1,flaky@status-sync=1") });
    const id = await submit(emu);
    expect((await call(emu, `status-sync/${id}?wait=5000`)).status).toBe(429);
    expect((await jobStatus(emu, id)).status).not.toBe("COMPLETED");
    expect((await call(emu, `status-sync/${id}?wait=5000`)).status).toBe(502);
    expect((await jobStatus(emu, id)).status).toBe("COMPLETED"); // the 502 came once the job had ended
    expect((await callJson(emu, `status-sync/${id}`)).body.status).toBe("COMPLETED");
    expect(emu.faultsInjected).toEqual({ "rate-limit": 1, flaky: 1 });
  });
});

describe("rate limits", () => {
  test("a limit of 3 per window: the 4th /run gets 429 with Retry-After and creates no job, until the window frees a slot", async () => {
    const file = eventsPath();
    const windowMs = 400;
    const emu = start({ rateLimits: { run: 3 }, rateLimitWindowMs: windowMs, queueDelayMs: 10_000, eventsFile: file });
    const first = Date.now();
    const ids = [await submit(emu), await submit(emu), await submit(emu)];
    const refused = await call(emu, "run", { body: { input: VALID_INPUT } });
    expect(Date.now() - first).toBeLessThan(windowMs);
    expect([refused.status, refused.headers.get("retry-after"), await refused.text()]).toEqual([429, "1", ""]);
    expect(emu.requests[3]).toEqual({ method: "POST", path: "/v2/emulator/run", query: {}, status: 429, rateLimited: true });
    expect(emu.rateLimited).toBe(1);
    expect((await callJson(emu, "health")).body.jobs.inQueue).toBe(3);
    await Bun.sleep(first + windowMs + 20 - Date.now());
    ids.push(await submit(emu));
    expect((await callJson(emu, "health")).body.jobs.inQueue).toBe(4);
    await emu.stop();
    const events = await readEvents(file);
    expect(events.map(({ event, id, route }) => [event, id ?? route])).toEqual([...ids.slice(0, 3).map((id) => ["submitted", id]), ["rate-limited", "run"], ["submitted", ids[3]]]);
  });

  test("Retry-After is the whole seconds until the oldest request leaves RunPod's 10 s window; routes are counted apart", async () => {
    const emu = start({ rateLimits: { status: 2 } });
    const id = await submit(emu);
    expect([(await call(emu, `status/${id}`)).status, (await call(emu, `status/${id}`)).status]).toEqual([200, 200]);
    const refused = await call(emu, `status/${id}`);
    expect([refused.status, refused.headers.get("retry-after")]).toEqual([429, "10"]);
    expect((await call(emu, `status-sync/${id}`)).status).toBe(200);
    expect((await call(emu, "health")).status).toBe(200);
  });

  test("they coexist with injected faults: the limiter turns a request away before any fault sees it, and counts apart", async () => {
    const emu = start({ rateLimits: { status: 1 }, faults: parseFaults("flaky@status=2,rate-limit@health") });
    const id = await submit(emu);
    expect((await call(emu, `status/${id}`)).status).toBe(502);
    expect((await call(emu, `status/${id}`)).status).toBe(429);
    expect((await call(emu, "health")).status).toBe(429);
    expect(emu.faultsInjected).toEqual({ flaky: 1, "rate-limit": 1 });
    expect(emu.rateLimited).toBe(1);
  });

  test("rate limits and the events file are for an endpoint, not the local test server", () => {
    expect(() => startEmulator({ port: 0, localMode: true, rateLimits: { run: 1 } })).toThrow("the rateLimits and eventsFile options are for an endpoint, not localMode");
  });
});

describe("big outputs", () => {
  test.each(["seed", "worker-comfyui"] as const)("%s: a job's images add up to about outputBytes, each a valid PNG that deflate cannot shrink", async (dialect) => {
    const emu = start({ dialect, outputBytes: 1_000_000 });
    const workflow = structuredClone(TXT2IMG) as Record<string, { inputs: Record<string, unknown> }>;
    workflow["4"]!.inputs.batch_size = 2;
    const { body } = await callJson(emu, "runsync", { body: { input: { workflow } } });
    const images = imageBytes(body.output);
    expect(images).toHaveLength(2);
    expect(Math.abs(totalBytes(images) - 1_000_000) / 1_000_000).toBeLessThan(0.05);
    for (const image of images) {
      expect([...image.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      expect(image.subarray(12, 16).toString()).toBe("IHDR");
      expect([image.readUInt32BE(16), image.readUInt32BE(20)]).toEqual([expect.any(Number), expect.any(Number)]);
      expect(image.readUInt32BE(16) * image.readUInt32BE(20)).toBeGreaterThan(100_000);
      expect(deflateSync(image, { level: 6 }).length).toBeGreaterThan(image.length * 0.99);
    }
  });

  test("20 MB of images: RunPod's 10 MB /run result limit drops them; a raised result limit lets them through", async () => {
    let emu = start({ outputBytes: 20_000_000 });
    const dropped = await settle(emu, await submit(emu));
    expect([dropped.status, "output" in dropped]).toEqual(["COMPLETED", false]);
    await emu.stop();
    emu = start({ outputBytes: 20_000_000, resultLimitBytes: 30_000_000 });
    const kept = await settle(emu, await submit(emu));
    expect(kept.status).toBe("COMPLETED");
    expect(Math.abs(totalBytes(imageBytes(kept.output)) - 20_000_000) / 20_000_000).toBeLessThan(0.05);
  });
});

describe("the events file", () => {
  test("one line per transition, in order, stamped with the wall time; a completion at the moment status first answers COMPLETED", async () => {
    const file = eventsPath();
    await Bun.write(file, '{"earlier":"line"}\n');
    const begun = wallClock();
    const emu = start({ eventsFile: file, executionMs: 60, workers: 2 });
    const completed = await submit(emu);
    const failed = await submit(emu, FAILING_INPUT);
    // Status as fast as the loop goes: the completion lies between the last answer that was not it and the first that was.
    let lastNotCompletedSent = 0;
    let firstCompletedArrived = 0;
    for (let polls = 0; polls < 20_000 && firstCompletedArrived === 0; polls++) {
      const sent = wallClock();
      if ((await jobStatus(emu, completed)).status === "COMPLETED") firstCompletedArrived = wallClock();
      else lastNotCompletedSent = sent;
    }
    await settle(emu, failed);
    expect((await callJson(emu, `retry/${failed}`, { method: "POST" })).status).toBe(200);
    await settle(emu, failed);
    const timedOut = await submit(emu, VALID_INPUT, { policy: { executionTimeout: 10 } });
    await settle(emu, timedOut);
    const cancelled = await submit(emu);
    await call(emu, `cancel/${cancelled}`, { method: "POST" });
    await emu.stop();
    const ended = wallClock();

    const [earlier, ...lines] = (await Bun.file(file).text()).trimEnd().split("\n");
    expect(earlier).toBe('{"earlier":"line"}'); // appended to, not replaced
    const events: LoggedEvent[] = lines.map((line) => JSON.parse(line));
    for (const logged of events) expect(Object.keys(logged)).toEqual(["t", "event", "id"]);
    const times = events.map(({ t }) => t);
    expect(times).toEqual(times.toSorted((a, b) => a - b));
    expect(times[0]).toBeGreaterThanOrEqual(begun);
    expect(times.at(-1)).toBeLessThanOrEqual(ended);
    const of = (id: string) => events.filter((logged) => logged.id === id).map(({ event }) => event);
    expect(of(completed)).toEqual(["submitted", "started", "completed"]);
    expect(of(failed)).toEqual(["submitted", "started", "failed", "retried", "started", "failed"]);
    expect(of(timedOut)).toEqual(["submitted", "started", "timed-out"]);
    expect(of(cancelled)).toEqual(["submitted", "cancelled"]);

    const completedAt = loggedAt(events, completed, "completed");
    expect(firstCompletedArrived).toBeGreaterThan(0);
    expect(completedAt).toBeGreaterThanOrEqual(lastNotCompletedSent);
    expect(completedAt).toBeLessThanOrEqual(firstCompletedArrived);
    expect(firstCompletedArrived - completedAt).toBeLessThan(5);
    // About executionMs after the start, which is stamped once the handler has run (it renders the images as it starts).
    expect(completedAt - loggedAt(events, completed, "started")).toBeGreaterThan(50);
  });

  test("a file that cannot be written: startEmulator throws before it listens", () => {
    const path = join(tempDir(), "missing", "events.jsonl");
    expect(() => startEmulator({ port: 0, eventsFile: path })).toThrow(EventsFileError);
    expect(() => startEmulator({ port: 0, eventsFile: path })).toThrow(`cannot write the events file ${path}: `);
  });
});

describe("stop", () => {
  test("closes the port at once, cutting a waiting runsync, and can be called twice", async () => {
    const emu = start({ executionMs: 5000 });
    const pending = call(emu, "runsync", { body: { input: VALID_INPUT } }).then(
      (response) => response.status,
      () => "cut",
    );
    await until(async () => emu.requests.length, (count) => count > 0);
    await Promise.all([emu.stop(), emu.stop()]);
    expect(await pending).toBe("cut");
    expect(await fetch(`${emu.url}/emulator/health`).catch(() => "refused")).toBe("refused");
  });
});

describe("the emulate command", () => {
  let output: { stdout: string; stderr: string };
  let savedKey: string | undefined;
  beforeAll(() => {
    savedKey = process.env.RUNPOD_API_KEY;
  });
  afterEach(() => {
    if (savedKey === undefined) delete process.env.RUNPOD_API_KEY;
    else process.env.RUNPOD_API_KEY = savedKey;
  });

  /** Runs `emulate` until it has printed its exports, then lets `use` talk to it, then sends SIGINT. */
  async function runEmulate(rawArgs: string[], use: (env: Record<string, string>) => Promise<void>, ready = "RUNPOD_ENDPOINT_ID"): Promise<void> {
    output = { stdout: "", stderr: "" };
    const stdout = spyOn(process.stdout, "write").mockImplementation((chunk) => ((output.stdout += String(chunk)), true));
    const stderr = spyOn(process.stderr, "write").mockImplementation((chunk) => ((output.stderr += String(chunk)), true));
    try {
      const running = runCommand(emulateCommand, { rawArgs: ["--port", "0", ...rawArgs] });
      await until(async () => output.stdout, (text) => text.includes(ready));
      const env = Object.fromEntries([...output.stdout.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1] ?? "", m[2] ?? ""]));
      await use(env);
      process.emit("SIGINT");
      await running;
    } finally {
      stdout.mockRestore();
      stderr.mockRestore();
    }
  }

  test("prints the exports, serves until SIGINT, then stops", async () => {
    delete process.env.RUNPOD_API_KEY;
    let base = "";
    await runEmulate(["--queue-delay", "0.01", "--execution-time", "0.02", "--workers", "2"], async (env) => {
      base = env.RUNPOD_ENDPOINT_BASE_URL ?? "";
      expect(Object.keys(env)).toEqual(["RUNPOD_ENDPOINT_BASE_URL", "RUNPOD_ENDPOINT_ID", "RUNPOD_API_KEY"]);
      expect(env).toMatchObject({ RUNPOD_ENDPOINT_ID: "emulator", RUNPOD_API_KEY: "emulator-key" });
      const response = await fetch(`${base}/emulator/runsync`, {
        method: "POST",
        headers: { authorization: "Bearer emulator-key" },
        body: JSON.stringify({ input: VALID_INPUT }),
      });
      expect(((await response.json()) as { status: string }).status).toBe("COMPLETED");
    });
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v2$/);
    expect(output.stderr).toBe(`RunPod emulator on ${base} — endpoint emulator, 2 workers; Ctrl-C stops it\n`);
    expect(await fetch(`${base}/emulator/health`).catch(() => "refused")).toBe("refused");
  });

  test("--faults and --fault-seed inject faults, and it says so", async () => {
    await runEmulate(["--faults", " rate-limit@health ", "--fault-seed", "7"], async (env) => {
      const health = () => fetch(`${env.RUNPOD_ENDPOINT_BASE_URL}/emulator/health`, { headers: { authorization: "Bearer emulator-key" } });
      const refused = await health();
      expect([refused.status, refused.headers.get("retry-after"), await refused.text()]).toEqual([429, "1", ""]);
      expect((await health()).status).toBe(200);
    });
    expect(output.stderr).toEndWith("Ctrl-C stops it\nInjecting faults: rate-limit@health (seed 7)\n");
  });

  test("--local-mode: prints where to point the client instead of the exports, and serves the local test server", async () => {
    process.env.RUNPOD_API_KEY = "env-secret";
    let root = "";
    await runEmulate(
      ["--local-mode", "--dialect", "worker-comfyui", "--execution-time", "0.01"],
      async () => {
        root = /--local (\S+)/.exec(output.stdout)?.[1] ?? "";
        const sync = await fetch(`${root}/runsync`, { method: "POST", body: JSON.stringify({ input: VALID_INPUT }) });
        expect(((await sync.json()) as { output: { images: { type: string }[] } }).output.images[0]?.type).toBe("base64");
        expect((await fetch(`${root}/status/x`)).status).toBe(405);
      },
      "--local",
    );
    expect(root).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(output.stdout).toBe(`Pass --local ${root} --dialect worker-comfyui to send-to-runpod\n`);
    expect(output.stderr).toBe(`RunPod local test server emulator on ${root}, worker-comfyui handler; Ctrl-C stops it\n`);
  });

  test("--rate-limits, --no-status-sync, --output-bytes, --result-limit, --events and 32 workers: said at start-up, and in force", async () => {
    delete process.env.RUNPOD_API_KEY;
    const file = eventsPath();
    const args = ["--rate-limits", "run=1", "--no-status-sync", "--output-bytes", "30kB", "--result-limit", "1MB", "--events", file, "--workers", "32"];
    let id = "";
    await runEmulate([...args, "--queue-delay", "0", "--execution-time", "0.01"], async (env) => {
      const base = `${env.RUNPOD_ENDPOINT_BASE_URL}/emulator`;
      const get = (path: string, init: RequestInit = {}) => fetch(`${base}/${path}`, { ...init, headers: { authorization: "Bearer emulator-key" } });
      const run = () => get("run", { method: "POST", body: JSON.stringify({ input: VALID_INPUT }) });
      id = ((await (await run()).json()) as { id: string }).id;
      expect((await run()).status).toBe(429);
      expect((await get(`status-sync/${id}`)).status).toBe(404);
      const done = await until(async () => (await get(`status/${id}`)).json() as Promise<any>, statusIs("COMPLETED"));
      expect(Math.abs(totalBytes(imageBytes(done.output)) - 30_000) / 30_000).toBeLessThan(0.05);
    });
    expect(output.stderr.split("\n").slice(1)).toEqual([
      "No status-sync route (404): clients must poll /status",
      "Rate limits per 10 s: run 1, runsync 2000, status 2000, status-sync 2000, stream 2000, cancel 100, purge-queue 2",
      "Each job's images take about 30000 bytes (random noise)",
      "Results over 1000000 bytes are dropped (the job ends COMPLETED without output)",
      `Appending job events to ${file}`,
      "",
    ]);
    expect(output.stderr).toContain(" — endpoint emulator, 32 workers; Ctrl-C stops it\n");
    expect((await readEvents(file)).map(({ event, id, route }) => [event, id ?? route])).toEqual([
      ["submitted", id],
      ["started", id],
      ["rate-limited", "run"],
      ["completed", id],
    ]);
  });

  test("a bare --rate-limits is RunPod's limits; outputs over the result limit are warned about", async () => {
    await runEmulate(["--output-bytes", "8MB", "--rate-limits"], async () => {});
    expect(output.stderr).toContain("\nRate limits per 10 s: run 1000, runsync 2000, status 2000, status-sync 2000, stream 2000, cancel 100, purge-queue 2\n");
    expect(output.stderr).toContain(
      "\nNote: as base64 that is over the result limit of 10485760 bytes, so /run jobs end COMPLETED without output; raise it with --result-limit\n",
    );
  });

  test("an events file that cannot be written is a usage error", async () => {
    const path = join(tempDir(), "missing", "events.jsonl");
    const failure = await runCommand(emulateCommand, { rawArgs: ["--port", "0", "--events", path] }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(CliError);
    expect(failure).toMatchObject({ exitCode: 2 });
    expect((failure as CliError).message).toStartWith(`cannot write the events file ${path}: `);
  });

  test("--dialect worker-comfyui --s3 says so", async () => {
    delete process.env.RUNPOD_API_KEY;
    await runEmulate(["--dialect", "worker-comfyui", "--s3"], async (env) => {
      expect(env.RUNPOD_API_KEY).toBe("emulator-key");
    });
    expect(output.stderr).toEndWith(" — endpoint emulator, 1 worker, worker-comfyui handler with S3 uploads; Ctrl-C stops it\n");
  });

  test.each([
    ["--api-key", ["--api-key", "my-secret"], undefined, "my-secret", "--api-key"],
    ["RUNPOD_API_KEY", [], "env-secret", "env-secret", "RUNPOD_API_KEY"],
  ])("never prints a key given by %s", async (_, args, envKey, key, source) => {
    if (envKey) process.env.RUNPOD_API_KEY = envKey;
    else delete process.env.RUNPOD_API_KEY;
    await runEmulate([...args, "--endpoint-id", "my-endpoint"], async (env) => {
      expect(Object.keys(env)).toEqual(["RUNPOD_ENDPOINT_BASE_URL", "RUNPOD_ENDPOINT_ID"]);
      expect(env.RUNPOD_ENDPOINT_ID).toBe("my-endpoint");
      const response = await fetch(`${env.RUNPOD_ENDPOINT_BASE_URL}/my-endpoint/health`, { headers: { authorization: `Bearer ${key}` } });
      expect(response.status).toBe(200);
    });
    expect(output.stdout).not.toContain(key);
    expect(output.stderr).not.toContain(key);
    expect(output.stderr).toContain(`Clients must send the API key given in ${source}\n`);
  });

  test.each([
    [["--port", "http"], "--port must be a whole number from 0 to 65535"],
    [["--port", "70000"], "--port must be a whole number from 0 to 65535"],
    [["--workers", "0"], "--workers must be a whole number from 1 to 64"],
    [["--workers", "1.5"], "--workers must be a whole number from 1 to 64"],
    [["--workers", "65"], "--workers must be a whole number from 1 to 64"],
    ...[
      ["--output-bytes", "0"],
      ["--output-bytes", "2GB"],
      ["--output-bytes", "lots"],
      ["--output-bytes", "20MiB"],
      ["--result-limit", "1.5XB"],
    ].map(([flag = "", size = ""]): [string[], string] => [[flag, size], `${flag} must be a size from 1 byte to 1GB, such as 1MB, 20MB or 500000 (bytes; 1MB = 1000000)`]),
    [["--rate-limits", "run=0"], 'bad --rate-limits item "run=0": the limit is a whole number of requests per 10 s from 1 (run=20)'],
    [["--rate-limits=runs=2"], 'bad --rate-limits item "runs=2": unknown route "runs"; the routes are run, runsync, status, status-sync, stream, cancel, retry, purge-queue, health'],
    [["--local-mode", "--rate-limits=run=2"], "--rate-limits is for an emulated endpoint, not --local-mode (the local test server has no queue and no rate limits)"],
    [["--local-mode", "--events", "events.jsonl"], "--events is for an emulated endpoint, not --local-mode (the local test server has no queue and no rate limits)"],
    [["--queue-delay", "-1"], "--queue-delay must be 0 or more"],
    [["--execution-time", "fast"], "--execution-time must be a number of seconds"],
    [["--execution-time", ""], "--execution-time must be a number of seconds"],
    [["--endpoint-id", "a/b"], "--endpoint-id may only hold letters, digits, '-' and '_'"],
    [["--host", " "], "--host must not be empty"],
    [["--fault-seed", "-1"], "--fault-seed must be a whole number from 0 to 4294967295"],
    [["--fault-seed", "4294967296"], "--fault-seed must be a whole number from 0 to 4294967295"],
    [["--faults", "flakey"], 'bad --faults item "flakey": unknown fault; the faults are rate-limit, flaky, slow, reset, malformed, drop-output, expire'],
    [["--faults", "slow@status"], 'bad --faults item "slow@status": slow takes a duration, then optionally a count or a rate: slow=1500ms, slow=2s, slow@status=2s:3, slow=0.5s:25%'],
    [["--faults", "flaky,"], '--faults has an empty item: "flaky,"'],
    [["--dialect", "comfyui"], "--dialect must be seed or worker-comfyui"],
    [["--s3"], "--s3 needs --dialect worker-comfyui (the original handler returns base64 only)"],
  ])("%p is a usage error", async (args, message) => {
    const failure = await runCommand(emulateCommand, { rawArgs: args }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(CliError);
    expect(failure).toMatchObject({ message, exitCode: 2 });
  });

  test("a port in use is a one-line error", async () => {
    const busy = start();
    const port = new URL(busy.url).port;
    const failure = await runCommand(emulateCommand, { rawArgs: ["--port", port] }).catch((error: unknown) => error);
    expect(failure).toMatchObject({ message: `cannot listen on 127.0.0.1:${port}: the port is in use`, exitCode: 2 });
  });
});
