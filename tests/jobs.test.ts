// End to end, issue 3: managing jobs (status, wait, cancel, retry, health, purge-queue), --no-wait,
// --no-cancel, policy flags, --json, --manifest, and results that cannot all be saved.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Emulator, startEmulator } from "../lib/emulator.ts";
import { expectSecretNowhere, FIXTURES, removeTempDirs, runCli, tempDir, until, workflowPath, whenTrue } from "./helpers.ts";

const KEY = "rpa_JOBS_TEST_KEY_abcdef0123";
const tinyPng = readFileSync(join(FIXTURES, "tiny.png"));
const fast = ["--poll-interval", "0.1", "--no-open"];

let emulator: Emulator;
beforeAll(() => {
  emulator = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-jobs", queueDelayMs: 10, executionMs: 150, workers: 2 });
});
afterAll(async () => {
  await emulator.stop();
  removeTempDirs();
});
afterEach(() => {
  emulator.requests.length = 0;
});

/** A stand-in endpoint whose every status answer is `job` (outcomes the emulator's handler never produces). */
function endpointAnswering(job: { id: string; [key: string]: unknown }) {
  return Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (request) => (new URL(request.url).pathname.endsWith("/run") ? Response.json({ id: job.id, status: "IN_QUEUE" }) : Response.json(job)),
  });
}

