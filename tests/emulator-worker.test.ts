import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { crc32, deflateSync, inflateSync } from "node:zlib";
import { encodePng, noisePng, runHandler } from "../lib/emulator-worker.ts";
import type { HandlerResult } from "../lib/emulator-worker.ts";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures");
const TINY_PNG = Buffer.from(await Bun.file(join(FIXTURES, "tiny.png")).arrayBuffer()).toString("base64");
const EDITOR_WORKFLOW: unknown = await Bun.file(join(FIXTURES, "ui-workflow-sd15.json")).json();
const readWorkflow = async (name: string): Promise<Record<string, any>> =>
  Bun.file(new URL(`../workflows/${name}`, import.meta.url)).json();
const TXT2IMG = await readWorkflow("sample-txt2img.json");
const IMG2IMG = await readWorkflow("img2img.json");
const INPAINT = await readWorkflow("inpaint.json");
const UPSCALE = await readWorkflow("upscale.json");

/** A fresh copy to edit. */
const txt2img = (): Record<string, any> => structuredClone(TXT2IMG);

function expectError(result: HandlerResult): string {
  if (!("error" in result)) throw new Error(`expected an error, got ${result.output.images.length} images`);
  return result.error;
}

function expectImages(result: HandlerResult): string[] {
  if ("error" in result) throw new Error(`expected images, got error: ${result.error}`);
  return result.output.images;
}

interface ParsedPng {
  width: number;
  height: number;
  chunkTypes: string[];
  rgb: Uint8Array;
}

/** Reads a PNG back, checking the signature, every chunk's CRC (against zlib's) and the pixel data size. */
function parsePng(bytes: Uint8Array): ParsedPng {
  expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunkTypes: string[] = [];
  const idat: Uint8Array[] = [];
  let header: Uint8Array | undefined;
  for (let offset = 8; offset < bytes.length; ) {
    const length = view.getUint32(offset);
    const type = new TextDecoder().decode(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    expect(view.getUint32(offset + 8 + length)).toBe(crc32(bytes.subarray(offset + 4, offset + 8 + length)));
    chunkTypes.push(type);
    if (type === "IHDR") header = data;
    if (type === "IDAT") idat.push(data);
    offset += 12 + length;
  }
  if (!header) throw new Error("no IHDR");
  const headerView = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const [width, height] = [headerView.getUint32(0), headerView.getUint32(4)];
  expect([...header.subarray(8)]).toEqual([8, 2, 0, 0, 0]);
  const scanlines = inflateSync(Buffer.concat(idat));
  expect(scanlines.length).toBe(height * (1 + 3 * width));
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    expect(scanlines[y * (1 + 3 * width)]).toBe(0);
    rgb.set(scanlines.subarray(y * (1 + 3 * width) + 1, (y + 1) * (1 + 3 * width)), y * 3 * width);
  }
  return { width, height, chunkTypes, rgb };
}

const decodeImage = (base64: string) => parsePng(Buffer.from(base64, "base64"));

describe("encodePng", () => {
  test("writes a PNG that decodes back to the same pixels", () => {
    const rgb = Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) % 256);
    const png = parsePng(encodePng(5, 3, rgb));
    expect(png).toEqual({ width: 5, height: 3, chunkTypes: ["IHDR", "IDAT", "IEND"], rgb });
  });

  test("Bun.hash.crc32, used for the chunk CRCs, equals zlib's crc32", () => {
    const data = new TextEncoder().encode("IHDR and some bytes");
    expect(Bun.hash.crc32(data)).toBe(crc32(data));
  });

  test.each([
    [0, 1, 0],
    [1.5, 1, 3],
    [2, 2, 11],
  ])("refuses %p x %p with %p bytes", (width, height, size) => {
    expect(() => encodePng(width, height, new Uint8Array(size))).toThrow(RangeError);
  });
});

