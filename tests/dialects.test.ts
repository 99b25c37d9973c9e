// End to end, issue 4: preflight, --set and --seed, both worker dialects (with S3 outputs), and
// RunPod's local test server, each against the emulator speaking that dialect.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type EmulatorOptions, startEmulator } from "../lib/emulator.ts";
import { expectSecretNowhere, FIXTURES, removeTempDirs, runCli, tempDir, workflowPath, whenTrue } from "./helpers.ts";

const KEY = "rpa_DIALECTS_TEST_KEY_9876";
const COMFY_KEY = "comfyui-SECRET-org-key";
const tinyPng = readFileSync(join(FIXTURES, "tiny.png"));
const fast = ["--poll-interval", "0.1", "--no-open"];
afterAll(removeTempDirs);

/** A run of the CLI against a fresh emulator; the emulator's requests are returned with the run. */
async function against(options: Partial<EmulatorOptions>, args: string[], setup?: (cwd: string) => void, env: Record<string, string> = {}) {
  const emulator = startEmulator({ port: 0, apiKey: KEY, endpointId: "ep-d", queueDelayMs: 10, executionMs: 40, ...options });
  const cwd = tempDir();
  setup?.(cwd);
  try {
    const connection = options.localMode ? {} : { RUNPOD_API_KEY: KEY, RUNPOD_ENDPOINT_ID: "ep-d", RUNPOD_ENDPOINT_BASE_URL: emulator.url };
    const run = await runCli([...args, ...(options.localMode ? ["--local", emulator.url] : [])], { cwd, env: { ...connection, ...env } });
    expectSecretNowhere(KEY, [run.stdout, run.stderr], cwd);
    const runBody = emulator.requests.find((r) => r.path.endsWith("/run"))?.body as { input: Record<string, unknown> } | undefined;
    return { ...run, cwd, requests: emulator.requests, runBody };
  } finally {
    await emulator.stop();
  }
}

const png = (cwd: string, path: string) => [...readFileSync(join(cwd, path)).subarray(0, 4)];
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47];
const withImage = (name: string) => (cwd: string) => writeFileSync(join(cwd, name), tinyPng);

