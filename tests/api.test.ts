import { afterEach, describe, expect, type Mock, spyOn, test } from "bun:test";
import { join } from "node:path";
import {
  createClient,
  DEFAULT_RETRY,
  download,
  errorBodyMessage,
  type Failure,
  failureToError,
  type Job,
  jobFailure,
  type Operation,
  isSecureOrLoopback,
  nodeErrorLines,
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
  // /run, /retry and /purge-queue are not idempotent: sent again only when the first certainly never reached RunPod
  const notIdempotent = ["run", "retry", "purge-queue"] as const;
  // status, cancel and health: every transient failure
  const idempotent = ["status", "cancel", "health"] as const;
  const cases: [Operation, Failure, boolean][] = [
    ...notIdempotent.flatMap((op): [Operation, Failure, boolean][] => [
      [op, http(429), true],
      [op, network("ECONNREFUSED"), true],
      [op, network("ENOTFOUND"), true],
      [op, network("EAI_AGAIN"), true],
      [op, network("ECONNRESET"), false],
      [op, network("EPIPE"), false],
      [op, network("ETIMEDOUT"), false],
      [op, network(undefined), false],
      [op, timeout, false],
      [op, http(408), false],
      [op, http(500), false],
      [op, http(502), false],
      [op, http(503), false],
      [op, http(504), false],
      [op, http(400), false],
      [op, http(401), false],
      [op, http(403), false],
      [op, http(404), false],
      [op, http(409), false],
      [op, http(413), false],
    ]),
    ...idempotent.flatMap((op): [Operation, Failure, boolean][] => [
      [op, network("ECONNRESET"), true],
      [op, network("ECONNREFUSED"), true],
      [op, network("ENOTFOUND"), true],
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
    ["retry", http(429, "3"), { ...policy, maxDelayMs: 15_000 }, 3_000],
    ["purge-queue", http(429, "0.2"), policy, 200],
    ["health", http(503, "0.3"), policy, 300],
    ["purge-queue", http(503, "1"), policy, undefined], // a hint does not make a 503 safe to resend
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
  const base = { baseUrl: "https://api.runpod.ai/v2", endpointId: "ep-123" };
  /** What the client passes: a job id for the job routes, none for run, health and purge-queue. */
  const targetOf = (op: Operation) => (["status", "cancel", "retry"].includes(op) ? { ...base, jobId: "job-9" } : base);
  const UNKNOWN_FATE = "the job may or may not have been created";
  // [op, failure, exit code, error.code (null: see the known-bug test below), the message contains, and does not contain]
  const cases: [Operation, Failure, ExitCode, string | null, string[], string[]][] = [
    ["run", http(401, undefined, '{"error": "Unauthorized"}'), ExitCode.credentials, "credentials_rejected", ["rejected the API key", "HTTP 401: Unauthorized", "RUNPOD_API_KEY"], []],
    ["status", http(403, undefined, ""), ExitCode.credentials, "credentials_rejected", ["rejected the API key", "HTTP 403"], []],
    ["health", http(401, undefined, ""), ExitCode.credentials, "credentials_rejected", ["rejected the API key"], []],
    ["purge-queue", http(403, undefined, ""), ExitCode.credentials, "credentials_rejected", ["rejected the API key"], []],
    // 404 without a job id: the endpoint; with one: the job, which expired
    ["run", http(404, undefined, ""), ExitCode.api, "endpoint_not_found", ['endpoint "ep-123" not found at https://api.runpod.ai/v2 (HTTP 404)', "RUNPOD_ENDPOINT_ID"], ["expired", "job"]],
    ["health", http(404, undefined, ""), ExitCode.api, "endpoint_not_found", ['endpoint "ep-123" not found'], ["expired"]],
    ["purge-queue", http(404, undefined, ""), ExitCode.api, "endpoint_not_found", ['endpoint "ep-123" not found'], ["expired"]],
    ["status", http(404, undefined, '{"error": "job not found"}'), ExitCode.api, "job_not_found", ["job job-9 no longer exists", "expired", "30 minutes", "never existed", "job not found"], ["ep-123", "not found at"]],
    ["cancel", http(404, undefined, ""), ExitCode.api, "job_not_found", ["job job-9 no longer exists", "expired"], ["ep-123"]],
    ["retry", http(404, undefined, ""), ExitCode.api, "job_not_found", ["job job-9 no longer exists", "expired"], ["ep-123"]],
    ["run", http(413, undefined, ""), ExitCode.usage, "request_too_large", ["too large", "10 MB", "HTTP 413"], []],
    // /run: unless it certainly never arrived, its fate is unknown
    ["run", http(500, undefined, "boom"), ExitCode.api, "submission_unknown", ["submitting the job failed (HTTP 500: boom)", UNKNOWN_FATE, "send-to-runpod health"], []],
    ["run", http(503, undefined, ""), ExitCode.api, "submission_unknown", ["HTTP 503", UNKNOWN_FATE], []],
    ["run", http(408, undefined, ""), ExitCode.api, "submission_unknown", ["HTTP 408", UNKNOWN_FATE], []],
    ["run", http(400, undefined, '{"error": "input must be an object"}'), ExitCode.api, null, ["submitting the job failed (HTTP 400: input must be an object)"], []],
    ["run", http(429, undefined, ""), ExitCode.api, "http_error", ["HTTP 429"], [UNKNOWN_FATE]],
    ["run", network("ECONNRESET"), ExitCode.api, "submission_unknown", ["submitting the job failed: connect ECONNRESET (https://api.runpod.ai/v2)", UNKNOWN_FATE], []],
    ["run", timeout, ExitCode.api, "submission_unknown", ["no answer within the request deadline", UNKNOWN_FATE], []],
    ["run", network("ECONNREFUSED"), ExitCode.api, null, ["submitting the job failed: connect ECONNREFUSED"], [UNKNOWN_FATE]],
    ["run", network("ENOTFOUND"), ExitCode.api, null, ["connect ENOTFOUND"], [UNKNOWN_FATE]],
    // the other operations name what they were doing
    ["status", http(500, undefined, ""), ExitCode.api, "http_error", ["checking job job-9 failed (HTTP 500)"], [UNKNOWN_FATE]],
    ["cancel", http(502, undefined, ""), ExitCode.api, "http_error", ["cancelling job job-9 failed (HTTP 502)"], [UNKNOWN_FATE]],
    ["retry", http(500, undefined, ""), ExitCode.api, "request_unknown", ["retrying job job-9 failed (HTTP 500)", "may or may not have been queued again"], [UNKNOWN_FATE]],
    ["retry", http(400, undefined, '{"error": "job is not FAILED"}'), ExitCode.api, "http_error", ["retrying job job-9 failed (HTTP 400: job is not FAILED)"], []],
    ["health", http(503, undefined, ""), ExitCode.api, "http_error", ["checking the endpoint's health failed (HTTP 503)"], [UNKNOWN_FATE, "undefined"]],
    ["purge-queue", http(500, undefined, ""), ExitCode.api, "request_unknown", ["purging the queue failed (HTTP 500)", "may or may not have been purged"], [UNKNOWN_FATE, "undefined"]],
    ["status", network("ECONNRESET"), ExitCode.api, "network", ["checking job job-9 failed: connect ECONNRESET"], [UNKNOWN_FATE]],
    ["status", timeout, ExitCode.api, "network", ["checking job job-9 failed: no answer within the request deadline"], [UNKNOWN_FATE]],
    ["health", network("ENOTFOUND"), ExitCode.api, "network", ["checking the endpoint's health failed: connect ENOTFOUND (https://api.runpod.ai/v2)"], []],
    ["purge-queue", timeout, ExitCode.api, "request_unknown", ["purging the queue failed: no answer within the request deadline", "may or may not have been purged"], []],
  ];
  for (const [op, failure, exitCode, code, contains, absent] of cases) {
    test(`${op} after ${label(failure)} → exit ${exitCode}${code ? `, code ${code}` : ""}`, () => {
      const error = failureToError(op, failure, targetOf(op));
      expect(error).toBeInstanceOf(CliError);
      expect(error.exitCode).toBe(exitCode);
      if (code) expect(error.code).toBe(code);
      for (const text of contains) expect(error.message).toContain(text);
      for (const text of absent) expect(error.message).not.toContain(text);
      expect(error.message).not.toContain("\n");
    });
  }

  // A /run that certainly never reached RunPod is a plain network failure, not an unknown fate.
  for (const code of ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN"]) {
    test(`run after network ${code}: the job certainly was not created → code "network"`, () => {
      expect(failureToError("run", network(code), base).code).toBe("network");
    });
  }

  // RunPod's local test server has only run, runsync and status: a 404 names the missing route.
  const local = { ...base, local: true };
  for (const op of ["cancel", "retry", "health", "purge-queue"] as const) {
    test(`${op} answered 404 by the local test server → not_supported_locally, naming /${op}`, () => {
      const error = failureToError(op, http(404, undefined, '{"detail":"Not Found"}'), { ...local, ...(op === "cancel" || op === "retry" ? { jobId: "j" } : {}) });
      expect([error.exitCode, error.code]).toEqual([ExitCode.api, "not_supported_locally"]);
      expect(error.message).toBe(`RunPod's local test server has no /${op} route (HTTP 404: Not Found): it offers only run, runsync and status`);
    });
  }

  test("a 404 on run or status from a local server: the URL is likely wrong", () => {
    const error = failureToError("run", http(404, undefined, '{"detail":"Not Found"}'), local);
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "endpoint_not_found"]);
    expect(error.message).toContain("--local takes the server's root URL");
  });

  test("other failures of the local test server are said as RunPod's are", () => {
    expect(failureToError("status", http(500, undefined, "boom"), { ...local, jobId: "j" }).message).toBe("checking job j failed (HTTP 500: boom)");
    expect(failureToError("run", network("ECONNREFUSED"), { ...local, baseUrl: "http://localhost:8000" }).message).toBe("submitting the job failed: connect ECONNREFUSED (http://localhost:8000)");
  });

  // A 4xx is RunPod refusing the request: no job exists, so nothing is unknown.
  for (const failure of [http(400, undefined, '{"error": "input must be an object"}'), http(422, undefined, "")]) {
    test(`run after ${label(failure)}: RunPod refused it, so no "fate unknown" and code http_error`, () => {
      const error = failureToError("run", failure, base);
      expect(error.message).not.toContain(UNKNOWN_FATE);
      expect(error.code).toBe("http_error");
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
    test(`${JSON.stringify(text)} → exit 4, code malformed_response`, () => {
      const error = thrown(() => parseJob(text));
      expect(error.exitCode).toBe(ExitCode.api);
      expect(error.code).toBe("malformed_response");
      expect(error.message).toMatch(message);
    });
  }
});

describe("jobFailure", () => {
  test("python-worker-exception.json: type and message in the line, traceback only in detail", async () => {
    const error = jobFailure(parseJob(await fixture("python-worker-exception.json")));
    expect(error.exitCode).toBe(ExitCode.jobFailed);
    expect(error.code).toBe("job_failed");
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
    expect([error.exitCode, error.code, error.message, error.detail]).toEqual([ExitCode.jobFailed, "job_timed_out", "job c0ffee00-0000-4000-8000-000000000011-u1 ended TIMED_OUT", undefined]);
  });

  test("worker-comfyui-5-validation-failed.json: the headline, then one line for the node; the raw lines in detail", async () => {
    const error = jobFailure(parseJob(await fixture("worker-comfyui-5-validation-failed.json")));
    expect(error.exitCode).toBe(ExitCode.jobFailed);
    const lines = error.message.split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe("job c0ffee00-0000-4000-8000-000000000006-u1 ended FAILED after 0.9 s: Workflow validation failed");
    expect(lines[1]).toStartWith("  • node 4 (CheckpointLoaderSimple): ckpt_name: 'does-not-exist.safetensors' not in [");
    expect(error.detail).toContain("does-not-exist.safetensors");
    expect(error.detail).toStartWith("• Node 4 (errors)");
    expect(error.detail).toContain("Available checkpoint models: flux1-dev-fp8.safetensors");
  });

  const cases: [Job, string, string, string | undefined][] = [
    [{ id: "j", status: "CANCELLED" }, "job_cancelled", "job j ended CANCELLED", undefined],
    [{ id: "j", status: "TIMED_OUT", executionTime: 600_000 }, "job_timed_out", "job j ended TIMED_OUT after 600.0 s", undefined],
    [{ id: "j", status: "FAILED", executionTime: 61_000, error: "boom" }, "job_failed", "job j ended FAILED after 61.0 s: boom", undefined],
    [{ id: "j", status: "FAILED", error: { code: 3 } }, "job_failed", 'job j ended FAILED: {"code":3}', undefined],
    [{ id: "j", status: "FAILED", error: "line one\nline two" }, "job_failed", "job j ended FAILED: line one", "line two"],
    [{ id: "j", status: "FAILED", error: '{"error_message": "only a message"}' }, "job_failed", "job j ended FAILED: only a message", undefined],
    [{ id: "j", status: "FAILED", error: "42" }, "job_failed", "job j ended FAILED: 42", undefined],
    [{ id: "j", status: "FAILED", error: "x", output: { details: "one detail" } }, "job_failed", "job j ended FAILED: x — one detail", undefined],
    // an unknown terminal status still gets a stable, lower-case code
    [{ id: "j", status: "EXPIRED" }, "job_expired", "job j ended EXPIRED", undefined],
  ];
  for (const [job, code, message, detail] of cases) {
    test(`${JSON.stringify(job)} → ${code}: ${message}`, () => {
      const error = jobFailure(job);
      expect([error.exitCode, error.code, error.message, error.detail]).toEqual([ExitCode.jobFailed, code, message, detail]);
    });
  }
});

describe("jobFailure on worker-comfyui's failures", () => {
  const MODELS_HINT = " (models belong under /runpod-volume/models/<type>/ on the network volume, not /runpod-volume/<type>/)";
  const MISSING_MODEL_BULLET = expect.stringMatching(
    new RegExp(`^  • node 4 \\(CheckpointLoaderSimple\\): ckpt_name: 'does-not-exist\\.safetensors' not in \\[.{80,}…${MODELS_HINT.replace(/[()/<>.]/g, "\\$&")}$`),
  );
  // [fixture, the message's lines, detail: what it starts with, or undefined]
  const cases: [string, (string | ReturnType<typeof expect.stringMatching>)[], string | undefined][] = [
    ["worker-comfyui-5-validation-failed.json", ["job c0ffee00-0000-4000-8000-000000000006-u1 ended FAILED after 0.9 s: Workflow validation failed", MISSING_MODEL_BULLET], "• Node 4 (errors): [{'type': 'value_not_in_list'"],
    ["worker-comfyui-local/08-runsync-missing-model.json", ["job test-c15b0d32-a741-4718-b0a5-acdfd6445323 ended FAILED: Workflow validation failed", MISSING_MODEL_BULLET], "• Node 4 (errors)"],
    ["worker-comfyui-local/10-status-POST-missing-model.json", ["job test-da1bc0be-466a-4fb7-b912-009acf5f855b ended FAILED: Workflow validation failed", MISSING_MODEL_BULLET], "• Node 4 (errors)"],
    [
      "worker-comfyui-local/12-runsync-missing-input-image.json",
      [
        "job test-c6aabd63-aae7-49f9-aefa-c5bd0b855324 ended FAILED: Workflow validation failed",
        "  • node 10 (LoadImage): image - Invalid image file: never-uploaded.png (send that file with --images, or put it in --input-dir)",
      ],
      "• Node 10 (errors): [{'type': 'custom_validation_failed'",
    ],
    [
      "worker-comfyui-5-execution-error.json",
      ["job c0ffee00-0000-4000-8000-000000000013-u1 ended FAILED after 4.0 s: Job processing failed — Workflow execution error: Node Type: CLIPTextEncode, Node ID: 6, Message: CUDA out of memory. Tried to allocate 2.00 GiB"],
      undefined,
    ],
    [
      "worker-comfyui-5-upload-subfolder.json",
      [
        "job c0ffee00-0000-4000-8000-000000000014-u1 ended FAILED after 0.3 s: Failed to upload one or more input images (worker-comfyui makes no sub-folders: send images under plain names) — Error uploading masks/ref.png: 500 Server Error: Internal Server Error for url: http://127.0.0.1:8188/upload/image",
      ],
      undefined,
    ],
    [
      "worker-comfyui-local/11-runsync-bad-node.json",
      ["job test-1a56225d-731e-4af3-bb8b-511970704de1 ended FAILED: Node 'Not A Real Node' not found. The custom node may not be installed. (the worker image lacks that custom node)"],
      'raw response: {"error": {"type": "missing_node_type"',
    ],
    ["worker-comfyui-local/15-runsync-no-output-node.json", ["job test-25a36491-6db3-46c5-a4fe-47476b82d7d1 ended FAILED: Prompt has no outputs (add a SaveImage node)"], 'raw response: {"error": {"type": "prompt_no_outputs"'],
    ["worker-comfyui-local/14-runsync-upload-subfolder.json", ["job test-64daf4e3-06a1-42c1-bda6-ad0d9a49cc83 ended FAILED: Failed to upload one or more input images (worker-comfyui makes no sub-folders: send images under plain names)"], undefined],
    ["worker-comfyui-local/13-runsync-runtime-error.json", ["job test-d59d0500-b18d-4d03-b289-39717111c5bf ended FAILED: Job processing failed"], undefined],
    ["worker-comfyui-local/16-runsync-no-workflow.json", ["job test-515c09c9-c823-4e68-ab86-f5830ccccbb5 ended FAILED: Missing 'workflow' parameter"], undefined],
    ["worker-comfyui-local/17-runsync-bad-images-shape.json", ["job test-916038c7-9dde-4d55-bf4e-354134365d9b ended FAILED: 'images' must be a list of objects with 'name' and 'image' keys"], undefined],
    ["worker-comfyui-local/05-status-POST-again.json", ["job test-697e6957-187f-4e63-994a-dc30157622da ended FAILED: Job ID not found"], undefined],
  ];
  for (const [name, lines, detail] of cases) {
    test(`${name} → ${lines.length === 1 ? "one line" : `the headline and ${lines.length - 1} node line(s)`}${detail ? ", the rest in detail" : ""}`, async () => {
      const error = jobFailure(parseJob(await fixture(name)));
      expect([error.exitCode, error.code]).toEqual([ExitCode.jobFailed, "job_failed"]);
      expect(error.message.split("\n")).toEqual(lines);
      expect(error.message).not.toContain("Raw response");
      expect(error.message).not.toContain("(errors)");
      if (detail === undefined) expect(error.detail).toBeUndefined();
      else expect(error.detail).toStartWith(detail);
    });
  }

  test("every FAILED fixture of worker-comfyui is covered above", async () => {
    const names = [...new Bun.Glob("worker-comfyui*/**.json").scanSync(RESPONSES), ...new Bun.Glob("worker-comfyui-*.json").scanSync(RESPONSES)];
    const failed: string[] = [];
    for (const name of names) if ((await Bun.file(join(RESPONSES, name)).json()).status === "FAILED") failed.push(name);
    expect(failed.sort()).toEqual(cases.map(([name]) => name).sort());
  });

  test("the seed emulator's \"Prompt outputs failed validation:\" → the headline, then a bullet per problem with its hint", () => {
    const error = jobFailure({
      id: "j",
      status: "FAILED",
      executionTime: 1_500,
      error: "Prompt outputs failed validation:\n• Node 10 (LoadImage): image - Invalid image file: ref.png\n• Node 3 (KSampler): model - Bad linked input, node '99' does not exist",
    });
    expect(error.message).toBe(
      "job j ended FAILED after 1.5 s: Prompt outputs failed validation\n" +
        "  • Node 10 (LoadImage): image - Invalid image file: ref.png (send that file with --images, or put it in --input-dir)\n" +
        "  • Node 3 (KSampler): model - Bad linked input, node '99' does not exist",
    );
    expect(error.detail).toBe("• Node 10 (LoadImage): image - Invalid image file: ref.png\n• Node 3 (KSampler): model - Bad linked input, node '99' does not exist");
  });

  test("a listed line over 200 characters is cut", () => {
    const error = jobFailure({ id: "j", status: "FAILED", error: `Invalid reference_images:\n• ${"x".repeat(300)}.png: not valid base64` });
    const [, bullet] = error.message.split("\n");
    expect(bullet).toBe(`  • ${"x".repeat(199)}…`);
  });

  test("a message ending in \":\" with nothing after it is said as it is", () => {
    expect(jobFailure({ id: "j", status: "FAILED", error: "Workflow validation failed:" }).message).toBe("job j ended FAILED: Workflow validation failed:");
  });
});

describe("nodeErrorLines", () => {
  const VALIDATION = [
    "Workflow validation failed:",
    "• Node 4 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', 'details': \"ckpt_name: 'x.safetensors' not in []\", 'extra_info': {'input_name': 'ckpt_name'}}]",
    "• Node 4 (dependent_outputs): ['9']",
    "• Node 4 (class_type): CheckpointLoaderSimple",
    "• Node 10 (errors): [{'type': 'custom_validation_failed', 'message': 'Custom validation failed for node', 'details': 'image - Invalid image file: a.png', 'extra_info': {'input_name': 'image'}}]",
    "• Node 10 (class_type): LoadImage",
    "• Node 12 (errors): [{'type': 'required_input_missing', 'message': 'Required input is missing', 'details': '', 'extra_info': {}}]",
    "• Node 13 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', 'details': \"lora_name: 'l.safetensors' not in []\"}, {'type': 'value_not_in_list', 'message': 'Value not in list', 'details': \"sampler_name: 'fast' not in ['euler']\"}]",
    "• Node 13 (class_type): LoraLoader",
    "• Node 14 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', 'details': \"sampler_name: 'fast' not in ['euler']\"}]",
    "• Node 14 (class_type): KSampler",
    "",
    "Available checkpoint models: a.safetensors",
  ].join("\n");
  const MODELS = " (models belong under /runpod-volume/models/<type>/ on the network volume, not /runpod-volume/<type>/)";

  test("one line per node with errors: its class_type, every detail, and a hint for the common causes", () => {
    expect(nodeErrorLines(VALIDATION)).toEqual([
      `node 4 (CheckpointLoaderSimple): ckpt_name: 'x.safetensors' not in []${MODELS}`,
      "node 10 (LoadImage): image - Invalid image file: a.png (send that file with --images, or put it in --input-dir)",
      "node 12: required_input_missing", // no details, no class_type line: the error type
      `node 13 (LoraLoader): lora_name: 'l.safetensors' not in []; sampler_name: 'fast' not in ['euler']${MODELS}`,
      "node 14 (KSampler): sampler_name: 'fast' not in ['euler']", // not a model: no hint
    ]);
  });

  test("the fixture worker-comfyui-5-validation-failed.json → one line for node 4, its details cut at 160 characters", async () => {
    const job = parseJob(await fixture("worker-comfyui-5-validation-failed.json"));
    const lines = nodeErrorLines(job.error as string);
    expect(lines).toHaveLength(1);
    const [, details] = /^node 4 \(CheckpointLoaderSimple\): (.*) \(models belong/.exec(lines[0]!)!;
    expect(details).toHaveLength(160);
    expect(details).toStartWith("ckpt_name: 'does-not-exist.safetensors' not in ['flux1-dev-fp8.safetensors'");
    expect(details).toEndWith("…");
  });

  const none = ["", "Job processing failed", "Prompt outputs failed validation:\n• Node 4 (LoadImage): image - Invalid image file: x.png", "Workflow validation failed:", "Error: Workflow validation failed:\n• Node 4 (errors): [{'type': 'x'}]"];
  for (const reason of none) test(`${JSON.stringify(reason.slice(0, 50))} → no node lines`, () => expect(nodeErrorLines(reason)).toEqual([]));
});

describe("isSecureOrLoopback", () => {
  const cases: [string, boolean][] = [
    ["https://bucket.s3.us-east-1.amazonaws.com/x.png?X-Amz-Signature=1", true],
    ["https://10.0.0.1/x", true],
    ["http://localhost:8000/x", true],
    ["http://LOCALHOST/x", true],
    ["http://127.0.0.1/x", true],
    ["http://127.255.0.9:9/x", true],
    ["http://[::1]:8000/x", true],
    ["http://bucket.s3.amazonaws.com/x.png", false],
    ["http://10.0.0.1/x", false],
    ["http://localhost.evil.example/x", false],
    ["http://127.0.0.1.evil.example/x", false],
    ["http://0.0.0.0/x", false],
    ["ftp://localhost/x", false],
    ["file:///etc/passwd", false],
    ["ws://localhost/x", false],
  ];
  for (const [url, expected] of cases) test(`${url} → ${expected}`, () => expect(isSecureOrLoopback(new URL(url))).toBe(expected));
});

// ---------------------------------------------------------------------------------------------
// createClient against a real loopback server

const KEY = "rpa_SECRET_test_key_0123456789";
/** A /run body as prepareRequest makes it. */
const body = (input: unknown) => JSON.stringify({ input });
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
const spies: Mock<(ms: number) => AbortSignal>[] = [];
afterEach(() => {
  for (const spy of spies.splice(0)) spy.mockRestore();
  for (const release of hanging.splice(0)) release();
  for (const server of servers.splice(0)) server.stop(true);
});

/**
 * Records the deadline the client sets on each request (it uses AbortSignal.timeout). `cap` makes the
 * real signal fire sooner, so a test can see a long deadline expire without waiting for it.
 */
function deadlines(cap = Number.POSITIVE_INFINITY) {
  const real = AbortSignal.timeout.bind(AbortSignal);
  const asked: number[] = [];
  spies.push(
    spyOn(AbortSignal, "timeout").mockImplementation((ms: number) => {
      asked.push(ms);
      return real(Math.min(ms, cap));
    }),
  );
  return asked;
}

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
  return { seen, baseUrl: new URL("v2", server.url).href, root: server.url.href.replace(/\/$/, "") };
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
    expect(await client.run(body(input))).toEqual({ id: "job-1", status: "IN_QUEUE" });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.method).toBe("POST");
    expect(seen[0]!.path).toBe("/v2/ep-1/run");
    expect(seen[0]!.authorization).toBe(`Bearer ${KEY}`);
    expect(seen[0]!.contentType).toContain("application/json");
    expect(JSON.parse(seen[0]!.body)).toEqual({ input });
  });

  // The body was built (extras beside input) and its size checked by prepareRequest: the client sends it untouched.
  const verbatim = [
    '{"policy":{"ttl":60000},"input":{"a":1}}',
    '{ "input" :  {"text": "日本語 ✓ \\u00e9 é"},\n  "webhook": "https://h.example/" }',
    "{}",
  ];
  for (const text of verbatim) {
    test(`run sends its body byte for byte: ${JSON.stringify(text.slice(0, 40))}`, async () => {
      const { seen, baseUrl } = serve(() => Response.json({ id: "job-1", status: "IN_QUEUE" }));
      await createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST }).run(text);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.body).toBe(text);
      expect(seen[0]!.contentType).toContain("application/json");
    });
  }

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

  test("ids are path-encoded: a job id cannot leave its route", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ id: "x", status: "IN_QUEUE" }));
    const client = createClient({ baseUrl, endpointId: "ep/../x", apiKey: KEY, retry: FAST });
    await client.status("../../purge-queue");
    await client.retry("a b?c#d");
    expect(seen.map((s) => s.path)).toEqual(["/v2/ep%2F..%2Fx/status/..%2F..%2Fpurge-queue", "/v2/ep%2F..%2Fx/retry/a%20b%3Fc%23d"]);
  });

  test("retry: POST {base}/{endpoint}/retry/{id} with an empty JSON object → the requeued job", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ id: "job-7", status: "IN_QUEUE" }));
    const client = createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST });
    expect(await client.retry("job-7")).toEqual({ id: "job-7", status: "IN_QUEUE" });
    expect(seen).toEqual([{ method: "POST", path: "/v2/ep-1/retry/job-7", authorization: `Bearer ${KEY}`, contentType: expect.stringContaining("application/json"), body: "{}" }]);
  });

  test("retry is sent again after a 429, never after a 500", async () => {
    const limited = serve((_, n) => (n === 1 ? new Response("", { status: 429 }) : Response.json({ id: "j", status: "IN_QUEUE" })));
    expect(await createClient({ baseUrl: limited.baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).retry("j")).toEqual({ id: "j", status: "IN_QUEUE" });
    expect(limited.seen).toHaveLength(2);

    const crashed = serve(() => new Response("boom", { status: 500 }));
    const error = await rejected(createClient({ baseUrl: crashed.baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).retry("j"));
    expect(crashed.seen).toHaveLength(1);
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "request_unknown"]);
    expect(error.message).toStartWith("retrying job j failed (HTTP 500: boom); the job may or may not have been queued again");
  });

  test("retry of an expired job → job_not_found", async () => {
    const { baseUrl } = serve(() => new Response("", { status: 404 }));
    const error = await rejected(createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST }).retry("old"));
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "job_not_found"]);
    expect(error.message).toStartWith("job old no longer exists");
  });

  test("health: GET {base}/{endpoint}/health without a body → the counts (fixture health.json)", async () => {
    const body = await fixture("health.json");
    const { seen, baseUrl } = serve(() => new Response(body, { headers: { "content-type": "application/json" } }));
    const client = createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST });
    expect(await client.health()).toEqual(JSON.parse(body));
    expect(seen).toEqual([{ method: "GET", path: "/v2/ep-1/health", authorization: `Bearer ${KEY}`, contentType: null, body: "" }]);
  });

  test("health: no jobs counts → an empty jobs object; unknown fields are kept", async () => {
    const { baseUrl } = serve(() => Response.json({ workers: { idle: 2, unhealthy: 1 }, region: "EU" }));
    expect(await createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST }).health()).toEqual({ jobs: {}, workers: { idle: 2, unhealthy: 1 }, region: "EU" });
  });

  test("health is sent again after a 503 (it changes nothing)", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? new Response("", { status: 503 }) : Response.json({ jobs: {}, workers: { idle: 1 } })));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} });
    expect((await client.health()).workers).toEqual({ idle: 1 });
    expect(seen).toHaveLength(2);
  });

  const malformedHealth: [string, RegExp][] = [
    ['{"jobs": {"inQueue": 1}}', /^checking the endpoint's health: RunPod's \/health answered in an unknown shape: \{"jobs":\{"inQueue":1\}\}$/],
    ['{"workers": {"idle": "1"}}', /unknown shape/],
    ['{"jobs": 3, "workers": {}}', /unknown shape/],
    ["null", /unknown shape/],
    ["[]", /unknown shape/],
    ["<html>ok</html>", /^checking the endpoint's health: RunPod's \/health answered with something that is not JSON: "<html>ok<\/html>"$/],
    ["", /not JSON/],
  ];
  for (const [body, message] of malformedHealth) {
    test(`health answering 200 ${JSON.stringify(body)} → asked again (a proxy's page passes), then exit 4, malformed_response`, async () => {
      const { seen, baseUrl } = serve(() => new Response(body, { status: 200 }));
      const error = await rejected(createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).health());
      expect([error.exitCode, error.code]).toEqual([ExitCode.api, "malformed_response"]);
      expect(error.message).toMatch(message);
      expect(seen).toHaveLength(FAST.attempts);
    });
  }

  test("health on an unknown endpoint → endpoint_not_found naming it", async () => {
    const { baseUrl } = serve(() => new Response("", { status: 404 }));
    const error = await rejected(createClient({ baseUrl, endpointId: "ep-x", apiKey: KEY, retry: FAST }).health());
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "endpoint_not_found"]);
    expect(error.message).toContain('endpoint "ep-x" not found');
  });

  test("purgeQueue: POST {base}/{endpoint}/purge-queue with {} → the number removed", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ removed: 3, status: "completed" }));
    expect(await createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST }).purgeQueue()).toBe(3);
    expect(seen).toEqual([{ method: "POST", path: "/v2/ep-1/purge-queue", authorization: `Bearer ${KEY}`, contentType: expect.stringContaining("application/json"), body: "{}" }]);
  });

  test("purgeQueue is sent again after a 429, never after a 503 or a timeout", async () => {
    const limited = serve((_, n) => (n === 1 ? new Response("", { status: 429 }) : Response.json({ removed: 0 })));
    expect(await createClient({ baseUrl: limited.baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).purgeQueue()).toBe(0);
    expect(limited.seen).toHaveLength(2);

    const busy = serve(() => new Response("", { status: 503 }));
    const error = await rejected(createClient({ baseUrl: busy.baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).purgeQueue());
    expect(busy.seen).toHaveLength(1);
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "request_unknown"]);
    expect(error.message).toStartWith("purging the queue failed (HTTP 503); the queue may or may not have been purged");

    const silent = serve(never);
    deadlines(30);
    const timedOut = await rejected(createClient({ baseUrl: silent.baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, requestTimeoutMs: 30, sleep: async () => {} }).purgeQueue());
    expect(silent.seen).toHaveLength(1);
    expect(timedOut.code).toBe("request_unknown");
    expect(timedOut.message).toStartWith(`purging the queue failed: no answer within the request deadline (${silent.baseUrl})`);
  });

  const malformedPurge = ['{"status": "completed"}', '{"removed": "3"}', '{"removed": null}', "3"];
  for (const body of malformedPurge) {
    test(`purgeQueue answering 200 ${JSON.stringify(body)} → not sent again, exit 4, its effect unknown`, async () => {
      const { seen, baseUrl } = serve(() => new Response(body));
      const error = await rejected(createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST }).purgeQueue());
      expect([error.exitCode, error.code]).toEqual([ExitCode.api, "request_unknown"]);
      expect(error.message).toStartWith("purging the queue: RunPod's /purge-queue answered in an unknown shape");
      expect(error.message).toContain("may or may not have been purged");
      expect(seen).toHaveLength(1);
    });
  }

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
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "http_error"]);
    expect(error.message).toBe("checking job j failed (HTTP 500: worker crashed)");
  });

  test("run retries a 429, then succeeds", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? new Response("", { status: 429 }) : Response.json({ id: "j", status: "IN_QUEUE" })));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    expect((await client.run(body({}))).id).toBe("j");
    expect(seen).toHaveLength(2);
    expect(seen[1]!.body).toBe(seen[0]!.body);
  });

  test("run is NOT retried after a 500, and the error says the fate is unknown", async () => {
    const { seen, baseUrl } = serve(() => new Response("Internal Server Error", { status: 500 }));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    const error = await rejected(client.run(body({})));
    expect(seen).toHaveLength(1);
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "submission_unknown"]);
    expect(error.message).toContain("may or may not have been created");
  });

  test("run is retried when nothing listens (connection refused), then fails with exit 4", async () => {
    const { baseUrl } = serve(() => new Response(""));
    servers.pop()!.stop(true); // the port is now closed
    const waits: number[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async (ms) => void waits.push(ms) });
    const error = await rejected(client.run(body({})));
    expect(waits).toHaveLength(FAST.attempts - 1);
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.message).toStartWith("submitting the job failed:");
    expect(error.message).not.toContain("may or may not");
  });

  test("401 → exit 3, and the key appears nowhere", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ error: "Unauthorized" }, { status: 401 }));
    const lines: RequestLine[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, onRequest: (line) => lines.push(line) });
    const error = await rejected(client.run(body({})));
    expect(seen).toHaveLength(1);
    expect([error.exitCode, error.code]).toEqual([ExitCode.credentials, "credentials_rejected"]);
    expect(`${error.message}\n${error.detail ?? ""}\n${error.stack ?? ""}\n${JSON.stringify(lines)}`).not.toContain(KEY);
  });

  test("404 on status → exit 4, expired or never existed", async () => {
    const { baseUrl } = serve(() => new Response("", { status: 404 }));
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST });
    const error = await rejected(client.status("old-job"));
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "job_not_found"]);
    expect(error.message).toContain("job old-job no longer exists");
  });

  test("a 200 that is not a job → asked again, then exit 4, and it is not mistaken for a network failure", async () => {
    const { seen, baseUrl } = serve(() => new Response("<html>hello</html>", { status: 200 }));
    const lines: RequestLine[] = [];
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {}, onRequest: (line) => lines.push(line) });
    const error = await rejected(client.status("j"));
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "malformed_response"]);
    expect(error.message).toContain("not JSON");
    // one onRequest line per HTTP exchange, and the server did answer
    expect(lines).toHaveLength(seen.length);
    expect(lines.map((l) => l.status)).not.toContain("no answer");
    expect(seen).toHaveLength(FAST.attempts);
  });

  test("a malformed 200 to /run: not sent again, the job's fate is unknown", async () => {
    const { seen, baseUrl } = serve(() => Response.json({ ok: true }));
    const error = await rejected(createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).run(body({})));
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "submission_unknown"]);
    expect(error.message).toContain("may or may not have been created");
    expect(seen).toHaveLength(1);
  });

  test("a malformed 200 once while polling is absorbed", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? new Response("<html>upstream error</html>") : Response.json({ id: "j", status: "IN_PROGRESS" })));
    expect(await createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).status("j")).toEqual({ id: "j", status: "IN_PROGRESS" });
    expect(seen).toHaveLength(2);
  });

  test("a per-request timeout: /run is not retried and its fate is unknown", async () => {
    const { seen, baseUrl } = serve(never);
    const asked = deadlines(50);
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, requestTimeoutMs: 50 });
    const started = performance.now();
    const error = await rejected(client.run(body({})));
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(asked).toEqual([50]);
    expect(seen).toHaveLength(1);
    expect(error.exitCode).toBe(ExitCode.api);
    expect(error.code).toBe("submission_unknown");
    expect(error.message).toContain("no answer within the request deadline");
    expect(error.message).toContain("may or may not have been created");
  });

  test("the request deadline grows by one second per whole MB of body", async () => {
    const { seen, baseUrl } = serve((request) =>
      Response.json(new URL(request.url).pathname.endsWith("/health") ? { workers: { idle: 1 } } : { id: "j", status: "IN_QUEUE" }),
    );
    const asked = deadlines();
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, requestTimeoutMs: 5_000 });
    await client.status("j"); // no body
    await client.health(); // no body
    await client.run(body({})); // a few bytes
    await client.run(body({ image: "A".repeat(999_000) })); // just under 1 MB
    await client.run(body({ image: "A".repeat(2_500_000) })); // 2.5 MB: two more seconds
    await client.retry("j"); // "{}"
    expect(seen.map((s) => s.body.length)).toEqual([0, 0, 12, 999_022, 2_500_022, 2]);
    expect(asked).toEqual([5_000, 5_000, 5_000, 5_000, 7_000, 5_000]);
  });

  test("a short deadline: a GET without an answer in time times out", async () => {
    const { seen, baseUrl } = serve(async () => {
      await Bun.sleep(120);
      return Response.json({ id: "j", status: "IN_QUEUE" });
    });
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: { ...FAST, attempts: 1 }, requestTimeoutMs: 30 });
    const error = await rejected(client.status("j"));
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "network"]);
    expect(error.message).toContain("no answer within the request deadline");
    expect(seen).toHaveLength(1);
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
    await client.run(body({ secret: "not the key" }));
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
    const client = createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: { ...FAST, attempts: 1 }, requestTimeoutMs: 30, onRequest: (line) => lines.push(line) });
    await rejected(client.status("j"));
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
    expect(await client.run(body({})).catch((error: unknown) => error)).toBe(reason);
    expect(seen).toHaveLength(0);
  });
});