describe("runHandler refuses what the handler or ComfyUI would refuse", () => {
  const noClassType = "has no class_type. The workflow may be corrupted or a custom node is missing.";
  const cases: [string, unknown, string][] = [
    ["null input", null, "Invalid input: expected a JSON object"],
    ["array input", [TXT2IMG], "Invalid input: expected a JSON object"],
    ["no workflow", { reference_images: {} }, "Missing 'workflow' parameter"],
    ["workflow as a string", { workflow: JSON.stringify(TXT2IMG) }, "'workflow' must be a JSON object (ComfyUI API format)"],
    ["workflow as an array", { workflow: [] }, "'workflow' must be a JSON object (ComfyUI API format)"],
    ["reference_images as a list", { workflow: TXT2IMG, reference_images: [TINY_PNG] }, "'reference_images' must be an object mapping file names to base64 strings"],
    ["base64 with bad characters", { workflow: TXT2IMG, reference_images: { "a.png": "not base64!" } }, "Invalid reference_images:\n• a.png: not valid base64"],
    ["a data URI", { workflow: TXT2IMG, reference_images: { "a.png": `data:image/png;base64,${TINY_PNG}` } }, "Invalid reference_images:\n• a.png: not valid base64"],
    ["a non-string image", { workflow: TXT2IMG, reference_images: { "a.png": 1, "b.png": TINY_PNG, "c.png": "abc" } }, "Invalid reference_images:\n• a.png: not valid base64\n• c.png: not valid base64"],
    ["the editor format", { workflow: EDITOR_WORKFLOW }, 'ComfyUI could not read the prompt (HTTP 500): the workflow is in the editor format, not the API format; export it with "Export (API)"'],
    ["a node without class_type", { workflow: { ...TXT2IMG, "2": { inputs: {}, _meta: { title: "Positive Prompt" } } } }, `Node 'Positive Prompt' ${noClassType}`],
    ["untitled nodes without class_type", { workflow: { ...TXT2IMG, "9": { inputs: {} }, "10": 5 } }, `Node '#9' ${noClassType}\nNode '#10' ${noClassType}`],
    ["a node without inputs", { workflow: { ...TXT2IMG, "3": { class_type: "CLIPTextEncode" } } }, "Node '#3' (CLIPTextEncode) has no inputs object. The workflow may be corrupted."],
    ["no output node", { workflow: { "1": TXT2IMG["1"] } }, "Prompt has no outputs"],
    ["an empty workflow", { workflow: {} }, "Prompt has no outputs"],
    ["a malformed link", { workflow: { ...TXT2IMG, "6": { class_type: "VAEDecode", inputs: { samples: ["5", 0, 1], vae: ["1", 2] } } } }, "Prompt outputs failed validation:\n• Node 6 (VAEDecode): samples - Bad linked input, must be a length-2 list of [node_id, slot_index]"],
    ["a link with a numeric node id", { workflow: { ...TXT2IMG, "6": { class_type: "VAEDecode", inputs: { samples: [5, 0], vae: ["1", 2] } } } }, "Prompt outputs failed validation:\n• Node 6 (VAEDecode): samples - Bad linked input, must be a length-2 list of [node_id, slot_index]"],
    ["a link to a missing node", { workflow: { ...TXT2IMG, "6": { class_type: "VAEDecode", inputs: { samples: ["99", 0], vae: ["1", 2] } } } }, "Prompt outputs failed validation:\n• Node 6 (VAEDecode): samples - Bad linked input, node '99' does not exist"],
    ["an image never sent", { workflow: IMG2IMG }, "Prompt outputs failed validation:\n• Node 4 (LoadImage): image - Invalid image file: reference.png"],
    ["an image sent under another name", { workflow: IMG2IMG, reference_images: { "Reference.png": TINY_PNG } }, "Prompt outputs failed validation:\n• Node 4 (LoadImage): image - Invalid image file: reference.png"],
    ["several problems at once", { workflow: { ...INPAINT, "8": { class_type: "VAEDecode", inputs: { samples: ["7", 0], vae: ["42", 2] } } } }, "Prompt outputs failed validation:\n• Node 4 (LoadImage): image - Invalid image file: photo.png\n• Node 5 (LoadImageMask): image - Invalid image file: mask.png\n• Node 8 (VAEDecode): vae - Bad linked input, node '42' does not exist"],
  ];
  test.each(cases)("%s", (_, input, message) => {
    expect(expectError(runHandler(input))).toBe(message);
  });
});

