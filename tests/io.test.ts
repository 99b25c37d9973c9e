import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExitCode } from "../lib/errors.ts";
import {
  buildJobInput,
  checkBodySize,
  collectImages,
  describeFsError,
  describePlan,
  encodeImages,
  formatBytes,
  type ImageSource,
  parseWorkflow,
  type Plan,
  type PreflightOptions,
  prepareRequest,
  problemsMessage,
  readWorkflow,
  RUN_BODY_LIMIT,
} from "../lib/io.ts";
import type { Dialect, Workflow } from "../lib/workflow.ts";
import { thrown, rejected } from "./helpers.ts";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures");
const API_WORKFLOW = join(FIXTURES, "api-workflow-sd15.json");
const UI_WORKFLOW = join(FIXTURES, "ui-workflow-sd15.json");
const TINY_PNG = join(FIXTURES, "tiny.png");

const isRoot = process.getuid?.() === 0;

let tmp = "";
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "send-to-runpod-io-"));
});
afterEach(async () => {
  await chmod(tmp, 0o755).catch(() => {});
  await rm(tmp, { recursive: true, force: true });
});

/** Writes `files` (relative path → bytes or text) under `root`, creating folders. */
async function tree(root: string, files: Record<string, string | Uint8Array>) {
  for (const [name, content] of Object.entries(files)) {
    const path = join(root, name);
    await mkdir(join(path, ".."), { recursive: true });
    await writeFile(path, content);
  }
}

describe("parseWorkflow", () => {
  test("the API-format fixture parses to its seven nodes, bare", async () => {
    const text = await Bun.file(API_WORKFLOW).text();
    const { workflow, wrapper } = parseWorkflow(text, "sd15.json");
    expect(workflow).toEqual(JSON.parse(text));
    expect(wrapper).toBeUndefined();
    expect(Object.keys(workflow)).toEqual(["3", "4", "5", "6", "7", "8", "9"]);
    expect(workflow["9"]?.class_type).toBe("SaveImage");
  });

  test("the editor-format fixture is refused with the Export (API) hint", async () => {
    const text = await Bun.file(UI_WORKFLOW).text();
    const error = thrown(() => parseWorkflow(text, "ui.json"));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe("ui.json is in ComfyUI's editor format (nodes and links); in ComfyUI use Workflow → Export (API) and send that file");
  });

  const wrappers: [string, (graph: unknown) => unknown][] = [
    ["prompt", (graph) => ({ prompt: graph })],
    ["workflow", (graph) => ({ workflow: graph })],
    ["input.workflow", (graph) => ({ input: { workflow: graph } })],
  ];
  for (const [wrapper, wrap] of wrappers) {
    test(`the fixture inside "${wrapper}" → the same graph, and the wrapper named`, async () => {
      const graph = await Bun.file(API_WORKFLOW).json();
      expect(parseWorkflow(JSON.stringify(wrap(graph)), "f.json")).toEqual({ workflow: graph, wrapper });
    });
    test(`the editor fixture inside "${wrapper}" → still the Export (API) hint`, async () => {
      const graph = await Bun.file(UI_WORKFLOW).json();
      expect(thrown(() => parseWorkflow(JSON.stringify(wrap(graph)), "f.json")).message).toContain("Export (API)");
    });
  }

  test('a graph with a node whose id is "prompt" is not taken for a wrapper', () => {
    const graph = { prompt: { class_type: "CLIPTextEncode", inputs: { text: "x" } }, "9": { class_type: "SaveImage", inputs: {} } };
    expect(parseWorkflow(JSON.stringify(graph), "f.json")).toEqual({ workflow: graph, wrapper: undefined });
  });

  const NOT_RUNNABLE = "flow.json";
  const SAVER = '"9": {"class_type": "SaveImage", "inputs": {}}';
  const refused: [text: string, message: RegExp][] = [
    ["not json", /^flow\.json is not valid JSON \(/],
    ["", /^flow\.json is not valid JSON/],
    ['{"3": {"class_type": "A", "inputs": {}}', /^flow\.json is not valid JSON/],
    ["[]", /^flow\.json is not an API-format workflow: expected an object of nodes$/],
    ['[{"class_type": "A", "inputs": {}}]', /^flow\.json is not an API-format workflow/],
    ["null", /^flow\.json is not an API-format workflow/],
    ['"text"', /^flow\.json is not an API-format workflow/],
    ["42", /^flow\.json is not an API-format workflow/],
    ["{}", new RegExp(`^${NOT_RUNNABLE}: it has no nodes$`)],
    ['{"prompt": {}}', new RegExp(`^${NOT_RUNNABLE}: it has no nodes$`)],
    ['{"nodes": [], "links": []}', /Export \(API\)/],
    ['{"nodes": [], "version": 0.4}', /Export \(API\)/],
    [`{"3": 5, ${SAVER}}`, new RegExp(`^${NOT_RUNNABLE}: node 3 is not an object$`)],
    [`{"3": null, ${SAVER}}`, new RegExp(`^${NOT_RUNNABLE}: node 3 is not an object$`)],
    [`{"12": {"inputs": {}}, ${SAVER}}`, new RegExp(`^${NOT_RUNNABLE}: node 12 has no class_type`)],
    [`{"12": {"class_type": 7, "inputs": {}}, ${SAVER}}`, new RegExp(`^${NOT_RUNNABLE}: node 12 has no class_type`)],
    [`{"5": {"class_type": "KSampler"}, ${SAVER}}`, new RegExp(`^${NOT_RUNNABLE}: node 5 \\(KSampler\\) has no inputs object$`)],
    [`{"5": {"class_type": "KSampler", "inputs": "seed=1"}, ${SAVER}}`, /node 5 \(KSampler\) has no inputs object$/],
    [`{"5": {"class_type": "KSampler", "inputs": null}, ${SAVER}}`, /node 5 \(KSampler\) has no inputs object$/],
    [`{"5": {"class_type": "KSampler", "inputs": [1, 2]}, ${SAVER}}`, /node 5 \(KSampler\) has no inputs object$/],
    ['{"5": {"class_type": "KSampler", "inputs": {"model": ["4", 0]}}, "9": {"class_type": "SaveImage", "inputs": {}}}', /: node 5 \(KSampler\) input "model" links to node 4, which is not in the workflow$/],
    ['{"5": {"class_type": "KSampler", "inputs": {"seed": 1}}}', /: it has no output node \(SaveImage or another saver\): ComfyUI would refuse it with prompt_no_outputs$/],
  ];
  for (const [text, message] of refused) {
    test(`${JSON.stringify(text)} → usage error ${message}`, () => {
      const error = thrown(() => parseWorkflow(text, "flow.json"));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toMatch(message);
      expect(error.message).not.toContain("\n");
    });
  }

  test("several problems: every one of them, each on a line of its own", () => {
    const text = '{"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": 3}, "3": {"inputs": {}}, "4": {"class_type": "C", "inputs": {"x": ["9", 0]}, "_meta": {"title": "Cee"}}, "5": {"class_type": "SaveImage", "inputs": {}}}';
    const error = thrown(() => parseWorkflow(text, "flow.json"));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message.split("\n")).toEqual([
      expect.stringMatching(/^flow\.json .*3 problems:$/),
      "  • node 2 (B) has no inputs object",
      "  • node 3 has no class_type (a custom node was probably missing when the file was exported)",
      '  • node 4 (Cee) input "x" links to node 9, which is not in the workflow',
    ]);
  });

  test("the headline of several problems is a sentence", () => {
    const error = thrown(() => parseWorkflow('{"2": {"class_type": "B", "inputs": 3}, "3": {"inputs": {}}}', "flow.json"));
    expect(error.message.split("\n")[0]).not.toContain("can run has");
  });

  test("extra node fields (_meta) are kept", () => {
    const { workflow } = parseWorkflow('{"1": {"class_type": "SaveImage", "inputs": {"x": 1}, "_meta": {"title": "T"}}}', "f.json");
    expect(workflow).toEqual({ "1": { class_type: "SaveImage", inputs: { x: 1 }, _meta: { title: "T" } } });
  });
});

