// Results out: decode the job's images, write each without ever overwriting or leaving a partial
// file, and open them. Naming and decoding are pure; writing and opening are thin.
import { link, mkdir, rename, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CliError, ExitCode } from "./errors.ts";
import { describeFsError } from "./io.ts";

/** Magic numbers → extension; png when nothing matches (the handler's images are PNG). */
export function extensionFromBytes(bytes: Uint8Array): string {
  const at = (offset: number, ...sig: number[]) => sig.every((b, i) => bytes[offset + i] === b);
  const ascii = (offset: number, text: string) => at(offset, ...[...text].map((c) => c.charCodeAt(0)));
  if (at(0, 0x89, 0x50, 0x4e, 0x47)) return "png";
  if (at(0, 0xff, 0xd8, 0xff)) return "jpg";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "webp";
  if (ascii(0, "GIF8")) return "gif";
  if (ascii(4, "ftyp")) return "mp4";
  if (at(0, 0x1a, 0x45, 0xdf, 0xa3)) return "webm";
  return "png";
}

/** output_YYYYMMDD_HHMMSS_NNN.EXT in local time. */
export function outputName(date: Date, index: number, extension: string): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  const day = `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`;
  const time = `${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
  return `output_${day}_${time}_${pad(index, 3)}.${extension}`;
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

/** The images of a COMPLETED job's `output.images`, as base64 strings (a data: URI prefix is tolerated). */
export function decodeImages(output: unknown, jobId: string): Uint8Array[] {
  const images = (output as { images?: unknown } | undefined)?.images;
  if (output === undefined || output === null || (Array.isArray(images) && images.length === 0)) {
    throw new CliError(`job ${jobId} completed without outputs (a result over RunPod's size limit is dropped this way)`, ExitCode.jobFailed);
  }
  if (!Array.isArray(images) || !images.every((x) => typeof x === "string")) {
    throw new CliError(`job ${jobId} completed, but its output has no list of base64 images: ${JSON.stringify(output).slice(0, 200)}`, ExitCode.save);
  }
  return images.map((text, i) => {
    try {
      return Uint8Array.fromBase64(text.replace(/^data:[^,]*;base64,/, "").replace(/\s+/g, ""));
    } catch {
      throw new CliError(`job ${jobId}: image ${i + 1} is not valid base64`, ExitCode.save);
    }
  });
}

export interface SavedFile {
  path: string;
  bytes: number;
}

/**
 * Writes each file next to its final name, then links it into place: link() fails rather than
 * replace an existing file, so nothing is overwritten and no reader ever sees a partial file.
 */
export async function saveImages(images: readonly Uint8Array[], dir: string, date: Date): Promise<SavedFile[]> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new CliError(`cannot create the output folder ${dir}: ${describeFsError(error)}`, ExitCode.save);
  }
  const saved: SavedFile[] = [];
  let index = 1;
  for (const bytes of images) {
    const extension = extensionFromBytes(bytes);
    const temporary = join(dir, `.send-to-runpod-${process.pid}-${Date.now()}-${index}.tmp`);
    try {
      await writeFile(temporary, bytes, { flag: "wx" });
      for (;; index++) {
        const path = join(dir, outputName(date, index, extension));
        if (await placeWithoutOverwrite(temporary, path)) {
          saved.push({ path, bytes: bytes.length });
          index++;
          break;
        }
      }
    } catch (error) {
      await unlink(temporary).catch(() => {});
      const kept = saved.length ? ` (${saved.length} file${saved.length > 1 ? "s" : ""} saved before it)` : "";
      throw new CliError(`cannot save results in ${dir}: ${describeFsError(error)}${kept}`, ExitCode.save);
    }
  }
  return saved;
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