const env = (url = emulator.url) => ({ RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-jobs", RUNPOD_ENDPOINT_BASE_URL: url });
const cli = (args: string[], options: Parameters<typeof runCli>[1] = {}) => runCli(args, { env: env(), ...options });
const requestsTo = (em: Emulator, route: string) => em.requests.filter((r) => r.path.split("/")[3] === route);
const expectKeyNowhere = (texts: string[], dir?: string) => expectSecretNowhere(KEY, texts, dir);

describe("--no-wait, then the subcommands on the job", () => {
  test("submit, status, wait: the results are saved as a normal run saves them", async () => {
    const cwd = tempDir();
    const submitted = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--no-wait"], { cwd });
    expect(submitted.code).toBe(0);
    const jobId = submitted.stdout.trim();
    expect(jobId).toMatch(/^[0-9a-f-]+-u1$/);
    expect(requestsTo(emulator, "status")).toHaveLength(0);

    const status = await cli(["status", jobId], { cwd });
    expect(status.code).toBe(0);
    expect(status.stdout.trim()).toMatch(/^(IN_QUEUE|IN_PROGRESS|COMPLETED)$/);

    const waited = await cli(["wait", jobId, "--output", "renders", ...fast], { cwd });
    expect(waited.code).toBe(0);
    expect(waited.stdout.trim()).toMatch(/^renders\/output_\d{8}_\d{6}_001\.png$/);
    expect([...readFileSync(join(cwd, waited.stdout.trim())).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
    expect(waited.stderr).toMatch(/1 file \(.+\) in renders/);
  });

  test("cancel a queued job, then retry refuses it (only FAILED or TIMED_OUT)", async () => {
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-jobs", queueDelayMs: 5_000, executionMs: 50 });
    try {
      const submitted = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--no-wait"], { env: env(slow.url) });
      const jobId = submitted.stdout.trim();
      const cancelled = await cli(["cancel", jobId], { env: env(slow.url) });
      expect([cancelled.code, cancelled.stdout.trim()]).toEqual([0, "CANCELLED"]);
      expect(requestsTo(slow, "cancel")).toHaveLength(1);
      const retried = await cli(["retry", jobId], { env: env(slow.url) });
      expect(retried.code).toBe(4);
      expect(retried.stderr).toMatch(/HTTP 400/);
    } finally {
      await slow.stop();
    }
  });

  test("retry a FAILED job: same id, queued again", async () => {
    const failed = await cli(["--workflow", workflowPath("img2img.json"), ...fast]);
    expect(failed.code).toBe(1);
    const jobId = /Job (\S+) IN_QUEUE/.exec(failed.stderr)![1]!;
    const retried = await cli(["retry", jobId, "--json"]);
    expect(retried.code).toBe(0);
    const doc = JSON.parse(retried.stdout);
    expect([doc.ok, doc.jobId, doc.status]).toEqual([true, jobId, "IN_QUEUE"]);
    expect(requestsTo(emulator, "retry")).toHaveLength(1);
  });

  test("status of an expired or unknown job says so: exit 4", async () => {
    const run = await cli(["status", "0000-gone-u1"]);
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/job 0000-gone-u1 no longer exists .*expired/);
  });

  test("a subcommand without its job id is a usage error", async () => {
    const run = await cli(["wait"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/missing JOB_ID/);
  });

  test("health: counts on stdout; --json carries them", async () => {
    const run = await cli(["health"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^jobs: .*\nworkers: \d+ idle, \d+ running\n$/);
    const doc = JSON.parse((await cli(["health", "--json"])).stdout);
    expect(doc.health.workers.idle + doc.health.workers.running).toBe(2);
  });

  test("purge-queue refuses without --yes off a terminal, and removes queued jobs with it", async () => {
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-jobs", queueDelayMs: 10_000, executionMs: 50 });
    try {
      for (let i = 0; i < 2; i++) expect((await cli(["--workflow", workflowPath("sample-txt2img.json"), "--no-wait"], { env: env(slow.url) })).code).toBe(0);
      const refused = await cli(["purge-queue"], { env: env(slow.url) });
      expect(refused.code).toBe(2);
      expect(requestsTo(slow, "purge-queue")).toHaveLength(0);
      const purged = await cli(["purge-queue", "--yes"], { env: env(slow.url) });
      expect([purged.code, purged.stdout.trim()]).toEqual([0, "2"]);
    } finally {
      await slow.stop();
    }
  });

  test("a workflow file named like a subcommand is still a workflow", async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, "status"), readFileSync(workflowPath("sample-txt2img.json")));
    const run = await cli(["--workflow", "status", ...fast], { cwd });
    expect(run.code).toBe(0);
    expect(requestsTo(emulator, "run")).toHaveLength(1);
  });
});

describe("request policy", () => {
  test("--policy-timeout, --ttl, --webhook and --low-priority reach /run", async () => {
    const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--policy-timeout", "60", "--ttl", "3600", "--webhook", "https://example.com/hook", "--low-priority", "--no-wait"]);
    expect(run.code).toBe(0);
    const body = requestsTo(emulator, "run")[0]!.body as Record<string, unknown>;
    expect(body.policy).toEqual({ executionTimeout: 60_000, ttl: 3_600_000, lowPriority: true });
    expect(body.webhook).toBe("https://example.com/hook");
  });

  test("a job that ended TIMED_OUT (policy.executionTimeout): exit 1", async () => {
    const stub = endpointAnswering(JSON.parse(readFileSync(join(FIXTURES, "responses", "timed-out.json"), "utf8")));
    try {
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env: env(`http://127.0.0.1:${stub.port}/v2`) });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/ended TIMED_OUT/);
    } finally {
      await stub.stop(true);
    }
  });
});