describe("problemsMessage", () => {
  test("one problem: on the subject's line", () => {
    expect(problemsMessage("f.json", [{ message: "it has no nodes" }])).toBe("f.json: it has no nodes");
  });
  test("several: counted, one bullet line each", () => {
    expect(problemsMessage("f.json (--strict)", [{ nodeId: "1", message: "a" }, { message: "b" }])).toBe("f.json (--strict) has 2 problems:\n  • a\n  • b");
  });
});

describe("readWorkflow", () => {
  test("reads and parses the fixture", async () => {
    const { workflow, wrapper } = await readWorkflow(API_WORKFLOW);
    expect(Object.keys(workflow)).toHaveLength(7);
    expect(wrapper).toBeUndefined();
  });

  test("a missing file → exit 2 naming the file", async () => {
    const missing = join(tmp, "nope.json");
    const error = await rejected(readWorkflow(missing));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`cannot read workflow ${missing}: no such file`);
  });

  test("a folder → exit 2", async () => {
    const error = await rejected(readWorkflow(tmp));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toContain(tmp);
  });
});

describe("collectImages", () => {
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);

  test("--images-dir: recursive, any letter case, non-images skipped, names relative with /, sorted", async () => {
    await tree(tmp, {
      "b.png": png,
      "A.PNG": png,
      "c.JpEg": png,
      "d.webp": png,
      "e.bmp": png,
      "f.gif": png,
      "g.jpg": png,
      "notes.txt": "x",
      "photo.png.bak": "x",
      "png": "x",
      "masks/mask1.png": png,
      "masks/deep/z.GIF": png,
      "masks/readme.md": "x",
    });
    await mkdir(join(tmp, "folder.png")); // a directory with an image's name is not an image
    const { images, warnings } = await collectImages([], [tmp]);
    expect(images.map((i) => i.name)).toEqual(["A.PNG", "b.png", "c.JpEg", "d.webp", "e.bmp", "f.gif", "g.jpg", "masks/deep/z.GIF", "masks/mask1.png"]);
    for (const image of images) expect(image.path).toBe(join(tmp, ...image.name.split("/")));
    expect(warnings).toEqual([]);
  });

  test("--images: named by basename, in the order given, before the folder's", async () => {
    await tree(tmp, { "one/ref.png": png, "two/mask.jpg": png, "dir/x.webp": png });
    const { images, warnings } = await collectImages([join(tmp, "two/mask.jpg"), join(tmp, "one/ref.png")], [join(tmp, "dir")]);
    expect(images).toEqual([
      { name: "mask.jpg", path: join(tmp, "two/mask.jpg") },
      { name: "ref.png", path: join(tmp, "one/ref.png") },
      { name: "x.webp", path: join(tmp, "dir/x.webp") },
    ]);
    expect(warnings).toEqual([]);
  });

  test("--images takes any file, whatever its extension", async () => {
    await tree(tmp, { "scan.tiff": png });
    const { images } = await collectImages([join(tmp, "scan.tiff")], []);
    expect(images.map((i) => i.name)).toEqual(["scan.tiff"]);
  });

  test("nothing given → nothing, no warning", async () => {
    expect(await collectImages([], [])).toEqual({ images: [], warnings: [] });
  });

  test("a missing file → exit 2 naming the path", async () => {
    const missing = join(tmp, "missing.png");
    const error = await rejected(collectImages([missing], []));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`image ${missing}: no such file`);
  });

  test("a folder given to --images → exit 2 with the --images-dir hint", async () => {
    const error = await rejected(collectImages([tmp], []));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`image ${tmp} is not a file (use --images-dir for a folder)`);
  });

  test("a missing --images-dir → exit 2 naming it", async () => {
    const missing = join(tmp, "nowhere");
    const error = await rejected(collectImages([], [missing]));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`--images-dir ${missing}: no such file`);
  });

  test("a file given to --images-dir → exit 2", async () => {
    await tree(tmp, { "a.png": png });
    const error = await rejected(collectImages([], [join(tmp, "a.png")]));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`--images-dir ${join(tmp, "a.png")} is not a directory`);
  });

  test("the same name from --images and --images-dir → exit 2 naming both paths", async () => {
    await tree(tmp, { "elsewhere/mask1.png": png, "dir/mask1.png": png });
    const error = await rejected(collectImages([join(tmp, "elsewhere/mask1.png")], [join(tmp, "dir")]));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`two images would both be sent as "mask1.png": ${join(tmp, "elsewhere/mask1.png")} and ${join(tmp, "dir/mask1.png")}`);
  });

  test("the same name from two --images → exit 2", async () => {
    await tree(tmp, { "a/ref.png": png, "b/ref.png": png });
    const error = await rejected(collectImages([join(tmp, "a/ref.png"), join(tmp, "b/ref.png")], []));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toContain('"ref.png"');
  });

  test("the same relative name under two --images-dir → exit 2", async () => {
    await tree(tmp, { "a/masks/m.png": png, "b/masks/m.png": png });
    const error = await rejected(collectImages([], [join(tmp, "a"), join(tmp, "b")]));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toContain('"masks/m.png"');
  });

  test("names differing only in letter case are different names", async () => {
    await tree(tmp, { "a/Ref.png": png, "b/ref.png": png });
    const { images } = await collectImages([join(tmp, "a/Ref.png"), join(tmp, "b/ref.png")], []);
    expect(images.map((i) => i.name)).toEqual(["Ref.png", "ref.png"]);
  });

  test("an empty folder (or one without images) → a warning, no images", async () => {
    await tree(tmp, { "docs/readme.txt": "x" });
    await mkdir(join(tmp, "empty"));
    const { images, warnings } = await collectImages([], [join(tmp, "empty"), join(tmp, "docs")]);
    expect(images).toEqual([]);
    // (the order of the warnings follows whichever folder is read first)
    expect([...warnings].sort()).toEqual([`no images found under ${join(tmp, "docs")}`, `no images found under ${join(tmp, "empty")}`]);
  });
});

