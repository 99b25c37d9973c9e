// End to end, issue 5: batches (--batch, --each-image, --repeat) against the emulator: what each
// run sends, where its files go, the manifest, failures in the middle, 429s, Ctrl-C and --resume.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Emulator, type EmulatorOptions, startEmulator } from "../lib/emulator.ts";
import { parseFaults } from "../lib/emulator-faults.ts";
import { expectSecretNowhere, FIXTURES, removeTempDirs, type RunOptions, runCli, tempDir, workflowPath, whenTrue } from "./helpers.ts";

const KEY = "rpa_BATCH_TEST_KEY_5555";
const tinyPng = readFileSync(join(FIXTURES, "tiny.png"));
const fast = ["--poll-interval", "0.1", "--no-open"];
afterAll(removeTempDirs);

type OnSpawn = (child: Parameters<NonNullable<RunOptions["onSpawn"]>>[0], emulator: Emulator) => void;

async function batch(args: string[], options: Partial<EmulatorOptions> = {}, setup?: (cwd: string) => void, onSpawn?: OnSpawn, cwd = tempDir()) {
  const emulator = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-b", queueDelayMs: 0, executionMs: 40, workers: 4, retryAfterSeconds: 0.05, ...options });
  setup?.(cwd);
  try {
    const workflow = args.includes("--workflow") ? [] : ["--workflow", workflowPath("sample-txt2img.json")];
    const run = await runCli([...workflow, ...fast, ...args], {
      cwd,
      env: { RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-b", RUNPOD_ENDPOINT_BASE_URL: emulator.url },
      onSpawn: onSpawn && ((child) => onSpawn(child, emulator)),
    });
    expectSecretNowhere(KEY, [run.stdout, run.stderr], cwd);
    const bodies = emulator.requests.filter((r) => r.path.endsWith("/run") && r.status === 200).map((r) => (r.body as { input: { workflow: Record<string, { inputs: Record<string, unknown> }>; reference_images: Record<string, string> } }).input);
    return { ...run, cwd, emulator, bodies, sent: (route: string) => emulator.requests.filter((r) => r.path.split("/")[3] === route).length };
  } finally {
    await emulator.stop();
  }
}

const manifestLines = (path: string) => readFileSync(path, "utf8").trim().split("\n").map((line) => JSON.parse(line));

describe("--batch", () => {
  test("JSON Lines: each line's overrides are sent, each run's files in its own folder, one manifest line per run", async () => {
    const run = await batch(["--batch", "runs.jsonl", "--manifest", "runs.manifest", "--output", "out"], {}, (cwd) => {
      writeFileSync(join(cwd, "runs.jsonl"), ['{"2.text": "a fox", "5.seed": 7}', "", '{"Positive Prompt.text": "a cat", "5.steps": 12}'].join("\n"));
    });
    expect(run.code).toBe(0);
    const texts = run.bodies.map((input) => [input.workflow["2"]!.inputs.text, input.workflow["5"]!.inputs.seed, input.workflow["5"]!.inputs.steps]);
    expect(texts.sort()).toEqual([["a cat", 42, 12], ["a fox", 7, 25]]);
    expect(readdirSync(join(run.cwd, "out")).sort()).toEqual(["001", "002"]);
    for (const folder of ["001", "002"]) expect(readdirSync(join(run.cwd, "out", folder))).toHaveLength(1);
    const lines = manifestLines(join(run.cwd, "runs.manifest"));
    expect(lines.map((line) => [line.run.index, line.run.label, line.status, line.exitCode]).sort()).toEqual([[1, "line 1", "COMPLETED", 0], [2, "line 3", "COMPLETED", 0]]);
    expect(run.stdout.trim().split("\n").sort()).toEqual(lines.flatMap((line) => line.files.map((file: { path: string }) => file.path)).sort());
  });

  test("CSV with an images column, and --flat names", async () => {
    const run = await batch(["--batch", "runs.csv", "--flat", "--output", "out", "--workflow", workflowPath("img2img.json")], {}, (cwd) => {
      writeFileSync(join(cwd, "a.png"), tinyPng);
      writeFileSync(join(cwd, "b.png"), tinyPng);
      writeFileSync(join(cwd, "runs.csv"), '4.image,2.text,images\na.png,"a fox, at night",a.png\nb.png,plain,b.png\n');
    });
    expect(run.code).toBe(0);
    expect(run.bodies.map((input) => [input.workflow["4"]!.inputs.image, input.workflow["2"]!.inputs.text, Object.keys(input.reference_images)]).sort()).toEqual([
      ["a.png", "a fox, at night", ["a.png"]],
      ["b.png", "plain", ["b.png"]],
    ]);
    expect(readdirSync(join(run.cwd, "out")).map((name) => name.slice(0, 11)).sort()).toEqual(["001_output_", "002_output_"]);
  });

  test("a failure in the middle: the other runs go on, exit 1, the summary names the failed lines", async () => {
    const run = await batch(["--batch", "runs.jsonl", "--output", "out", "--workflow", workflowPath("img2img.json")], {}, (cwd) => {
      writeFileSync(join(cwd, "a.png"), tinyPng);
      // line 2 cannot be sent; line 3 names an image it does not send, so the worker fails it
      const lines = ['{"4.image": "a.png", "images": "a.png"}', '{"6.steps": "many", "images": "a.png"}', '{"4.image": "missing.png"}', '{"4.image": "a.png", "images": ["a.png"]}'];
      writeFileSync(join(cwd, "runs.jsonl"), lines.join("\n"));
    });
    expect(run.code).toBe(1);
    expect(run.bodies).toHaveLength(3);
    expect(run.stderr).toMatch(/2 of 4 runs failed; 2 of 4 runs succeeded/);
    expect(run.stderr).toMatch(/• run 2 \(line 2\): --set node 6 \(KSampler\)\.steps: "many" is not a number/);
    expect(run.stderr).toMatch(/• run 3 \(line 3\): job \S+ ended FAILED/);
    expect(readdirSync(join(run.cwd, "out")).sort()).toEqual(["001", "004"]);
  });
});

describe("--each-image and --repeat", () => {
  test("--each-image: one run per image, the workflow's image input pointed at it, only its image sent", async () => {
    const run = await batch(["--each-image", "--images-dir", "photos", "--workflow", workflowPath("img2img.json"), "--json"], {}, (cwd) => {
      mkdirSync(join(cwd, "photos"));
      for (const name of ["x.png", "y.png", "z.png"]) writeFileSync(join(cwd, "photos", name), tinyPng);
    });
    expect(run.code).toBe(0);
    expect(run.bodies.map((input) => [input.workflow["4"]!.inputs.image, Object.keys(input.reference_images)]).sort()).toEqual([
      ["x.png", ["x.png"]],
      ["y.png", ["y.png"]],
      ["z.png", ["z.png"]],
    ]);
    const doc = JSON.parse(run.stdout);
    expect(doc.runs.map((r: { run: { label: string }; ok: boolean }) => [r.run.label, r.ok]).sort()).toEqual([["image x.png", true], ["image y.png", true], ["image z.png", true]]);
  });

  test("--repeat with --seed random: a new seed each run; 429s on /run are absorbed", async () => {
    const run = await batch(["--repeat", "6", "--seed", "random", "--concurrency", "3"], { faults: parseFaults("rate-limit@run=3") });
    expect(run.code).toBe(0);
    expect(run.emulator.faultsInjected["rate-limit"]).toBe(3);
    expect(run.bodies).toHaveLength(6);
    expect(new Set(run.bodies.map((input) => input.workflow["5"]!.inputs.seed)).size).toBe(6);
    expect(run.stderr).toMatch(/6 of 6 runs succeeded/);
  });

  test("--concurrency bounds the jobs in flight, and uses all of it", async () => {
    let most = 0;
    const run = await batch(["--repeat", "6", "--concurrency", "2"], { executionMs: 150, workers: 8 }, undefined, (child, emulator) => {
      // The endpoint's own count of jobs queued or running, sampled while the batch runs.
      const sample = setInterval(async () => {
        const health = (await fetch(`${emulator.url}/${emulator.endpointId}/health`, { headers: { authorization: `Bearer ${KEY}` } }).then((r) => r.json())) as { jobs: { inQueue: number; inProgress: number } };
        most = Math.max(most, health.jobs.inQueue + health.jobs.inProgress);
      }, 20);
      void child.exited.then(() => clearInterval(sample));
    });
    expect(run.code).toBe(0);
    expect(run.bodies).toHaveLength(6);
    expect(most).toBe(2);
  });
});

describe("interrupting and resuming", () => {
  test("Ctrl-C cancels every job in flight and starts no more: exit 130", async () => {
    const run = await batch(["--repeat", "6", "--concurrency", "2", "--manifest", "m.jsonl"], { executionMs: 20_000, workers: 4 }, undefined, (child, emulator) => {
      whenTrue(() => emulator.requests.filter((r) => r.path.endsWith("/run") && r.status === 200).length >= 2, () => child.kill("SIGINT"));
    });
    expect(run.code).toBe(130);
    expect(run.sent("run")).toBe(2);
    expect(run.sent("cancel")).toBe(2);
    expect(run.stderr).toMatch(/interrupted: 0 of 6 runs succeeded.*resume with --resume m\.jsonl/);
  });

  test("--resume skips the runs that succeeded", async () => {
    const cwd = tempDir();
    const img2img = ["--workflow", workflowPath("img2img.json"), "--images", "reference.png"];
    writeFileSync(join(cwd, "reference.png"), tinyPng);
    writeFileSync(join(cwd, "runs.jsonl"), ['{"2.text": "one"}', '{"4.image": "missing.png"}', '{"2.text": "three"}'].join("\n"));
    const first = await batch(["--batch", "runs.jsonl", "--manifest", "m.jsonl", ...img2img], {}, undefined, undefined, cwd);
    expect(first.code).toBe(1);
    expect(first.bodies).toHaveLength(3);
    writeFileSync(join(cwd, "runs.jsonl"), ['{"2.text": "one"}', '{"2.text": "two, fixed"}', '{"2.text": "three"}'].join("\n"));
    const second = await batch(["--batch", "runs.jsonl", "--resume", "m.jsonl", ...img2img], {}, undefined, undefined, cwd);
    expect(second.code).toBe(0);
    expect(second.bodies.map((input) => input.workflow["2"]!.inputs.text)).toEqual(["two, fixed"]);
    expect(second.stderr).toMatch(/Resuming: 2 of 3 runs already succeeded/);
    expect(manifestLines(join(cwd, "m.jsonl")).filter((line) => line.exitCode === 0).map((line) => line.run.index).sort()).toEqual([1, 2, 3]);
    expect(existsSync(join(cwd, "output", "002"))).toBe(true);
  });
});
