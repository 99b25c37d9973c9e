// Files in: the workflow and the reference images, checked before anything is sent.
import { readdir, stat } from "node:fs/promises";
import { basename, isAbsolute, join, relative, resolve, sep } from "node:path";
import { usageError } from "./errors.ts";
import {
  applySeed,
  applySet,
  type Dialect,
  graphProblems,
  inputFiles,
  isEditorFormat,
  isReturned,
  nodeLabel,
  outputNodes,
  parseSeed,
  type Problem,
  unreturnedOutputsWarning,
  unwrap,
  type Workflow,
} from "./workflow.ts";

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

const EXPORT_HINT = "in ComfyUI use Workflow → Export (API) and send that file";

/** Several problems go on lines of their own, so that all of them are seen at once. */
export function problemsMessage(file: string, problems: readonly Problem[]): string {
  if (problems.length === 1) return `${file}: ${problems[0]!.message}`;
  return `${file} has ${problems.length} problems:\n${problems.map((p) => `  • ${p.message}`).join("\n")}`;
}

/** Text of a workflow file → an API-format graph (unwrapped), or every problem of it at once. */
export function parseWorkflow(text: string, file: string): { workflow: Workflow; wrapper?: string } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw usageError(`${file} is not valid JSON (${(error as Error).message})`);
  }
  if (!isRecord(data)) throw usageError(`${file} is not an API-format workflow: expected an object of nodes`);
  const { graph, wrapper } = unwrap(data);
  if (isEditorFormat(graph)) throw usageError(`${file} is in ComfyUI's editor format (nodes and links); ${EXPORT_HINT}`);
  const problems = graphProblems(graph);
  if (problems.length) throw usageError(problemsMessage(file, problems));
  return { workflow: graph as Workflow, wrapper };
}

export async function readWorkflow(file: string): Promise<{ workflow: Workflow; wrapper?: string }> {
  let text: string;
  try {
    text = await Bun.file(file).text();
  } catch (error) {
    throw usageError(`cannot read workflow ${file}: ${describeFsError(error)}`);
  }
  return parseWorkflow(text, file);
}

export interface ImageSource {
  /** The name the worker files it under: a basename, or a `/`-separated path relative to --images-dir. */
  name: string;
  path: string;
}

const IMAGE_EXTENSION = /\.(png|jpe?g|webp|bmp|gif)$/i;

/** Every image named by --images and found under --images-dir; a missing file or a name clash is an error. */
export async function collectImages(files: readonly string[], dirs: readonly string[]): Promise<{ images: ImageSource[]; warnings: string[] }> {
  const warnings: string[] = [];
  const fromFiles = await Promise.all(
    files.map(async (path): Promise<ImageSource> => {
      const info = await stat(path).catch((error) => {
        throw usageError(`image ${path}: ${describeFsError(error)}`);
      });
      if (!info.isFile()) throw usageError(`image ${path} is not a file${info.isDirectory() ? " (use --images-dir for a folder)" : ""}`);
      return { name: basename(path), path };
    }),
  );
  const fromDirs = await Promise.all(
    dirs.map(async (dir) => {
      const found = await imagesUnder(dir);
      if (found.length === 0) warnings.push(`no images found under ${dir}`);
      return found;
    }),
  );
  const images = [...fromFiles, ...fromDirs.flat()];
  const clash = findNameClash(images);
  if (clash) throw usageError(`two images would both be sent as "${clash[0].name}": ${clash[0].path} and ${clash[1].path}`);
  return { images, warnings };
}

export function findNameClash(images: readonly ImageSource[]): [ImageSource, ImageSource] | undefined {
  const seen = new Map<string, ImageSource>();
  for (const image of images) {
    const earlier = seen.get(image.name);
    if (earlier) return [earlier, image];
    seen.set(image.name, image);
  }
  return undefined;
}

