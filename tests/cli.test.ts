// End to end: the real CLI (`bun run cli.ts`) against the emulator on loopback.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Emulator, startEmulator } from "../lib/emulator.ts";
import { FIXTURES, removeTempDirs, runCli, tempDir, until, workflowPath, whenTrue } from "./helpers.ts";

const KEY = "rpa_TESTKEY_0123456789abcdef";
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const tinyPng = readFileSync(join(FIXTURES, "tiny.png"));

let emulator: Emulator;
beforeAll(() => {
  emulator = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-test", queueDelayMs: 10, executionMs: 60, workers: 4 });
});
afterAll(async () => {
  await emulator.stop();
  removeTempDirs();
});
afterEach(() => {
  emulator.requests.length = 0;
});

const connection = () => ({ RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-test", RUNPOD_ENDPOINT_BASE_URL: emulator.url });
const fast = ["--poll-interval", "0.1", "--no-open"];
const runBodies = () => emulator.requests.filter((r) => r.path.endsWith("/run")).map((r) => r.body as { input: Record<string, unknown> });
const expectNoKey = (...texts: string[]) => texts.forEach((text) => expect(text).not.toContain(KEY));

function imagesIn(dir: string) {
  return readdirSync(dir).sort();
}

describe("happy path", () => {
  test("txt2img without images: one PNG saved, its path alone on stdout", async () => {
    const cwd = tempDir();
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env: connection(), cwd });
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^output\/output_\d{8}_\d{6}_001\.png$/);
    const bytes = readFileSync(join(cwd, lines[0]!));
    expect([...bytes.subarray(0, 8)]).toEqual(PNG_SIGNATURE);
    expect(imagesIn(join(cwd, "output"))).toEqual([lines[0]!.slice("output/".length)]);
    const [body] = runBodies();
    expect(body!.input.reference_images).toEqual({});
    expect(body!.input.return_base64).toBe(true);
    expect(body!.input.workflow).toEqual(JSON.parse(readFileSync(workflowPath("sample-txt2img.json"), "utf8")));
    expect(run.stderr).toMatch(/Job \S+-u1 IN_QUEUE/);
    expect(run.stderr).toMatch(/1 file \(\d+(\.\d)? k?B\) in \.\/output/);
    expectNoKey(run.stdout, run.stderr);
  });

  test("img2img with --images sends the image under its base name", async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, "reference.png"), tinyPng);
    const run = await runCli(["--workflow", workflowPath("img2img.json"), "--images", "reference.png", "--output", "renders", ...fast], { env: connection(), cwd });
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toMatch(/^renders\/output_\d{8}_\d{6}_001\.png$/);
    expect(runBodies()[0]!.input.reference_images).toEqual({ "reference.png": tinyPng.toString("base64") });
  });

  test("inpaint with several images after one --images, and --images-dir with sub-folders", async () => {
    const cwd = tempDir();
    mkdirSync(join(cwd, "input", "masks"), { recursive: true });
    writeFileSync(join(cwd, "photo.png"), tinyPng);
    writeFileSync(join(cwd, "mask.png"), tinyPng);
    writeFileSync(join(cwd, "input", "masks", "mask1.PNG"), tinyPng);
    writeFileSync(join(cwd, "input", "notes.txt"), "not an image");
    const run = await runCli(["--workflow", workflowPath("inpaint.json"), "--images", "photo.png", "mask.png", "--images-dir", "input", ...fast], { env: connection(), cwd });
    expect(run.code).toBe(0);
    expect(Object.keys(runBodies()[0]!.input.reference_images as object).sort()).toEqual(["mask.png", "masks/mask1.PNG", "photo.png"]);
  });

  test("progress is shown as plain lines when stderr is not a terminal", async () => {
    // Plain polling shows each progress report; a long poll is held until the job ends.
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-test", queueDelayMs: 10, executionMs: 600, progressUpdates: 3, statusSync: false });
    try {
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env: { ...connection(), RUNPOD_ENDPOINT_BASE_URL: slow.url } });
      expect(run.code).toBe(0);
      expect(run.stderr).toMatch(/^IN_PROGRESS \d+s · \S+/m);
      expect(run.stderr).not.toContain("\r");
      expect(run.stderr).not.toContain("\x1b[");
    } finally {
      await slow.stop();
    }
  });

  test("a .env file in the working directory is honoured", async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, ".env"), Object.entries(connection()).map(([k, v]) => `${k}=${v}`).join("\n"));
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { cwd });
    expect(run.code).toBe(0);
    expect(existsSync(join(cwd, run.stdout.trim()))).toBe(true);
  });

  test("the key of ~/.runpod/config.toml is used when RUNPOD_API_KEY is unset, and flags beat it", async () => {
    const cwd = tempDir();
    mkdirSync(join(cwd, ".runpod"));
    writeFileSync(join(cwd, ".runpod", "config.toml"), `[default]\napi_key = "${KEY}"\n`);
    const env = { RUNPOD_ENDPOINT_ID: "ep-test", RUNPOD_ENDPOINT_BASE_URL: emulator.url };
    expect((await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env, cwd })).code).toBe(0);
    const wrong = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--api-key", "wrong", ...fast], { env, cwd });
    expect(wrong.code).toBe(3);
  });
});

