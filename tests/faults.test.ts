// The client against every fault the emulator injects, alone and mixed: the exit code the contract
// gives, no partial file, no second submission, a cancel where one is due, and the key in no byte
// printed or written.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Emulator, type EmulatorOptions, startEmulator } from "../lib/emulator.ts";
import { parseFaults } from "../lib/emulator-faults.ts";
import { expectSecretNowhere, removeTempDirs, type RunOptions, runCli, tempDir, workflowPath, whenTrue } from "./helpers.ts";

const KEY = "rpa_FAULTS_TEST_KEY_0123456789";
afterAll(removeTempDirs);

interface FaultRun {
  code: number;
  stdout: string;
  stderr: string;
  emulator: Emulator;
  cwd: string;
  /** Requests the emulator received on one route. */
  sent: (route: string) => number;
}

/** One whole run of the CLI (verbose, with a manifest) against an emulator with `faults`. */
async function runWithFaults(faults: string, args: string[] = [], options: Partial<EmulatorOptions> = {}, onSpawn?: RunOptions["onSpawn"]): Promise<FaultRun> {
  const emulator = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-faults", queueDelayMs: 10, executionMs: 80, retryAfterSeconds: 0.05, faults: parseFaults(faults), ...options });
  const cwd = tempDir();
  try {
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--poll-interval", "0.1", "--no-open", "--verbose", "--manifest", "run.json", ...args], {
      cwd,
      env: { RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-faults", RUNPOD_ENDPOINT_BASE_URL: emulator.url },
      onSpawn,
    });
    const sent = (route: string) => emulator.requests.filter((r) => r.path.split("/")[3] === route).length;
    // Whatever happened: the key is nowhere, and no temporary or partial file is left.
    expectSecretNowhere(KEY, [run.stdout, run.stderr], cwd);
    const output = join(cwd, "output");
    if (existsSync(output)) expect(readdirSync(output).filter((name) => name.includes(".tmp"))).toEqual([]);
    return { ...run, emulator, cwd, sent };
  } finally {
    await emulator.stop();
  }
}