describe("runHandler accepts", () => {
  test.each([
    ["an inpaint workflow with its photo and mask", INPAINT, { "photo.png": TINY_PNG, "mask.png": TINY_PNG }],
    ["a name annotated with [input]", { ...IMG2IMG, "4": { class_type: "LoadImage", inputs: { image: "reference.png [input]" } } }, { "reference.png": TINY_PNG }],
    ["a sub-folder name", { ...IMG2IMG, "4": { class_type: "LoadImage", inputs: { image: "masks/ref.png" } } }, { "masks/ref.png": TINY_PNG }],
    ["extra, unused images", IMG2IMG, { "reference.png": TINY_PNG, "unused.png": TINY_PNG }],
    // ComfyUI validates only what feeds an output node: a dangling loader is never read.
    ["a loader feeding no output", { ...TXT2IMG, "20": { class_type: "LoadImage", inputs: { image: "absent.png" } } }, {}],
  ])("%s", (_, workflow, images) => {
    expect(expectImages(runHandler({ workflow, reference_images: images, return_base64: true }))).toHaveLength(1);
  });

  test("a workflow whose only output is a preview, returning no image (temp files are not returned)", () => {
    const workflow = { ...txt2img(), "7": { class_type: "PreviewImage", inputs: { images: ["6", 0] } } };
    expect(runHandler({ workflow })).toEqual({ output: { images: [] }, steps: 25 });
  });
});

describe("runHandler renders", () => {
  test("one PNG per SaveImage and batch item, sized from the latent and shrunk to 64 px", () => {
    const workflow = txt2img();
    Object.assign(workflow["4"].inputs, { width: 1216, height: 832, batch_size: 3 });
    const images = expectImages(runHandler({ workflow })).map(decodeImage);
    expect(images.map(({ width, height }) => [width, height])).toEqual([[64, 44], [64, 44], [64, 44]]);
    expect(new Set(images.map(({ rgb }) => Buffer.from(rgb).toString("hex"))).size).toBe(3);
  });

  test.each([
    ["a square latent", 1024, 1024, 64, 64],
    ["a tall latent", 512, 2048, 16, 64],
    ["a small latent, kept", 32, 16, 32, 16],
    ["a very thin latent, at least 1 px", 8192, 16, 64, 1],
  ])("%s (%p x %p → %p x %p)", (_, width, height, expectedWidth, expectedHeight) => {
    const workflow = txt2img();
    Object.assign(workflow["4"].inputs, { width, height });
    const [image] = expectImages(runHandler({ workflow })).map(decodeImage);
    expect([image?.width, image?.height]).toEqual([expectedWidth, expectedHeight]);
  });

  test("512x512 (shrunk to 64x64) without a latent to size it", () => {
    const upscale = runHandler({ workflow: UPSCALE, reference_images: { "photo.png": TINY_PNG } });
    expect(expectImages(upscale).map(decodeImage).map(({ width, height }) => [width, height])).toEqual([[64, 64]]);
  });

  test("SaveImage nodes in node id order, numerically", () => {
    const workflow = txt2img();
    workflow["10"] = { class_type: "SaveImage", inputs: { images: ["6", 0] } };
    workflow["9"] = { class_type: "SaveImage", inputs: { images: ["11", 0] } };
    workflow["11"] = { class_type: "VAEDecode", inputs: { samples: ["12", 0], vae: ["1", 2] } };
    workflow["12"] = { ...workflow["5"], inputs: { ...workflow["5"].inputs, seed: 99 } };
    const images = expectImages(runHandler({ workflow }));
    const alone = (seed: number) => {
      const single = txt2img();
      single["5"].inputs.seed = seed;
      return expectImages(runHandler({ workflow: single }));
    };
    expect(images).toEqual([...alone(42), ...alone(99), ...alone(42)]); // nodes 7, 9, 10
  });

  test("the same input gives the same bytes", () => {
    expect(runHandler({ workflow: txt2img() })).toEqual(runHandler({ workflow: txt2img() }));
  });

  test.each([
    ["the seed", (w: Record<string, any>) => (w["5"].inputs.seed = 43)],
    ["the prompt", (w: Record<string, any>) => (w["2"].inputs.text += "!")],
    ["the negative prompt", (w: Record<string, any>) => (w["3"].inputs.text = "")],
  ])("changing %s changes the bytes", (_, change) => {
    const workflow = txt2img();
    change(workflow);
    expect(expectImages(runHandler({ workflow }))[0]).not.toBe(expectImages(runHandler({ workflow: txt2img() }))[0]);
  });

  test("steps are the sampler's, for progress reports", () => {
    expect(runHandler({ workflow: txt2img() })).toMatchObject({ steps: 25 });
    expect(runHandler({ workflow: UPSCALE, reference_images: { "photo.png": TINY_PNG } })).toMatchObject({ steps: 1 });
  });
});


