import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExitCode } from "../lib/errors.ts";
import { decodeImages, extensionFromBytes, formatBytes, openCommand, outputName, saveImages } from "../lib/save.ts";
import { thrown, rejected } from "./helpers.ts";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures");
const RESPONSES = join(FIXTURES, "responses");
const fixtureJob = async (name: string) => (await Bun.file(join(RESPONSES, name)).json()) as { id: string; output?: unknown };

const bytes = (...values: (number | string)[]) =>
  new Uint8Array(values.flatMap((v) => (typeof v === "string" ? [...v].map((c) => c.charCodeAt(0)) : [v])));

// 2026-01-02 03:04:05 local time, whatever TZ the tests run in
const WHEN = new Date(2026, 0, 2, 3, 4, 5);
const STAMP = "20260102_030405";

const PNG = bytes(0x89, "PNG\r\n", 0x1a, "\n", 1, 2, 3);
const JPG = bytes(0xff, 0xd8, 0xff, 0xe0, 0, 0x10, "JFIF", 0);
const WEBP = bytes("RIFF", 4, 0, 0, 0, "WEBPVP8 ");
const GIF = bytes("GIF89a", 1, 0, 1, 0);
const MP4 = bytes(0, 0, 0, 0x20, "ftypisom", 0, 0, 2, 0);
const WEBM = bytes(0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81);

describe("extensionFromBytes", () => {
  const cases: [string, Uint8Array, string][] = [
    ["png", PNG, "png"],
    ["jpg", JPG, "jpg"],
    ["webp", WEBP, "webp"],
    ["gif (89a)", GIF, "gif"],
    ["gif (87a)", bytes("GIF87a", 0), "gif"],
    ["mp4", MP4, "mp4"],
    ["webm", WEBM, "webm"],
    ["RIFF that is not WEBP (wav)", bytes("RIFF", 4, 0, 0, 0, "WAVEfmt "), "png"],
    ["unknown", bytes("hello world"), "png"],
    ["empty", new Uint8Array(0), "png"],
    ["a truncated png signature", bytes(0x89, 0x50), "png"],
  ];
  for (const [what, input, expected] of cases) test(`${what} → ${expected}`, () => expect(extensionFromBytes(input)).toBe(expected));

  test("the fixture tiny.png → png", async () => {
    expect(extensionFromBytes(new Uint8Array(await readFile(join(FIXTURES, "tiny.png"))))).toBe("png");
  });
});

describe("outputName", () => {
  const cases: [Date, number, string, string][] = [
    [WHEN, 1, "png", `output_${STAMP}_001.png`],
    [WHEN, 12, "jpg", `output_${STAMP}_012.jpg`],
    [WHEN, 999, "webp", `output_${STAMP}_999.webp`],
    [WHEN, 1000, "png", `output_${STAMP}_1000.png`],
    [new Date(2025, 11, 31, 23, 59, 59), 7, "gif", "output_20251231_235959_007.gif"],
  ];
  for (const [date, index, extension, expected] of cases) {
    test(`${date.toString()} #${index} .${extension} → ${expected}`, () => expect(outputName(date, index, extension)).toBe(expected));
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
    [1_500_000_000, "1.5 GB"],
    [4_200_000_000_000, "4.2 TB"],
  ];
  for (const [n, expected] of cases) test(`${n} → ${expected}`, () => expect(formatBytes(n)).toBe(expected));
});

