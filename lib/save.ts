// Results out: decode the job's images, write each without ever overwriting or leaving a partial
// file, and open them. Naming and decoding are pure; writing and opening are thin.
import { link, mkdir, rename, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Job } from "./api.ts";
import { CliError, ExitCode } from "./errors.ts";
import { describeFsError, formatBytes } from "./io.ts";

/** Magic numbers → extension, or undefined when nothing matches. */
export function extensionFromBytes(bytes: Uint8Array): string | undefined {
  const at = (offset: number, ...sig: number[]) => sig.every((b, i) => bytes[offset + i] === b);
  const ascii = (offset: number, text: string) => at(offset, ...[...text].map((c) => c.charCodeAt(0)));
  if (at(0, 0x89, 0x50, 0x4e, 0x47)) return "png";
  if (at(0, 0xff, 0xd8, 0xff)) return "jpg";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "webp";
  if (ascii(0, "RIFF") && ascii(8, "WAVE")) return "wav";
  if (ascii(0, "GIF8")) return "gif";
  if (ascii(4, "ftyp")) return "mp4";
  if (at(0, 0x1a, 0x45, 0xdf, 0xa3)) return "webm";
  if (ascii(0, "fLaC")) return "flac";
  // An MPEG audio frame sync with a layer; layer 00 is AAC's ADTS, not mp3.
  if (ascii(0, "ID3") || (bytes[0] === 0xff && ((bytes[1] ?? 0) & 0xe0) === 0xe0 && ((bytes[1] ?? 0) & 0x06) !== 0)) return "mp3";
  return undefined;
}