describe("big outputs (outputBytes)", () => {
  /** What deflate at its best saves on these bytes, as a share of them. */
  const compressibility = (bytes: Uint8Array) => 1 - deflateSync(bytes, { level: 9 }).length / bytes.length;

  test.each([
    [2_000, 1],
    [100_000, 1216 / 832],
    [1_000_000, 1],
    [3_000_000, 1 / 4],
  ])("noisePng(%p): within 2%% of the size, a valid PNG of that aspect, that deflate cannot shrink", (bytes, aspect) => {
    const png = noisePng(bytes, aspect);
    expect(Math.abs(png.length - bytes) / bytes).toBeLessThan(0.02);
    const { width, height, chunkTypes } = parsePng(png);
    expect(chunkTypes).toEqual(["IHDR", "IDAT", "IEND"]);
    expect(Math.abs(width / height - aspect) / aspect).toBeLessThan(0.1);
    expect(compressibility(png)).toBeLessThan(0.01);
  });

  test("noisePng: random each time; a size too small for any pixel still gives a 1x1 image", () => {
    expect(Buffer.from(noisePng(5000, 1)).equals(Buffer.from(noisePng(5000, 1)))).toBe(false);
    expect(parsePng(noisePng(10, 1))).toMatchObject({ width: 1, height: 1 });
  });

  test("runHandler shares outputBytes among every image of the job, each of the workflow's aspect", () => {
    const workflow = txt2img();
    Object.assign(workflow["4"].inputs, { width: 1216, height: 832, batch_size: 2 });
    workflow["8"] = { class_type: "SaveImage", inputs: { filename_prefix: "again", images: ["6", 0] } };
    const images = expectImages(runHandler({ workflow }, { outputBytes: 1_000_000 })).map((base64) => Buffer.from(base64, "base64"));
    expect(images).toHaveLength(4);
    const total = images.reduce((sum, image) => sum + image.length, 0);
    expect(Math.abs(total - 1_000_000) / 1_000_000).toBeLessThan(0.05);
    for (const image of images) {
      const { width, height } = parsePng(image);
      expect(width / height).toBeCloseTo(1216 / 832, 1);
    }
  });

  test("runHandler: a job's images differ from one another; they are made once, and a later job gets the same", () => {
    const workflow = txt2img();
    workflow["4"].inputs.batch_size = 2;
    const [first, second] = expectImages(runHandler({ workflow }, { outputBytes: 200_000 }));
    expect(first).not.toBe(second);
    expect(expectImages(runHandler({ workflow }, { outputBytes: 200_000 }))).toEqual([first ?? "", second ?? ""]);
  });

  test("runHandler without outputBytes, or a failing job, is unchanged", () => {
    expect(runHandler({ workflow: txt2img() }, {})).toEqual(runHandler({ workflow: txt2img() }));
    expect(runHandler({ workflow: {} }, { outputBytes: 1000 })).toEqual({ error: "Prompt has no outputs" });
  });
});
