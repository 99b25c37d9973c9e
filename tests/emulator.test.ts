import { afterAll, afterEach, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { runCommand } from "citty";
import { emulateCommand, startEmulator } from "../lib/emulator.ts";
import type { Emulator, EmulatorOptions } from "../lib/emulator.ts";
import { CliError } from "../lib/errors.ts";

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
}

/** A request to `{url}/{endpointId}/{path}`, authorised unless headers say otherwise. */
function call(emu: Emulator, path: string, { method, body, rawBody, headers }: CallOptions = {}): Promise<Response> {
  return fetch(`${emu.url}/${emu.endpointId}/${path}`, {
    method: method ?? (body === undefined && rawBody === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${emu.apiKey}`, "content-type": "application/json", ...headers },
    body: rawBody ?? (body === undefined ? undefined : JSON.stringify(body)),
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

  test.each(["status/nope", "stream/nope", "cancel/nope", "retry/nope"])("an unknown job on %s answers 404 with a JSON error", async (path) => {
    const emu = start();
    const method = path.startsWith("status") || path.startsWith("stream") ? "GET" : "POST";
    expect(await callJson(emu, path, { method })).toEqual({ status: 404, body: { error: "request does not exist" } });
  });

  test.each([
    ["GET", "run"],
    ["GET", "runsync"],
    ["PUT", "status/x"],
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
  });

  test("when wait runs out, runsync answers the unfinished job; an empty stream holds for its wait", async () => {
    const emu = start({ executionMs: 5000 });
    const runningId = await submit(emu);
    const started = Date.now();
    const [sync, stream] = await Promise.all([
      callJson(emu, "runsync?wait=1000", { body: { input: VALID_INPUT } }),
      callJson(emu, `stream/${runningId}?wait=1000`),
    ]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
    expect(sync.status).toBe(200);
    expect(sync.body).toEqual({ id: expect.stringMatching(SYNC_JOB_ID), status: "IN_QUEUE" });
    expect(stream.body).toEqual({ status: "IN_PROGRESS", stream: [] });
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
  async function runEmulate(rawArgs: string[], use: (env: Record<string, string>) => Promise<void>): Promise<void> {
    output = { stdout: "", stderr: "" };
    const stdout = spyOn(process.stdout, "write").mockImplementation((chunk) => ((output.stdout += String(chunk)), true));
    const stderr = spyOn(process.stderr, "write").mockImplementation((chunk) => ((output.stderr += String(chunk)), true));
    try {
      const running = runCommand(emulateCommand, { rawArgs: ["--port", "0", ...rawArgs] });
      await until(async () => output.stdout, (text) => text.includes("RUNPOD_ENDPOINT_ID"));
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
    [["--queue-delay", "-1"], "--queue-delay must be 0 or more"],
    [["--execution-time", "fast"], "--execution-time must be a number of seconds"],
    [["--execution-time", ""], "--execution-time must be a number of seconds"],
    [["--endpoint-id", "a/b"], "--endpoint-id may only hold letters, digits, '-' and '_'"],
    [["--host", " "], "--host must not be empty"],
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