const MEDIA_EXTENSIONS = new Set(["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "avif", "mp4", "webm", "mov", "mkv", "wav", "mp3", "flac", "ogg", "opus", "m4a"]);

/** The bytes decide; the worker's file name second; png last (the original handler's images are PNG). */
export function chooseExtension(bytes: Uint8Array, filename?: string): string {
  const named = filename && /\.([A-Za-z0-9]{1,5})$/.exec(filename)?.[1]?.toLowerCase();
  // Only media: a worker's "run.bat" must never become a file the viewer would execute.
  return extensionFromBytes(bytes) ?? (named && MEDIA_EXTENSIONS.has(named) ? named : "png");
}

/** output_YYYYMMDD_HHMMSS_NNN.EXT in local time. */
export function outputName(date: Date, index: number, extension: string, prefix = ""): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  const day = `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`;
  const time = `${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
  return `${prefix}output_${day}_${time}_${pad(index, 3)}.${extension}`;
}


const MIME: Record<string, string> = {
  png: "image/png",
  jpg: "image/jpeg",
  webp: "image/webp",
  gif: "image/gif",
  mp4: "video/mp4",
  webm: "video/webm",
  wav: "audio/wav",
  mp3: "audio/mpeg",
  flac: "audio/flac",
};

export const sha256Hex = (data: string | Uint8Array) => new Bun.CryptoHasher("sha256").update(data).digest("hex");

/** A worker-given file name made harmless: no directories, no `..`, no control characters. */
export function safeFileName(name: string): string | undefined {
  const base = name.split(/[\\/]/).pop() ?? "";
  const cleaned = base
    .replace(/[\u0000-\u001f\u007f]/g, "")
    .replace(/[^\p{L}\p{N}._ -]/gu, "_")
    .replace(/^[.\s]+/, "")
    .trim();
  // Cut by characters, not UTF-16 units, so no character is split in two.
  return [...cleaned].slice(0, 128).join("") || undefined;
}

/** One output of the job: base64 to decode, a URL to download (then `bytes`), or why it cannot be had. */
export interface OutputItem {
  base64?: string;
  url?: string;
  bytes?: Uint8Array;
  /** The worker's name for it, made safe. */
  filename?: string;
  problem?: string;
}

/**
 * A COMPLETED job's `output` → its items and the worker's warnings, whatever the worker's dialect:
 * `images` as base64 strings or `{filename, type: "base64"|"s3_url", data}` objects (worker-comfyui ≥ 4.1),
 * or the older `{status, message}` with base64 or a URL. No output or an empty list is "no outputs"
 * (exit 1, what RunPod leaves of a result over its size limit); a shape without images is exit 6.
 */
export function outputItems(output: unknown, jobId: string): { items: OutputItem[]; warnings: string[] } {
  const { images, message, errors } = (output ?? {}) as { images?: unknown; message?: unknown; errors?: unknown };
  const warnings = Array.isArray(errors) ? errors.map((e) => (typeof e === "string" ? e : JSON.stringify(e))) : [];
  if (output === undefined || output === null || (Array.isArray(images) && images.length === 0)) {
    const why = warnings.length ? `; the worker said: ${warnings.join("; ")}` : " (a result over RunPod's size limit is dropped this way: have the worker upload to S3)";
    throw new CliError(`job ${jobId} completed without outputs${why}`, ExitCode.jobFailed, undefined, "no_outputs");
  }
  if (typeof message === "string" && images === undefined) return { items: [fromData(message)], warnings };
  if (!Array.isArray(images)) return { items: [{ problem: `the output has no list of images: ${JSON.stringify(output).slice(0, 120)}` }], warnings };
  const items = images.map((image, i): OutputItem => {
    if (typeof image === "string") return fromData(image);
    const { data, type, filename } = (image ?? {}) as { data?: unknown; type?: unknown; filename?: unknown };
    const name = typeof filename === "string" ? safeFileName(filename) : undefined;
    if (typeof data === "string" && (type === undefined || type === "base64")) return { base64: data, filename: name };
    if (typeof data === "string" && type === "s3_url") return { url: data, filename: name };
    return { filename: name, problem: `output ${i + 1} has a shape this client does not know: ${JSON.stringify(image).slice(0, 120)}` };
  });
  return { items, warnings };
}

/** A bare string is a URL or base64 (possibly a data: URI). */
const fromData = (text: string): OutputItem => (/^https?:\/\//i.test(text) ? { url: text } : { base64: text });

export interface SavedFile {
  path: string;
  bytes: number;
  type: string;
  /** Only when asked for (--json, --manifest): hashing 20 MB costs tens of milliseconds. */
  sha256?: string;
  /** The worker's own name for the file, made safe. */
  filename?: string;
}

export interface SaveResult {
  saved: SavedFile[];
  /** One line per output that could not be saved. */
  problems: string[];
}

/**
 * Decodes and writes every output it can. Each file is written under a temporary name, then
 * linked into place: link() fails rather than replace an existing file, so nothing is
 * overwritten and no reader ever sees a partial file.
 */
export async function saveOutputs(items: readonly OutputItem[], dir: string, date: Date, maxBytes: number, prefix = "", hash = true): Promise<SaveResult> {
  const result: SaveResult = { saved: [], problems: [] };
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    result.problems.push(`cannot create the output folder ${dir}: ${describeFsError(error)}`);
    return result;
  }
  let index = 1;
  for (const [i, item] of items.entries()) {
    const bytes = decodeItem(item, i, maxBytes);
    if (typeof bytes === "string") {
      result.problems.push(bytes);
      continue;
    }
    const extension = chooseExtension(bytes, item.filename);
    const temporary = join(dir, `.send-to-runpod-${crypto.randomUUID()}.tmp`);
    try {
      await writeFile(temporary, bytes, { flag: "wx" });
      for (;; index++) {
        const path = join(dir, outputName(date, index, extension, prefix));
        if (await placeWithoutOverwrite(temporary, path)) {
          result.saved.push({ path, bytes: bytes.length, type: MIME[extension] ?? "application/octet-stream", ...(hash && { sha256: sha256Hex(bytes) }), ...(item.filename && { filename: item.filename }) });
          index++;
          break;
        }
      }
    } catch (error) {
      await unlink(temporary).catch(() => {});
      // A full disk or a read-only folder will refuse the rest too.
      result.problems.push(`cannot write into ${dir}: ${describeFsError(error)}`);
      const rest = items.length - i - 1;
      if (rest > 0) result.problems.push(`${rest} more output${rest > 1 ? "s" : ""} not attempted`);
      break;
    }
  }
  return result;
}

/** The bytes of one output, or why not. */
function decodeItem(item: OutputItem, i: number, maxBytes: number): Uint8Array | string {
  if (item.bytes) return item.bytes.length ? item.bytes : `output ${i + 1} is empty`;
  if (item.base64 === undefined) return item.problem ?? `output ${i + 1} has no data`;
  const base64 = item.base64.replace(/^data:[^,]*;base64,/, "").replace(/\s+/g, "");
  if (!base64) return `output ${i + 1} is empty`;
  const size = Math.floor((base64.length * 3) / 4) - (base64.endsWith("==") ? 2 : base64.endsWith("=") ? 1 : 0);
  if (size > maxBytes) return `output ${i + 1} is ${formatBytes(size)}, over --max-output-bytes (${formatBytes(maxBytes)})`;
  try {
    return Uint8Array.fromBase64(base64);
  } catch {
    return `output ${i + 1} is not valid base64`;
  }
}

/** Keeps a job's raw answer where the user will look, so nothing paid for is lost. Returns its path. */
export async function keepRawOutput(dir: string, job: Job): Promise<string> {
  // Every character that could matter in a path becomes "_": distinct ids stay distinct enough, none escapes `dir`.
  const path = join(dir, `job-${job.id.replace(/[^A-Za-z0-9_-]/g, "_") || "unknown"}.json`);
  await mkdir(dir, { recursive: true });
  await writeFileAtomically(path, `${JSON.stringify(job, null, 2)}\n`);
  return path;
}

/** Write, then rename: a reader sees the old file or the new one, never half of one. */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, text);
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => {});
    throw error;
  }
}

async function placeWithoutOverwrite(temporary: string, path: string): Promise<boolean> {
  try {
    await link(temporary, path);
    await unlink(temporary);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    // File systems without hard links (FAT, some network mounts): check, then rename.
    if (code === "EPERM" || code === "ENOTSUP" || code === "ENOSYS" || code === "EXDEV") {
      if (await stat(path).then(() => true, () => false)) return false;
      await rename(temporary, path);
      return true;
    }
    throw error;
  }
}

/** The platform's "open with the default viewer" command. */
export function openCommand(platform: NodeJS.Platform, path: string): string[] {
  if (platform === "darwin") return ["open", path];
  // Not `cmd /c start`: cmd would interpret & and ^ in the path.
  if (platform === "win32") return ["rundll32", "url.dll,FileProtocolHandler", path];
  return ["xdg-open", path];
}

/** Opens each file; a viewer that is missing or fails is the caller's warning, never an error. */
export async function openFiles(paths: readonly string[], platform = process.platform): Promise<string[]> {
  const failures: string[] = [];
  for (const path of paths) {
    try {
      const child = Bun.spawn(openCommand(platform, path), { stdio: ["ignore", "ignore", "ignore"] });
      if ((await child.exited) !== 0) failures.push(`${path} (viewer exited with ${child.exitCode})`);
    } catch (error) {
      failures.push(`${path} (${(error as Error).message})`);
    }
  }
  return failures;
}
