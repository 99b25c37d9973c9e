// The compiled executable (`bun run build`) does the whole job, and ignores a hostile bunfig.toml.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Emulator, startEmulator } from "../lib/emulator.ts";
import { ROOT, removeTempDirs, runCli, tempDir, workflowPath } from "./helpers.ts";

const KEY = "rpa_BINARY_TEST_KEY";
let emulator: Emulator;

beforeAll(async () => {
  const build = Bun.spawn([process.execPath, "run", "build"], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
  if ((await build.exited) !== 0) throw new Error(`bun run build failed: ${await new Response(build.stderr).text()}`);
  emulator = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-bin", queueDelayMs: 10, executionMs: 50 });
}, 120_000);
afterAll(async () => {
  await emulator?.stop();
  removeTempDirs();
});

const connection = () => ({ RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-bin", RUNPOD_ENDPOINT_BASE_URL: emulator.url });

test("--version and --help", async () => {
  const version = await runCli(["--version"], { binary: true });
  expect(version.code).toBe(0);
  expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version);
  const help = await runCli(["--help"], { binary: true });
  expect(help.code).toBe(0);
  expect(help.stdout).toContain("--images-dir");
  expect(help.stdout).toContain("EXIT CODES");
});

test("a whole run, in a folder whose bunfig.toml would crash a binary that read it, with settings from .env", async () => {
  const cwd = tempDir();
  writeFileSync(join(cwd, "bunfig.toml"), 'preload = ["./nope.ts"]\n');
  writeFileSync(join(cwd, ".env"), Object.entries(connection()).map(([k, v]) => `${k}=${v}`).join("\n"));
  const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--poll-interval", "0.1", "--no-open"], { binary: true, cwd });
  expect(run.code).toBe(0);
  const saved = readFileSync(join(cwd, run.stdout.trim()));
  expect([...saved.subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
  expect(run.stderr).not.toContain(KEY);
});

test("an input error exits 2 with one line", async () => {
  const run = await runCli(["--workflow", "missing.json"], { binary: true, env: connection() });
  expect(run.code).toBe(2);
  expect(run.stderr.trim()).toBe("✖ cannot read workflow missing.json: no such file");
});

test("demo works from the binary (the sample workflow is embedded)", async () => {
  const cwd = tempDir();
  const run = await runCli(["demo", "--no-open"], { binary: true, cwd });
  expect(run.code).toBe(0);
  expect(run.stdout.trim()).toMatch(/^output\/output_\d{8}_\d{6}_001\.png$/);
  expect([...readFileSync(join(cwd, run.stdout.trim())).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
});
