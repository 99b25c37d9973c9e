// Files in: the workflow and the reference images, checked before anything is sent.
import { readdir, stat } from "node:fs/promises";
import { basename, join, relative, sep } from "node:path";
import { usageError } from "./errors.ts";

export type Workflow = Record<string, { class_type: string; inputs: Record<string, unknown>; _meta?: { title?: string } }>;

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

function nodeProblem(node: unknown): string | undefined {
  if (!isRecord(node)) return "is not an object";
  if (typeof node.class_type !== "string") return "has no class_type (a custom node was probably missing when the file was exported)";
  if (!isRecord(node.inputs)) return "has no inputs object";
  return undefined;
}

/** Editor ("Save") format: what ComfyUI's UI writes, which a worker cannot run. */
export const isEditorFormat = (x: Record<string, unknown>) =>
  Array.isArray(x.nodes) && (Array.isArray(x.links) || x.version !== undefined);

/** Text of a workflow file → an API-format graph, or one line naming the file and every problem. */
export function parseWorkflow(text: string, file: string): Workflow {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw usageError(`${file} is not valid JSON (${(error as Error).message})`);
  }
  if (!isRecord(data)) throw usageError(`${file} is not an API-format workflow: expected an object of nodes`);
  if (isEditorFormat(data)) {
    throw usageError(`${file} is in ComfyUI's editor format (nodes and links); in ComfyUI use Workflow → Export (API) and send that file`);
  }
  const entries = Object.entries(data);
  if (entries.length === 0) throw usageError(`${file} is not an API-format workflow: it has no nodes`);
  const problems = entries.flatMap(([id, node]) => {
    const problem = nodeProblem(node);
    return problem ? [`node "${id}" ${problem}`] : [];
  });
  if (problems.length) throw usageError(`${file} is not an API-format workflow: ${problems.join("; ")}`);
  return data as Workflow;
}

export async function readWorkflow(file: string): Promise<Workflow> {
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
export async function encodeImages(images: readonly ImageSource[]): Promise<Record<string, string>> {
  const encoded = await Promise.all(
    images.map(async ({ name, path }) => {
      try {
        return [name, (await Bun.file(path).bytes()).toBase64()] as const;
      } catch (error) {
        throw usageError(`cannot read image ${path}: ${describeFsError(error)}`);
      }
    }),
  );
  return Object.fromEntries(encoded);
}

/** The original handler's input: `reference_images` maps names to base64. */
export const buildJobInput = (workflow: Workflow, referenceImages: Record<string, string>) => ({
  workflow,
  reference_images: referenceImages,
  return_base64: true,
});

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