describe("createClient.statusSync (RunPod's long poll)", () => {
  /** A loopback server that also records each request's query string. */
  function serveSync(answer: (request: Request, n: number) => Response | Promise<Response>) {
    const searches: string[] = [];
    const server = serve((request, n) => {
      searches.push(new URL(request.url).search);
      return answer(request, n);
    });
    return { ...server, searches };
  }
  const client = (baseUrl: string, extra: Partial<Parameters<typeof createClient>[0]> = {}) =>
    createClient({ baseUrl, endpointId: "ep-1", apiKey: KEY, retry: FAST, sleep: async () => {}, ...extra });

  test("GET {base}/{endpoint}/status-sync/{id}?wait=MS with the key → the job", async () => {
    const { seen, searches, baseUrl } = serveSync(() => Response.json({ id: "job-7", status: "COMPLETED", executionTime: 1200, output: { images: ["AAAA"] } }));
    expect(await client(baseUrl).statusSync("job-7", 2_000)).toEqual({ id: "job-7", status: "COMPLETED", executionTime: 1200, output: { images: ["AAAA"] } });
    expect(seen.map((s) => [s.method, s.path, s.authorization, s.body])).toEqual([["GET", "/v2/ep-1/status-sync/job-7", `Bearer ${KEY}`, ""]]);
    expect(searches).toEqual(["?wait=2000"]);
  });

  test("a job not yet done when the wait runs out comes back as it is", async () => {
    const { baseUrl } = serveSync(() => Response.json({ id: "j", status: "IN_PROGRESS", output: { progress: "4/10" } }));
    expect(await client(baseUrl).statusSync("j", 1_000)).toEqual({ id: "j", status: "IN_PROGRESS", output: { progress: "4/10" } });
  });

  test("the job id is path-encoded; the wait stays the only query", async () => {
    const { seen, searches, baseUrl } = serveSync(() => Response.json({ id: "x", status: "IN_QUEUE" }));
    await client(baseUrl).statusSync("a b?wait=1#c", 90_000);
    expect(seen.map((s) => s.path)).toEqual(["/v2/ep-1/status-sync/a%20b%3Fwait%3D1%23c"]);
    expect(searches).toEqual(["?wait=90000"]);
  });

  test("onRequest reports the long poll like any request (path without the query)", async () => {
    const { baseUrl } = serveSync(() => Response.json({ id: "j", status: "COMPLETED" }));
    const lines: RequestLine[] = [];
    await client(baseUrl, { onRequest: (line) => lines.push(line) }).statusSync("j", 1_000);
    expect(lines.map(({ method, path, status }) => ({ method, path, status }))).toEqual([{ method: "GET", path: "/v2/ep-1/status-sync/j", status: 200 }]);
  });

  // No such route → undefined (the caller falls back to /status for good); asked once, never retried.
  const noRoute: [number, string, string | undefined][] = [
    [404, "plain text", "404 page not found"],
    [404, "JSON", '{"error": "not found"}'],
    [404, "an empty body", ""],
    [405, "JSON", '{"detail": "Method Not Allowed"}'],
    [405, "an empty body", ""],
  ];
  for (const [status, what, body] of noRoute) {
    test(`HTTP ${status} with ${what} → undefined, asked once`, async () => {
      const { seen, baseUrl } = serveSync(() => new Response(body, { status }));
      const retries: unknown[] = [];
      expect(await client(baseUrl, { onRetry: (e) => retries.push(e) }).statusSync("j", 1_000)).toBeUndefined();
      expect(seen).toHaveLength(1);
      expect(retries).toEqual([]);
    });
  }

  test("a 500 is retried like status, then thrown like status", async () => {
    const { seen, baseUrl } = serveSync(() => new Response('{"error": "worker crashed"}', { status: 500 }));
    const sync = await rejected(client(baseUrl).statusSync("j", 1_000));
    expect(seen).toHaveLength(FAST.attempts);
    const plain = serve(() => new Response('{"error": "worker crashed"}', { status: 500 }));
    const status = await rejected(client(plain.baseUrl).status("j"));
    expect([sync.exitCode, sync.code, sync.message]).toEqual([status.exitCode, status.code, status.message]);
    expect([sync.exitCode, sync.code, sync.message]).toEqual([ExitCode.api, "http_error", "checking job j failed (HTTP 500: worker crashed)"]);
  });

  const transient: [string, (n: number) => Response | Promise<Response>][] = [
    ["a 503", (n) => (n === 1 ? new Response("busy", { status: 503 }) : Response.json({ id: "j", status: "COMPLETED" }))],
    ["a 429", (n) => (n === 1 ? new Response("", { status: 429 }) : Response.json({ id: "j", status: "COMPLETED" }))],
    ["a malformed 200", (n) => (n === 1 ? new Response("<html>proxy</html>") : Response.json({ id: "j", status: "COMPLETED" }))],
  ];
  for (const [what, answer] of transient) {
    test(`${what} once → asked again, then the job`, async () => {
      const { seen, searches, baseUrl } = serveSync((_, n) => answer(n));
      expect(await client(baseUrl).statusSync("j", 3_000)).toEqual({ id: "j", status: "COMPLETED" });
      expect(seen.map((s) => s.path)).toEqual(["/v2/ep-1/status-sync/j", "/v2/ep-1/status-sync/j"]);
      expect(searches).toEqual(["?wait=3000", "?wait=3000"]);
    });
  }

  const refused: [number, string, ExitCode, string][] = [
    [401, '{"error": "Unauthorized"}', ExitCode.credentials, "credentials_rejected"],
    [403, "", ExitCode.credentials, "credentials_rejected"],
    [400, '{"error": "bad wait"}', ExitCode.api, "http_error"],
  ];
  for (const [status, body, exitCode, code] of refused) {
    test(`HTTP ${status} is not taken for a missing route: thrown (exit ${exitCode}, ${code}), asked once`, async () => {
      const { seen, baseUrl } = serveSync(() => new Response(body, { status }));
      const error = await rejected(client(baseUrl).statusSync("j", 1_000));
      expect([error.exitCode, error.code]).toEqual([exitCode, code]);
      expect(seen).toHaveLength(1);
    });
  }

  test("the request deadline is the request timeout plus the wait, on every attempt", async () => {
    const { baseUrl } = serveSync((_, n) => (n === 1 ? new Response("", { status: 503 }) : Response.json({ id: "j", status: "COMPLETED" })));
    const asked = deadlines();
    const c = client(baseUrl, { requestTimeoutMs: 5_000 });
    await c.statusSync("j", 2_000);
    await c.statusSync("j", 90_000);
    await c.status("j"); // a plain status keeps the plain deadline
    expect(asked).toEqual([7_000, 7_000, 95_000, 5_000]);
  });

  test("a long poll held past the request timeout (but within timeout + wait) is answered, where a plain status times out", async () => {
    const { baseUrl } = serveSync(async () => {
      await Bun.sleep(150);
      return Response.json({ id: "j", status: "COMPLETED" });
    });
    const c = client(baseUrl, { requestTimeoutMs: 40, retry: { ...FAST, attempts: 1 } });
    expect(await c.statusSync("j", 2_000)).toEqual({ id: "j", status: "COMPLETED" });
    const error = await rejected(c.status("j"));
    expect(error.message).toContain("no answer within the request deadline");
  });

  test("no answer within timeout + wait → retried like status, then a network error", async () => {
    const { seen, baseUrl } = serveSync(never);
    const asked = deadlines(40);
    const error = await rejected(client(baseUrl, { requestTimeoutMs: 20 }).statusSync("j", 1_000));
    expect(asked).toEqual([1_020, 1_020, 1_020]);
    expect(seen).toHaveLength(FAST.attempts);
    expect([error.exitCode, error.code]).toEqual([ExitCode.api, "network"]);
    expect(error.message).toStartWith("checking job j failed: no answer within the request deadline");
  });

  test("aborting the signal while the long poll is held rejects with the reason", async () => {
    const { seen, baseUrl } = serveSync(never);
    const controller = new AbortController();
    const reason = new CliError("interrupted", ExitCode.interrupted);
    const pending = client(baseUrl, { signal: controller.signal }).statusSync("j", 90_000);
    setTimeout(() => controller.abort(reason), 10);
    expect(await pending.catch((error: unknown) => error)).toBe(reason);
    expect(seen).toHaveLength(1);
  });

  test("an already-aborted signal sends nothing", async () => {
    const { seen, baseUrl } = serveSync(() => Response.json({ id: "j", status: "COMPLETED" }));
    const reason = new Error("already");
    expect(await client(baseUrl, { signal: AbortSignal.abort(reason) }).statusSync("j", 1_000).catch((error: unknown) => error)).toBe(reason);
    expect(seen).toHaveLength(0);
  });

  // lib/api.ts statusSync: with `local: true` a 404 maps to code endpoint_not_found, not job_not_found, so the documented "undefined on 404" throws instead (latent: cli.ts never long-polls --local).
  test("local: a server without the route (404) → undefined", async () => {
    const { baseUrl } = serveSync(() => Response.json({ detail: "Not Found" }, { status: 404 }));
    expect(await client(baseUrl, { local: true }).statusSync("j", 1_000)).toBeUndefined();
  });
});