describe("decodeImages", () => {
  test("the fixture seed-completed.json → its two PNGs, byte for byte", async () => {
    const job = await fixtureJob("seed-completed.json");
    const strings = (job.output as { images: string[] }).images;
    const images = decodeImages(job.output, job.id);
    expect(images).toHaveLength(2);
    for (const [i, image] of images.entries()) {
      expect(image).toEqual(new Uint8Array(Buffer.from(strings[i]!, "base64")));
      expect(extensionFromBytes(image)).toBe("png");
    }
    expect(images[0]).not.toEqual(images[1]);
  });

  const tiny = new Uint8Array(Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAI", "base64"));
  const ok: [string, unknown, Uint8Array[]][] = [
    ["bare base64", { images: [Buffer.from(tiny).toBase64()] }, [tiny]],
    ["a data: URI", { images: [`data:image/png;base64,${Buffer.from(tiny).toBase64()}`] }, [tiny]],
    ["base64 with line breaks", { images: [Buffer.from(tiny).toBase64().replace(/(.{8})/g, "$1\n")] }, [tiny]],
    ["several, in order", { images: [Buffer.from(PNG).toBase64(), Buffer.from(JPG).toBase64()] }, [PNG, JPG]],
  ];
  for (const [what, output, expected] of ok) {
    test(`${what} → the bytes`, () => expect(decodeImages(output, "j")).toEqual(expected));
  }

  const refused: [string, unknown, ExitCode, RegExp][] = [
    ["no output (completed-without-output)", undefined, ExitCode.jobFailed, /^job j completed without outputs/],
    ["null output", null, ExitCode.jobFailed, /completed without outputs/],
    ["an empty list", { images: [] }, ExitCode.jobFailed, /completed without outputs/],
    ["invalid base64", { images: ["not*base64!"] }, ExitCode.save, /^job j: image 1 is not valid base64$/],
    ["the second image invalid", { images: [Buffer.from(PNG).toBase64(), "%%%"] }, ExitCode.save, /image 2 is not valid base64/],
    ["objects instead of strings (worker-comfyui 5)", { images: [{ filename: "a.png", type: "base64", data: "AAAA" }] }, ExitCode.save, /no list of base64 images/],
    ["no images key", { status: "success", message: "iVBOR" }, ExitCode.save, /no list of base64 images/],
    ["images not a list", { images: "iVBOR" }, ExitCode.save, /no list of base64 images/],
    ["a string output", "done", ExitCode.save, /no list of base64 images/],
  ];
  for (const [what, output, exitCode, message] of refused) {
    test(`${what} → exit ${exitCode}`, () => {
      const error = thrown(() => decodeImages(output, "j"));
      expect(error.exitCode).toBe(exitCode);
      expect(error.message).toMatch(message);
    });
  }

  const fixtures: [string, ExitCode][] = [
    ["completed-without-output.json", ExitCode.jobFailed],
    ["worker-comfyui-5-no-images.json", ExitCode.jobFailed],
    ["worker-comfyui-5-completed.json", ExitCode.save],
  ];
  for (const [name, exitCode] of fixtures) {
    test(`the fixture ${name} → exit ${exitCode}`, async () => {
      const job = await fixtureJob(name);
      const error = thrown(() => decodeImages(job.output, job.id));
      expect(error.exitCode).toBe(exitCode);
      expect(error.message).toContain(job.id);
    });
  }
});

describe("saveImages", () => {
  let tmp = "";
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), "send-to-runpod-save-"));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test("writes each image with its exact bytes, named in order, creating the folder", async () => {
    const dir = join(tmp, "out", "nested");
    const saved = await saveImages([PNG, JPG, WEBP], dir, WHEN);
    expect(saved).toEqual([
      { path: join(dir, `output_${STAMP}_001.png`), bytes: PNG.length },
      { path: join(dir, `output_${STAMP}_002.jpg`), bytes: JPG.length },
      { path: join(dir, `output_${STAMP}_003.webp`), bytes: WEBP.length },
    ]);
    expect(new Uint8Array(await readFile(saved[0]!.path))).toEqual(PNG);
    expect(new Uint8Array(await readFile(saved[1]!.path))).toEqual(JPG);
    expect(new Uint8Array(await readFile(saved[2]!.path))).toEqual(WEBP);
    expect((await readdir(dir)).sort()).toEqual([`output_${STAMP}_001.png`, `output_${STAMP}_002.jpg`, `output_${STAMP}_003.webp`]);
  });

  test("never overwrites: an existing _001.png keeps its bytes and the new file takes the next index", async () => {
    const existing = join(tmp, `output_${STAMP}_001.png`);
    const old = bytes("old result, keep me");
    await writeFile(existing, old);
    const saved = await saveImages([PNG, PNG], tmp, WHEN);
    expect(saved.map((s) => s.path)).toEqual([join(tmp, `output_${STAMP}_002.png`), join(tmp, `output_${STAMP}_003.png`)]);
    expect(new Uint8Array(await readFile(existing))).toEqual(old);
    expect(new Uint8Array(await readFile(saved[0]!.path))).toEqual(PNG);
    expect(new Uint8Array(await readFile(saved[1]!.path))).toEqual(PNG);
  });

  test("a second save in the same second does not touch the first", async () => {
    const first = await saveImages([PNG], tmp, WHEN);
    const second = await saveImages([GIF], tmp, WHEN);
    const third = await saveImages([PNG], tmp, WHEN);
    expect(first[0]!.path).toBe(join(tmp, `output_${STAMP}_001.png`));
    expect(second[0]!.path).toBe(join(tmp, `output_${STAMP}_001.gif`));
    expect(third[0]!.path).toBe(join(tmp, `output_${STAMP}_002.png`));
    expect(new Uint8Array(await readFile(first[0]!.path))).toEqual(PNG);
    expect(new Uint8Array(await readFile(second[0]!.path))).toEqual(GIF);
  });

  test("leaves no temporary file behind", async () => {
    await writeFile(join(tmp, `output_${STAMP}_001.png`), "x");
    await saveImages([PNG, JPG, GIF], tmp, WHEN);
    const names = await readdir(tmp);
    expect(names.filter((n) => n.endsWith(".tmp") || n.startsWith("."))).toEqual([]);
    expect(names).toHaveLength(4);
  });

  test("no images → nothing written, the folder still created", async () => {
    const dir = join(tmp, "empty-run");
    expect(await saveImages([], dir, WHEN)).toEqual([]);
    expect(await readdir(dir)).toEqual([]);
  });

  test("an output folder under a regular file → exit 6, nothing written", async () => {
    await writeFile(join(tmp, "afile"), "I am a file");
    const dir = join(tmp, "afile", "out");
    const error = await rejected(saveImages([PNG], dir, WHEN));
    expect(error.exitCode).toBe(ExitCode.save);
    expect(error.message).toBe(`cannot create the output folder ${dir}: a part of the path is not a directory`);
    expect(await readdir(tmp)).toEqual(["afile"]);
  });

  test("an output 'folder' that is a regular file → exit 6, the file untouched", async () => {
    const file = join(tmp, "afile");
    await writeFile(file, "I am a file");
    const error = await rejected(saveImages([PNG], file, WHEN));
    expect(error.exitCode).toBe(ExitCode.save);
    expect(error.message).toContain(file);
    expect(await readFile(file, "utf8")).toBe("I am a file");
  });
});

describe("openCommand", () => {
  const cases: [NodeJS.Platform, string[]][] = [
    ["darwin", ["open", "/out/a b.png"]],
    ["win32", ["rundll32", "url.dll,FileProtocolHandler", "/out/a b.png"]],
    ["linux", ["xdg-open", "/out/a b.png"]],
    ["freebsd", ["xdg-open", "/out/a b.png"]],
  ];
  for (const [platform, expected] of cases) {
    test(`${platform} → ${expected.join(" ")}`, () => expect(openCommand(platform, "/out/a b.png")).toEqual(expected));
  }
});