describe("input errors are caught before anything is sent (exit 2)", () => {
  const cases: [string, string[], RegExp][] = [
    ["missing workflow file", ["--workflow", "nope.json"], /cannot read workflow nope\.json: no such file/],
    ["editor-format workflow", ["--workflow", join(FIXTURES, "ui-workflow-sd15.json")], /editor format.*Export \(API\)/],
    ["workflow that is not JSON", ["--workflow", join(FIXTURES, "tiny.png")], /tiny\.png is not valid JSON/],
    ["missing image", ["--workflow", workflowPath("img2img.json"), "--images", "ghost.png"], /image ghost\.png: no such file/],
    ["missing --workflow", [], /--workflow FILE is required/],
    ["unknown flag", ["--workflow", workflowPath("img2img.json"), "--imagez", "a.png"], /unknown option --imagez; did you mean --images\?/],
    ["a file path is never a subcommand", ["--workflow", "emulate.json"], /cannot read workflow emulate\.json/],
    ["bad --timeout", ["--workflow", workflowPath("img2img.json"), "--timeout", "soon"], /--timeout must be a number of seconds/],
    ["plain http to a remote host", ["--workflow", workflowPath("sample-txt2img.json"), "--base-url", "http://example.com/v2"], /must use https/],
  ];
  for (const [name, args, message] of cases) {
    test(name, async () => {
      const run = await runCli(args, { env: connection() });
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(run.stderr.trim().split("\n")).toHaveLength(1);
      expect(run.stdout).toBe("");
      expect(emulator.requests).toHaveLength(0);
    });
  }

  test("two images with the same name", async () => {
    const cwd = tempDir();
    mkdirSync(join(cwd, "a"));
    mkdirSync(join(cwd, "b"));
    writeFileSync(join(cwd, "a", "reference.png"), tinyPng);
    writeFileSync(join(cwd, "b", "reference.png"), tinyPng);
    const run = await runCli(["--workflow", workflowPath("img2img.json"), "--images", "a/reference.png", "--images", "b/reference.png"], { env: connection(), cwd });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('"reference.png": a/reference.png and b/reference.png');
    expect(emulator.requests).toHaveLength(0);
  });
});

describe("credentials (exit 3)", () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ["no key", { RUNPOD_ENDPOINT_ID: "ep-test" }, /missing RUNPOD_API_KEY \(or --api-key\)$/m],
    ["no endpoint", { RUNPOD_API_KEY: KEY }, /missing RUNPOD_ENDPOINT_ID \(or --endpoint-id\)$/m],
    ["neither", {}, /missing RUNPOD_API_KEY \(or --api-key\) and RUNPOD_ENDPOINT_ID/],
  ];
  for (const [name, env, message] of cases) {
    test(name, async () => {
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json")], { env: { RUNPOD_ENDPOINT_BASE_URL: emulator.url, ...env } });
      expect(run.code).toBe(3);
      expect(run.stderr).toMatch(message);
      expect(emulator.requests).toHaveLength(0);
    });
  }

  test("a rejected key (401) exits 3 and never prints the key", async () => {
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--api-key", "rpa_WRONG_SECRET"], { env: connection() });
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/rejected the API key \(HTTP 401/);
    expect(run.stderr + run.stdout).not.toContain("rpa_WRONG_SECRET");
  });
});