describe("encodeImages", () => {
  test("with a cache, each file is read and encoded once (a batch sends it many times)", async () => {
    await tree(tmp, { "a.png": new Uint8Array([1, 2, 3]) });
    const cache = new Map<string, Promise<string>>();
    const first = await encodeImages([{ name: "a.png", path: join(tmp, "a.png") }], cache);
    await rm(join(tmp, "a.png"));
    const again = await encodeImages([{ name: "other-name.png", path: join(tmp, "a.png") }], cache);
    expect([first["a.png"], again["other-name.png"], cache.size]).toEqual(["AQID", "AQID", 1]);
    expect((await rejected(encodeImages([{ name: "a.png", path: join(tmp, "a.png") }]))).exitCode).toBe(ExitCode.usage);
  });

  test("base64 round trip, keyed by name", async () => {
    const bytes = new Uint8Array(await readFile(TINY_PNG));
    const odd = new Uint8Array(Array.from({ length: 257 }, (_, i) => (i * 37) % 256));
    await tree(tmp, { "masks/mask1.png": odd });
    const images: ImageSource[] = [
      { name: "tiny.png", path: TINY_PNG },
      { name: "masks/mask1.png", path: join(tmp, "masks/mask1.png") },
    ];
    const encoded = await encodeImages(images);
    expect(Object.keys(encoded)).toEqual(["tiny.png", "masks/mask1.png"]);
    expect(new Uint8Array(Buffer.from(encoded["tiny.png"]!, "base64"))).toEqual(bytes);
    expect(new Uint8Array(Buffer.from(encoded["masks/mask1.png"]!, "base64"))).toEqual(odd);
    expect(encoded["tiny.png"]).toBe(Buffer.from(bytes).toString("base64"));
  });

  test("an empty file encodes to an empty string", async () => {
    await tree(tmp, { "empty.png": "" });
    expect(await encodeImages([{ name: "empty.png", path: join(tmp, "empty.png") }])).toEqual({ "empty.png": "" });
  });

  test("no images → {}", async () => {
    expect(await encodeImages([])).toEqual({});
  });

  test("a file gone since it was collected → exit 2 naming it", async () => {
    const gone = join(tmp, "gone.png");
    const error = await rejected(encodeImages([{ name: "gone.png", path: gone }]));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`cannot read image ${gone}: no such file`);
  });

  test.skipIf(isRoot)("an unreadable file (chmod 000) → exit 2, permission denied", async () => {
    await tree(tmp, { "locked.png": new Uint8Array([1, 2, 3]) });
    const locked = join(tmp, "locked.png");
    await chmod(locked, 0o000);
    const error = await rejected(encodeImages([{ name: "locked.png", path: locked }]));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(`cannot read image ${locked}: permission denied`);
  });
});

