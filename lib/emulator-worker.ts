// The emulator's fake worker: it speaks the original handler's contract (see
// shared/reference/comfyui-workflows.md) and checks a workflow the way the handler and
// ComfyUI would, but "renders" tiny deterministic PNGs instead of running a model.
// Pure and synchronous: the same input always gives the same result (`outputBytes` asks for big
// images of random noise instead, for benchmarks; they are made once and kept for later jobs).
import { randomFillSync } from "node:crypto";
import { deflateSync } from "node:zlib";

/** What the handler returns. `steps` (the sampler steps it ran) only drives progress reports. */
export type HandlerResult = { output: { images: string[] }; steps: number } | { error: string };

type Graph = Record<string, unknown>;
/** A node of an API-format graph, once ComfyUI has read it. */
export interface WorkflowNode {
  id: string;
  classType: string;
  inputs: Record<string, unknown>;
}

/** Core ComfyUI's OUTPUT_NODE classes that save or preview images, video or sound. */
export const CORE_OUTPUT_NODES = ["SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveWEBM", "SaveVideo", "SaveAudio"];
/** The output nodes of the original handler's ComfyUI (custom nodes included); only SaveImage files are returned. */
const OUTPUT_NODE_TYPES = new Set([...CORE_OUTPUT_NODES, "VHS_VideoCombine"]);
const RETURNED_OUTPUT_TYPE = "SaveImage";
const FILE_READING_TYPES = new Set(["LoadImage", "LoadImageMask"]);
const INPUT_ANNOTATION = " [input]";
const DEFAULT_SIDE = 512;
const MAX_SIDE = 64;
const MAX_BATCH = 4096; // ComfyUI's EmptyLatentImage limit
/** Strict, padded base64, checked in linear time (a backtracking pattern took ~0.4 s on a 9 MB image). */
const isBase64 = (data: string) => data.length % 4 === 0 && !/[^A-Za-z0-9+/=]/.test(data) && /^[^=]*={0,2}$/.test(data);

export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

export const byNodeId = (a: string, b: string) => a.localeCompare(b, "en", { numeric: true });

export interface HandlerOptions {
  /** When set, a job's images are random noise whose PNG bytes add up to about this much (for benchmarks). */
  outputBytes?: number;
}

export function runHandler(input: unknown, { outputBytes }: HandlerOptions = {}): HandlerResult {
  if (!isRecord(input)) return { error: "Invalid input: expected a JSON object" };
  if (input.workflow === undefined) return { error: "Missing 'workflow' parameter" };
  if (!isRecord(input.workflow)) return { error: "'workflow' must be a JSON object (ComfyUI API format)" };
  const referenceNames = checkReferenceImages(input.reference_images);
  if (typeof referenceNames === "string") return { error: referenceNames };

  // From here on the handler has written the images and ComfyUI judges the prompt.
  const graph = input.workflow;
  if (isEditorFormat(graph)) {
    return {
      error:
        "ComfyUI could not read the prompt (HTTP 500): the workflow is in the editor format, not the API format; " +
        'export it with "Export (API)"',
    };
  }
  const nodes = readNodes(graph);
  if (typeof nodes === "string") return { error: nodes };
  const outputs = nodes.filter((node) => OUTPUT_NODE_TYPES.has(node.classType));
  if (outputs.length === 0) return { error: "Prompt has no outputs" };

  const byId = new Map(nodes.map((node) => [node.id, node]));
  const executed = upstreamOf(outputs, byId);
  const problems = executed.flatMap((node) => nodeProblems(node, byId, referenceNames));
  if (problems.length > 0) {
    return { error: ["Prompt outputs failed validation:", ...problems.map((p) => `• ${p}`)].join("\n") };
  }
  const saves = outputs.filter((node) => node.classType === RETURNED_OUTPUT_TYPE);
  const imageBytes = bytesPerImage(outputBytes, saves, byId);
  const images = saves.flatMap((node) => renderSaveImage(node, byId, imageBytes));
  const steps = executed.reduce((sum, node) => sum + positiveInteger(node.inputs.steps, 0), 0);
  return { output: { images }, steps: Math.max(1, steps) };
}

