import { afterEach, beforeEach, describe, expect, spyOn, test } from "bun:test";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { Job } from "../lib/api.ts";
import { ExitCode } from "../lib/errors.ts";
import {
  chooseExtension,
  extensionFromBytes,
  keepRawOutput,
  openCommand,
  type OutputItem,
  outputItems,
  outputName,
  safeFileName,
  saveOutputs,
  sha256Hex,
  writeFileAtomically,
} from "../lib/save.ts";
import { thrown } from "./helpers.ts";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures");
const RESPONSES = join(FIXTURES, "responses");
const fixtureJob = async (name: string) => (await Bun.file(join(RESPONSES, name)).json()) as Job;

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
const WAV = bytes("RIFF", 36, 0, 0, 0, "WAVEfmt ");
const MP3_ID3 = bytes("ID3", 4, 0, 0, 0, 0, 0, 0x21);
const MP3_FRAME = bytes(0xff, 0xfb, 0x90, 0x64, 0, 0, 0, 0);
const FLAC = bytes("fLaC", 0, 0, 0, 0x22);
const UNKNOWN = bytes("just some bytes");

/** An output as a worker sends it. */
const item = (data: Uint8Array, filename?: string): OutputItem => ({ base64: Buffer.from(data).toBase64(), ...(filename && { filename }) });
/** A hash that does not come from lib/save.ts. */
const independentSha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
const isRoot = process.getuid?.() === 0;

describe("extensionFromBytes", () => {
  const cases: [string, Uint8Array, string | undefined][] = [
    ["png", PNG, "png"],
    ["jpg", JPG, "jpg"],
    ["jpg (EXIF)", bytes(0xff, 0xd8, 0xff, 0xe1, 0, 0x10, "Exif"), "jpg"],
    ["webp", WEBP, "webp"],
    ["gif (89a)", GIF, "gif"],
    ["gif (87a)", bytes("GIF87a", 0), "gif"],
    ["mp4", MP4, "mp4"],
    ["webm", WEBM, "webm"],
    ["wav (RIFF … WAVE)", WAV, "wav"],
    ["mp3 with an ID3 tag", MP3_ID3, "mp3"],
    ["mp3 from its first frame (sync bits)", MP3_FRAME, "mp3"],
    ["mp3, MPEG-2 frame", bytes(0xff, 0xf3, 0x40, 0xc4), "mp3"],
    ["flac", FLAC, "flac"],
    ["RIFF that is neither WEBP nor WAVE (avi)", bytes("RIFF", 4, 0, 0, 0, "AVI LIST"), undefined],
    ["0xff not followed by sync bits", bytes(0xff, 0x00, 1, 2), undefined],
    ["unknown", bytes("hello world"), undefined],
    ["empty", new Uint8Array(0), undefined],
    ["a truncated png signature", bytes(0x89, 0x50), undefined],
  ];
  for (const [what, input, expected] of cases) test(`${what} → ${expected}`, () => expect(extensionFromBytes(input)).toBe(expected));

  test("the fixture tiny.png → png", async () => {
    expect(extensionFromBytes(new Uint8Array(await readFile(join(FIXTURES, "tiny.png"))))).toBe("png");
  });
});

describe("chooseExtension", () => {
  // [bytes, the worker's file name, extension]: the bytes first, the name second, png last
  const cases: [string, Uint8Array, string | undefined, string][] = [
    ["png bytes named .jpg", PNG, "ComfyUI_00001_.jpg", "png"],
    ["mp3 bytes named .wav", MP3_ID3, "audio.wav", "mp3"],
    ["flac bytes, no name", FLAC, undefined, "flac"],
    ["unknown bytes named .opus", UNKNOWN, "ComfyUI_00001_.opus", "opus"],
    ["unknown bytes named .PNG", UNKNOWN, "X.PNG", "png"],
    ["unknown bytes named .JPEG", UNKNOWN, "photo.JPEG", "jpeg"],
    ["unknown bytes named .tar.gz: not media, so png", UNKNOWN, "a.tar.gz", "png"],
    ["unknown bytes named .mp4", UNKNOWN, "clip.mp4", "mp4"],
    ["unknown bytes, no name", UNKNOWN, undefined, "png"],
    ["unknown bytes, a name without extension", UNKNOWN, "output", "png"],
    ["unknown bytes, an empty name", UNKNOWN, "", "png"],
    ["unknown bytes, a name ending in a dot", UNKNOWN, "x.", "png"],
    ["unknown bytes, an extension over 5 characters", UNKNOWN, "a.toolong", "png"],
    ["unknown bytes, an extension with a symbol", UNKNOWN, "a.p_g", "png"],
    ["empty bytes named .webp", new Uint8Array(0), "x.webp", "webp"],
  ];
  for (const [what, data, filename, expected] of cases) test(`${what} → ${expected}`, () => expect(chooseExtension(data, filename)).toBe(expected));

  // Saved files are opened: a worker's ".bat" or ".exe" must never become one that would run.
  for (const name of ["run.bat", "setup.exe", "x.cmd", "x.js", "x.vbs", "x.hta", "x.scr", "x.ps1", "x.sh"]) {
    test(`unknown bytes named ${name} are not saved under an executable extension`, () => {
      expect(chooseExtension(bytes("@echo off\r\n"), name)).not.toBe(name.split(".").pop());
    });
  }
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

  // a batch run's prefix with --flat (lib/batch.ts runOutput)
  const prefixed: [string, number, string, string][] = [
    ["", 1, "png", `output_${STAMP}_001.png`],
    ["001_", 1, "png", `001_output_${STAMP}_001.png`],
    ["042_", 3, "jpg", `042_output_${STAMP}_003.jpg`],
    ["1000_", 12, "webp", `1000_output_${STAMP}_012.webp`],
  ];
  for (const [prefix, index, extension, expected] of prefixed) {
    test(`prefix ${JSON.stringify(prefix)} #${index} .${extension} → ${expected}`, () => expect(outputName(WHEN, index, extension, prefix)).toBe(expected));
  }
});