describe("failureToError: 405", () => {
  const target = { endpointId: "ep", baseUrl: "https://api.runpod.ai/v2" };
  const ops: [Operation, string][] = [
    ["status", "checking job j"],
    ["cancel", "cancelling job j"],
    ["run", "submitting the job"],
  ];
  for (const [op, what] of ops) {
    test(`${op} → exit 4, method_not_allowed, saying the server does not take the request`, () => {
      const error = failureToError(op, http(405, undefined, '{"detail": "Method Not Allowed"}'), { ...target, ...(op !== "run" && { jobId: "j" }) });
      expect([error.exitCode, error.code]).toEqual([ExitCode.api, "method_not_allowed"]);
      expect(error.message).toBe(`${what} failed (HTTP 405: Method Not Allowed): this server does not take that request`);
    });
  }

  test("a 405 is not retried, even for status", () => expect(retryDelay("status", http(405), 1, DEFAULT_RETRY, () => 0)).toBeUndefined());
});

describe("createClient, local (RunPod's local test server)", () => {
  /** Answers as runpod-python's --rp_serve_api does: every route POST (GET → 405), no auth, unknown routes 404. */
  const localServer = (answers: Record<string, (n: number) => unknown>) =>
    serve((request, n) => {
      const route = new URL(request.url).pathname.split("/")[1] ?? "";
      if (!(route in answers)) return Response.json({ detail: "Not Found" }, { status: 404 });
      if (request.method !== "POST") return Response.json({ detail: "Method Not Allowed" }, { status: 405 });
      return Response.json(answers[route]!(n));
    });

  test("routes at the root without the endpoint id, status by POST, no Authorization even when a key is given", async () => {
    const { seen, root } = localServer({
      run: () => ({ id: "test-1", status: "IN_PROGRESS" }),
      status: () => ({ id: "test-1", status: "COMPLETED", output: { images: [] } }),
      health: () => ({ workers: { idle: 1 } }),
    });
    const client = createClient({ baseUrl: root, endpointId: "ep-ignored", apiKey: KEY, local: true, retry: FAST });
    expect(await client.run(body({ workflow: {} }))).toEqual({ id: "test-1", status: "IN_PROGRESS" });
    expect((await client.status("test-1")).status).toBe("COMPLETED");
    expect((await client.health()).workers).toEqual({ idle: 1 });
    expect(seen.map((s) => [s.method, s.path, s.authorization])).toEqual([
      ["POST", "/run", null],
      ["POST", "/status/test-1", null],
      ["POST", "/health", null],
    ]);
    expect(JSON.stringify(seen)).not.toContain(KEY);
    expect(JSON.stringify(seen)).not.toContain("ep-ignored");
  });

  test("a base URL with a path keeps it", async () => {
    const { seen, baseUrl } = localServer({});
    await rejected(createClient({ baseUrl, endpointId: "ep", local: true, retry: FAST }).cancel("j"));
    expect(seen.map((s) => s.path)).toEqual(["/v2/cancel/j"]);
  });

  test("the recorded answers of worker-comfyui's local server: /run, then POST /status", async () => {
    const [accepted, completed] = await Promise.all([fixture("worker-comfyui-local/02-run-img2img.json"), fixture("worker-comfyui-local/04-status-POST-completed.json")]);
    const { seen, root } = localServer({ run: () => JSON.parse(accepted), status: () => JSON.parse(completed) });
    const client = createClient({ baseUrl: root, endpointId: "local", local: true, retry: FAST });
    const job = await client.run(body({ workflow: {}, images: [] }));
    expect(job).toEqual({ id: "test-697e6957-187f-4e63-994a-dc30157622da", status: "IN_PROGRESS" });
    const done = await client.status(job.id);
    expect(done.status).toBe("COMPLETED");
    expect(done.delayTime).toBeUndefined(); // the local server gives no timings
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual(["POST /run", `POST /status/${job.id}`]);
  });

  const missing: [string, (client: ReturnType<typeof createClient>) => Promise<unknown>][] = [
    ["cancel", (client) => client.cancel("j")],
    ["retry", (client) => client.retry("j")],
    ["purge-queue", (client) => client.purgeQueue()],
  ];
  for (const [op, call] of missing) {
    test(`${op}: the route is missing → exit 4, not_supported_locally, asked once`, async () => {
      const { seen, root } = localServer({ run: () => ({}) });
      const error = await rejected(call(createClient({ baseUrl: root, endpointId: "local", local: true, retry: FAST, sleep: async () => {} })));
      expect([error.exitCode, error.code]).toEqual([ExitCode.api, "not_supported_locally"]);
      expect(error.message).toBe(`RunPod's local test server has no /${op} route (HTTP 404: Not Found): it offers only run, runsync and status`);
      expect(seen).toHaveLength(1);
    });
  }

  test("a 404 from RunPod itself (not local) still means the job or endpoint is gone", async () => {
    const { root } = localServer({});
    const error = await rejected(createClient({ baseUrl: root, endpointId: "ep", apiKey: KEY, retry: FAST }).cancel("j"));
    expect(error.code).toBe("job_not_found");
  });
});