describe("buildJobInput", () => {
  const workflow: Workflow = { "1": { class_type: "LoadImage", inputs: { image: "ref.png" } } };
  const images = { "ref.png": "AAAA", "masks/mask1.png": "BBBB" };

  test("seed: exactly {workflow, reference_images, return_base64: true}", () => {
    const input = buildJobInput("seed", workflow, images);
    expect(JSON.stringify({ input })).toBe(
      '{"input":{"workflow":{"1":{"class_type":"LoadImage","inputs":{"image":"ref.png"}}},"reference_images":{"ref.png":"AAAA","masks/mask1.png":"BBBB"},"return_base64":true}}',
    );
  });

  test("seed: no images → reference_images is {}", () => {
    expect(buildJobInput("seed", {}, {})).toStrictEqual({ workflow: {}, reference_images: {}, return_base64: true });
  });

  test("seed: a Comfy.org key is not part of the original handler's input", () => {
    expect(buildJobInput("seed", {}, {}, "comfy-key")).toStrictEqual({ workflow: {}, reference_images: {}, return_base64: true });
  });

  test("worker-comfyui: exactly {workflow, images: [{name, image}]}, in order", () => {
    const input = buildJobInput("worker-comfyui", workflow, images);
    expect(JSON.stringify({ input })).toBe(
      '{"input":{"workflow":{"1":{"class_type":"LoadImage","inputs":{"image":"ref.png"}}},"images":[{"name":"ref.png","image":"AAAA"},{"name":"masks/mask1.png","image":"BBBB"}]}}',
    );
  });

  test("worker-comfyui: no images → an empty list", () => {
    expect(buildJobInput("worker-comfyui", {}, {})).toStrictEqual({ workflow: {}, images: [] });
  });

  const keys: [string | undefined, boolean][] = [
    ["comfy-key", true],
    [undefined, false],
    ["", false],
  ];
  for (const [key, present] of keys) {
    test(`worker-comfyui with the Comfy.org key ${JSON.stringify(key)} → comfy_org_api_key ${present ? "sent" : "absent"}`, () => {
      expect(buildJobInput("worker-comfyui", {}, {}, key)).toStrictEqual({ workflow: {}, images: [], ...(present && { comfy_org_api_key: key }) });
    });
  }
});

describe("formatBytes", () => {
  const cases: [number, string][] = [
    [0, "0 B"],
    [1, "1 B"],
    [999, "999 B"],
    [1_000, "1.0 kB"],
    [1_049, "1.0 kB"],
    [1_050, "1.1 kB"],
    [812_345, "812.3 kB"],
    [999_949, "999.9 kB"],
    [999_950, "1.0 MB"],
    [2_300_000, "2.3 MB"],
    [2_345_678, "2.3 MB"],
    [10_000_000, "10.0 MB"],
    [1_500_000_000, "1.5 GB"],
    [4_200_000_000_000, "4.2 TB"],
  ];
  for (const [n, expected] of cases) test(`${n} → ${expected}`, () => expect(formatBytes(n)).toBe(expected));
});