describe("sha256Hex", () => {
  const cases: [string, string | Uint8Array, string][] = [
    ["empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    ['"abc"', "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    ["the bytes of abc", bytes("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    ["a PNG", PNG, independentSha256(PNG)],
  ];
  for (const [what, data, expected] of cases) test(`${what} → ${expected.slice(0, 12)}…`, () => expect(sha256Hex(data)).toBe(expected));
});

describe("safeFileName", () => {
  const cases: [string, string | undefined][] = [
    ["ComfyUI_00001_.png", "ComfyUI_00001_.png"],
    // no directories: only the last part is kept
    ["../../etc/passwd", "passwd"],
    ["/etc/passwd", "passwd"],
    ["C:\\x\\y.png", "y.png"],
    ["..\\..\\windows\\win.ini", "win.ini"],
    ["a/b/../c.png", "c.png"],
    ["out/", undefined],
    // control characters dropped, not replaced
    ["a\u0000b\nc\td\r.png", "abcd.png"],
    ["\u007fdel.png", "del.png"],
    ["\u001b[31mred.png", "_31mred.png"],
    // nothing hidden, nothing that is only dots
    ["..", undefined],
    [".", undefined],
    [".hidden", "hidden"],
    ["...x.png", "x.png"],
    [" . x.png", "x.png"],
    ["", undefined],
    ["   ", undefined],
    // letters of any script are kept; other symbols become _
    ["Bild_äöü_日本語.png", "Bild_äöü_日本語.png"],
    ["фото 1.png", "фото 1.png"],
    ['a:b*c?"<>|.png', "a_b_c_____.png"],
    ["emoji😀.png", "emoji_.png"],
    ["\u202egnp.exe", "_gnp.exe"], // right-to-left override
    ["x".repeat(200), "x".repeat(128)],
    [`${"x".repeat(200)}.png`, "x".repeat(128)],
    ["x".repeat(128), "x".repeat(128)],
  ];
  for (const [name, expected] of cases) {
    test(`${JSON.stringify(name.length > 40 ? `${name.slice(0, 20)}…(${name.length})` : name)} → ${JSON.stringify(expected?.length && expected.length > 40 ? `${expected.slice(0, 20)}…(${expected.length})` : expected)}`, () => {
      expect(safeFileName(name)).toBe(expected);
    });
  }

  test("whatever the input, the result is one harmless path component of at most 128 characters", () => {
    const hostile = ["../../../../root/.ssh/id_rsa", "..\\..\\..", "/", "\\", "a\\..\\..\\b", "....//....//x", "\u0000", "con", "x\u0085y", `${"../".repeat(100)}z`, "%2e%2e%2fx", "~/x", "$(rm -rf)", "a\u2028b"];
    for (const name of hostile) {
      const safe = safeFileName(name);
      if (safe === undefined) continue;
      expect(safe).not.toMatch(/[/\\\u0000-\u001f\u007f]/);
      expect(safe).not.toStartWith(".");
      expect(safe).not.toBe("..");
      expect(safe.length).toBeLessThanOrEqual(128);
      expect(basename(safe)).toBe(safe);
    }
  });

  // U+1D49C is a letter outside the BMP, kept, and sits at the cut.
  test("a cut never splits a character: the name stays well-formed", () => {
    const safe = safeFileName(`${"a".repeat(127)}𝒜.png`)!;
    expect(safe.isWellFormed()).toBe(true);
  });
});

describe("outputItems", () => {
  const PNG_B64 = (data: string) => expect(Uint8Array.fromBase64(data.replace(/^data:image\/png;base64,/, "")).slice(0, 4)).toEqual(PNG.slice(0, 4));

  test("the fixture seed-completed.json → its two base64 strings, no warnings", async () => {
    const job = await fixtureJob("seed-completed.json");
    const strings = (job.output as { images: string[] }).images;
    expect(outputItems(job.output, job.id)).toEqual({ items: strings.map((base64) => ({ base64 })), warnings: [] });
  });

  test("the fixture worker-comfyui-5-completed.json → data and the worker's file names; its errors are warnings", async () => {
    const job = await fixtureJob("worker-comfyui-5-completed.json");
    const images = (job.output as { images: { data: string }[] }).images;
    expect(outputItems(job.output, job.id)).toEqual({
      items: [
        { base64: images[0]!.data, filename: "ComfyUI_00001_.png" },
        { base64: images[1]!.data, filename: "ComfyUI_00002_.png" },
      ],
      warnings: ["Skipping temp image ComfyUI_temp_abcde_00001_.png"],
    });
  });

  test("the fixture worker-comfyui-5-s3.json → a URL to download, with its name", async () => {
    const job = await fixtureJob("worker-comfyui-5-s3.json");
    expect(outputItems(job.output, job.id)).toEqual({
      items: [{ url: "https://bucket.s3.us-east-1.amazonaws.com/11-26/a1b2c3d4-0000-4000-8000-000000000002-u1/c67ad621.png?X-Amz-Signature=...", filename: "ComfyUI_00001_.png" }],
      warnings: [],
    });
  });

  test("the fixture worker-comfyui-legacy-completed.json ({status, message}) → the message's bare base64", async () => {
    const job = await fixtureJob("worker-comfyui-legacy-completed.json");
    const { items, warnings } = outputItems(job.output, job.id);
    expect([items, warnings]).toEqual([[{ base64: (job.output as { message: string }).message }], []]);
    PNG_B64(items[0]!.base64!);
  });

  test("the fixture worker-comfyui-legacy-datauri.json → the data URI, kept for saveOutputs to strip", async () => {
    const job = await fixtureJob("worker-comfyui-legacy-datauri.json");
    const { items } = outputItems(job.output, job.id);
    expect(items).toEqual([{ base64: expect.stringMatching(/^data:image\/png;base64,iVBOR/) }]);
    PNG_B64(items[0]!.base64!);
  });

  // worker-comfyui's local server, recorded: every completed answer is {images: [{filename, type: "base64", data}]}
  for (const name of ["01-runsync-img2img.json", "04-status-POST-completed.json", "06-runsync-txt2img-batch2.json", "07-runsync-worker-test-input.json", "18-runsync-seed-contract-input.json"]) {
    test(`the fixture worker-comfyui-local/${name} → base64 items with the worker's names`, async () => {
      const job = await fixtureJob(`worker-comfyui-local/${name}`);
      const images = (job.output as { images: { filename: string; data: string }[] }).images;
      const { items, warnings } = outputItems(job.output, job.id);
      expect(items).toEqual(images.map(({ filename, data }) => ({ base64: data, filename })));
      expect(items.length).toBeGreaterThan(0);
      expect(warnings).toEqual([]);
    });
  }

  const cases: [string, unknown, OutputItem[]][] = [
    ["a base64 string", { images: ["AAAA"] }, [{ base64: "AAAA" }]],
    ["a data: URI (decoded later)", { images: ["data:image/png;base64,AAAA"] }, [{ base64: "data:image/png;base64,AAAA" }]],
    ["an https string", { images: ["https://b.example/x.png"] }, [{ url: "https://b.example/x.png" }]],
    ["an http string (download decides)", { images: ["HTTP://b.example/x.png"] }, [{ url: "HTTP://b.example/x.png" }]],
    ["an object of type base64", { images: [{ data: "AAAA", type: "base64", filename: "out.png" }] }, [{ base64: "AAAA", filename: "out.png" }]],
    ["an object without a type", { images: [{ data: "AAAA" }] }, [{ base64: "AAAA", filename: undefined }]],
    ["an object of type s3_url", { images: [{ data: "https://b.example/x.png", type: "s3_url", filename: "x.png" }] }, [{ url: "https://b.example/x.png", filename: "x.png" }]],
    ["an s3_url with a hostile name", { images: [{ data: "https://b.example/x", type: "s3_url", filename: "../../.ssh/authorized_keys" }] }, [{ url: "https://b.example/x", filename: "authorized_keys" }]],
    ["a hostile file name is made safe", { images: [{ data: "AAAA", type: "base64", filename: "../../.bashrc" }] }, [{ base64: "AAAA", filename: "bashrc" }]],
    ["a file name with nothing left", { images: [{ data: "AAAA", type: "base64", filename: ".." }] }, [{ base64: "AAAA", filename: undefined }]],
    ["a file name that is not a string", { images: [{ data: "AAAA", filename: 7 }] }, [{ base64: "AAAA", filename: undefined }]],
    ["an unknown type", { images: [{ data: "AAAA", type: "gcs_url", filename: "x.png" }] }, [{ filename: "x.png", problem: expect.stringMatching(/^output 1 has a shape this client does not know: .*gcs_url/) }]],
    ["data that is not a string", { images: [{ data: 5, type: "base64" }] }, [{ filename: undefined, problem: expect.stringMatching(/^output 1 has a shape/) }]],
    ["null", { images: [null] }, [{ filename: undefined, problem: "output 1 has a shape this client does not know: null" }]],
    ["a number", { images: [5] }, [{ filename: undefined, problem: "output 1 has a shape this client does not know: 5" }]],
    ["a good one, then a bad one", { images: ["AAAA", { type: "url" }] }, [{ base64: "AAAA" }, { filename: undefined, problem: expect.stringMatching(/^output 2 has a shape/) }]],
    // the older worker-comfyui (≤ 4.0): {status, message}, the message base64 or a URL
    ["{status, message} with base64", { status: "success", message: "iVBOR", refresh_worker: false }, [{ base64: "iVBOR" }]],
    ["{status, message} with a data URI", { status: "success", message: "data:image/png;base64,iVBOR" }, [{ base64: "data:image/png;base64,iVBOR" }]],
    ["{status, message} with an https URL", { status: "success", message: "https://bucket.example/out.png" }, [{ url: "https://bucket.example/out.png" }]],
    ["images win over a message", { images: ["AAAA"], message: "https://bucket.example/out.png" }, [{ base64: "AAAA" }]],
    // no list of images at all: one item with a problem (exit 6 later, and the raw job kept)
    ["images not a list", { images: "iVBOR" }, [{ problem: expect.stringMatching(/^the output has no list of images: \{"images":"iVBOR"\}/) }]],
    ["a status without images or message", { status: "success" }, [{ problem: 'the output has no list of images: {"status":"success"}' }]],
    ["a message that is not a string", { message: 5 }, [{ problem: expect.stringMatching(/^the output has no list of images/) }]],
    ["a string output", "done", [{ problem: 'the output has no list of images: "done"' }]],
    ["a list output", ["AAAA"], [{ problem: expect.stringMatching(/^the output has no list of images/) }]],
  ];
  for (const [what, output, expected] of cases) {
    test(`${what} → ${expected.length} item(s)`, () => {
      const { items, warnings } = outputItems(output, "j");
      expect(items).toEqual(expected);
      expect(warnings).toEqual([]);
      // each item is exactly one of: base64 to decode, a URL to fetch, or a problem
      for (const item of items) expect([item.base64, item.url, item.problem].filter((x) => x !== undefined)).toHaveLength(1);
    });
  }

  const warned: [string, unknown, string[]][] = [
    ["strings", { images: ["AAAA"], errors: ["Skipping temp image a.png", "second"] }, ["Skipping temp image a.png", "second"]],
    ["objects as JSON", { images: ["AAAA"], errors: [{ node: "9", message: "x" }, 3] }, ['{"node":"9","message":"x"}', "3"]],
    ["not a list: ignored", { images: ["AAAA"], errors: "oops" }, []],
    ["beside a shape this client does not know", { other: 1, errors: ["w"] }, ["w"]],
  ];
  for (const [what, output, warnings] of warned) {
    test(`the worker's errors, ${what} → warnings ${JSON.stringify(warnings)}`, () => expect(outputItems(output, "j").warnings).toEqual(warnings));
  }

  test("a problem quotes at most 120 characters of the output", () => {
    const { items } = outputItems({ other: "x".repeat(500) }, "j");
    expect(items[0]!.problem!.length).toBeLessThan(200);
  });

  const none: [string, unknown][] = [
    ["no output", undefined],
    ["null output", null],
    ["an empty list", { images: [] }],
    ["an empty list beside a status (worker-comfyui 5)", { status: "success_no_images", images: [] }],
  ];
  for (const [what, output] of none) {
    test(`${what} → exit 1, code no_outputs, with the size-limit hint`, () => {
      const error = thrown(() => outputItems(output, "j"));
      expect([error.exitCode, error.code]).toEqual([ExitCode.jobFailed, "no_outputs"]);
      expect(error.message).toBe("job j completed without outputs (a result over RunPod's size limit is dropped this way: have the worker upload to S3)");
    });
  }

  test("success_no_images with the worker's warnings → exit 1, no_outputs, and what the worker said instead of the hint", () => {
    const error = thrown(() => outputItems({ status: "success_no_images", images: [], errors: ["Skipping temp image ComfyUI_temp_1.png", "Node 12: no images"] }, "j"));
    expect([error.exitCode, error.code]).toEqual([ExitCode.jobFailed, "no_outputs"]);
    expect(error.message).toBe("job j completed without outputs; the worker said: Skipping temp image ComfyUI_temp_1.png; Node 12: no images");
  });

  for (const name of ["completed-without-output.json", "worker-comfyui-5-no-images.json"]) {
    test(`the fixture ${name} → exit 1, no_outputs, naming the job`, async () => {
      const job = await fixtureJob(name);
      const error = thrown(() => outputItems(job.output, job.id));
      expect([error.exitCode, error.code]).toEqual([ExitCode.jobFailed, "no_outputs"]);
      expect(error.message).toContain(job.id);
    });
  }
});

describe("saveOutputs", () => {
  let tmp = "";
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), "send-to-runpod-save-"));
  });
  afterEach(async () => {
    await chmod(tmp, 0o755).catch(() => {});
    await rm(tmp, { recursive: true, force: true });
  });

  const MAX = 1_000_000;
  const name = (index: number, extension: string) => `output_${STAMP}_${String(index).padStart(3, "0")}.${extension}`;

  test("sha256 only when asked for: the same bytes saved, no hash computed", async () => {
    const { saved } = await saveOutputs([item(PNG)], tmp, WHEN, MAX, "", false);
    expect(saved[0]!.sha256).toBeUndefined();
    expect(new Uint8Array(await readFile(saved[0]!.path))).toEqual(PNG);
    const hashed = await saveOutputs([item(PNG)], tmp, WHEN, MAX, "", true);
    expect(hashed.saved[0]!.sha256).toBe(new Bun.CryptoHasher("sha256").update(PNG).digest("hex"));
  });
  /** No temporary file, nothing hidden. */
  const leftovers = async (dir: string) => (await readdir(dir)).filter((n) => n.startsWith(".") || n.endsWith(".tmp"));

  test("writes each output with its exact bytes, named in order, creating the folder; path, bytes, type and sha256 of each", async () => {
    const dir = join(tmp, "out", "nested");
    const all = [PNG, JPG, WEBP, GIF, MP4, WEBM, WAV, MP3_ID3, FLAC, UNKNOWN];
    const { saved, problems } = await saveOutputs(all.map((data) => item(data)), dir, WHEN, MAX);
    expect(problems).toEqual([]);
    const types: [string, string][] = [
      ["png", "image/png"],
      ["jpg", "image/jpeg"],
      ["webp", "image/webp"],
      ["gif", "image/gif"],
      ["mp4", "video/mp4"],
      ["webm", "video/webm"],
      ["wav", "audio/wav"],
      ["mp3", "audio/mpeg"],
      ["flac", "audio/flac"],
      ["png", "image/png"], // unknown bytes: png, as the handler's images are
    ];
    expect(saved).toStrictEqual(
      all.map((data, i) => ({ path: join(dir, name(i + 1, types[i]![0])), bytes: data.length, type: types[i]![1], sha256: independentSha256(data) })),
    );
    for (const [i, file] of saved.entries()) expect(new Uint8Array(await readFile(file.path))).toEqual(all[i]!);
    expect((await readdir(dir)).sort()).toEqual(saved.map((f) => basename(f.path)).sort());
  });

  test("a prefix goes before every name; the index still counts from 1", async () => {
    const { saved, problems } = await saveOutputs([item(PNG), item(JPG), item(PNG)], tmp, WHEN, MAX, "007_");
    expect(problems).toEqual([]);
    expect(saved.map((f) => f.path)).toEqual([join(tmp, `007_${name(1, "png")}`), join(tmp, `007_${name(2, "jpg")}`), join(tmp, `007_${name(3, "png")}`)]);
    expect(new Uint8Array(await readFile(saved[1]!.path))).toEqual(JPG);
    expect(await leftovers(tmp)).toEqual([]);
  });

  test("runs of a --flat batch share the folder: each prefix numbers its own files, none overwrites another", async () => {
    const [a, b] = await Promise.all([saveOutputs([item(PNG), item(PNG)], tmp, WHEN, MAX, "001_"), saveOutputs([item(PNG)], tmp, WHEN, MAX, "002_")]);
    const plain = await saveOutputs([item(GIF)], tmp, WHEN, MAX);
    expect(a!.saved.map((f) => basename(f.path))).toEqual([`001_${name(1, "png")}`, `001_${name(2, "png")}`]);
    expect(b!.saved.map((f) => basename(f.path))).toEqual([`002_${name(1, "png")}`]);
    expect(plain.saved.map((f) => basename(f.path))).toEqual([name(1, "gif")]);
    expect((await readdir(tmp)).sort()).toEqual([`001_${name(1, "png")}`, `001_${name(2, "png")}`, `002_${name(1, "png")}`, name(1, "gif")].sort());
  });

  test("with a prefix, an existing file of that prefix is not overwritten: the next index is taken", async () => {
    const existing = join(tmp, `003_${name(1, "png")}`);
    await writeFile(existing, bytes("earlier run"));
    const { saved } = await saveOutputs([item(PNG)], tmp, WHEN, MAX, "003_");
    expect(saved.map((f) => basename(f.path))).toEqual([`003_${name(2, "png")}`]);
    expect(await readFile(existing, "utf8")).toBe("earlier run");
  });

  test("the sha256 is that of the bytes on disk", async () => {
    const { saved } = await saveOutputs([item(PNG), item(JPG)], tmp, WHEN, MAX);
    for (const file of saved) expect(file.sha256).toBe(independentSha256(new Uint8Array(await readFile(file.path))));
    expect(saved[0]!.sha256).not.toBe(saved[1]!.sha256);
  });

  test("the worker's file name is recorded when given, and never used as the path", async () => {
    const { saved } = await saveOutputs([item(PNG, "ComfyUI_00001_.png"), item(JPG), item(GIF, "../../../escape.gif")], tmp, WHEN, MAX);
    expect(saved.map((f) => [basename(f.path), f.filename])).toEqual([
      [name(1, "png"), "ComfyUI_00001_.png"],
      [name(2, "jpg"), undefined],
      [name(3, "gif"), "../../../escape.gif"],
    ]);
    expect("filename" in saved[1]!).toBe(false);
    expect(await readdir(join(tmp, ".."))).not.toContain("escape.gif");
    expect((await readdir(tmp)).sort()).toEqual([name(1, "png"), name(2, "jpg"), name(3, "gif")]);
  });

  const encodings: [string, string][] = [
    ["bare base64", Buffer.from(PNG).toBase64()],
    ["a data: URI", `data:image/png;base64,${Buffer.from(PNG).toBase64()}`],
    ["base64 with line breaks and spaces", Buffer.from(PNG).toBase64().replace(/(.{4})/g, "$1\n ")],
  ];
  for (const [what, base64] of encodings) {
    test(`${what} → the bytes`, async () => {
      const { saved, problems } = await saveOutputs([{ base64 }], tmp, WHEN, MAX);
      expect(problems).toEqual([]);
      expect(new Uint8Array(await readFile(saved[0]!.path))).toEqual(PNG);
    });
  }

  test("the fixture seed-completed.json → two PNGs, byte for byte", async () => {
    const job = await fixtureJob("seed-completed.json");
    const strings = (job.output as { images: string[] }).images;
    const { saved, problems } = await saveOutputs(outputItems(job.output, job.id).items, tmp, WHEN, MAX);
    expect(problems).toEqual([]);
    expect(saved.map((f) => [basename(f.path), f.type])).toEqual([
      [name(1, "png"), "image/png"],
      [name(2, "png"), "image/png"],
    ]);
    for (const [i, file] of saved.entries()) expect(new Uint8Array(await readFile(file.path))).toEqual(new Uint8Array(Buffer.from(strings[i]!, "base64")));
  });

  for (const fixture of ["worker-comfyui-legacy-completed.json", "worker-comfyui-legacy-datauri.json", "worker-comfyui-5-completed.json"]) {
    test(`the fixture ${fixture} → PNGs on disk, byte for byte`, async () => {
      const job = await fixtureJob(fixture);
      const { items } = outputItems(job.output, job.id);
      const { saved, problems } = await saveOutputs(items, tmp, WHEN, MAX);
      expect(problems).toEqual([]);
      expect(saved).toHaveLength(items.length);
      for (const [i, file] of saved.entries()) {
        const expected = Uint8Array.fromBase64(items[i]!.base64!.replace(/^data:image\/png;base64,/, ""));
        expect([basename(file.path), file.type]).toEqual([name(i + 1, "png"), "image/png"]);
        expect(new Uint8Array(await readFile(file.path))).toEqual(expected);
        expect(file.sha256).toBe(independentSha256(expected));
      }
    });
  }

  test("downloaded items (bytes): written as they are; the bytes decide the extension, then the worker's name", async () => {
    const items: OutputItem[] = [
      { url: "https://b.example/1", bytes: PNG, filename: "ComfyUI_00001_.png" },
      { url: "https://b.example/2", bytes: WAV, filename: "audio_00001_.flac" },
      { url: "https://b.example/3", bytes: UNKNOWN, filename: "ComfyUI_00001_.opus" },
      { bytes: UNKNOWN },
    ];
    const { saved, problems } = await saveOutputs(items, tmp, WHEN, MAX);
    expect(problems).toEqual([]);
    expect(saved.map((f) => [basename(f.path), f.type, f.bytes, f.filename])).toEqual([
      [name(1, "png"), "image/png", PNG.length, "ComfyUI_00001_.png"],
      [name(2, "wav"), "audio/wav", WAV.length, "audio_00001_.flac"],
      [name(3, "opus"), "application/octet-stream", UNKNOWN.length, "ComfyUI_00001_.opus"],
      [name(4, "png"), "image/png", UNKNOWN.length, undefined],
    ]);
    for (const [i, file] of saved.entries()) {
      expect(new Uint8Array(await readFile(file.path))).toEqual(new Uint8Array(items[i]!.bytes!));
      expect(file.sha256).toBe(independentSha256(items[i]!.bytes!));
    }
  });

  test("a base64 item named by the worker: unknown bytes take the name's extension", async () => {
    const { saved } = await saveOutputs([item(UNKNOWN, "clip_00001_.webm"), item(GIF, "wrong.png")], tmp, WHEN, MAX);
    expect(saved.map((f) => basename(f.path))).toEqual([name(1, "webm"), name(2, "gif")]);
  });

  test("a URL that was not downloaded → a problem, nothing written", async () => {
    const { saved, problems } = await saveOutputs([{ url: "https://b.example/x.png" }], tmp, WHEN, MAX);
    expect([saved, problems]).toEqual([[], ["output 1 has no data"]]);
    expect(await readdir(tmp)).toEqual([]);
  });

  // An empty download is an empty output, as empty base64 is.
  test("a downloaded item of zero bytes is a problem, as empty base64 is", async () => {
    const { saved, problems } = await saveOutputs([{ url: "https://b.example/x.png", bytes: new Uint8Array(0) }], tmp, WHEN, MAX);
    expect([saved, problems]).toEqual([[], ["output 1 is empty"]]);
  });

  test("never overwrites: an existing _001.png keeps its bytes and the new file takes the next index", async () => {
    const existing = join(tmp, name(1, "png"));
    const old = bytes("old result, keep me");
    await writeFile(existing, old);
    const { saved } = await saveOutputs([item(PNG), item(PNG)], tmp, WHEN, MAX);
    expect(saved.map((s) => s.path)).toEqual([join(tmp, name(2, "png")), join(tmp, name(3, "png"))]);
    expect(new Uint8Array(await readFile(existing))).toEqual(old);
    expect(new Uint8Array(await readFile(saved[0]!.path))).toEqual(PNG);
    expect(await leftovers(tmp)).toEqual([]);
  });

  test("a second save in the same second does not touch the first", async () => {
    const first = await saveOutputs([item(PNG)], tmp, WHEN, MAX);
    const second = await saveOutputs([item(GIF)], tmp, WHEN, MAX);
    const third = await saveOutputs([item(PNG)], tmp, WHEN, MAX);
    expect([first, second, third].map((r) => basename(r.saved[0]!.path))).toEqual([name(1, "png"), name(1, "gif"), name(2, "png")]);
    expect(new Uint8Array(await readFile(first.saved[0]!.path))).toEqual(PNG);
    expect(new Uint8Array(await readFile(second.saved[0]!.path))).toEqual(GIF);
  });

  test("invalid base64 is a problem; the outputs around it are still saved, numbered without a gap", async () => {
    const { saved, problems } = await saveOutputs([item(PNG), { base64: "not*base64!" }, item(JPG), { base64: "%%%" }], tmp, WHEN, MAX);
    expect(problems).toEqual(["output 2 is not valid base64", "output 4 is not valid base64"]);
    expect(saved.map((f) => basename(f.path))).toEqual([name(1, "png"), name(2, "jpg")]);
    expect((await readdir(tmp)).sort()).toEqual([name(2, "jpg"), name(1, "png")].sort());
  });

  test("an item that already has a problem keeps it; the others are saved", async () => {
    const { items } = outputItems({ images: [{ data: "gs://b/x.png", type: "gcs_url" }, Buffer.from(PNG).toBase64()] }, "j");
    const { saved, problems } = await saveOutputs(items, tmp, WHEN, MAX);
    expect(problems).toEqual([expect.stringMatching(/^output 1 has a shape this client does not know/)]);
    expect(saved.map((f) => basename(f.path))).toEqual([name(1, "png")]);
  });

  test("an output without an images list: its one problem, nothing written", async () => {
    const { saved, problems } = await saveOutputs(outputItems({ status: "success" }, "j").items, tmp, WHEN, MAX);
    expect([saved, problems]).toEqual([[], [expect.stringMatching(/^the output has no list of images/)]]);
    expect(await readdir(tmp)).toEqual([]);
  });

  test("an item over maxBytes is a problem, neither decoded nor written; the others are saved", async () => {
    const big = new Uint8Array(300).fill(7); // 400 base64 characters, no padding
    const decode = spyOn(Uint8Array, "fromBase64");
    try {
      const { saved, problems } = await saveOutputs([item(big), item(PNG)], tmp, WHEN, 100);
      expect(problems).toEqual(["output 1 is 300 B, over --max-output-bytes (100 B)"]);
      expect(saved.map((f) => [basename(f.path), f.bytes])).toEqual([[name(1, "png"), PNG.length]]);
      expect(decode).toHaveBeenCalledTimes(1); // the small one only
    } finally {
      decode.mockRestore();
    }
    expect(await readdir(tmp)).toEqual([name(1, "png")]);
  });

  test("the size is checked before the base64: a huge invalid item is reported as too large", async () => {
    const { problems } = await saveOutputs([{ base64: "*".repeat(4_000) }], tmp, WHEN, 2_000);
    expect(problems).toEqual(["output 1 is 3.0 kB, over --max-output-bytes (2.0 kB)"]);
  });

  test("an item of exactly maxBytes (base64 without padding) is saved", async () => {
    const { saved, problems } = await saveOutputs([item(bytes("abcdef"))], tmp, WHEN, 6);
    expect([saved.length, problems]).toEqual([1, []]);
  });

  // The size estimate must not count the "=" padding.
  for (const size of [4, 5]) {
    test(`an item of exactly maxBytes (${size} bytes, base64 with padding) is saved`, async () => {
      const { saved, problems } = await saveOutputs([item(new Uint8Array(size).fill(1))], tmp, WHEN, size);
      expect([saved.length, problems]).toEqual([1, []]);
    });
  }

  test("no items → nothing written, the folder still created", async () => {
    const dir = join(tmp, "empty-run");
    expect(await saveOutputs([], dir, WHEN, MAX)).toEqual({ saved: [], problems: [] });
    expect(await readdir(dir)).toEqual([]);
  });

  test("an output folder under a regular file → a problem, not a throw; nothing written", async () => {
    await writeFile(join(tmp, "afile"), "I am a file");
    const dir = join(tmp, "afile", "out");
    expect(await saveOutputs([item(PNG)], dir, WHEN, MAX)).toEqual({
      saved: [],
      problems: [`cannot create the output folder ${dir}: a part of the path is not a directory`],
    });
    expect(await readdir(tmp)).toEqual(["afile"]);
  });

  test("an output 'folder' that is a regular file → a problem naming it, the file untouched", async () => {
    const file = join(tmp, "afile");
    await writeFile(file, "I am a file");
    const { saved, problems } = await saveOutputs([item(PNG)], file, WHEN, MAX);
    expect(saved).toEqual([]);
    expect(problems).toEqual([expect.stringContaining(file)]);
    expect(await readFile(file, "utf8")).toBe("I am a file");
  });

  test.skipIf(isRoot)("a read-only folder → a problem, not a throw; no partial file", async () => {
    const dir = join(tmp, "ro");
    await mkdir(dir);
    await chmod(dir, 0o555);
    expect(await saveOutputs([item(PNG), item(JPG)], dir, WHEN, MAX)).toEqual({ saved: [], problems: [`cannot write into ${dir}: permission denied`] });
    await chmod(dir, 0o755);
    expect(await readdir(dir)).toEqual([]);
  });

  test.skipIf(process.platform !== "linux")("a folder that exists but takes no files (/proc/self) → a problem, not a throw", async () => {
    expect(await saveOutputs([item(PNG)], "/proc/self", WHEN, MAX)).toEqual({ saved: [], problems: ["cannot write into /proc/self: no such file"] });
  });

  test("a write that fails midway keeps what was saved before it, says what was not attempted, leaves no temporary file", async () => {
    const uuids = ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002", "00000000-0000-4000-8000-000000000003"] as const;
    const uuid = spyOn(crypto, "randomUUID");
    for (const value of uuids) uuid.mockReturnValueOnce(value);
    try {
      // the second output's temporary name is taken by a folder: its write fails
      const blocker = `.send-to-runpod-${uuids[1]}.tmp`;
      await mkdir(join(tmp, blocker));
      const { saved, problems } = await saveOutputs([item(PNG), item(JPG), item(GIF)], tmp, WHEN, MAX);
      expect(saved.map((f) => basename(f.path))).toEqual([name(1, "png")]);
      expect(problems).toEqual([expect.stringMatching(new RegExp(`^cannot write into ${tmp.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `)), "1 more output not attempted"]);
      expect((await readdir(tmp)).sort()).toEqual([blocker, name(1, "png")].sort());
      expect(new Uint8Array(await readFile(join(tmp, name(1, "png"))))).toEqual(PNG);
    } finally {
      uuid.mockRestore();
    }
  });

  // Temporary names must not collide, even within one millisecond.
  test("two saves at once in one process both succeed", async () => {
    const now = spyOn(Date, "now").mockReturnValue(1_700_000_000_000); // the same millisecond, deterministically
    try {
      const [a, b] = await Promise.all([saveOutputs([item(PNG)], tmp, WHEN, MAX), saveOutputs([item(JPG)], tmp, WHEN, MAX)]);
      expect([...a.problems, ...b.problems]).toEqual([]);
      expect([...a.saved, ...b.saved].map((f) => basename(f.path)).sort()).toEqual([name(1, "jpg"), name(1, "png")]);
    } finally {
      now.mockRestore();
    }
  });

  test("after every kind of save: no temporary or hidden file", async () => {
    await writeFile(join(tmp, name(1, "png")), "x");
    await saveOutputs([item(PNG), { base64: "!!" }, item(JPG), item(new Uint8Array(50)), { problem: "p" }], tmp, WHEN, 20);
    expect(await leftovers(tmp)).toEqual([]);
    expect(await readdir(tmp)).toHaveLength(3);
  });
});