describe("createClient: malformed 200s", () => {
  test("cancel (idempotent) is asked again after a malformed 200", async () => {
    const { seen, baseUrl } = serve((_, n) => (n === 1 ? new Response("<html>proxy</html>") : Response.json({ id: "j", status: "CANCELLED" })));
    expect(await createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).cancel("j")).toEqual({ id: "j", status: "CANCELLED" });
    expect(seen).toHaveLength(2);
  });

  test("retry (not idempotent) is not: its effect is unknown", async () => {
    const { seen, baseUrl } = serve(() => new Response("<html>proxy</html>"));
    const error = await rejected(createClient({ baseUrl, endpointId: "ep", apiKey: KEY, retry: FAST, sleep: async () => {} }).retry("j"));
    expect([error.code, seen.length]).toEqual(["request_unknown", 1]);
    expect(error.message).toContain("may or may not have been queued again");
  });
});

describe("download", () => {
  const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10, 1, 2, 3]);
  const SIGNED = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=deadbeefsecret";

  const listeners: { stop(closeActiveConnections?: boolean): void }[] = [];
  afterEach(() => {
    for (const listener of listeners.splice(0)) listener.stop(true);
  });
  /** A server that writes `answer` as the raw HTTP response and then keeps the connection open. */
  function rawServer(answer: string) {
    const answered = new WeakSet<object>();
    const listener = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(socket) {
          if (answered.has(socket)) return;
          answered.add(socket);
          socket.write(answer);
        },
      },
    });
    listeners.push(listener);
    return `http://127.0.0.1:${listener.port}`;
  }

  test("http on loopback: GET, the exact bytes, no credentials sent", async () => {
    const { seen, root } = serve(() => new Response(PNG, { headers: { "content-type": "image/png" } }));
    expect(await download(`${root}/11-26/job/c67ad621.png${SIGNED}`, { maxBytes: 1_000 })).toEqual(PNG);
    expect(seen.map((s) => [s.method, s.path, s.authorization])).toEqual([["GET", "/11-26/job/c67ad621.png", null]]);
  });

  test("a body of exactly maxBytes is accepted", async () => {
    const { root } = serve(() => new Response(PNG));
    expect(await download(`${root}/x.png`, { maxBytes: PNG.length })).toEqual(PNG);
  });

  const refused = ["http://bucket.s3.amazonaws.com/x.png", "http://10.0.0.1/x.png", "http://127.0.0.1.evil.example/x.png", "ftp://127.0.0.1/x.png", "file:///etc/passwd", "javascript:alert(1)", "not a url", ""];
  for (const url of refused) {
    test(`${JSON.stringify(url)} → refused before any request: only https (http for localhost)`, async () => {
      const error = (await download(url, { maxBytes: 1_000 }).catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toBe(`will not download ${JSON.stringify(url.slice(0, 80))}: only https URLs (http for localhost)`);
    });
  }

  const statuses: [number, string][] = [
    [403, " (presigned URLs expire after 7 days)"],
    [404, ""],
    [500, ""],
  ];
  for (const [status, hint] of statuses) {
    test(`HTTP ${status} → an error naming host and path${hint ? " and saying presigned URLs expire" : ""}, never the signature`, async () => {
      const { root } = serve(() => new Response("<Error><Code>AccessDenied</Code></Error>", { status }));
      const error = (await download(`${root}/bucket/x.png${SIGNED}`, { maxBytes: 1_000, sleep: async () => {} }).catch((e: unknown) => e)) as Error;
      expect(error.message).toBe(`downloading ${new URL(root).host}/bucket/x.png failed: HTTP ${status}${hint}`);
      expect(error.message).not.toContain("deadbeefsecret");
    });
  }

  // S3 answers 503 SlowDown when busy.
  test("a 503 (S3's SlowDown) is tried again", async () => {
    const { seen, root } = serve((_, n) => (n === 1 ? new Response("SlowDown", { status: 503 }) : new Response(PNG)));
    expect(await download(`${root}/x.png`, { maxBytes: 1_000, sleep: async () => {} })).toEqual(PNG);
    expect(seen).toHaveLength(2);
  });

  test("a Content-Length over the cap is refused before the body is read", async () => {
    // 10 of the 5000 bytes announced are sent, then nothing: reading the body would hang until the timeout
    const url = rawServer("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n0123456789");
    const started = performance.now();
    const error = (await download(`${url}/big.png${SIGNED}`, { maxBytes: 100, timeoutMs: 20_000 }).catch((e: unknown) => e)) as Error;
    expect(error.message).toBe(`127.0.0.1:${new URL(url).port}/big.png is 5000 bytes, over --max-output-bytes`);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  test("a streamed body (no Content-Length) is cut off as soon as it passes the cap: an endless one too", async () => {
    const { root } = serve(
      () =>
        new Response(
          new ReadableStream({
            pull(controller) {
              controller.enqueue(new Uint8Array(64).fill(7)); // never closed
            },
          }),
        ),
    );
    const error = (await download(`${root}/stream.webm`, { maxBytes: 300, timeoutMs: 20_000 }).catch((e: unknown) => e)) as Error;
    expect(error.message).toBe(`${new URL(root).host}/stream.webm is over --max-output-bytes (300 bytes)`);
  });

  test("a streamed body within the cap arrives whole", async () => {
    const chunks = [new Uint8Array(100).fill(1), new Uint8Array(100).fill(2), new Uint8Array(50).fill(3)];
    const { root } = serve(() => new Response(new ReadableStream({ start(controller) { for (const c of chunks) controller.enqueue(c); controller.close(); } })));
    const bytes = await download(`${root}/s.bin`, { maxBytes: 250 });
    expect(bytes).toEqual(new Uint8Array(Buffer.concat(chunks)));
  });

  test("no answer within timeoutMs → an error saying how long it waited", async () => {
    const { root } = serve(never);
    const started = performance.now();
    const error = (await download(`${root}/slow.png`, { maxBytes: 1_000, timeoutMs: 50 }).catch((e: unknown) => e)) as Error;
    expect(error.message).toBe(`downloading ${new URL(root).host}/slow.png took longer than 0.05 s`);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  test("a body that stalls halfway → the timeout still ends it", async () => {
    const url = rawServer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    const error = (await download(`${url}/half.png`, { maxBytes: 1_000, timeoutMs: 40 }).catch((e: unknown) => e)) as Error;
    expect(error.message).toBe(`downloading 127.0.0.1:${new URL(url).port}/half.png took longer than 0.04 s`);
  });

  test("aborting the signal rejects with its reason", async () => {
    const { root } = serve(never);
    const controller = new AbortController();
    const reason = new CliError("interrupted", ExitCode.interrupted);
    setTimeout(() => controller.abort(reason), 10);
    expect(await download(`${root}/x.png`, { maxBytes: 1_000, signal: controller.signal }).catch((e: unknown) => e)).toBe(reason);
  });

  test("an already-aborted signal: its reason, and no request", async () => {
    const { seen, root } = serve(() => new Response(PNG));
    const reason = new Error("already");
    expect(await download(`${root}/x.png`, { maxBytes: 1_000, signal: AbortSignal.abort(reason) }).catch((e: unknown) => e)).toBe(reason);
    expect(seen).toHaveLength(0);
  });
});