const savedPng = (run: FaultRun) => {
  const path = run.stdout.trim();
  expect(path).toMatch(/^output\/output_\d{8}_\d{6}_001\.png$/);
  expect([...readFileSync(join(run.cwd, path)).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
};
const manifest = (run: FaultRun) => JSON.parse(readFileSync(join(run.cwd, "run.json"), "utf8"));

// Both ways of waiting: RunPod's long poll, and plain /status polling where an endpoint lacks it.
for (const [route, statusSync] of [["status-sync", true], ["status", false]] as const) {
  const at = (faults: string) => faults.replaceAll("@status", `@${route}`);
  describe(`absorbed while waiting on ${route}: the run succeeds`, () => {
    test("rate-limit on /run (429, empty body, Retry-After): submitted again, once created", async () => {
      const run = await runWithFaults("rate-limit@run=2", [], { statusSync });
      expect(run.code).toBe(0);
      expect(run.emulator.faultsInjected["rate-limit"]).toBe(2);
      expect(run.sent("run")).toBe(3);
      expect(run.stderr.match(/Job \S+ IN_QUEUE/g)).toHaveLength(1);
      savedPng(run);
    });

    const absorbed: [string, string][] = [
      ["rate-limit", "rate-limit@status=3"],
      ["flaky (502, 503, 500)", "flaky@status=3"],
      ["reset connections", "reset@status=2"],
      ["a malformed 200", "malformed@status=2"],
      ["slow answers shorter than the budget", "slow@status=150ms:2"],
    ];
    for (const [what, faults] of absorbed) {
      test(what, async () => {
        const run = await runWithFaults(at(faults), [], { statusSync });
        expect(run.code).toBe(0);
        const name = faults.split("@")[0] as keyof typeof run.emulator.faultsInjected;
        if (name !== "slow") expect(run.emulator.faultsInjected[name]).toBe(Number(faults.split("=")[1]));
        expect(run.sent(route)).toBeGreaterThan(0);
        savedPng(run);
      });
    }

    test("all of them mixed", async () => {
      const run = await runWithFaults(at("rate-limit=2,flaky@status=1,reset@status=2,malformed@status=1,slow@status=100ms:2"), [], { statusSync });
      expect(run.code).toBe(0);
      savedPng(run);
      expect(manifest(run)).toMatchObject({ status: "COMPLETED", exitCode: 0 });
      expect(run.sent("run")).toBe(3);
    });
  });
}

describe("not absorbed: the contract's exit code, and the job never lost", () => {
  test("rate-limit on /run beyond the retries: exit 4, no job created", async () => {
    const run = await runWithFaults("rate-limit@run=10", ["--json"]);
    expect(run.code).toBe(4);
    expect(run.sent("run")).toBe(3);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, jobId: null, error: { code: "http_error" } });
    expect(run.stderr).toMatch(/HTTP 429/);
    expect(run.stderr).not.toMatch(/may or may not/);
  });

  for (const fault of ["flaky@run", "reset@run", "malformed@run"]) {
    test(`${fault}: the job exists but its id never arrived: exit 4, fate unknown, never submitted twice`, async () => {
      const run = await runWithFaults(fault, ["--json"]);
      expect(run.code).toBe(4);
      expect(run.sent("run")).toBe(1);
      expect(run.stderr).toMatch(/the job may or may not have been created/);
      expect(JSON.parse(run.stdout).error.code).toBe("submission_unknown");
    });
  }

  test("drop-output: COMPLETED without output, exit 1, nothing written but the manifest", async () => {
    const run = await runWithFaults("drop-output");
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/completed without outputs/);
    expect(existsSync(join(run.cwd, "output"))).toBe(false);
    expect(manifest(run)).toMatchObject({ status: "COMPLETED", exitCode: 1, error: { code: "no_outputs" }, files: [] });
  });

  test("expire: the result vanished before it was fetched: exit 4 saying so", async () => {
    const run = await runWithFaults("expire", [], { executionMs: 30 });
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/job \S+ no longer exists \(HTTP 404.*expired/);
    expect(run.stdout).toBe("");
  });

  test("status failing for good: retried with warnings until --timeout, then exit 5 and the job cancelled", async () => {
    const run = await runWithFaults("flaky@status-sync=100%", ["--timeout", "2"], { executionMs: 10_000 });
    expect(run.code).toBe(5);
    expect(run.stderr).toMatch(/⚠ checking job \S+ failed \(HTTP 50\d.*\); trying again in \d\.\d s/);
    expect(run.sent("status-sync")).toBeGreaterThanOrEqual(2);
    expect(run.sent("cancel")).toBe(1);
    expect(run.stderr).toMatch(/no result after 2 s \(--timeout\); job \S+ cancelled/);
  });

  test("a 401 while polling (a key revoked mid-run) is not retried: exit 3, and how to resume", async () => {
    const revoked = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (request) => (new URL(request.url).pathname.endsWith("/run") ? Response.json({ id: "kept-u1", status: "IN_QUEUE" }) : new Response(null, { status: 401 })),
    });
    try {
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--poll-interval", "0.1", "--no-open"], {
        env: { RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-faults", RUNPOD_ENDPOINT_BASE_URL: `http://127.0.0.1:${revoked.port}/v2` },
      });
      expect(run.code).toBe(3);
      expect(run.stderr).toMatch(/rejected the API key \(HTTP 401\).*job kept-u1 may still be running: resume with send-to-runpod wait kept-u1/);
      expectSecretNowhere(KEY, [run.stdout, run.stderr]);
    } finally {
      await revoked.stop(true);
    }
  });

  test("a status request hanging past --timeout: exit 5, and the job is cancelled", async () => {
    const run = await runWithFaults("slow@status-sync=5s:1", ["--timeout", "1"], { executionMs: 10_000 });
    expect(run.code).toBe(5);
    expect(run.sent("cancel")).toBe(1);
    expect(run.stderr).toMatch(/no result after 1 s \(--timeout\); job \S+ cancelled/);
    expect(manifest(run)).toMatchObject({ exitCode: 5, error: { code: "timeout" } });
  });

  test("Ctrl-C with a flaky cancel: the cancel is sent again until it lands, exit 130", async () => {
    const run = await runWithFaults("flaky@cancel=1", [], { executionMs: 20_000 }, (child, stderr) => {
      whenTrue(() => /IN_PROGRESS/.test(stderr()), () => child.kill("SIGINT"));
    });
    expect(run.code).toBe(130);
    expect(run.sent("cancel")).toBe(2);
    expect(run.stderr).toMatch(/interrupted; job \S+ cancelled/);
  });
});