describe("keepRawOutput", () => {
  let tmp = "";
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), "send-to-runpod-raw-"));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test("writes job-<id>.json with the whole job, and returns its path", async () => {
    const job = await fixtureJob("worker-comfyui-5-s3.json");
    const path = await keepRawOutput(tmp, job);
    expect(path).toBe(join(tmp, `job-${job.id}.json`));
    const text = await readFile(path, "utf8");
    expect(JSON.parse(text)).toEqual(job);
    expect(text.endsWith("\n")).toBe(true);
    expect(await readdir(tmp)).toEqual([`job-${job.id}.json`]);
  });

  test("overwrites its own earlier copy, leaving no temporary file", async () => {
    const running: Job = { id: "j-1", status: "IN_PROGRESS" };
    const done = { id: "j-1", status: "COMPLETED", output: { images: ["AAAA"] } };
    await keepRawOutput(tmp, running as Job);
    const path = await keepRawOutput(tmp, done as Job);
    expect(JSON.parse(await readFile(path, "utf8"))).toEqual(done);
    expect(await readdir(tmp)).toEqual(["job-j-1.json"]);
  });

  const ids: [string, string][] = [
    ["../../x", "job-______x.json"],
    ["/etc/passwd", "job-_etc_passwd.json"],
    ["a\\b", "job-a_b.json"],
    ["a/b", "job-a_b.json"],
    ["..", "job-__.json"],
    ["", "job-unknown.json"],
    ["id with spaces", "job-id_with_spaces.json"],
    ["c0ffee00-0000-4000-8000-000000000010-u1", "job-c0ffee00-0000-4000-8000-000000000010-u1.json"],
  ];
  for (const [id, file] of ids) {
    test(`a job id ${JSON.stringify(id)} → ${file}, inside the folder`, async () => {
      const dir = join(tmp, "out");
      await mkdir(dir);
      expect(await keepRawOutput(dir, { id, status: "COMPLETED" })).toBe(join(dir, file));
      expect(await readdir(dir)).toEqual([file]);
      expect(await readdir(tmp)).toEqual(["out"]);
    });
  }

  test("a missing folder is created", async () => {
    const dir = join(tmp, "missing", "deeper");
    expect(await keepRawOutput(dir, { id: "j", status: "FAILED" })).toBe(join(dir, "job-j.json"));
  });

  test("a folder that cannot be made → rejects (the caller reports it)", async () => {
    await writeFile(join(tmp, "file"), "x");
    expect(await keepRawOutput(join(tmp, "file", "out"), { id: "j", status: "FAILED" }).catch((error: NodeJS.ErrnoException) => error.code)).toBe("ENOTDIR");
  });
});

