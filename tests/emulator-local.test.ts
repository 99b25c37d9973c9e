// The emulator in local mode: RunPod's local test server (`python handler.py --rp_serve_api`), checked
// over HTTP against the answers recorded from the real one.
import { afterEach, describe, expect, test } from "bun:test";
import { startEmulator } from "../lib/emulator.ts";
import type { Emulator, EmulatorOptions } from "../lib/emulator.ts";
import { parseFaults } from "../lib/emulator-faults.ts";
import { RECORDED_SESSION, TINY_PNG, comparable, recorded, sd15 } from "./emulator-recordings.ts";

let emulator: Emulator | undefined;
afterEach(async () => {
  await emulator?.stop();
  emulator = undefined;
});

/** A local-mode emulator running worker-comfyui on a free port; afterEach stops it. */
function start(options: Partial<EmulatorOptions> = {}): Emulator {
  emulator = startEmulator({ port: 0, localMode: true, dialect: "worker-comfyui", executionMs: 10, ...options });
  return emulator;
}

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

/** A request to `{url}{path}`: POST with `body` as JSON (a string is sent as it is), no auth. */
async function call(emu: Emulator, path: string, body?: unknown, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(`${emu.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" || body === undefined ? body : JSON.stringify(body),
    redirect: "manual",
    ...init,
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text === "" ? null : JSON.parse(text) };
}

const TXT2IMG = { workflow: sd15() };
const filenamesOf = (answer: Answer): string[] => answer.body.output.images.map((image: { filename: string }) => image.filename);

test("its url is the server's root", () => {
  expect(start().url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
});

test("the recorded session, request by request: same status codes, keys, ids and texts", async () => {
  const emu = start();
  const runIds = new Map<string, string>();
  for (const step of RECORDED_SESSION) {
    const answer =
      step.route === "status"
        ? await call(emu, `/status/${runIds.get(step.of)}`, undefined, { method: step.method })
        : await call(emu, `/${step.route}`, { input: step.input });
    expect([step.fixture, answer.status]).toEqual([step.fixture, step.route === "status" ? step.httpStatus : 200]);
    expect(comparable(answer.body)).toBe(comparable(await recorded(step.fixture)));
    if (step.route === "run") runIds.set(step.fixture, answer.body.id);
    else if (step.route === "status" && step.httpStatus === 200) expect(answer.body.id).toBe(runIds.get(step.of) ?? "");
  }
});

describe("routes", () => {
  const notAllowed = { detail: "Method Not Allowed" };
  const notFound = { detail: "Not Found" };
  const jobNotFound = { id: "nope", status: "FAILED", error: "Job ID not found" };
  test.each<[string, string, number, unknown]>([
    ["POST", "/status/nope", 200, jobNotFound],
    ["POST", "/stream/nope", 200, jobNotFound],
    ["GET", "/run", 405, notAllowed],
    ["GET", "/runsync", 405, notAllowed],
    ["GET", "/status/nope", 405, notAllowed],
    ["PUT", "/status/nope", 405, notAllowed],
    ["GET", "/stream/nope", 405, notAllowed],
    ["POST", "/cancel/nope", 404, notFound],
    ["POST", "/retry/nope", 404, notFound],
    ["POST", "/purge-queue", 404, notFound],
    ["GET", "/health", 404, notFound],
    ["POST", "/status-sync/nope", 404, notFound],
    ["POST", "/status", 404, notFound],
    ["POST", "/status/a/b", 404, notFound],
    ["POST", "/v2/emulator/run", 404, notFound],
    ["GET", "/", 404, notFound],
    ["GET", "/s3/x", 404, notFound],
  ])("%s %s answers %p", async (method, path, status, body) => {
    const answer = await call(start(), path, undefined, { method });
    expect([answer.status, answer.body]).toEqual([status, body]);
    expect(answer.headers.get("content-type")).toStartWith("application/json");
    if (status === 405) expect(answer.headers.get("allow")).toBe("POST");
  });

  test.each(["/run/", "/status/abc/", "/runsync//"])("%s is redirected without its trailing slash (307), query kept", async (path) => {
    const emu = start();
    const answer = await call(emu, `${path}?x=1`);
    expect([answer.status, answer.headers.get("location")]).toEqual([307, `${emu.url}${path.replace(/\/+$/, "")}?x=1`]);
  });

  test("no key is needed, and any key is accepted", async () => {
    const emu = start();
    const answer = await call(emu, "/runsync", { input: TXT2IMG }, { headers: { authorization: "Bearer wrong" } });
    expect([answer.status, answer.body.status]).toEqual([200, "COMPLETED"]);
  });

  test.each<[string, string, unknown[]]>([
    ["an empty body", "", [{ type: "missing", loc: ["body"], msg: "Field required", input: null }]],
    ["invalid JSON", "{input:", [{ type: "json_invalid", loc: ["body", 0], msg: "JSON decode error", input: {}, ctx: { error: "Expecting value" } }]],
    ["a list", "[]", [{ type: "dataclass_type", loc: ["body"], msg: "Input should be a dictionary or an instance of DefaultRequest", input: [], ctx: { class_name: "DefaultRequest" } }]],
    ["no input", '{"webhook": null}', [{ type: "missing", loc: ["body", "input"], msg: "Field required", input: { webhook: null } }]],
    [
      "input as a string, webhook as a number",
      '{"input": "x", "webhook": 5}',
      [
        { type: "dict_type", loc: ["body", "input"], msg: "Input should be a valid dictionary", input: "x" },
        { type: "string_type", loc: ["body", "webhook"], msg: "Input should be a valid string", input: 5 },
      ],
    ],
  ])("%s: FastAPI's 422 on /run and /runsync", async (_, body, detail) => {
    const emu = start();
    for (const path of ["/run", "/runsync"]) expect(await call(emu, path, body)).toMatchObject({ status: 422, body: { detail } });
  });
});

describe("jobs", () => {
  test("/run only stores the job; its first /status runs it, there and then", async () => {
    const emu = start({ executionMs: 150 });
    let started = Date.now();
    const stored = await call(emu, "/run", { input: TXT2IMG });
    expect(Date.now() - started).toBeLessThan(140);
    expect(stored.body).toEqual({ id: expect.stringMatching(/^test-/), status: "IN_PROGRESS" });
    // Another job runs before it: the stored one has not touched the worker's output folder yet.
    expect(filenamesOf(await call(emu, "/runsync", { input: TXT2IMG }))).toEqual(["ComfyUI_00001_.png"]);
    started = Date.now();
    const ran = await call(emu, `/status/${stored.body.id}`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(Object.keys(ran.body)).toEqual(["id", "status", "output"]);
    expect(filenamesOf(ran)).toEqual(["ComfyUI_00002_.png"]);
    expect((await call(emu, `/status/${stored.body.id}`)).body).toEqual({ id: stored.body.id, status: "FAILED", error: "Job ID not found" });
  });

  test("/stream of a stored job: the handler is no generator; the job stays stored", async () => {
    const emu = start();
    const { id } = (await call(emu, "/run", { input: TXT2IMG })).body;
    expect((await call(emu, `/stream/${id}`)).body).toEqual({ id, status: "FAILED", error: "Stream not supported, handler must be a generator." });
    expect((await call(emu, `/status/${id}`)).body.status).toBe("COMPLETED");
  });

  test("a failed job keeps only its error (worker-comfyui's details are dropped), and runs at once", async () => {
    const emu = start({ executionMs: 5000 });
    const input = { workflow: sd15(), images: [{ name: "masks/m.png", image: TINY_PNG }] };
    expect(await call(emu, "/runsync", { input })).toMatchObject({
      status: 200,
      body: { id: expect.stringMatching(/^test-/), status: "FAILED", error: "Failed to upload one or more input images" },
    });
  });

  test("one job at a time: the handler runs inside the server's event loop, so requests wait their turn", async () => {
    const emu = start({ executionMs: 100 });
    const started = Date.now();
    const [first, second] = await Promise.all([call(emu, "/runsync", { input: TXT2IMG }), call(emu, "/runsync", { input: TXT2IMG })]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(195);
    expect([...filenamesOf(first), ...filenamesOf(second)].sort()).toEqual(["ComfyUI_00001_.png", "ComfyUI_00002_.png"]);
  });

  test("the seed dialect works too: base64 strings, or a FAILED job with the handler's message", async () => {
    const emu = start({ dialect: "seed" });
    const done = await call(emu, "/runsync", { input: TXT2IMG });
    expect(Object.keys(done.body)).toEqual(["id", "status", "output"]);
    expect(done.body.output.images[0]).toStartWith("iVBORw0KGgo");
    expect((await call(emu, "/runsync", { input: { workflow: {} } })).body).toEqual({ id: expect.stringMatching(/^test-/), status: "FAILED", error: "Prompt has no outputs" });
  });

  test("the webhook gets {output} of a job that succeeds, and nothing for one that fails", async () => {
    const received: unknown[] = [];
    const receiver = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      async fetch(request) {
        received.push(await request.json());
        return new Response("ok");
      },
    });
    try {
      const emu = start();
      await call(emu, "/runsync", { input: { workflow: {} }, webhook: receiver.url.href });
      const { id } = (await call(emu, "/run", { input: TXT2IMG, webhook: receiver.url.href })).body;
      const done = (await call(emu, `/status/${id}`)).body;
      for (const deadline = Date.now() + 2000; received.length === 0 && Date.now() < deadline; ) await Bun.sleep(5);
      expect(received).toEqual([{ output: done.output }]);
    } finally {
      await receiver.stop(true);
    }
  });

  test("faults hit its routes as they do an endpoint's", async () => {
    const emu = start({ faults: parseFaults("rate-limit@status,flaky@run"), retryAfterSeconds: 1 });
    const flaky = await fetch(`${emu.url}/run`, { method: "POST", body: JSON.stringify({ input: TXT2IMG }) });
    expect(flaky.status).toBe(502); // the job was stored all the same
    expect((await call(emu, "/status/x")).status).toBe(429);
    expect((await call(emu, "/status/x")).body.error).toBe("Job ID not found");
    expect(emu.faultsInjected).toEqual({ "rate-limit": 1, flaky: 1 });
  });
});

describe("S3 uploads", () => {
  test("an image's URL serves it without a key, GET only, until the retention after its run", async () => {
    const emu = start({ s3: true, retentionMs: 150 });
    const done = await call(emu, "/runsync", { input: TXT2IMG });
    const [image] = done.body.output.images;
    expect(image).toEqual({ filename: "ComfyUI_00001_.png", type: "s3_url", data: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/s3\/\d\d-\d\d\/test-[0-9a-f-]{36}\/[0-9a-f]{8}\.png\?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=604800&X-Amz-Signature=[0-9a-f]{64}$/) });
    expect(image.data.startsWith(emu.url)).toBe(true);
    const download = await fetch(image.data);
    expect([download.status, download.headers.get("content-type")]).toEqual([200, "image/png"]);
    expect(Buffer.from(await download.arrayBuffer()).subarray(1, 4).toString()).toBe("PNG");
    for (const deadline = Date.now() + 2000; Date.now() < deadline; await Bun.sleep(10)) {
      if ((await fetch(image.data)).status === 404) break;
    }
    const gone = await fetch(image.data);
    expect([gone.status, await gone.text()]).toEqual([404, expect.stringContaining("<Code>NoSuchKey</Code>")]);
  });
});