/** The handler decodes every reference image before it writes it to ComfyUI's input folder. */
function checkReferenceImages(value: unknown): Set<string> | string {
  if (value === undefined) return new Set();
  if (!isRecord(value)) return "'reference_images' must be an object mapping file names to base64 strings";
  const bad = Object.entries(value)
    .filter(([, data]) => typeof data !== "string" || !isBase64(data))
    .map(([name]) => `• ${name}: not valid base64`);
  if (bad.length > 0) return ["Invalid reference_images:", ...bad].join("\n");
  return new Set(Object.keys(value));
}

function isEditorFormat(graph: Graph): boolean {
  return (Array.isArray(graph.nodes) && Array.isArray(graph.links)) || ("version" in graph && "nodes" in graph);
}

/** ComfyUI's first pass over every node, before it looks at outputs. Lists every broken node. */
function readNodes(graph: Graph): WorkflowNode[] | string {
  const nodes: WorkflowNode[] = [];
  const problems: string[] = [];
  for (const id of Object.keys(graph).sort(byNodeId)) {
    const node = graph[id];
    const title = isRecord(node) && isRecord(node._meta) && typeof node._meta.title === "string" ? node._meta.title : `#${id}`;
    if (!isRecord(node) || typeof node.class_type !== "string") {
      problems.push(`Node '${title}' has no class_type. The workflow may be corrupted or a custom node is missing.`);
    } else if (!isRecord(node.inputs)) {
      problems.push(`Node '${title}' (${node.class_type}) has no inputs object. The workflow may be corrupted.`);
    } else {
      nodes.push({ id, classType: node.class_type, inputs: node.inputs });
    }
  }
  return problems.length > 0 ? problems.join("\n") : nodes;
}

/** A well-formed link: `["node id", output index]`. */
export function asLink(value: unknown): [string, number] | undefined {
  if (Array.isArray(value) && value.length === 2) {
    const [source, slot] = value as unknown[];
    if (typeof source === "string" && typeof slot === "number" && Number.isInteger(slot) && slot >= 0) {
      return [source, slot];
    }
  }
  return undefined;
}

/** The nodes ComfyUI executes (and therefore validates): the given ones and all they read from, in id order. */
export function upstreamOf(starts: WorkflowNode[], byId: Map<string, WorkflowNode>): WorkflowNode[] {
  const seen = new Map<string, WorkflowNode>();
  const pending = [...starts];
  for (let node = pending.pop(); node; node = pending.pop()) {
    if (seen.has(node.id)) continue;
    seen.set(node.id, node);
    for (const value of Object.values(node.inputs)) {
      const source = byId.get(asLink(value)?.[0] ?? "");
      if (source) pending.push(source);
    }
  }
  return [...seen.values()].sort((a, b) => byNodeId(a.id, b.id));
}

function nodeProblems(node: WorkflowNode, byId: Map<string, WorkflowNode>, referenceNames: Set<string>): string[] {
  const where = `Node ${node.id} (${node.classType})`;
  const problems: string[] = [];
  for (const [name, value] of Object.entries(node.inputs)) {
    if (!Array.isArray(value)) continue;
    const link = asLink(value);
    if (!link) problems.push(`${where}: ${name} - Bad linked input, must be a length-2 list of [node_id, slot_index]`);
    else if (!byId.has(link[0])) problems.push(`${where}: ${name} - Bad linked input, node '${link[0]}' does not exist`);
  }
  const file = node.inputs.image;
  if (FILE_READING_TYPES.has(node.classType) && !Array.isArray(file)) {
    const name = typeof file === "string" && file.endsWith(INPUT_ANNOTATION) ? file.slice(0, -INPUT_ANNOTATION.length) : file;
    if (typeof name !== "string" || !referenceNames.has(name)) {
      problems.push(`${where}: image - Invalid image file: ${String(file)}`);
    }
  }
  return problems;
}

/** The nearest node upstream (breadth first) that satisfies `pick`. */
function nearestUpstream(start: WorkflowNode, byId: Map<string, WorkflowNode>, pick: (node: WorkflowNode) => boolean) {
  const queue = [start];
  const seen = new Set<string>();
  for (let node = queue.shift(); node; node = queue.shift()) {
    if (seen.has(node.id)) continue;
    seen.add(node.id);
    if (node !== start && pick(node)) return node;
    for (const value of Object.values(node.inputs)) {
      const source = byId.get(asLink(value)?.[0] ?? "");
      if (source) queue.push(source);
    }
  }
  return undefined;
}