describe("writeFileAtomically", () => {
  let tmp = "";
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), "send-to-runpod-atomic-"));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  test("writes, then replaces as a whole; no temporary file left", async () => {
    const path = join(tmp, "manifest.json");
    await writeFileAtomically(path, "first\n");
    expect(await readFile(path, "utf8")).toBe("first\n");
    await writeFileAtomically(path, "second, longer\n");
    expect(await readFile(path, "utf8")).toBe("second, longer\n");
    await writeFileAtomically(path, "");
    expect(await readFile(path, "utf8")).toBe("");
    expect(await readdir(tmp)).toEqual(["manifest.json"]);
  });

  test("unicode text is written as UTF-8", async () => {
    const path = join(tmp, "m.json");
    await writeFileAtomically(path, "日本語 ✓\n");
    expect(new Uint8Array(await readFile(path))).toEqual(new TextEncoder().encode("日本語 ✓\n"));
  });

  test("a missing folder → throws the fs error, nothing left", async () => {
    const error = await writeFileAtomically(join(tmp, "nope", "m.json"), "x").catch((e: NodeJS.ErrnoException) => e);
    expect((error as NodeJS.ErrnoException).code).toBe("ENOENT");
    expect(await readdir(tmp)).toEqual([]);
  });

  test("a target that is a folder → throws; the folder and its content untouched, no temporary file left", async () => {
    const target = join(tmp, "m.json");
    await mkdir(target);
    await writeFile(join(target, "inside"), "keep");
    expect(await writeFileAtomically(target, "x").then(() => "written", () => "refused")).toBe("refused");
    expect(await readdir(tmp)).toEqual(["m.json"]);
    expect(await readFile(join(target, "inside"), "utf8")).toBe("keep");
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
