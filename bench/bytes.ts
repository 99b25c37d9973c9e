// 4. Bytes: as much as /run accepts in (reference images of random noise, so nothing compresses),
// and 20 MB of images out: wall time and peak resident memory of the client process.
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodePng } from "../lib/emulator-worker.ts";
import {
  attempt,
  BASELINE,
  type Client,
  compareRow,
  completedAt,
  type Context,
  type Emulator,
  formatBytes,
  formatMs,
  freshDir,
  type Job,
  medianOf,
  MiB,
  OURS,
  type Row,
  runJob,
  sample,
  startEmulator,
  WORKFLOWS,
} from "./harness.ts";

/** 4 × 1.75 MiB of PNG = 7 MiB of files, 9.3 MiB of base64: the /run body stays under RunPod's 10 MiB. */
const IMAGE_COUNT = 4;
const IMAGE_BYTES = 1.75 * MiB;
const PNG_WIDTH = 1024;

/** Noise PNGs named ref-N.png, and an img2img workflow that loads them all (batched into the sampler). */
function makeInput(dir: string): { workflow: string; images: string[]; bodyBytes: number } {
  const height = Math.floor(IMAGE_BYTES / (PNG_WIDTH * 3 + 1));
  const names = Array.from({ length: IMAGE_COUNT }, (_, i) => `ref-${i + 1}.png`);
  const images = names.map((name) => {
    const path = join(dir, name);
    writeFileSync(path, encodePng(PNG_WIDTH, height, randomBytes(PNG_WIDTH * height * 3)));
    return path;
  });
  const graph: Record<string, { class_type: string; inputs: Record<string, unknown> }> = {
    "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" } },
    "2": { class_type: "CLIPTextEncode", inputs: { text: "the same scene as an oil painting", clip: ["1", 1] } },
    "3": { class_type: "CLIPTextEncode", inputs: { text: "blurry", clip: ["1", 1] } },
  };
  let pixels: [string, number] | undefined;
  names.forEach((name, i) => {
    const load = `${10 + i}`;
    graph[load] = { class_type: "LoadImage", inputs: { image: name } };
    if (pixels === undefined) pixels = [load, 0];
    else {
      const batch = `${20 + i}`;
      graph[batch] = { class_type: "ImageBatch", inputs: { image1: pixels, image2: [load, 0] } };
      pixels = [batch, 0];
    }
  });
  Object.assign(graph, {
    "5": { class_type: "VAEEncode", inputs: { pixels, vae: ["1", 2] } },
    "6": {
      class_type: "KSampler",
      inputs: { seed: 7, steps: 20, cfg: 6.5, sampler_name: "euler", scheduler: "normal", denoise: 0.6, model: ["1", 0], positive: ["2", 0], negative: ["3", 0], latent_image: ["5", 0] },
    },
    "7": { class_type: "VAEDecode", inputs: { samples: ["6", 0], vae: ["1", 2] } },
    "8": { class_type: "SaveImage", inputs: { filename_prefix: "bench", images: ["7", 0] } },
  });
  const workflow = join(dir, "img2img-4-references.json");
  writeFileSync(workflow, JSON.stringify(graph, null, 2));
  const base64 = images.reduce((sum, path) => sum + 4 * Math.ceil(Bun.file(path).size / 3), 0);
  return { workflow, images, bodyBytes: base64 + JSON.stringify(graph).length + 100 };
}

interface Taken {
  wallMs: number;
  rss: number;
  /** COMPLETED → exit: fetching, decoding and writing the result. */
  afterMs: number;
}

/** Ours and the peer, interleaved, on one emulator started with these flags (and an event log when `events`). */
async function compare(ctx: Context, runs: number, flags: string[], events: boolean, job: Omit<Job, "env">) {
  const emulator = await attempt(() => startEmulator(["--queue-delay", "0", "--execution-time", "0", ...flags], { dir: ctx.tmp, events }));
  if (!emulator.ok) return { ours: emulator, peer: emulator, outputBytes: 0 };
  let outputBytes = 0;
  const take = (client: Client, e: Emulator) => async (): Promise<Taken> => {
    const before = new Set(e.events().map((event) => event.id));
    const result = await runJob(ctx, client, { ...job, env: e.env });
    outputBytes = result.outputBytes;
    const id = e.events().find((event) => event.event === "completed" && !before.has(event.id))?.id;
    return { wallMs: result.wallMs, rss: result.maxRssBytes ?? Number.NaN, afterMs: id ? result.exitAt - (await completedAt(e, id)) : Number.NaN };
  };
  try {
    const samples = await sample(runs, { ours: take(OURS, emulator.value), peer: take(BASELINE, emulator.value) }, ctx.warmup);
    return { ...samples, outputBytes };
  } finally {
    await emulator.value.stop();
  }
}

export async function bytes(ctx: Context): Promise<Row[]> {
  const runs = ctx.quick ? 2 : 5;
  const input = makeInput(freshDir(ctx, "references"));
  const rows: Row[] = [];

  const sent = await compare(ctx, runs, [], false, { workflow: input.workflow, images: input.images });
  const inLabel = `4 · in: ${IMAGE_COUNT} noise PNGs, ${formatBytes(IMAGE_COUNT * IMAGE_BYTES)} (a ${formatBytes(input.bodyBytes)} /run body), instant job`;
  rows.push(compareRow(inLabel, "wall time, start to exit", medianOf(sent.ours, (t) => t.wallMs), medianOf(sent.peer, (t) => t.wallMs), formatMs, `${runs}`));
  rows.push(compareRow(inLabel, "peak RSS", medianOf(sent.ours, (t) => t.rss), medianOf(sent.peer, (t) => t.rss), formatBytes, `${runs}`));

  const got = await compare(ctx, runs, ["--output-bytes", "20MB", "--result-limit", "64MB"], true, { workflow: join(WORKFLOWS, "sample-txt2img.json") });
  const outLabel = `4 · out: 20 MB of images${got.outputBytes ? ` (${(got.outputBytes / 1e6).toFixed(1)} MB saved)` : ""}, instant job`;
  rows.push(compareRow(outLabel, "wall time, start to exit", medianOf(got.ours, (t) => t.wallMs), medianOf(got.peer, (t) => t.wallMs), formatMs, `${runs}`));
  rows.push(compareRow(outLabel, "peak RSS", medianOf(got.ours, (t) => t.rss), medianOf(got.peer, (t) => t.rss), formatBytes, `${runs}`));
  rows.push(compareRow(outLabel, "lag: COMPLETED → client exit", medianOf(got.ours, (t) => t.afterMs), medianOf(got.peer, (t) => t.afterMs), formatMs, `${runs}`));
  return rows;
}
