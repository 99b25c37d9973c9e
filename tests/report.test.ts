import { describe, expect, test } from "bun:test";
import { failureToError, type Job, jobFailure } from "../lib/api.ts";
import { CliError, ExitCode, usageError } from "../lib/errors.ts";
import { jsonReport, manifestRecord, newRecord, type RunRecord } from "../lib/report.ts";
import { outputItems, type SavedFile } from "../lib/save.ts";
import { responseJson, thrown } from "./helpers.ts";

const JSON_KEYS = ["ok", "command", "jobId", "status", "delayTime", "executionTime", "outputs", "error", "exitCode"];
const MANIFEST_KEYS = ["jobId", "endpointId", "status", "delayTime", "executionTime", "workflowSha256", "files", "error", "exitCode", "finishedAt"];

const PNG_FILE: SavedFile = { path: "/out/output_20260102_030405_001.png", bytes: 1234, type: "image/png", sha256: "a".repeat(64), filename: "ComfyUI_00001_.png" };
const JPG_FILE: SavedFile = { path: "/out/output_20260102_030405_002.jpg", bytes: 99, type: "image/jpeg", sha256: "b".repeat(64) };
const JOB: Job = { id: "job-1", status: "COMPLETED", delayTime: 2311, executionTime: 8123, output: { images: ["AAAA"] }, workerId: "w" };
const FINISHED = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678));

const record = (fields: Partial<RunRecord> = {}): RunRecord => ({ ...newRecord("run"), ...fields });

describe("CliError.code", () => {
  const defaults: [ExitCode, string][] = [
    [ExitCode.ok, "ok"],
    [ExitCode.jobFailed, "job_failed"],
    [ExitCode.usage, "usage"],
    [ExitCode.credentials, "credentials"],
    [ExitCode.api, "api"],
    [ExitCode.timeout, "timeout"],
    [ExitCode.save, "save_failed"],
    [ExitCode.interrupted, "interrupted"],
    [ExitCode.terminated, "terminated"],
  ];
  for (const [exitCode, code] of defaults) {
    test(`exit ${exitCode} → code ${code} by default`, () => {
      const error = new CliError("m", exitCode);
      expect([error.exitCode, error.code, error.message, error.name, error.detail]).toEqual([exitCode, code, "m", "CliError", undefined]);
    });
  }

  test("every exit code has its own default code", () => {
    expect(new Set(defaults.map(([, code]) => code)).size).toBe(Object.keys(ExitCode).length);
    expect(defaults.map(([exitCode]) => exitCode).sort((a, b) => a - b)).toEqual(Object.values(ExitCode).sort((a, b) => a - b));
  });

  test("a precise code replaces the default; detail is kept apart", () => {
    const error = new CliError("gone", ExitCode.api, "raw body", "job_not_found");
    expect([error.exitCode, error.code, error.detail, error.message]).toEqual([ExitCode.api, "job_not_found", "raw body", "gone"]);
    expect(error).toBeInstanceOf(Error);
  });

  test("usageError → exit 2, code usage", () => {
    expect([usageError("bad").exitCode, usageError("bad").code]).toEqual([ExitCode.usage, "usage"]);
  });
});

describe("newRecord", () => {
  test("the command and nothing saved yet", () => {
    expect(newRecord("wait")).toStrictEqual({ command: "wait", saved: [] });
  });

  test("each record has its own list", () => {
    const a = newRecord("run");
    a.saved.push(PNG_FILE);
    expect(newRecord("run").saved).toEqual([]);
  });
});