describe("API, job and time failures", () => {
  test("unknown endpoint: exit 4 naming it", async () => {
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--endpoint-id", "nope"], { env: connection() });
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/endpoint "nope" not found/);
  });

  test("nothing listening: exit 4", async () => {
    const closed = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
    const url = `http://127.0.0.1:${closed.port}/v2`;
    await closed.stop(true);
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--base-url", url], { env: connection() });
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/submitting the job failed: .*ECONNREFUSED|Unable to connect/);
  });

  test("a job that FAILED on the worker: exit 1 with the worker's message, nothing saved", async () => {
    const cwd = tempDir();
    const run = await runCli(["--workflow", workflowPath("img2img.json"), ...fast], { env: connection(), cwd });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/job \S+ ended FAILED after \d\.\d s: Prompt outputs failed validation\n {2}• .*Invalid image file: reference\.png/);
    expect(run.stdout).toBe("");
    expect(existsSync(join(cwd, "output"))).toBe(false);
  });

  test("COMPLETED without output (a result over RunPod's size limit): exit 1", async () => {
    const limited = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-test", queueDelayMs: 10, executionMs: 30, resultLimitBytes: 100 });
    try {
      const cwd = tempDir();
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env: { ...connection(), RUNPOD_ENDPOINT_BASE_URL: limited.url }, cwd });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/completed without outputs/);
      expect(existsSync(join(cwd, "output"))).toBe(false);
    } finally {
      await limited.stop();
    }
  });

  test("results that cannot be saved: exit 6", async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, "taken"), "a file where the output folder should be");
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--output", "taken/renders", ...fast], { env: connection(), cwd });
    expect(run.code).toBe(6);
    expect(run.stderr).toMatch(/cannot create the output folder taken\/renders/);
    expect(run.stdout).toBe("");
  });

  test("--timeout: exit 5, the job is cancelled and its id printed", async () => {
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-test", queueDelayMs: 10, executionMs: 20_000 });
    try {
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--timeout", "1", ...fast], { env: { ...connection(), RUNPOD_ENDPOINT_BASE_URL: slow.url } });
      expect(run.code).toBe(5);
      const jobId = /Job (\S+) IN_QUEUE/.exec(run.stderr)?.[1];
      expect(run.stderr).toContain(`job ${jobId} cancelled`);
      expect(slow.requests.filter((r) => r.path.endsWith(`/cancel/${jobId}`))).toHaveLength(1);
    } finally {
      await slow.stop();
    }
  });

  test("Ctrl-C: the job is cancelled, exit 130", async () => {
    const slow = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-test", queueDelayMs: 10, executionMs: 20_000 });
    try {
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], {
        env: { ...connection(), RUNPOD_ENDPOINT_BASE_URL: slow.url },
        onSpawn: (child, stderr) => {
          whenTrue(() => /IN_PROGRESS/.test(stderr()), () => child.kill("SIGINT"));
        },
      });
      expect(run.code).toBe(130);
      expect(slow.requests.filter((r) => r.path.includes("/cancel/"))).toHaveLength(1);
      expect(run.stderr).toMatch(/interrupted; job \S+ cancelled/);
    } finally {
      await slow.stop();
    }
  });
});

describe("help, version, subcommands", () => {
  test("--help lists every option with defaults, the environment, exit codes and examples", async () => {
    const run = await runCli(["--help"]);
    expect(run.code).toBe(0);
    for (const flag of ["--workflow", "--images", "--images-dir", "--output", "--no-open", "--timeout", "--poll-interval", "--api-key", "--endpoint-id", "--base-url", "--verbose"]) {
      expect(run.stdout).toContain(flag);
    }
    for (const text of ["Default: ./output", "Default: 600", "Default: 2", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID", "RUNPOD_ENDPOINT_BASE_URL", "EXIT CODES", "130", "EXAMPLES", "emulate", "demo"]) {
      expect(run.stdout).toContain(text);
    }
  });

  test("--version prints the package version", async () => {
    const run = await runCli(["--version"]);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(JSON.parse(readFileSync(join(import.meta.dir, "..", "package.json"), "utf8")).version);
  });

  test("emulate prints the settings to use, and serves a whole run", async () => {
    let urls = "";
    let emulateRun: Promise<unknown> | undefined;
    const child = Bun.spawn([process.execPath, "run", join(import.meta.dir, "..", "cli.ts"), "emulate", "--port", "0", "--execution-time", "0.05", "--queue-delay", "0.01"], {
      stdout: "pipe",
      stderr: "ignore",
      env: { PATH: process.env.PATH, NO_COLOR: "1" } as Record<string, string>,
    });
    emulateRun = (async () => {
      for await (const chunk of child.stdout) urls += new TextDecoder().decode(chunk);
    })();
    try {
      await until(() => urls.includes("RUNPOD_API_KEY"));
      const env = Object.fromEntries([...urls.matchAll(/^export (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
      expect(env.RUNPOD_ENDPOINT_BASE_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v2$/);
      const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), ...fast], { env });
      expect(run.code).toBe(0);
    } finally {
      child.kill("SIGINT");
      expect(await child.exited).toBe(0);
      await emulateRun;
    }
  });

  test("demo leaves the sample image in ./output", async () => {
    const cwd = tempDir();
    const run = await runCli(["demo", "--no-open"], { cwd, env: { RUNPOD_API_KEY: "users-own-key-is-not-used" } });
    expect(run.code).toBe(0);
    const saved = run.stdout.trim();
    expect(saved).toMatch(/^output\/output_\d{8}_\d{6}_001\.png$/);
    expect([...readFileSync(join(cwd, saved)).subarray(0, 8)]).toEqual(PNG_SIGNATURE);
  });
});