async function imagesUnder(dir: string): Promise<ImageSource[]> {
  const info = await stat(dir).catch((error) => {
    throw usageError(`--images-dir ${dir}: ${describeFsError(error)}`);
  });
  if (!info.isDirectory()) throw usageError(`--images-dir ${dir} is not a directory`);
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => IMAGE_EXTENSION.test(entry.name) && (entry.isFile() || entry.isSymbolicLink()))
    .map((entry) => {
      const path = join(entry.parentPath, entry.name);
      return { name: relative(dir, path).split(sep).join("/"), path };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** name → base64, read concurrently; an unreadable file is an error before anything is sent. */
export async function encodeImages(images: readonly ImageSource[], cache?: Map<string, Promise<string>>): Promise<Record<string, string>> {
  const encode = async (path: string) => {
    try {
      return (await Bun.file(path).bytes()).toBase64();
    } catch (error) {
      throw usageError(`cannot read image ${path}: ${describeFsError(error)}`);
    }
  };
  const once = (path: string) => {
    if (!cache) return encode(path);
    if (!cache.has(path)) cache.set(path, encode(path));
    return cache.get(path)!;
  };
  return Object.fromEntries(await Promise.all(images.map(async ({ name, path }) => [name, await once(path)] as const)));
}

/**
 * The job's `input` in the worker's dialect: the original handler maps names to base64 in
 * `reference_images`; worker-comfyui takes a list of `{name, image}`.
 */
export function buildJobInput(dialect: Dialect, workflow: Workflow, images: Record<string, string>, comfyOrgApiKey?: string) {
  if (dialect === "seed") return { workflow, reference_images: images, return_base64: true };
  return {
    workflow,
    images: Object.entries(images).map(([name, image]) => ({ name, image })),
    ...(comfyOrgApiKey && { comfy_org_api_key: comfyOrgApiKey }),
  };
}

/** RunPod refuses bigger /run bodies (10 MB; /runsync 20 MB). The decimal megabyte, to stay on the safe side. */
export const RUN_BODY_LIMIT = 10_000_000;

/** Over the limit: exit 2 before anything is sent, naming the biggest images. */
export function checkBodySize(bodyBytes: number, images: readonly { name: string; bytes: number }[]): void {
  if (bodyBytes <= RUN_BODY_LIMIT) return;
  const biggest = [...images].sort((a, b) => b.bytes - a.bytes).slice(0, 3);
  const named = biggest.length ? `; biggest images: ${biggest.map((image) => `${image.name} ${formatBytes(image.bytes)}`).join(", ")}` : "";
  throw usageError(
    `the request would be ${formatBytes(bodyBytes)}, over RunPod's ${formatBytes(RUN_BODY_LIMIT)} limit for /run${named}` +
      " (base64 adds a third); send smaller images (JPEG or WebP, a lower resolution), or put them on a network volume and name them in the workflow",
  );
}

/** 2.3 MB, 812 B: decimal units, as file managers show them. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1000;
    unit++;
  } while (value >= 999.95 && unit < units.length - 1);
  return `${value.toFixed(1)} ${units[unit]}`;
}

export function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException)?.code;
  const known: Record<string, string> = {
    ENOENT: "no such file",
    EACCES: "permission denied",
    EPERM: "permission denied",
    EISDIR: "is a directory",
    ENOTDIR: "a part of the path is not a directory",
    ENOSPC: "no space left on the device",
    EROFS: "read-only file system",
  };
  return (code && known[code]) ?? (error as Error)?.message ?? String(error);
}

// ---- Preflight: everything that can be checked before a request costs GPU time ----------------

export interface PreflightOptions {
  workflow: string;
  images: readonly string[];
  imagesDirs: readonly string[];
  sets: readonly string[];
  seed?: string;
  inputDir: string;
  strict: boolean;
  dialect: Dialect;
  comfyOrgApiKey?: string;
  /** Request-level fields of /run (policy, webhook). */
  extras: Record<string, unknown>;
  /** Images already encoded, by path: a batch reads and encodes each file once. */
  encoded?: Map<string, Promise<string>>;
}

export interface SentImage extends ImageSource {
  bytes: number;
  /** Found in --input-dir because the workflow names it. */
  attached?: boolean;
}

export interface Plan {
  file: string;
  wrapper?: string;
  workflow: Workflow;
  dialect: Dialect;
  images: SentImage[];
  seed?: { seed: number; random: boolean; nodeIds: string[] };
  /** The exact JSON body of /run. */
  body: string;
  bodyBytes: number;
  /** Said as info (what was done on the user's behalf) and as warnings. */
  notes: string[];
  warnings: string[];
}

/** Reads, changes and checks everything that will be sent; any problem is a usage error, all listed at once. */
export async function prepareRequest(options: PreflightOptions): Promise<Plan> {
  const { workflow: parsed, wrapper } = await readWorkflow(options.workflow);
  const notes: string[] = [];
  let workflow = options.sets.reduce(applySet, parsed);
  let seed: Plan["seed"];
  if (options.seed !== undefined) {
    const chosen = parseSeed(options.seed);
    const seeded = applySeed(workflow, chosen.seed);
    workflow = seeded.graph;
    seed = { ...chosen, nodeIds: seeded.nodeIds };
  }
  const { images, warnings } = await collectImages(options.images, options.imagesDirs);
  if (seed && seed.nodeIds.length === 0) warnings.push("--seed: this workflow has no seed or noise_seed input to set");
  const unreturned = unreturnedOutputsWarning(workflow, options.dialect);
  if (unreturned) warnings.push(unreturned);

  const sent = new Set(images.map((image) => image.name));
  const attached: ImageSource[] = [];
  const missing: Problem[] = [];
  for (const file of inputFiles(workflow)) {
    if (sent.has(file.name)) continue;
    const path = join(options.inputDir, ...file.name.split("/"));
    // A workflow from elsewhere must not make us upload files from outside the input folder.
    const inside = resolve(path).startsWith(resolve(options.inputDir) + sep) && !isAbsolute(file.name);
    if (inside && (await stat(path).then((info) => info.isFile(), () => false))) {
      attached.push({ name: file.name, path });
      sent.add(file.name);
      notes.push(`attached ${path}, which ${nodeLabel(workflow, file.nodeId)} names`);
    } else {
      missing.push({ nodeId: file.nodeId, message: `${nodeLabel(workflow, file.nodeId)} names "${file.name}", which is neither given nor in ${options.inputDir}` });
    }
  }
  if (missing.length && options.strict) throw usageError(problemsMessage(options.workflow, missing));
  warnings.push(...missing.map((problem) => `${problem.message} (it may already be on the worker's volume)`));

  const all = [...images, ...attached];
  if (options.dialect === "worker-comfyui") {
    const nested = all.filter((image) => image.name.includes("/")).map((image) => image.name);
    if (nested.length) warnings.push(`worker-comfyui makes no sub-folders, so ${nested.join(", ")} will likely fail to upload; name them plainly`);
  }
  const encoded = await encodeImages(all, options.encoded);
  const input = buildJobInput(options.dialect, workflow, encoded, options.comfyOrgApiKey);
  const body = JSON.stringify({ ...options.extras, input });
  const bodyBytes = Buffer.byteLength(body);
  const sentImages = all.map((image, i) => ({ ...image, bytes: Buffer.byteLength(encoded[image.name]!, "base64"), ...(i >= images.length && { attached: true }) }));
  checkBodySize(bodyBytes, sentImages);
  return { file: options.workflow, wrapper, workflow, dialect: options.dialect, images: sentImages, seed, body, bodyBytes, notes, warnings };
}

/** The --dry-run summary: what would be sent, and to which worker. */
export function describePlan(plan: Plan): string[] {
  const nodes = Object.values(plan.workflow);
  const counts = new Map<string, number>();
  for (const node of nodes) counts.set(node.class_type, (counts.get(node.class_type) ?? 0) + 1);
  const outputs = outputNodes(plan.workflow);
  const row = (label: string, text: string) => `${label.padEnd(9)}${text}`;
  return [
    row("workflow", `${plan.file} (API format${plan.wrapper ? `, inside "${plan.wrapper}"` : ""})`),
    row("nodes", `${nodes.length}: ${[...counts].map(([type, n]) => (n > 1 ? `${type} ×${n}` : type)).join(", ")}`),
    row("outputs", outputs.map((output) => `${nodeLabel(plan.workflow, output.id)}${isReturned(output, plan.dialect) ? "" : " (not returned)"}`).join(", ")),
    row("images", plan.images.length ? plan.images.map((image) => `${image.name} ${formatBytes(image.bytes)}${image.attached ? " (attached from the input folder)" : ""}`).join(", ") : "none"),
    row("body", `${formatBytes(plan.bodyBytes)} of RunPod's ${formatBytes(RUN_BODY_LIMIT)} for /run`),
    row("dialect", plan.dialect),
    ...(plan.seed ? [row("seed", `${plan.seed.seed}${plan.seed.random ? " (random)" : ""} in ${plan.seed.nodeIds.map((id) => nodeLabel(plan.workflow, id)).join(", ") || "no node"}`)] : []),
  ];
}