describe("checkBodySize", () => {
  const images = [
    { name: "a.png", bytes: 1_000_000 },
    { name: "big.png", bytes: 4_000_000 },
    { name: "c.png", bytes: 2_000_000 },
    { name: "huge.png", bytes: 5_000_000 },
  ];

  test("the limit is RunPod's 10 MB (decimal) for /run", () => expect(RUN_BODY_LIMIT).toBe(10_000_000));

  for (const bytes of [0, 1_000, RUN_BODY_LIMIT - 1, RUN_BODY_LIMIT]) {
    test(`${bytes} bytes → accepted`, () => expect(checkBodySize(bytes, images)).toBeUndefined());
  }

  test("one byte over → exit 2 naming the three biggest images, biggest first, with sizes", () => {
    const error = thrown(() => checkBodySize(RUN_BODY_LIMIT + 1, images));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toStartWith("the request would be 10.0 MB, over RunPod's 10.0 MB limit for /run; biggest images: huge.png 5.0 MB, big.png 4.0 MB, c.png 2.0 MB (base64 adds a third); ");
    expect(error.message).not.toContain("a.png");
    expect(error.message).toContain("JPEG or WebP");
    expect(error.message).toContain("network volume");
  });

  test("over without images (a huge workflow) → no list of images", () => {
    const error = thrown(() => checkBodySize(12_500_000, []));
    expect(error.message).toStartWith("the request would be 12.5 MB, over RunPod's 10.0 MB limit for /run (base64 adds a third)");
    expect(error.message).not.toContain("biggest");
  });

  test("the images given are not reordered", () => {
    const given = [...images];
    thrown(() => checkBodySize(RUN_BODY_LIMIT + 1, given));
    expect(given).toEqual(images);
  });
});