describe("time and signals", () => {
  test("--no-cancel on --timeout: exit 5, the job keeps running, and wait resumes it", async () => {
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-jobs", queueDelayMs: 10, executionMs: 1_500 });
    try {
      const cwd = tempDir();
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--timeout", "1", "--no-cancel", ...fast], { env: env(slow.url), cwd });
      expect(run.code).toBe(5);
      expect(requestsTo(slow, "cancel")).toHaveLength(0);
      const jobId = /resume with send-to-runpod wait (\S+)/.exec(run.stderr)?.[1];
      expect(jobId).toBeDefined();
      const resumed = await cli(["wait", jobId!, ...fast], { env: env(slow.url), cwd });
      expect(resumed.code).toBe(0);
      expect(existsSync(join(cwd, resumed.stdout.trim()))).toBe(true);
    } finally {
      await slow.stop();
    }
  });

  test("SIGTERM while running: the job is cancelled, exit 143", async () => {
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-jobs", queueDelayMs: 10, executionMs: 20_000 });
    try {
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], {
        env: env(slow.url),
        onSpawn: (child, stderr) => whenTrue(() => /IN_PROGRESS/.test(stderr()), () => child.kill("SIGTERM")),
      });
      expect(run.code).toBe(143);
      expect(requestsTo(slow, "cancel")).toHaveLength(1);
    } finally {
      await slow.stop();
    }
  });

  test("a second Ctrl-C exits at once, even while the cancel hangs", async () => {
    // A stand-in endpoint whose cancel never answers.
    const hang = Promise.withResolvers<Response>();
    const stuck = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch(request) {
        const route = new URL(request.url).pathname.split("/")[3];
        if (route === "cancel") return hang.promise;
        return Response.json({ id: "stuck-u1", status: route === "run" ? "IN_QUEUE" : "IN_PROGRESS" });
      },
    });
    try {
      const started = Date.now();
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], {
        env: env(`http://127.0.0.1:${stuck.port}/v2`),
        onSpawn: (child, stderr) =>
          void until(() => /IN_PROGRESS/.test(stderr()))
            .then(() => child.kill("SIGINT"))
            .then(() => until(() => /Cancelling job/.test(stderr())))
            .then(() => child.kill("SIGINT"))
            .catch(() => {}), // never an unhandled rejection in a later test: the assertions below fail instead
      });
      expect(run.code).toBe(130);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      hang.resolve(new Response(null, { status: 499 }));
      await stuck.stop(true);
    }
  });
});

describe("machine output", () => {
  test("--json: one document on stdout, nothing else there; logs stay on stderr", async () => {
    const cwd = tempDir();
    const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--json", ...fast], { cwd });
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(Object.keys(doc).sort()).toEqual(["command", "delayTime", "error", "executionTime", "exitCode", "jobId", "ok", "outputs", "status"]);
    expect([doc.ok, doc.status, doc.exitCode, doc.error]).toEqual([true, "COMPLETED", 0, null]);
    expect(doc.outputs).toHaveLength(1);
    const saved = readFileSync(join(cwd, doc.outputs[0].path));
    expect(doc.outputs[0].bytes).toBe(saved.length);
    expect(doc.outputs[0].sha256).toBe(new Bun.CryptoHasher("sha256").update(saved).digest("hex"));
    expect(run.stderr).toMatch(/Saved output_/);
  });

  test("--json on failure: ok false, a stable error code, the exit code, the job id", async () => {
    const run = await cli(["--workflow", workflowPath("img2img.json"), "--json", ...fast]);
    expect(run.code).toBe(1);
    const doc = JSON.parse(run.stdout);
    expect([doc.ok, doc.status, doc.exitCode, doc.error.code]).toEqual([false, "FAILED", 1, "job_failed"]);
    expect(doc.jobId).toMatch(/-u1$/);
  });

  test("--json on a usage error still prints one document", async () => {
    const run = await cli(["--workflow", "missing.json", "--json"]);
    expect(run.code).toBe(2);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, jobId: null, exitCode: 2, error: { code: "usage" } });
  });

  test("--quiet prints only errors", async () => {
    const ok = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--quiet", ...fast]);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toMatch(/output_.*\.png\n$/);
    const failed = await cli(["--workflow", workflowPath("img2img.json"), "--quiet", ...fast]);
    const [first, ...rest] = failed.stderr.trim().split("\n");
    expect(first).toStartWith("✖ job ");
    expect(rest.every((line) => line.startsWith("  • "))).toBe(true);
  });

  test("--verbose shows request lines, never the key", async () => {
    const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--verbose", ...fast]);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/POST \/v2\/ep-jobs\/run → 200 \(\d+ ms\)/);
    expect(run.stderr).toMatch(/GET \/v2\/ep-jobs\/status-sync\/\S+ → 200/);
    expectKeyNowhere([run.stdout, run.stderr]);
  });

  test("--manifest records the job, timings, the workflow's and every file's sha256", async () => {
    const cwd = tempDir();
    const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--manifest", "run.json", ...fast], { cwd });
    expect(run.code).toBe(0);
    const manifest = JSON.parse(readFileSync(join(cwd, "run.json"), "utf8"));
    const sent = (requestsTo(emulator, "run")[0]!.body as { input: { workflow: unknown } }).input.workflow;
    expect(manifest.workflowSha256).toBe(new Bun.CryptoHasher("sha256").update(JSON.stringify(sent)).digest("hex"));
    expect([manifest.endpointId, manifest.status, manifest.exitCode]).toEqual(["ep-jobs", "COMPLETED", 0]);
    expect(manifest.delayTime).toBeNumber();
    expect(manifest.executionTime).toBeNumber();
    const file = readFileSync(join(cwd, manifest.files[0].path));
    expect(manifest.files[0]).toMatchObject({ bytes: file.length, sha256: new Bun.CryptoHasher("sha256").update(file).digest("hex"), type: "image/png" });
    expectKeyNowhere([run.stdout, run.stderr], cwd);
  });
});