describe("worker-comfyui", () => {
  const comfy = { dialect: "worker-comfyui" } as const;

  test("img2img: images go as [{name, image}], results come back as objects and are saved", async () => {
    const run = await against(comfy, ["--workflow", workflowPath("img2img.json"), "--images", "reference.png", "--dialect", "worker-comfyui", ...fast], withImage("reference.png"));
    expect(run.code).toBe(0);
    expect(run.runBody!.input.images).toEqual([{ name: "reference.png", image: tinyPng.toString("base64") }]);
    expect(run.runBody!.input.reference_images).toBeUndefined();
    expect(png(run.cwd, run.stdout.trim())).toEqual(PNG_MAGIC);
  });

  test("RUNPOD_DIALECT chooses it too, and COMFY_ORG_API_KEY goes along without ever being printed", async () => {
    const run = await against(comfy, ["--workflow", workflowPath("sample-txt2img.json"), "--print-payload", "body.json", "--verbose", ...fast], undefined, { RUNPOD_DIALECT: "worker-comfyui", COMFY_ORG_API_KEY: COMFY_KEY });
    expect(run.code).toBe(0);
    expect(run.runBody!.input.comfy_org_api_key).toBe(COMFY_KEY);
    expectSecretNowhere(COMFY_KEY, [run.stdout, run.stderr], run.cwd);
    expect(JSON.parse(readFileSync(join(run.cwd, "body.json"), "utf8")).input.comfy_org_api_key).toBe("***");
  });

  test("S3 outputs are downloaded and saved", async () => {
    const run = await against({ ...comfy, s3: true }, ["--workflow", workflowPath("sample-txt2img.json"), "--dialect", "worker-comfyui", "--json", ...fast]);
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.outputs).toHaveLength(1);
    expect(png(run.cwd, doc.outputs[0].path)).toEqual(PNG_MAGIC);
    expect(run.requests.filter((r) => r.path.startsWith("/s3/"))).toHaveLength(1);
    expect(run.stderr).toMatch(/Downloading 127\.0\.0\.1:\d+\/…/);
  });

  test("a model the worker lacks: exit 1, one line for the node, and where models belong", async () => {
    const run = await against(comfy, ["--workflow", workflowPath("sample-txt2img.json"), "--dialect", "worker-comfyui", "--set", "Load Checkpoint.ckpt_name=sdxl-typo.safetensors", ...fast]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/ended FAILED.*: Workflow validation failed\n {2}• node 1 \(CheckpointLoaderSimple\): ckpt_name: 'sdxl-typo\.safetensors' not in .*\/runpod-volume\/models\/<type>\//);
  });

  test("an image in a sub-folder: warned before, and the worker's upload failure explained", async () => {
    const run = await against(comfy, ["--workflow", workflowPath("img2img.json"), "--dialect", "worker-comfyui", "--set", "4.image=masks/reference.png", "--images-dir", "in", ...fast], (cwd) => {
      mkdirSync(join(cwd, "in", "masks"), { recursive: true });
      writeFileSync(join(cwd, "in", "masks", "reference.png"), tinyPng);
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/⚠ worker-comfyui makes no sub-folders, so masks\/reference\.png will likely fail to upload/);
    expect(run.stderr).toMatch(/Failed to upload one or more input images \(worker-comfyui makes no sub-folders/);
  });

  test("the seed dialect's request to this worker: its images are ignored, and the failure names the node", async () => {
    const run = await against(comfy, ["--workflow", workflowPath("img2img.json"), "--images", "reference.png", ...fast], withImage("reference.png"));
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/• node 4 \(LoadImage\): image - Invalid image file: reference\.png \(send that file/);
  });

  test("a workflow whose only output is a preview: warned that nothing comes back", async () => {
    const run = await against(comfy, ["--workflow", "preview.json", "--dialect", "worker-comfyui", "--dry-run"], (cwd) => {
      const graph = JSON.parse(readFileSync(workflowPath("sample-txt2img.json"), "utf8"));
      graph["7"].class_type = "PreviewImage";
      writeFileSync(join(cwd, "preview.json"), JSON.stringify(graph));
    });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/⚠ no output of this workflow comes back from a worker-comfyui worker \(node 7 \(Save Image\): temporary preview\)/);
    expect(run.requests).toHaveLength(0);
  });
});

describe("RunPod's local test server", () => {
  for (const dialect of ["seed", "worker-comfyui"] as const) {
    test(`${dialect}: no credentials, status by POST, results saved`, async () => {
      const run = await against({ localMode: true, dialect }, ["--workflow", workflowPath("img2img.json"), "--images", "reference.png", "--dialect", dialect, ...fast], withImage("reference.png"));
      expect(run.code).toBe(0);
      expect(png(run.cwd, run.stdout.trim())).toEqual(PNG_MAGIC);
      expect(run.requests.map((r) => `${r.method} ${r.path.replace(/test-[\w-]+/, "ID")}`)).toEqual(["POST /run", "POST /status/ID"]);
      expect(run.stderr).toMatch(/to the local test server at http:\/\/127\.0\.0\.1:\d+/);
    });
  }
});

test("local test server: Ctrl-C cannot cancel there, which is a warning, and exit 130", async () => {
  const emulator = startEmulator({ port: 0, localMode: true, executionMs: 5_000 });
  try {
    const run = await runCli(["--workflow", workflowPath("sample-txt2img.json"), "--local", emulator.url, ...fast], {
      onSpawn: (child, stderr) => whenTrue(() => /Job test-\S+ IN_PROGRESS/.test(stderr()), () => Bun.sleep(400).then(() => child.kill("SIGINT"))),
    });
    expect(run.code).toBe(130);
    expect(run.stderr).toMatch(/⚠ the local test server cannot cancel job test-\S+; it may still run there/);
    expect(emulator.requests.filter((r) => r.path.startsWith("/cancel/"))).toHaveLength(1);
  } finally {
    await emulator.stop();
  }
});

describe("preflight", () => {
  test("--dry-run on every workflow here and in the shared fixtures: a summary, nothing sent, no credentials", async () => {
    const files = [
      ...readdirSync(join(import.meta.dir, "..", "workflows")).map((name) => workflowPath(name)),
      ...readdirSync(FIXTURES).filter((name) => name.endsWith(".json")).map((name) => join(FIXTURES, name)),
    ];
    for (const file of files) {
      const run = await runCli(["--workflow", file, "--dry-run"]);
      const graph = JSON.parse(readFileSync(file, "utf8"));
      if (Array.isArray(graph.nodes)) {
        expect([file, run.code]).toEqual([file, 2]);
        expect(run.stderr).toMatch(/editor format.*Export \(API\)/);
        continue;
      }
      expect([file, run.code]).toEqual([file, 0]);
      const nodes = Object.keys(graph).length;
      expect(run.stdout).toMatch(new RegExp(`^workflow +${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\(API format\\)$`, "m"));
      expect(run.stdout).toMatch(new RegExp(`^nodes +${nodes}: `, "m"));
      expect(run.stdout).toMatch(/^outputs +node \d+ \(Save Image\)$/m);
      expect(run.stdout).toMatch(/^body +(\d+ B|[\d.]+ kB) of RunPod's 10\.0 MB for \/run$/m);
      expect(run.stdout).toMatch(/^dialect +seed$/m);
    }
  });

  test("--set and --seed change what is sent; the random seed is reported", async () => {
    const run = await against({}, ["--workflow", workflowPath("sample-txt2img.json"), "--set", "2.text=a red fox", "--set", "Empty Latent Image.width=768", "--seed", "random", "--json", ...fast]);
    expect(run.code).toBe(0);
    const sent = run.runBody!.input.workflow as Record<string, { inputs: Record<string, unknown> }>;
    expect(sent["2"]!.inputs.text).toBe("a red fox");
    expect(sent["4"]!.inputs.width).toBe(768);
    const doc = JSON.parse(run.stdout);
    expect(sent["5"]!.inputs.seed).toBe(doc.seed);
    expect(run.stderr).toContain(`Seed ${doc.seed} (random)`);
  });

  test("a file the workflow names is attached from --input-dir, and said so", async () => {
    const run = await against({}, ["--workflow", workflowPath("inpaint.json"), ...fast], (cwd) => {
      mkdirSync(join(cwd, "input"));
      writeFileSync(join(cwd, "input", "photo.png"), tinyPng);
      writeFileSync(join(cwd, "input", "mask.png"), tinyPng);
    });
    expect(run.code).toBe(0);
    expect(Object.keys(run.runBody!.input.reference_images as object).sort()).toEqual(["mask.png", "photo.png"]);
    expect(run.stderr).toMatch(/attached input\/photo\.png, which node 4 \(Load Photo\) names/);
  });

  test("--strict: every missing file at once, exit 2, nothing sent", async () => {
    const run = await against({}, ["--workflow", workflowPath("inpaint.json"), "--strict"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/has 2 problems:\n {2}• node 4 \(Load Photo\) names "photo\.png".*\n {2}• node 5 \(Load Mask\) names "mask\.png"/);
    expect(run.requests).toHaveLength(0);
  });

  test("a body over RunPod's 10 MB: exit 2 naming the biggest image, nothing sent", async () => {
    const run = await against({}, ["--workflow", workflowPath("img2img.json"), "--images", "reference.png"], (cwd) => {
      writeFileSync(join(cwd, "reference.png"), Buffer.concat([tinyPng, Buffer.alloc(8_000_000, 7)]));
    });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/the request would be 10\.\d MB, over RunPod's 10\.0 MB limit for \/run; biggest images: reference\.png 8\.0 MB/);
    expect(run.requests).toHaveLength(0);
  });

  test("--print-payload - prints the exact body that /run then receives", async () => {
    const run = await against({}, ["--workflow", workflowPath("sample-txt2img.json"), "--set", "3.text=calm", "--print-payload", "-", ...fast]);
    expect(run.code).toBe(0);
    const [payload, saved] = run.stdout.trim().split("\n");
    expect(JSON.parse(payload!)).toEqual(run.runBody!);
    expect(saved).toMatch(/^output\/output_/);
  });

  test("a wrapped workflow ({\"input\": {\"workflow\"}}) is unwrapped", async () => {
    const run = await against({}, ["--workflow", "wrapped.json", "--dry-run"], (cwd) => {
      writeFileSync(join(cwd, "wrapped.json"), JSON.stringify({ input: { workflow: JSON.parse(readFileSync(workflowPath("sample-txt2img.json"), "utf8")) } }));
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('(API format, inside "input.workflow")');
  });
});