describe("prepareRequest", () => {
  const INPAINT = join(import.meta.dir, "../workflows/inpaint.json");
  const TXT2IMG = join(import.meta.dir, "../workflows/sample-txt2img.json");
  const UPSCALE = join(import.meta.dir, "../workflows/upscale.json");
  const fixture = async () => (await Bun.file(API_WORKFLOW).json()) as Workflow;
  /** Bytes whose length is a multiple of 3 (base64 without padding), each file distinct. */
  const blob = (size: number, seed: number) => new Uint8Array(size).map((_, i) => (i * 31 + seed) % 256);
  const b64 = (data: Uint8Array) => Buffer.from(data).toString("base64");

  const preflight = (options: Partial<PreflightOptions>) =>
    prepareRequest({ workflow: API_WORKFLOW, images: [], imagesDirs: [], sets: [], inputDir: join(tmp, "input"), strict: false, dialect: "seed", extras: {}, ...options });
  interface Sent {
    input: { workflow: Workflow; reference_images?: Record<string, string>; images?: { name: string; image: string }[]; comfy_org_api_key?: string };
    [extra: string]: unknown;
  }
  const sent = (plan: Plan) => JSON.parse(plan.body) as Sent;
  /** A workflow file in the temp folder. */
  const workflowFile = async (graph: unknown, name = "flow.json") => {
    await tree(tmp, { [name]: JSON.stringify(graph) });
    return join(tmp, name);
  };

  test("the fixture as it is: the exact body, its size, nothing else to say", async () => {
    const plan = await preflight({});
    const workflow = await fixture();
    expect(plan.body).toBe(JSON.stringify({ input: { workflow, reference_images: {}, return_base64: true } }));
    expect(plan.bodyBytes).toBe(Buffer.byteLength(plan.body));
    expect(plan).toMatchObject({ file: API_WORKFLOW, workflow, dialect: "seed", images: [], notes: [], warnings: [] });
    expect(plan.wrapper).toBeUndefined();
    expect(plan.seed).toBeUndefined();
  });

  test("the body is {...extras, input}, byte for byte", async () => {
    const extras = { policy: { executionTimeout: 60_000, ttl: 120_000 }, webhook: "https://hooks.example/x" };
    const plan = await preflight({ extras });
    expect(plan.body).toBe(JSON.stringify({ ...extras, input: { workflow: await fixture(), reference_images: {}, return_base64: true } }));
    expect(plan.body).toStartWith('{"policy":{"executionTimeout":60000,"ttl":120000},"webhook":"https://hooks.example/x","input":{');
  });

  test("the body size counts bytes, not characters", async () => {
    const plan = await preflight({ sets: ["6.text=日本語の風景 ✓"] });
    expect(plan.bodyBytes).toBe(Buffer.byteLength(plan.body));
    expect(plan.bodyBytes).toBeGreaterThan(plan.body.length);
  });

  test("a wrapped file: the graph inside is what is sent, and the wrapper is said", async () => {
    const graph = await fixture();
    const plan = await preflight({ workflow: await workflowFile({ input: { workflow: graph } }) });
    expect(plan.wrapper).toBe("input.workflow");
    expect(sent(plan).input.workflow).toEqual(graph);
  });

  test("--set changes what is sent, not the file", async () => {
    const before = await Bun.file(API_WORKFLOW).text();
    const plan = await preflight({ sets: ["6.text=a red fox", "3.steps=30", "Load Checkpoint.ckpt_name=x.safetensors"] });
    const { workflow } = sent(plan).input;
    expect([workflow["6"]!.inputs.text, workflow["3"]!.inputs.steps, workflow["4"]!.inputs.ckpt_name]).toEqual(["a red fox", 30, "x.safetensors"]);
    expect(plan.workflow).toEqual(workflow);
    expect(await Bun.file(API_WORKFLOW).text()).toBe(before);
  });

  test("a --set that cannot apply → exit 2 before anything else", async () => {
    const error = await rejected(preflight({ sets: ["6.text=ok", "CLIP Text Encode (Prompt).text=x"] }));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toStartWith('--set: more than one node is titled "CLIP Text Encode (Prompt)"');
  });

  test("--seed N sets the sampler's seed in what is sent, and says where", async () => {
    const plan = await preflight({ seed: "5" });
    expect(sent(plan).input.workflow["3"]!.inputs.seed).toBe(5);
    expect(plan.seed).toEqual({ seed: 5, random: false, nodeIds: ["3"] });
    expect(plan.warnings).toEqual([]);
  });

  test("--seed random: the seed picked is the one sent", async () => {
    const plan = await preflight({ seed: "random" });
    expect(plan.seed!.random).toBe(true);
    expect(Number.isSafeInteger(plan.seed!.seed)).toBe(true);
    expect(sent(plan).input.workflow["3"]!.inputs.seed).toBe(plan.seed!.seed);
  });

  test("--seed comes after --set: it wins over a --set of the same seed", async () => {
    const plan = await preflight({ sets: ["3.seed=1"], seed: "7" });
    expect(sent(plan).input.workflow["3"]!.inputs.seed).toBe(7);
  });

  test("--seed that is not a number → exit 2", async () => {
    const error = await rejected(preflight({ seed: "lucky" }));
    expect([error.exitCode, error.message]).toEqual([ExitCode.usage, '--seed takes a whole number or "random" (got "lucky")']);
  });

  test("--seed on a workflow without seeds → a warning", async () => {
    await tree(tmp, { "input/photo.png": blob(3, 1) });
    const plan = await preflight({ workflow: UPSCALE, seed: "5" });
    expect(plan.seed).toEqual({ seed: 5, random: false, nodeIds: [] });
    expect(plan.warnings).toEqual(["--seed: this workflow has no seed or noise_seed input to set"]);
  });

  test("files the workflow names, found in --input-dir: attached, and each said", async () => {
    const [photo, mask] = [blob(300, 1), blob(3_000, 2)];
    await tree(tmp, { "input/photo.png": photo, "input/mask.png": mask, "input/unrelated.png": blob(3, 3) });
    const plan = await preflight({ workflow: INPAINT });
    const dir = join(tmp, "input");
    expect(plan.notes).toEqual([
      `attached ${join(dir, "photo.png")}, which node 4 (Load Photo) names`,
      `attached ${join(dir, "mask.png")}, which node 5 (Load Mask) names`,
    ]);
    expect(plan.warnings).toEqual([]);
    expect(plan.images).toEqual([
      { name: "photo.png", path: join(dir, "photo.png"), bytes: 300, attached: true },
      { name: "mask.png", path: join(dir, "mask.png"), bytes: 3_000, attached: true },
    ]);
    expect(sent(plan).input.reference_images).toEqual({ "photo.png": b64(photo), "mask.png": b64(mask) });
  });

  test("a file given with --images is not attached again from --input-dir", async () => {
    const [given, inInputDir, mask] = [blob(30, 4), blob(30, 5), blob(30, 6)];
    await tree(tmp, { "elsewhere/photo.png": given, "input/photo.png": inInputDir, "input/mask.png": mask });
    const plan = await preflight({ workflow: INPAINT, images: [join(tmp, "elsewhere/photo.png")] });
    expect(plan.notes).toEqual([`attached ${join(tmp, "input/mask.png")}, which node 5 (Load Mask) names`]);
    expect(plan.images).toEqual([
      { name: "photo.png", path: join(tmp, "elsewhere/photo.png"), bytes: 30 },
      { name: "mask.png", path: join(tmp, "input/mask.png"), bytes: 30, attached: true },
    ]);
    expect(sent(plan).input.reference_images).toEqual({ "photo.png": b64(given), "mask.png": b64(mask) });
  });

  test("files found nowhere → one warning each (they may be on the worker's volume), nothing attached", async () => {
    const dir = join(tmp, "input");
    const plan = await preflight({ workflow: INPAINT });
    expect(plan.warnings).toEqual([
      `node 4 (Load Photo) names "photo.png", which is neither given nor in ${dir} (it may already be on the worker's volume)`,
      `node 5 (Load Mask) names "mask.png", which is neither given nor in ${dir} (it may already be on the worker's volume)`,
    ]);
    expect([plan.notes, plan.images, sent(plan).input.reference_images]).toEqual([[], [], {}]);
  });

  test("a folder with the file's name is not a file", async () => {
    await mkdir(join(tmp, "input/photo.png"), { recursive: true });
    await tree(tmp, { "input/mask.png": blob(3, 1) });
    const plan = await preflight({ workflow: INPAINT });
    expect(plan.images.map((i) => i.name)).toEqual(["mask.png"]);
    expect(plan.warnings).toEqual([expect.stringMatching(/^node 4 \(Load Photo\) names "photo.png"/)]);
  });

  test("--strict: every missing file at once, exit 2", async () => {
    const dir = join(tmp, "input");
    const error = await rejected(preflight({ workflow: INPAINT, strict: true }));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(
      `${INPAINT} has 2 problems:\n` +
        `  • node 4 (Load Photo) names "photo.png", which is neither given nor in ${dir}\n` +
        `  • node 5 (Load Mask) names "mask.png", which is neither given nor in ${dir}`,
    );
  });

  test("--strict with one file missing → that one, on one line", async () => {
    await tree(tmp, { "input/photo.png": blob(3, 1) });
    const error = await rejected(preflight({ workflow: INPAINT, strict: true }));
    expect(error.message).toBe(`${INPAINT}: node 5 (Load Mask) names "mask.png", which is neither given nor in ${join(tmp, "input")}`);
  });

  test("--strict with every file there → no error", async () => {
    await tree(tmp, { "input/photo.png": blob(3, 1), "input/mask.png": blob(3, 2) });
    expect((await preflight({ workflow: INPAINT, strict: true })).images).toHaveLength(2);
  });

  test("a name with a sub-folder is looked up under --input-dir's sub-folder", async () => {
    const mask = blob(6, 7);
    await tree(tmp, { "input/masks/m.png": mask });
    const workflow = await workflowFile({ "1": { class_type: "LoadImageMask", inputs: { image: "masks/m.png [input]", channel: "red" } }, "2": { class_type: "SaveImage", inputs: {} } });
    const plan = await preflight({ workflow });
    expect(plan.images).toEqual([{ name: "masks/m.png", path: join(tmp, "input", "masks", "m.png"), bytes: 6, attached: true }]);
    expect(sent(plan).input.reference_images).toEqual({ "masks/m.png": b64(mask) });
  });

  test("worker-comfyui: images as a list of {name, image}, the Comfy.org key when given", async () => {
    const [photo, mask] = [blob(3, 1), blob(6, 2)];
    await tree(tmp, { "input/photo.png": photo, "input/mask.png": mask });
    const plan = await preflight({ workflow: INPAINT, dialect: "worker-comfyui", comfyOrgApiKey: "comfy-key", extras: { webhook: "https://h.example/" } });
    const workflow = (await Bun.file(INPAINT).json()) as Workflow;
    expect(plan.body).toBe(
      JSON.stringify({
        webhook: "https://h.example/",
        input: { workflow, images: [{ name: "photo.png", image: b64(photo) }, { name: "mask.png", image: b64(mask) }], comfy_org_api_key: "comfy-key" },
      }),
    );
    expect(plan.warnings).toEqual([]);
  });

  test("seed: the Comfy.org key is not sent", async () => {
    const plan = await preflight({ comfyOrgApiKey: "comfy-key" });
    expect(plan.body).not.toContain("comfy-key");
  });

  test("worker-comfyui warns about names with a sub-folder; seed does not", async () => {
    await tree(tmp, { "dir/masks/m.png": blob(3, 1), "dir/a.png": blob(3, 2), "dir/deep/er/b.png": blob(3, 3) });
    const options = { workflow: TXT2IMG, imagesDirs: [join(tmp, "dir")] };
    const comfy = await preflight({ ...options, dialect: "worker-comfyui" });
    expect(comfy.warnings).toEqual(["worker-comfyui makes no sub-folders, so deep/er/b.png, masks/m.png will likely fail to upload; name them plainly"]);
    expect(sent(comfy).input.images!.map((i) => i.name)).toEqual(["a.png", "deep/er/b.png", "masks/m.png"]);
    expect((await preflight({ ...options, dialect: "seed" })).warnings).toEqual([]);
  });

  const unreturned: [string, string, boolean][] = [
    ["PreviewImage", "seed", true],
    ["PreviewImage", "worker-comfyui", true],
    ["SaveAudio", "seed", false],
    ["SaveAudio", "worker-comfyui", true],
    ["SaveImage", "worker-comfyui", false],
  ];
  for (const [output, dialect, warned] of unreturned) {
    test(`an output ${output} on ${dialect} → ${warned ? "a warning that nothing comes back" : "no warning"}`, async () => {
      const workflow = await workflowFile({ "1": { class_type: "KSampler", inputs: { seed: 1 } }, "2": { class_type: output, inputs: { x: ["1", 0] } } });
      const plan = await preflight({ workflow, dialect: dialect as Dialect });
      expect(plan.warnings).toEqual(warned ? [expect.stringMatching(new RegExp(`^no output of this workflow comes back from a ${dialect} worker \\(node 2 \\(${output}\\)`))] : []);
    });
  }

  test("a workflow that cannot run → exit 2 with every problem, before any image is read", async () => {
    const workflow = await workflowFile({ "1": { class_type: "KSampler", inputs: { model: ["8", 0] } }, "2": { inputs: {} }, "3": { class_type: "SaveImage", inputs: {} } });
    const error = await rejected(preflight({ workflow, images: [join(tmp, "missing.png")] }));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toContain("2 problems");
  });

  test("a body over RunPod's limit → exit 2 naming the image", async () => {
    await tree(tmp, { "input/big.png": new Uint8Array(7_600_002) });
    const workflow = await workflowFile({ "1": { class_type: "LoadImage", inputs: { image: "big.png" } }, "2": { class_type: "SaveImage", inputs: {} } });
    const error = await rejected(preflight({ workflow }));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toStartWith("the request would be 10.1 MB, over RunPod's 10.0 MB limit for /run; biggest images: big.png 7.6 MB");
  });

  // Sizes are the files' own, not base64's estimate.
  test("each image's size is its size on disk (tiny.png, 266 bytes)", async () => {
    const plan = await preflight({ images: [TINY_PNG] });
    expect(plan.images).toEqual([{ name: "tiny.png", path: TINY_PNG, bytes: 266 }]);
  });

  // A workflow found online must not make us upload files from outside --input-dir.
  test("a name that climbs out of --input-dir is not attached", async () => {
    await tree(tmp, { "secret.png": "not for the worker", "input/keep": "" });
    const workflow = await workflowFile({ "1": { class_type: "LoadImage", inputs: { image: "../secret.png" } }, "2": { class_type: "SaveImage", inputs: {} } });
    const plan = await preflight({ workflow });
    expect(plan.images).toEqual([]);
    expect(plan.body).not.toContain(b64(new TextEncoder().encode("not for the worker")));
  });
});