describe("saving without loss", () => {
  const completedWith = (output: unknown) => endpointAnswering({ id: "job-42/../../evil-u1", status: "COMPLETED", delayTime: 5, executionTime: 7, output });

  test("an invalid image among valid ones: the valid ones are saved, the raw output kept, exit 6 with the job id", async () => {
    const stub = completedWith({ images: [tinyPng.toString("base64"), "%%% not base64 %%%", tinyPng.toString("base64")] });
    try {
      const cwd = tempDir();
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env: env(`http://127.0.0.1:${stub.port}/v2`), cwd });
      expect(run.code).toBe(6);
      expect(run.stderr).toMatch(/saved 2 of 3 outputs; output 2 is not valid base64; the raw output is in output\/job-job-42_______evil-u1\.json; fetch it again with send-to-runpod wait job-42\/\.\.\/\.\.\/evil-u1/);
      const files = readdirSync(join(cwd, "output")).sort();
      expect(files.filter((f) => f.endsWith(".png"))).toHaveLength(2);
      expect(files.filter((f) => f.includes(".tmp"))).toHaveLength(0);
      const raw = JSON.parse(readFileSync(join(cwd, "output", "job-job-42_______evil-u1.json"), "utf8"));
      expect(raw.output.images[1]).toBe("%%% not base64 %%%");
      expect(run.stdout.trim().split("\n")).toHaveLength(2);
    } finally {
      await stub.stop(true);
    }
  });

  test("an output over --max-output-bytes is refused and never written", async () => {
    const stub = completedWith({ images: [tinyPng.toString("base64")] });
    try {
      const cwd = tempDir();
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), "--max-output-bytes", "100", ...fast], { env: env(`http://127.0.0.1:${stub.port}/v2`), cwd });
      expect(run.code).toBe(6);
      expect(run.stderr).toMatch(/over --max-output-bytes/);
      expect(readdirSync(join(cwd, "output"))).toEqual(["job-job-42_______evil-u1.json"]);
    } finally {
      await stub.stop(true);
    }
  });

  test("an output of unknown shape: exit 6, raw output kept", async () => {
    const stub = completedWith({ result: "somewhere else" });
    try {
      const cwd = tempDir();
      const run = await cli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env: env(`http://127.0.0.1:${stub.port}/v2`), cwd });
      expect(run.code).toBe(6);
      expect(run.stderr).toMatch(/no list of images/);
      expect(existsSync(join(cwd, "output", "job-job-42_______evil-u1.json"))).toBe(true);
    } finally {
      await stub.stop(true);
    }
  });
});