function positiveNumber(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : undefined;
}

function positiveInteger(value: unknown, fallback: number): number {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? value : fallback;
}

/** The latent (or image) a SaveImage node's files are made from: its size and batch. */
function sizedSource(save: WorkflowNode, byId: Map<string, WorkflowNode>) {
  const sized = nearestUpstream(save, byId, (n) => !!positiveNumber(n.inputs.width) && !!positiveNumber(n.inputs.height));
  return {
    width: positiveNumber(sized?.inputs.width) ?? DEFAULT_SIDE,
    height: positiveNumber(sized?.inputs.height) ?? DEFAULT_SIDE,
    batch: Math.min(MAX_BATCH, positiveInteger(sized?.inputs.batch_size, 1)),
  };
}

/** With `outputBytes`, the share of it each file of these SaveImage nodes gets; undefined without. */
export function bytesPerImage(outputBytes: number | undefined, saves: WorkflowNode[], byId: Map<string, WorkflowNode>): number | undefined {
  if (outputBytes === undefined) return undefined;
  return outputBytes / Math.max(1, saves.reduce((sum, node) => sum + sizedSource(node, byId).batch, 0));
}

/**
 * One SaveImage node's files: `batch_size` images sized like the latent (or image) it was made from.
 * With `imageBytes`, each is instead random noise of the workflow's aspect ratio whose PNG takes
 * about that many bytes.
 */
export function renderSaveImage(save: WorkflowNode, byId: Map<string, WorkflowNode>, imageBytes?: number): string[] {
  const source = sizedSource(save, byId);
  const { batch } = source;
  if (imageBytes !== undefined) {
    return Array.from({ length: batch }, (_, index) => noiseImage(imageBytes, source.width / source.height, `${save.id}/${index}`));
  }
  const [width, height] = thumbnailSize(source.width, source.height);
  const sampler = nearestUpstream(save, byId, (n) => typeof (n.inputs.seed ?? n.inputs.noise_seed) === "number");
  const seed = String(sampler?.inputs.seed ?? sampler?.inputs.noise_seed ?? 0);
  const prompts = upstreamOf([save], byId)
    .filter((node) => node.classType.includes("TextEncode"))
    .flatMap((node) => Object.values(node.inputs).filter((value) => typeof value === "string"));
  return Array.from({ length: batch }, (_, index) => {
    const rgb = renderPixels(width, height, [seed, ...prompts, String(index)].join("\u0000"));
    return toBase64(encodePng(width, height, rgb));
  });
}

/**
 * Noise images already made, as base64, by size, aspect and place in the job (SaveImage node and
 * batch index): making 20 MB of noise takes tens of milliseconds, which would otherwise delay every
 * job as it starts. A job's images differ from one another; later jobs asking for the same get the same.
 */
const noiseImages = new Map<string, string>();
const NOISE_IMAGES_KEPT = 8;

function noiseImage(bytes: number, aspect: number, place: string): string {
  const key = `${Math.round(bytes)} ${aspect} ${place}`;
  let base64 = noiseImages.get(key);
  if (base64 === undefined) {
    base64 = toBase64(noisePng(bytes, aspect));
    const oldest = noiseImages.keys().next();
    if (noiseImages.size >= NOISE_IMAGES_KEPT && !oldest.done) noiseImages.delete(oldest.value);
    noiseImages.set(key, base64);
  }
  return base64;
}

const toBase64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");

/** Shrinks to at most MAX_SIDE on the longest side, keeping the aspect ratio. */
function thumbnailSize(width: number, height: number): [number, number] {
  const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

/** FNV-1a over the UTF-16 code units: a stable 32-bit seed for the pattern. */
function hashText(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/** mulberry32: small, fast and good enough to pick colours. */
function randomSource(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A two-colour gradient with a ripple, all chosen by `key`. */
function renderPixels(width: number, height: number, key: string): Uint8Array {
  const random = randomSource(hashText(key));
  const from = [random(), random(), random()].map((c) => c * 255);
  const to = [random(), random(), random()].map((c) => c * 255);
  const angle = random() * 2 * Math.PI;
  const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
  const frequency = 0.2 + random() * 0.6;
  const span = Math.abs(dx) * width + Math.abs(dy) * height || 1;
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const along = x * dx + y * dy;
      const t = (along + (dx < 0 ? -dx * width : 0) + (dy < 0 ? -dy * height : 0)) / span;
      const ripple = 0.85 + 0.15 * Math.sin(along * frequency);
      for (let c = 0; c < 3; c++) {
        const base = from[c]! + (to[c]! - from[c]!) * t;
        rgb[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(base * ripple)));
      }
    }
  }
  return rgb;
}