describe("jsonReport", () => {
  test("nothing known yet, no error: every key present, null where unknown, exit 0", () => {
    const report = jsonReport(newRecord("health"), undefined);
    expect(report).toStrictEqual({ ok: true, command: "health", jobId: null, status: null, delayTime: null, executionTime: null, outputs: [], error: null, exitCode: 0 });
    expect(Object.keys(report)).toEqual(JSON_KEYS);
  });

  test("a completed run: job fields and the outputs with path, bytes, type and sha256 (not the worker's name)", () => {
    const report = jsonReport(record({ job: JOB, saved: [PNG_FILE, JPG_FILE], workflowSha256: "c".repeat(64), endpointId: "ep" }), undefined);
    expect(report).toStrictEqual({
      ok: true,
      command: "run",
      jobId: "job-1",
      status: "COMPLETED",
      delayTime: 2311,
      executionTime: 8123,
      outputs: [
        { path: PNG_FILE.path, bytes: 1234, type: "image/png", sha256: "a".repeat(64) },
        { path: JPG_FILE.path, bytes: 99, type: "image/jpeg", sha256: "b".repeat(64) },
      ],
      error: null,
      exitCode: 0,
    });
  });

  test("zero times stay 0, not null", () => {
    const report = jsonReport(record({ job: { id: "j", status: "COMPLETED", delayTime: 0, executionTime: 0 } }), undefined);
    expect([report.delayTime, report.executionTime]).toEqual([0, 0]);
  });

  test("a job without times: null, and the keys survive JSON", () => {
    const report = jsonReport(record({ job: { id: "j", status: "IN_QUEUE" } }), undefined);
    const parsed = JSON.parse(JSON.stringify(report)) as Record<string, unknown>;
    expect(Object.keys(parsed)).toEqual(JSON_KEYS);
    expect([parsed.delayTime, parsed.executionTime, parsed.status]).toEqual([null, null, "IN_QUEUE"]);
  });

  // [what, the error, the job known at that point, code, exit code]
  const failures: [string, () => CliError, Job | undefined, string, ExitCode][] = [
    ["a usage error before anything was sent", () => usageError("--workflow FILE is required"), undefined, "usage", 2],
    ["a rejected key", () => failureToError("run", { kind: "http", status: 401, body: "" }, { baseUrl: "https://x.example", endpointId: "ep" }), undefined, "credentials_rejected", 3],
    ["a submission of unknown fate", () => failureToError("run", { kind: "timeout" }, { baseUrl: "https://x.example", endpointId: "ep" }), undefined, "submission_unknown", 4],
    ["an expired job", () => failureToError("status", { kind: "http", status: 404, body: "" }, { baseUrl: "https://x.example", endpointId: "ep", jobId: "job-1" }), { id: "job-1", status: "IN_QUEUE" }, "job_not_found", 4],
    ["the --timeout budget", () => new CliError("no result after 600 s", ExitCode.timeout), { id: "job-1", status: "IN_PROGRESS", delayTime: 100 }, "timeout", 5],
    ["a failed job", () => jobFailure({ id: "job-1", status: "FAILED", error: "boom" }), { id: "job-1", status: "FAILED", error: "boom" }, "job_failed", 1],
    ["a timed-out job", () => jobFailure({ id: "job-1", status: "TIMED_OUT" }), { id: "job-1", status: "TIMED_OUT" }, "job_timed_out", 1],
    ["no outputs", () => thrown(() => outputItems(undefined, "job-1")), { id: "job-1", status: "COMPLETED" }, "no_outputs", 1],
    ["outputs that could not be saved", () => new CliError("1 output not saved", ExitCode.save), JOB, "save_failed", 6],
    ["Ctrl-C", () => new CliError("interrupted", ExitCode.interrupted), { id: "job-1", status: "IN_QUEUE" }, "interrupted", 130],
    ["SIGTERM", () => new CliError("terminated", ExitCode.terminated), { id: "job-1", status: "IN_QUEUE" }, "terminated", 143],
  ];
  for (const [what, makeError, job, code, exitCode] of failures) {
    test(`${what} → ok false, error.code ${code}, exit ${exitCode}, the job id kept`, () => {
      const error = makeError();
      const report = jsonReport(record({ job }), error);
      expect(Object.keys(report)).toEqual(JSON_KEYS);
      expect(report.ok).toBe(false);
      expect(report.error).toStrictEqual({ code, message: error.message });
      expect(report.exitCode).toBe(exitCode);
      expect(report.jobId).toBe(job?.id ?? null);
      expect(report.status).toBe(job?.status ?? null);
    });
  }

  test("a save failure still lists what was saved", () => {
    const report = jsonReport(record({ job: JOB, saved: [PNG_FILE] }), new CliError("output 2 is not valid base64", ExitCode.save));
    expect([report.ok, report.exitCode, report.outputs.map((o) => o.path)]).toEqual([false, 6, [PNG_FILE.path]]);
  });

  test("a subcommand's extra keys are merged after the fixed ones", () => {
    const health = { jobs: { inQueue: 3 }, workers: { throttled: 2 } };
    const report = jsonReport({ ...newRecord("health"), extra: { health } }, undefined) as ReturnType<typeof jsonReport> & { health?: unknown };
    expect(Object.keys(report)).toEqual([...JSON_KEYS, "health"]);
    expect(report.health).toEqual(health);
    const purged = jsonReport({ ...newRecord("purge-queue"), extra: { removed: 3 } }, undefined) as ReturnType<typeof jsonReport> & { removed?: number };
    expect([purged.ok, purged.command, purged.removed]).toEqual([true, "purge-queue", 3]);
  });

  test("--seed: the seed used is in the --json document, after the fixed keys", () => {
    const report = jsonReport({ ...record({ job: JOB }), extra: { seed: 281474976710655 } }, undefined) as ReturnType<typeof jsonReport> & { seed?: number };
    expect(Object.keys(report)).toEqual([...JSON_KEYS, "seed"]);
    expect(JSON.parse(JSON.stringify(report)).seed).toBe(281474976710655);
  });

  test("extra keys cannot overwrite the fixed ones", () => {
    const report = jsonReport({ ...record({ job: JOB }), extra: { ok: false, jobId: "forged", exitCode: 9 } }, undefined);
    expect([report.ok, report.jobId, report.exitCode]).toEqual([true, "job-1", 0]);
  });

  test("a worker-comfyui failure: the node lines are kept whole in error.message", async () => {
    const job = await responseJson<Job>("worker-comfyui-5-validation-failed.json");
    const report = jsonReport(record({ job }), jobFailure(job));
    expect(report.error!.code).toBe("job_failed");
    expect(report.error!.message).toMatch(/^job c0ffee00-\S+ ended FAILED after 0\.9 s: Workflow validation failed\n  • node 4 \(CheckpointLoaderSimple\): ckpt_name: 'does-not-exist\.safetensors'/);
    expect(report.error!.message).not.toContain("Raw response");
  });

  test("a job from RunPod's local test server (no timings) → nulls, not zeros", async () => {
    const job = await responseJson<Job>("worker-comfyui-local/01-runsync-img2img.json");
    const report = jsonReport(record({ job }), undefined);
    expect([report.jobId, report.status, report.delayTime, report.executionTime]).toEqual([job.id, "COMPLETED", null, null]);
  });

  test("the fixture seed-completed.json as the job", async () => {
    const job = await responseJson<Job>("seed-completed.json");
    const report = jsonReport(record({ job }), undefined);
    expect([report.jobId, report.status, report.delayTime, report.executionTime]).toEqual([job.id, "COMPLETED", 2311, 8123]);
    // the job's output (base64 images) is not part of the report
    expect(JSON.stringify(report)).not.toContain("iVBOR");
  });
});