describe("describePlan", () => {
  test("a plan from prepareRequest: workflow, nodes counted, outputs, images, body, dialect, seed", async () => {
    await tree(tmp, { "input/photo.png": new Uint8Array(300), "input/mask.png": new Uint8Array(3_000) });
    const file = join(import.meta.dir, "../workflows/inpaint.json");
    const plan = await prepareRequest({ workflow: file, images: [], imagesDirs: [], sets: [], seed: "5", inputDir: join(tmp, "input"), strict: false, dialect: "worker-comfyui", extras: {} });
    expect(describePlan(plan)).toEqual([
      `workflow ${file} (API format)`,
      "nodes    9: CheckpointLoaderSimple, CLIPTextEncode ×2, LoadImage, LoadImageMask, VAEEncodeForInpaint, KSampler, VAEDecode, SaveImage",
      "outputs  node 9 (Save Image)",
      "images   photo.png 300 B (attached from the input folder), mask.png 3.0 kB (attached from the input folder)",
      `body     ${formatBytes(plan.bodyBytes)} of RunPod's 10.0 MB for /run`,
      "dialect  worker-comfyui",
      "seed     5 in node 7 (KSampler)",
    ]);
    expect(plan.bodyBytes).toBeGreaterThan(4_400); // the two images' base64 and the graph
  });

  const base: Plan = {
    file: "flow.json",
    workflow: {
      "1": { class_type: "KSampler", inputs: {} },
      "2": { class_type: "PreviewImage", inputs: {}, _meta: { title: "Peek" } },
      "3": { class_type: "SaveImage", inputs: {} },
    },
    dialect: "seed",
    images: [],
    body: "{}",
    bodyBytes: 2_500_000,
    notes: [],
    warnings: [],
  };

  test("a wrapper, an output that does not come back, no images, no seed", () => {
    expect(describePlan({ ...base, wrapper: "prompt" })).toEqual([
      'workflow flow.json (API format, inside "prompt")',
      "nodes    3: KSampler, PreviewImage, SaveImage",
      "outputs  node 2 (Peek) (not returned), node 3 (SaveImage)",
      "images   none",
      "body     2.5 MB of RunPod's 10.0 MB for /run",
      "dialect  seed",
    ]);
  });

  test("a random seed, and a seed that found no node", () => {
    expect(describePlan({ ...base, seed: { seed: 42, random: true, nodeIds: ["1"] } }).at(-1)).toBe("seed     42 (random) in node 1 (KSampler)");
    expect(describePlan({ ...base, seed: { seed: 42, random: false, nodeIds: [] } }).at(-1)).toBe("seed     42 in no node");
  });

  test("images given and attached", () => {
    const images = [
      { name: "a.png", path: "/x/a.png", bytes: 1_234 },
      { name: "b.png", path: "/in/b.png", bytes: 5, attached: true },
    ];
    expect(describePlan({ ...base, images })[3]).toBe("images   a.png 1.2 kB, b.png 5 B (attached from the input folder)");
  });
});

describe("describeFsError", () => {
  const cases: [unknown, string][] = [
    [Object.assign(new Error("x"), { code: "ENOENT" }), "no such file"],
    [Object.assign(new Error("x"), { code: "EACCES" }), "permission denied"],
    [Object.assign(new Error("x"), { code: "EPERM" }), "permission denied"],
    [Object.assign(new Error("x"), { code: "ENOTDIR" }), "a part of the path is not a directory"],
    [Object.assign(new Error("x"), { code: "ENOSPC" }), "no space left on the device"],
    [Object.assign(new Error("raw message"), { code: "EWEIRD" }), "raw message"],
    [new Error("no code"), "no code"],
    ["a string", "a string"],
  ];
  for (const [error, expected] of cases) {
    test(`${(error as { code?: string }).code ?? String(error)} → ${expected}`, () => {
      expect(describeFsError(error)).toBe(expected);
    });
  }
});
