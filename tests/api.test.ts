import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  createClient,
  errorBodyMessage,
  type Failure,
  failureToError,
  type Job,
  jobFailure,
  type Operation,
  parseJob,
  parseRetryAfter,
  type RequestLine,
  type RetryPolicy,
  retryDelay,
} from "../lib/api.ts";
import { CliError, ExitCode } from "../lib/errors.ts";
import { thrown, rejected } from "./helpers.ts";

const RESPONSES = join(import.meta.dir, "../../shared/fixtures/responses");
const fixture = (name: string) => Bun.file(join(RESPONSES, name)).text();

const http = (status: number, retryAfter?: string, body = ""): Failure => ({ kind: "http", status, body, retryAfter });
const network = (code?: string): Failure => ({ kind: "network", code, message: `connect ${code ?? "failed"}` });
const timeout: Failure = { kind: "timeout" };
const label = (f: Failure) => (f.kind === "http" ? `HTTP ${f.status}` : f.kind === "network" ? `network ${f.code ?? "(no code)"}` : "timeout");

describe("retryDelay", () => {
  const policy: RetryPolicy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1_000 };
  const cases: [Operation, Failure, boolean][] = [
    // /run: only failures after which the job certainly was not created
    ["run", http(429), true],
    ["run", network("ECONNREFUSED"), true],
    ["run", network("ENOTFOUND"), true],
    ["run", network("EAI_AGAIN"), true],
    ["run", network("ECONNRESET"), false],
    ["run", network("EPIPE"), false],
    ["run", network(undefined), false],
    ["run", timeout, false],
    ["run", http(408), false],
    ["run", http(500), false],
    ["run", http(502), false],
    ["run", http(503), false],
    ["run", http(400), false],
    ["run", http(401), false],
    ["run", http(403), false],
    ["run", http(404), false],
    ["run", http(413), false],
    // status and cancel: every transient failure
    ...(["status", "cancel"] as const).flatMap((op): [Operation, Failure, boolean][] => [
      [op, network("ECONNRESET"), true],
      [op, network("ECONNREFUSED"), true],
      [op, network(undefined), true],
      [op, timeout, true],
      [op, http(408), true],
      [op, http(429), true],
      [op, http(500), true],
      [op, http(502), true],
      [op, http(503), true],
      [op, http(504), true],
      [op, http(400), false],
      [op, http(401), false],
      [op, http(403), false],
      [op, http(404), false],
      [op, http(409), false],
      [op, http(413), false],
    ]),
  ];
  for (const [op, failure, retried] of cases) {
    test(`${op} after ${label(failure)} → ${retried ? "retry" : "give up"}`, () => {
      expect(retryDelay(op, failure, 1, policy, () => 0)).toBe(retried ? 50 : undefined);
    });
  }

  test("gives up at policy.attempts", () => {
    const delays = [1, 2, 3, 4, 5, 6].map((n) => retryDelay("status", http(503), n, policy, () => 0));
    expect(delays).toEqual([50, 100, 200, 400, undefined, undefined]);
    expect(retryDelay("status", http(503), 1, { ...policy, attempts: 1 }, () => 0)).toBeUndefined();
  });

  const backoff: [attempt: number, random: number, delay: number][] = [
    [1, 0, 50],
    [1, 0.5, 75],
    [1, 1, 100],
    [2, 0, 100],
    [2, 1, 200],
    [3, 0.5, 300],
    [4, 1, 800],
    [5, 0, 500], // ceiling 1600 capped at 1000
    [5, 1, 1_000],
    [9, 0.999, 1_000],
  ];
  for (const [attempt, random, delay] of backoff) {
    test(`attempt ${attempt}, random ${random} → ${delay} ms`, () => {
      expect(retryDelay("status", timeout, attempt, { ...policy, attempts: 10 }, () => random)).toBe(delay);
    });
  }

  test("jitter stays within [ceiling/2, ceiling]", () => {
    for (let attempt = 1; attempt <= 6; attempt++) {
      const ceiling = Math.min(100 * 2 ** (attempt - 1), 1_000);
      for (let i = 0; i < 50; i++) {
        const delay = retryDelay("status", network("ECONNRESET"), attempt, { ...policy, attempts: 10 }, () => i / 50)!;
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
        expect(delay).toBeLessThanOrEqual(ceiling);
      }
    }
  });

  const hinted: [Operation, Failure, RetryPolicy, number | undefined][] = [
    ["status", http(503, "0.4"), policy, 400],
    ["status", http(429, "2"), policy, 1_000], // capped
    ["status", http(429, "2"), { ...policy, maxDelayMs: 15_000 }, 2_000],
    ["run", http(429, "3"), { ...policy, maxDelayMs: 15_000 }, 3_000],
    ["status", http(503, "0"), policy, 0],
    ["status", http(503, "soon"), policy, 50], // unreadable hint: normal backoff
    ["status", http(400, "1"), policy, undefined], // not retryable, hint or not
    ["run", http(503, "1"), policy, undefined],
    ["status", http(503, new Date(Date.now() + 3_600_000).toUTCString()), policy, 1_000], // a date, capped
  ];
  for (const [op, failure, p, expected] of hinted) {
    test(`${op} after ${label(failure)} with Retry-After ${JSON.stringify((failure as { retryAfter?: string }).retryAfter)} (max ${p.maxDelayMs}) → ${expected}`, () => {
      expect(retryDelay(op, failure, 1, p, () => 0)).toBe(expected);
    });
  }

  test("Retry-After as an HTTP date a few seconds ahead is honoured", () => {
    const delay = retryDelay("status", http(503, new Date(Date.now() + 5_000).toUTCString()), 1, { ...policy, maxDelayMs: 15_000 }, () => 0)!;
    // toUTCString drops the milliseconds: between 4 and 5 s
    expect(delay).toBeGreaterThan(3_900);
    expect(delay).toBeLessThanOrEqual(5_000);
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  const cases: [string | null | undefined, number | undefined][] = [
    ["120", 120_000],
    ["0", 0],
    ["1.5", 1_500],
    [" 3 ", 3_000],
    ["Wed, 21 Oct 2015 07:28:30 GMT", 30_000],
    ["Wed, 21 Oct 2015 07:28:00 GMT", 0],
    ["Wed, 21 Oct 2015 07:27:00 GMT", 0], // in the past
    ["soon", undefined],
    ["-1", undefined], // Date.parse would read these as a year
    ["garbage 1", undefined],
    ["", undefined],
    [null, undefined],
    [undefined, undefined],
  ];
  for (const [value, expected] of cases) {
    test(`${JSON.stringify(value)} → ${expected}`, () => {
      expect(parseRetryAfter(value, now)).toBe(expected);
    });
  }
});

describe("errorBodyMessage", () => {
  const long = "x".repeat(400);
  const cases: [string, string | undefined][] = [
    ['{"error": "bad input"}', "bad input"],
    ['{"message": "Unauthorized"}', "Unauthorized"],
    ['{"detail": "Not Found"}', "Not Found"],
    ['{"error": "first", "message": "second"}', "first"],
    ['{"message": "m", "detail": "d"}', "m"],
    ['{"error": {"code": 7, "reason": "quota"}}', '{"code":7,"reason":"quota"}'],
    ['{"error": null, "message": "real"}', "real"],
    ['{"error": "", "message": "real"}', "real"],
    ['"a JSON string"', "a JSON string"],
    ['{"other": 1}', '{"other": 1}'],
    ["Service Unavailable", "Service Unavailable"],
    ["  upstream timed out \n", "upstream timed out"],
    ["<html><body>502 Bad Gateway</body></html>", "<html><body>502 Bad Gateway</body></html>"],
    [long, `${"x".repeat(300)}…`],
    ["", undefined],
    ["   \n", undefined],
  ];
  for (const [body, expected] of cases) {
    test(`${JSON.stringify(body.slice(0, 60))} → ${JSON.stringify(expected?.slice(0, 60))}`, () => {
      expect(errorBodyMessage(body)).toBe(expected);
    });
  }

  test("the fixture error-400-wait.json", async () => {
    expect(errorBodyMessage(await fixture("error-400-wait.json"))).toBe("wait is invalid; must be between 1000 and 300000");
  });
});

describe("failureToError", () => {
  const target = { baseUrl: "https://api.runpod.ai/v2", endpointId: "ep-123", jobId: "job-9" };
  const UNKNOWN_FATE = "the job may or may not have been created";
  const cases: [Operation, Failure, ExitCode, (string | RegExp)[], string[]][] = [
    ["run", http(401, undefined, '{"error": "Unauthorized"}'), ExitCode.credentials, ["rejected the API key", "HTTP 401: Unauthorized", "RUNPOD_API_KEY"], []],
    ["status", http(403, undefined, ""), ExitCode.credentials, ["rejected the API key", "HTTP 403"], []],
    ["run", http(404, undefined, ""), ExitCode.api, ['endpoint "ep-123" not found at https://api.runpod.ai/v2', "RUNPOD_ENDPOINT_ID"], ["expired"]],
    ["status", http(404, undefined, '{"error": "job not found"}'), ExitCode.api, ["job job-9 no longer exists", "expired", "never existed", "job not found"], ["ep-123"]],
    ["cancel", http(404, undefined, ""), ExitCode.api, ["job job-9 no longer exists"], []],
    ["run", http(413, undefined, ""), ExitCode.usage, ["too large", "10 MB", "HTTP 413"], []],
    ["run", http(500, undefined, "boom"), ExitCode.api, ["submitting the job failed (HTTP 500: boom)", UNKNOWN_FATE], []],
    ["run", http(400, undefined, '{"error": "input must be an object"}'), ExitCode.api, ["submitting the job failed (HTTP 400: input must be an object)"], [UNKNOWN_FATE]],
    ["run", http(429, undefined, ""), ExitCode.api, ["HTTP 429"], [UNKNOWN_FATE]],
    ["status", http(500, undefined, ""), ExitCode.api, ["checking job job-9 failed (HTTP 500)"], [UNKNOWN_FATE]],
    ["cancel", http(502, undefined, ""), ExitCode.api, ["cancelling job job-9 failed (HTTP 502)"], [UNKNOWN_FATE]],
    ["run", network("ECONNRESET"), ExitCode.api, ["submitting the job failed: connect ECONNRESET (https://api.runpod.ai/v2)", UNKNOWN_FATE], []],
    ["run", timeout, ExitCode.api, ["no answer within the request deadline", UNKNOWN_FATE], []],
    ["run", network("ECONNREFUSED"), ExitCode.api, ["submitting the job failed: connect ECONNREFUSED"], [UNKNOWN_FATE]],
    ["run", network("ENOTFOUND"), ExitCode.api, ["connect ENOTFOUND"], [UNKNOWN_FATE]],
    ["status", network("ECONNRESET"), ExitCode.api, ["checking job job-9 failed: connect ECONNRESET"], [UNKNOWN_FATE]],
    ["status", timeout, ExitCode.api, ["checking job job-9 failed: no answer within the request deadline"], [UNKNOWN_FATE]],
  ];
  for (const [op, failure, exitCode, contains, absent] of cases) {
    test(`${op} after ${label(failure)} → exit ${exitCode}`, () => {
      const error = failureToError(op, failure, target);
      expect(error).toBeInstanceOf(CliError);
      expect(error.exitCode).toBe(exitCode);
      for (const text of contains) expect(error.message).toContain(text as string);
      for (const text of absent) expect(error.message).not.toContain(text);
      expect(error.message).not.toContain("\n");
    });
  }
});

describe("parseJob", () => {
  test("the run answer and a status answer", async () => {
    expect(parseJob(await fixture("run-accepted.json"))).toEqual({ id: "c0ffee00-0000-4000-8000-000000000012-u1", status: "IN_QUEUE" });
    const job = parseJob(await fixture("in-progress-with-progress.json"));
    expect(job).toEqual({ id: "c0ffee00-0000-4000-8000-000000000008-u1", status: "IN_PROGRESS", delayTime: 18378, output: { progress: "4/10" } });
  });

  test("unknown fields are kept", () => {
    expect(parseJob('{"id": "j", "status": "RUNNING", "workerId": "w"}')).toEqual({ id: "j", status: "RUNNING", workerId: "w" });
  });

  const refused: [string, RegExp][] = [
    ["{}", /^RunPod answered without a job id and status: \{\}$/],
    ['{"id": "j"}', /without a job id and status/],
    ['{"status": "IN_QUEUE"}', /without a job id and status/],
    ['{"id": 5, "status": "IN_QUEUE"}', /without a job id and status/],
    ['{"id": "j", "status": "COMPLETED", "executionTime": "fast"}', /without a job id and status/],
    ["null", /without a job id and status/],
    ["[]", /without a job id and status/],
    ["", /^RunPod answered with something that is not JSON: ""$/],
    ["<html>502 Bad Gateway</html>", /^RunPod answered with something that is not JSON: "<html>502 Bad Gateway<\/html>"$/],
  ];
  for (const [text, message] of refused) {
    test(`${JSON.stringify(text)} → exit 4`, () => {
      const error = thrown(() => parseJob(text));
      expect(error.exitCode).toBe(ExitCode.api);
      expect(error.message).toMatch(message);
    });
  }
});

describe("jobFailure", () => {
  test("python-worker-exception.json: type and message in the line, traceback only in detail", async () => {
    const error = jobFailure(parseJob(await fixture("python-worker-exception.json")));
    expect(error.exitCode).toBe(ExitCode.jobFailed);
    expect(error.message).toBe("job c0ffee00-0000-4000-8000-000000000007-u1 ended FAILED after 1.2 s: KeyError: 'reference_images'");
    expect(error.detail).toStartWith("Traceback (most recent call last):");
    expect(error.detail).toContain("line 42, in handler");
    expect(error.message).not.toContain("Traceback");
    expect(error.message).not.toContain("hostname");
  });

  test("worker-comfyui-5-execution-error.json: the details are shown", async () => {
    const error = jobFailure(parseJob(await fixture("worker-comfyui-5-execution-error.json")));
    expect(error.exitCode).toBe(ExitCode.jobFailed);
    expect(error.message).toBe(
      "job c0ffee00-0000-4000-8000-000000000013-u1 ended FAILED after 4.0 s: Job processing failed — Workflow execution error: Node Type: CLIPTextEncode, Node ID: 6, Message: CUDA out of memory. Tried to allocate 2.00 GiB",
    );
    expect(error.detail).toBeUndefined();
  });

  test("timed-out.json: status, no reason, no detail", async () => {
    const error = jobFailure(parseJob(await fixture("timed-out.json")));
    expect([error.exitCode, error.message, error.detail]).toEqual([ExitCode.jobFailed, "job c0ffee00-0000-4000-8000-000000000011-u1 ended TIMED_OUT", undefined]);
  });

  test("worker-comfyui-5-validation-failed.json: one line, the rest in detail", async () => {
    const error = jobFailure(parseJob(await fixture("worker-comfyui-5-validation-failed.json")));
    expect(error.exitCode).toBe(ExitCode.jobFailed);
    expect(error.message).toStartWith("job c0ffee00-0000-4000-8000-000000000006-u1 ended FAILED after 0.9 s: Workflow validation failed: • Node 4 (errors):");
    expect(error.message).toContain("does-not-exist.safetensors");
    expect(error.message).not.toContain("\n");
    expect(error.detail).toContain("does-not-exist.safetensors");
    expect(error.detail).toStartWith("• Node 4 (errors)");
  });

  const cases: [Job, string, string | undefined][] = [
    [{ id: "j", status: "CANCELLED" }, "job j ended CANCELLED", undefined],
    [{ id: "j", status: "FAILED", executionTime: 61_000, error: "boom" }, "job j ended FAILED after 61.0 s: boom", undefined],
    [{ id: "j", status: "FAILED", error: { code: 3 } }, 'job j ended FAILED: {"code":3}', undefined],
    [{ id: "j", status: "FAILED", error: "line one\nline two" }, "job j ended FAILED: line one", "line two"],
    [{ id: "j", status: "FAILED", error: '{"error_message": "only a message"}' }, "job j ended FAILED: only a message", undefined],
    [{ id: "j", status: "FAILED", error: "42" }, "job j ended FAILED: 42", undefined],
    [{ id: "j", status: "FAILED", error: "x", output: { details: "one detail" } }, "job j ended FAILED: x — one detail", undefined],
  ];
  for (const [job, message, detail] of cases) {
    test(`${JSON.stringify(job)} → ${message}`, () => {
      const error = jobFailure(job);
      expect([error.exitCode, error.message, error.detail]).toEqual([ExitCode.jobFailed, message, detail]);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// createClient against a real loopback server

const KEY = "rpa_SECRET_test_key_0123456789";
const FAST: RetryPolicy = { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 };

interface Seen {
  method: string;
  path: string;
  authorization: string | null;
  contentType: string | null;
  body: string;
}

const servers: ReturnType<typeof Bun.serve>[] = [];
const hanging: (() => void)[] = [];
afterEach(() => {
  for (const release of hanging.splice(0)) release();
  for (const server of servers.splice(0)) server.stop(true);
});

/** A loopback server; `answer` gets the request and its 1-based number. */
function serve(answer: (request: Request, n: number) => Response | Promise<Response>) {
  const seen: Seen[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      seen.push({
        method: request.method,
        path: new URL(request.url).pathname,
        authorization: request.headers.get("authorization"),
        contentType: request.headers.get("content-type"),
        body: await request.text(),
      });
      return answer(request, seen.length);
    },
  });
  servers.push(server);
  return { seen, baseUrl: new URL("v2", server.url).href };
}

/** An answer that never comes (until the test ends). */
const never = () =>
  new Promise<Response>((resolve) => {
    hanging.push(() => resolve(new Response("late", { status: 200 })));
  });

describe("createClient", () => {
  test("run: POST {base}/{endpoint}/run with Bearer key and {input} as JSON", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ id: "job-1", status: "IN_QUEUE" }));
    const client = createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST });
    const input = { workflow: { "1": { class_type: "A", inputs: {} } }, reference_images: { "a.png": "AAAA" }, return_base64: true };
    expect(await client.run(input)).toEqual({ id: "job-1", status: "IN_QUEUE" });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.method).toBe("POST");
    expect(seen[0]!.path).toBe("/v2/ep-1/run");
    expect(seen[0]!.authorization).toBe(`Bearer ${KEY}`);
    expect(seen[0]!.contentType).toContain("application/json");
    expect(JSON.parse(seen[0]!.body)).toEqual({ input });
  });

  test("run: extras go beside input", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ id: "job-1", status: "IN_QUEUE" }));
    const client = createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST });
    await client.run({ a: 1 }, { policy: { ttl: 60_000 } });
    expect(JSON.parse(seen[0]!.body)).toEqual({ policy: { ttl: 60_000 }, input: { a: 1 } });
  });

  test("status: GET {base}/{endpoint}/status/{id}; cancel: POST {base}/{endpoint}/cancel/{id}", async () => {
    const { seen, baseUrl } = serve((request) =>
      Response.json(request.method === "GET" ? { id: "job-7", status: "IN_PROGRESS", output: { progress: "4/10" } } : { id: "job-7", status: "CANCELLED" }),
    );
    const client = createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST });
    expect(await client.status("job-7")).toEqual({ id: "job-7", status: "IN_PROGRESS", output: { progress: "4/10" } });
    expect(await client.cancel("job-7")).toEqual({ id: "job-7", status: "CANCELLED" });
    expect(seen.map((s) => [s.method, s.path, s.authorization])).toEqual([
      ["GET", "/v2/ep-1/status/job-7", `Bearer ${KEY}`],
      ["POST", "/v2/ep-1/cancel/job-7", `Bearer ${KEY}`],
    ]);
  });

  test("status retries a 503, then succeeds", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? new Response("busy", { status: 503 }) : Response.json({ id: "j", status: "COMPLETED" })));
    const waits: number[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async (ms) => void waits.push(ms) });
    expect(await client.status("j")).toEqual({ id: "j", status: "COMPLETED" });
    expect(seen).toHaveLength(2);
    expect(waits).toHaveLength(1);
    expect(waits[0]!).toBeLessThanOrEqual(FAST.maxDelayMs);
  });

  test("status honours Retry-After (capped by the policy)", async () => {
    const { seen, baseUrl } = serve((_, n) =>
      n === 1 ? new Response("", { status: 429, headers: { "retry-after": "30" } }) : Response.json({ id: "j", status: "IN_QUEUE" }),
    );
    const waits: number[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 7 }, sleep: async (ms) => void waits.push(ms) });
    await client.status("j");
    expect(seen).toHaveLength(2);
    expect(waits).toEqual([7]);
  });

  test("status gives up after policy.attempts and says why", async () => {
    const { seen, baseUrl } = serve(() => new Response('{"error": "worker crashed"}', { status: 500 }));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    const error = await rejected(client.status("j"));
    expect(seen).toHaveLength(FAST.attempts);
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toBe("checking job j failed (HTTP 500: worker crashed)");
  });

  test("run retries a 429, then succeeds", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? new Response("", { status: 429 }) : Response.json({ id: "j", status: "IN_QUEUE" })));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    expect((await client.run({})).id).toBe("j");
    expect(seen).toHaveLength(2);
    expect(seen[1]!.body).toBe(seen[0]!.body);
  });

  test("run is NOT retried after a 500, and the error says the fate is unknown", async () => {
    const { seen, baseUrl } = serve(() => new Response("Internal Server Error", { status: 500 }));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    const error = await rejected(client.run({}));
    expect(seen).toHaveLength(1);
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toContain("may or may not have been created");
  });

  test("run is retried when nothing listens (connection refused), then fails with exit 4", async () => {
    const { baseUrl } = serve(() => new Response(""));
    servers.pop()!.stop(true); // the port is now closed
    const waits: number[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async (ms) => void waits.push(ms) });
    const error = await rejected(client.run({}));
    expect(waits).toHaveLength(FAST.attempts - 1);
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toStartWith("submitting the job failed:");
    expect(error.message).not.toContain("may or may not");
  });

  test("401 → exit 3, and the key appears nowhere", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ error: "Unauthorized" }, { status: 401 }));
    const lines: RequestLine[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, onRequest: (line) => lines.push(line) });
    const error = await rejected(client.run({}));
    expect(seen).toHaveLength(1);
    expect(error.exitCode).toBe(ExitCode.credentials);
    expect(`${error.message}\n${error.detail ?? ""}\n${error.stack ?? ""}\n${JSON.stringify(lines)}`).not.toContain(KEY);
  });

  test("404 on status → exit 4, expired or never existed", async () => {
    const { baseUrl } = serve(() => new Response("", { status: 404 }));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    const error = await rejected(client.status("old-job"));
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toContain("job old-job no longer exists");
  });

  test("a 200 that is not a job → exit 4, and it is not mistaken for a network failure", async () => {
    const { seen, baseUrl } = serve(() => new Response("<html>hello</html>", { status: 200 }));
    const lines: RequestLine[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {}, onRequest: (line) => lines.push(line) });
    const error = await rejected(client.status("j"));
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toContain("not JSON");
    // one onRequest line per HTTP exchange, and the server did answer
    expect(lines).toHaveLength(seen.length);
    expect(lines.map((l) => l.status)).not.toContain("no answer");
  });

  test("a per-request timeout: /run is not retried and its fate is unknown", async () => {
    const { seen, baseUrl } = serve(never);
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, requestTimeoutMs: 50 });
    const started = performance.now();
    const error = await rejected(client.run({}));
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(seen).toHaveLength(1);
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toContain("no answer within the request deadline");
    expect(error.message).toContain("may or may not have been created");
  });

  test("a per-request timeout: status is retried", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? never() : Response.json({ id: "j", status: "COMPLETED" })));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, requestTimeoutMs: 50, sleep: async () => {} });
    expect(await client.status("j")).toEqual({ id: "j", status: "COMPLETED" });
    expect(seen).toHaveLength(2);
  });

  test("onRequest: one line per exchange with method, path and status; never the key", async () => {
    const { baseUrl } = serve((_, n) => (n === 2 ? new Response("", { status: 503 }) : Response.json({ id: "j", status: "IN_QUEUE" })));
    const lines: RequestLine[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {}, onRequest: (line) => lines.push(line) });
    await client.run({ secret: "not the key" });
    await client.status("j");
    expect(lines.map(({ method, path, status }) => ({ method, path, status }))).toEqual([
      { method: "POST", path: "/v2/ep/run", status: 200 },
      { method: "GET", path: "/v2/ep/status/j", status: 503 },
      { method: "GET", path: "/v2/ep/status/j", status: 200 },
    ]);
    for (const line of lines) expect(line.ms).toBeGreaterThanOrEqual(0);
    expect(JSON.stringify(lines)).not.toContain(KEY);
  });

  test("onRequest reports a timed-out request as no answer", async () => {
    const { baseUrl } = serve(never);
    const lines: RequestLine[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, requestTimeoutMs: 30, onRequest: (line) => lines.push(line) });
    await rejected(client.run({}));
    expect(lines.map((l) => l.status)).toEqual(["no answer"]);
  });

  test("aborting the signal mid-request rejects with the signal's reason", async () => {
    const { seen, baseUrl } = serve(never);
    const controller = new AbortController();
    const reason = new CliError("interrupted", ExitCode.interrupted);
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, signal: controller.signal });
    const pending = client.status("j");
    setTimeout(() => controller.abort(reason), 10);
    expect(await pending.catch((error: unknown) => error)).toBe(reason);
    expect(seen).toHaveLength(1);
  });

  test("aborting the signal during a retry wait rejects with its reason, without another request", async () => {
    const { seen, baseUrl } = serve(() => new Response("", { status: 503 }));
    const controller = new AbortController();
    const reason = new Error("deadline");
    // the real (abortable) sleep with a long backoff: only the abort can end it in time
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: { attempts: 3, baseDelayMs: 60_000, maxDelayMs: 60_000 }, signal: controller.signal });
    const pending = client.status("j");
    setTimeout(() => controller.abort(reason), 30);
    expect(await pending.catch((error: unknown) => error)).toBe(reason);
    expect(seen).toHaveLength(1);
  });

  test("an already-aborted signal sends nothing", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ id: "j", status: "IN_QUEUE" }));
    const reason = new Error("already");
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, signal: AbortSignal.abort(reason) });
    expect(await client.run({}).catch((error: unknown) => error)).toBe(reason);
    expect(seen).toHaveLength(0);
  });
});
