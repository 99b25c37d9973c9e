// 2. Overhead: a job that completes at once with one ~1 MB image out, whole-process wall time.
import { attempt, BASELINE, compareRow, type Context, formatMs, medianOf, OURS, type Row, runJob, sample, startEmulator, WORKFLOWS } from "./harness.ts";
import { join } from "node:path";

export async function overhead(ctx: Context): Promise<Row[]> {
  const runs = ctx.quick ? 3 : 7;
  const workflow = join(WORKFLOWS, "sample-txt2img.json");
  const emulator = await attempt(() => startEmulator(["--queue-delay", "0", "--execution-time", "0", "--output-bytes", "1MB"], { dir: ctx.tmp }));
  if (!emulator.ok) return [compareRow("2 · overhead: an instant job, ~1 MB image out", "wall time, start to exit", emulator, emulator, formatMs, `${runs}`)];
  try {
    const { env } = emulator.value;
    const samples = await sample(runs, { ours: () => runJob(ctx, OURS, { workflow, env }), peer: () => runJob(ctx, BASELINE, { workflow, env }) }, ctx.warmup);
    const out = medianOf(samples.ours, (r) => r.outputBytes);
    const size = out.ok ? ` (${(out.value / 1e6).toFixed(2)} MB in ${samples.ours.ok ? samples.ours.value[0]!.outputFiles : "?"} file)` : "";
    return [
      compareRow(`2 · overhead: an instant job, one image out${size}`, "wall time, start to exit", medianOf(samples.ours, (r) => r.wallMs), medianOf(samples.peer, (r) => r.wallMs), formatMs, `${runs}`),
    ];
  } finally {
    await emulator.value.stop();
  }
}
