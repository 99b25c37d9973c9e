import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExitCode } from "../lib/errors.ts";
import { buildJobInput, collectImages, describeFsError, encodeImages, type ImageSource, parseWorkflow, readWorkflow, type Workflow } from "../lib/io.ts";
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
  test("the API-format fixture parses to its seven nodes", async () => {
    const text = await Bun.file(API_WORKFLOW).text();
    const workflow = parseWorkflow(text, "sd15.json");
    expect(workflow).toEqual(JSON.parse(text));
    expect(Object.keys(workflow)).toEqual(["3", "4", "5", "6", "7", "8", "9"]);
    expect(workflow["9"]?.class_type).toBe("SaveImage");
  });

  test("the editor-format fixture is refused with the Export (API) hint", async () => {
    const text = await Bun.file(UI_WORKFLOW).text();
    const error = thrown(() => parseWorkflow(text, "ui.json"));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toStartWith("ui.json ");
    expect(error.message).toContain("Export (API)");
    expect(error.message).not.toContain("\n");
  });

  const refused: [text: string, message: RegExp][] = [
    ["not json", /^flow\.json is not valid JSON \(/],
    ["", /^flow\.json is not valid JSON/],
    ['{"3": {"class_type": "A", "inputs": {}}', /^flow\.json is not valid JSON/],
    ["[]", /^flow\.json is not an API-format workflow: expected an object of nodes$/],
    ['[{"class_type": "A", "inputs": {}}]', /^flow\.json is not an API-format workflow/],
    ["null", /^flow\.json is not an API-format workflow/],
    ['"text"', /^flow\.json is not an API-format workflow/],
    ["42", /^flow\.json is not an API-format workflow/],
    ["{}", /^flow\.json is not an API-format workflow: it has no nodes$/],
    ['{"nodes": [], "links": []}', /Export \(API\)/],
    ['{"nodes": [], "version": 0.4}', /Export \(API\)/],
    ['{"3": 5}', /^flow\.json is not an API-format workflow/],
    ['{"3": null}', /^flow\.json is not an API-format workflow/],
    ['{"12": {"inputs": {}}}', /^flow\.json is not an API-format workflow: node "12" has no class_type/],
    ['{"12": {"class_type": 7, "inputs": {}}}', /^flow\.json is not an API-format workflow: node "12" has no class_type/],
    ['{"5": {"class_type": "KSampler"}}', /^flow\.json is not an API-format workflow: node "5" has no inputs object$/],
    ['{"5": {"class_type": "KSampler", "inputs": "seed=1"}}', /node "5" has no inputs object$/],
    ['{"5": {"class_type": "KSampler", "inputs": null}}', /node "5" has no inputs object$/],
    ['{"5": {"class_type": "KSampler", "inputs": [1, 2]}}', /node "5" has no inputs object$/],
    [
      '{"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": 3}, "3": {"inputs": {}}}',
      /node "2" has no inputs object; node "3" has no class_type/,
    ],
  ];
  for (const [text, message] of refused) {
    test(`${JSON.stringify(text)} → usage error ${message}`, () => {
      const error = thrown(() => parseWorkflow(text, "flow.json"));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toMatch(message);
      expect(error.message).not.toContain("\n");
    });
  }

  test("extra node fields (_meta) are kept", () => {
    const workflow = parseWorkflow('{"1": {"class_type": "A", "inputs": {"x": 1}, "_meta": {"title": "T"}}}', "f.json");
    expect(workflow).toEqual({ "1": { class_type: "A", inputs: { x: 1 }, _meta: { title: "T" } } });
  });
});

describe("readWorkflow", () => {
  test("reads and parses the fixture", async () => {
    expect(Object.keys(await readWorkflow(API_WORKFLOW))).toHaveLength(7);
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
  test("exactly {workflow, reference_images, return_base64: true}", () => {
    const workflow: Workflow = { "1": { class_type: "LoadImage", inputs: { image: "ref.png" } } };
    const input = buildJobInput(workflow, { "ref.png": "AAAA", "masks/mask1.png": "BBBB" });
    expect(JSON.stringify({ input })).toBe(
      '{"input":{"workflow":{"1":{"class_type":"LoadImage","inputs":{"image":"ref.png"}}},"reference_images":{"ref.png":"AAAA","masks/mask1.png":"BBBB"},"return_base64":true}}',
    );
  });

  test("no images → reference_images is {}", () => {
    const input = buildJobInput({}, {});
    expect(input).toStrictEqual({ workflow: {}, reference_images: {}, return_base64: true });
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