describe("manifestRecord", () => {
  test("a completed run: job, endpoint, timings, workflow hash, files with their sizes and hashes", () => {
    const manifest = manifestRecord(record({ job: JOB, endpointId: "ep-1", workflowSha256: "c".repeat(64), saved: [PNG_FILE, JPG_FILE] }), undefined, FINISHED);
    expect(manifest).toStrictEqual({
      jobId: "job-1",
      endpointId: "ep-1",
      status: "COMPLETED",
      delayTime: 2311,
      executionTime: 8123,
      workflowSha256: "c".repeat(64),
      files: [
        { path: PNG_FILE.path, bytes: 1234, sha256: "a".repeat(64), type: "image/png", workerFilename: "ComfyUI_00001_.png" },
        { path: JPG_FILE.path, bytes: 99, sha256: "b".repeat(64), type: "image/jpeg" }, // no workerFilename when the worker gave none
      ],
      error: null,
      exitCode: 0,
      finishedAt: "2026-01-02T03:04:05.678Z",
    });
    expect(Object.keys(manifest)).toEqual(MANIFEST_KEYS);
  });

  test("nothing known: every key present, null where unknown", () => {
    const manifest = manifestRecord(newRecord("run"), undefined, FINISHED);
    expect(manifest).toStrictEqual({
      jobId: null,
      endpointId: null,
      status: null,
      delayTime: null,
      executionTime: null,
      workflowSha256: null,
      files: [],
      error: null,
      exitCode: 0,
      finishedAt: "2026-01-02T03:04:05.678Z",
    });
    expect(Object.keys(JSON.parse(JSON.stringify(manifest)))).toEqual(MANIFEST_KEYS);
  });

  const failures: [CliError, string, ExitCode][] = [
    [new CliError("no result after 600 s", ExitCode.timeout), "timeout", 5],
    [jobFailure({ id: "job-1", status: "CANCELLED" }), "job_cancelled", 1],
    [new CliError("cannot write into /out", ExitCode.save), "save_failed", 6],
    [new CliError("interrupted", ExitCode.interrupted), "interrupted", 130],
  ];
  for (const [error, code, exitCode] of failures) {
    test(`an error (${code}) → its code, message and exit code; the job id kept for resuming`, () => {
      const manifest = manifestRecord(record({ job: { id: "job-1", status: "IN_PROGRESS" }, endpointId: "ep-1" }), error, FINISHED);
      expect([manifest.error, manifest.exitCode, manifest.jobId, manifest.endpointId]).toEqual([{ code, message: error.message }, exitCode, "job-1", "ep-1"]);
    });
  }

  test("finishedAt is the given time in UTC ISO form, whatever the local zone", () => {
    const when = new Date(2026, 5, 30, 23, 59, 59, 1);
    expect(manifestRecord(newRecord("run"), undefined, when).finishedAt).toBe(when.toISOString());
    expect(manifestRecord(newRecord("run"), undefined, when).finishedAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  // A random seed is reported in the manifest too.
  test("--seed: the seed used is in the manifest too", () => {
    const manifest = manifestRecord({ ...record({ job: JOB }), extra: { seed: 42 } }, undefined, FINISHED);
    expect(JSON.stringify(manifest)).toContain('"seed":42');
  });

  test("the job's output and unknown fields stay out of the manifest", () => {
    const text = JSON.stringify(manifestRecord(record({ job: JOB, saved: [PNG_FILE] }), undefined, FINISHED));
    expect(text).not.toContain("AAAA");
    expect(text).not.toContain("workerId");
  });
});