const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

/** An 8-bit RGB, non-interlaced PNG; `rgb` holds width*height*3 bytes, row by row. */
export function encodePng(width: number, height: number, rgb: Uint8Array): Uint8Array {
  checkPngSize(width, height);
  const stride = width * 3;
  if (rgb.length !== stride * height) {
    throw new RangeError(`expected ${stride * height} bytes of RGB for ${width}x${height}, got ${rgb.length}`);
  }
  // Each scanline starts with its filter type; 0 (None) keeps the encoder trivial.
  const scanlines = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) scanlines.set(rgb.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  return pngOf(width, height, deflateSync(scanlines));
}

/** Bytes of a PNG besides its stored pixels: signature, IHDR, IDAT's frame, IEND, zlib's header and checksum. */
const PNG_OVERHEAD = 8 + 25 + 12 + 12 + 2 + 4;
/** zlib's stored blocks: at most 65535 bytes each, behind a 5-byte header. */
const STORED_BLOCK = 65535;
const STORED_BLOCK_HEADER = 5;

/**
 * An RGB PNG of random pixels that takes about `bytes` bytes (at least a 1×1 image's), `aspect`
 * (width ÷ height, kept within 1:16 and 16:1) wide. Noise does not compress, so its pixels are stored
 * as they are (deflate level 0): a decoder reads the image, and no transport can shrink it.
 */
export function noisePng(bytes: number, aspect: number): Uint8Array {
  const ratio = Math.min(16, Math.max(1 / 16, Number.isFinite(aspect) && aspect > 0 ? aspect : 1));
  // What the scanlines may take once the overhead and the stored blocks' headers are paid.
  const room = Math.max(4, ((bytes - PNG_OVERHEAD) * STORED_BLOCK) / (STORED_BLOCK + STORED_BLOCK_HEADER));
  const width = Math.max(1, Math.round(Math.sqrt((room * ratio) / 3)));
  const height = Math.max(1, Math.round(room / (3 * width + 1)));
  checkPngSize(width, height);
  const stride = 3 * width + 1;
  const scanlines = randomFillSync(new Uint8Array(height * stride));
  for (let y = 0; y < height; y++) scanlines[y * stride] = 0; // filter type None
  return pngOf(width, height, deflateSync(scanlines, { level: 0 }));
}

function checkPngSize(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`PNG size must be positive integers, got ${width}x${height}`);
  }
}

/** The PNG of an 8-bit RGB, non-interlaced image whose scanlines `idat` holds, compressed; written in one buffer (it may be 20 MB). */
function pngOf(width: number, height: number, idat: Uint8Array): Uint8Array {
  const header = new Uint8Array(13);
  const headerView = new DataView(header.buffer);
  headerView.setUint32(0, width);
  headerView.setUint32(4, height);
  header.set([8, 2, 0, 0, 0], 8); // bit depth 8, colour type RGB, deflate, filter set 0, no interlace
  const chunks: [string, Uint8Array][] = [
    ["IHDR", header],
    ["IDAT", idat],
    ["IEND", new Uint8Array(0)],
  ];
  const png = new Uint8Array(PNG_SIGNATURE.length + chunks.reduce((sum, [, data]) => sum + 12 + data.length, 0));
  const view = new DataView(png.buffer);
  png.set(PNG_SIGNATURE);
  let offset = PNG_SIGNATURE.length;
  for (const [type, data] of chunks) {
    // Length, type, data, then the CRC of type and data.
    view.setUint32(offset, data.length);
    png.set(new TextEncoder().encode(type), offset + 4);
    png.set(data, offset + 8);
    view.setUint32(offset + 8 + data.length, Bun.hash.crc32(png.subarray(offset + 4, offset + 8 + data.length)));
    offset += 12 + data.length;
  }
  return png;
}
