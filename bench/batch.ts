// 5. Batch: many 0.5 s jobs on an emulator with 16 workers and RunPod's rate limits switched on.
// Ours runs them all with --repeat/--concurrency; the peer, one job at a time, runs fewer (it would
// take minutes), and its figure is said as what it is: so many jobs, measured, never extrapolated.
import { join } from "node:path";
import {
  attempt,
  BASELINE,
  compareRow,
  type Context,
  formatCount,
  formatMs,
  map,
  median,
  OURS,
  type Outcome,
  progress,
  type Row,
  runJob,
  startEmulator,
  WORKFLOWS,
} from "./harness.ts";

const WORKERS = 16;
const JOB_SECONDS = 0.5;

interface Batch {
  wallMs: number;
  jobs: number;
  rateLimited: number;
}

/** One batch on a fresh emulator (so every run meets the rate limits afresh). */
async function runBatch(ctx: Context, jobs: number, client: "ours" | "peer"): Promise<Batch> {
  const flags = ["--workers", String(WORKERS), "--execution-time", String(JOB_SECONDS), "--queue-delay", "0", "--rate-limits"];
  const emulator = await startEmulator(flags, { dir: ctx.tmp, events: true });
  try {
    const workflow = join(WORKFLOWS, "sample-txt2img.json");
    let wallMs = 0;
    if (client === "ours") {
      const extra = ["--repeat", String(jobs), "--concurrency", String(WORKERS), "--seed", "random"];
      const result = await runJob(ctx, OURS, { workflow, env: emulator.env, extra });
      if (result.outputFiles < jobs) throw new Error(`${jobs} jobs saved only ${result.outputFiles} files`);
      wallMs = result.wallMs;
    } else {
      // A shell loop of the script, as a user would write it: one process per job.
      for (let n = 0; n < jobs; n++) wallMs += (await runJob(ctx, BASELINE, { workflow, env: emulator.env })).wallMs;
    }
    const completed = emulator.events().filter((e) => e.event === "completed").length;
    if (completed < jobs) throw new Error(`the emulator logged ${completed} completed jobs of ${jobs}`);
    return { wallMs, jobs, rateLimited: emulator.events().filter((e) => e.event === "rate-limited").length };
  } finally {
    await emulator.stop();
  }
}

export async function batch(ctx: Context): Promise<Row[]> {
  const jobs = ctx.quick ? 50 : 200;
  const peerJobs = ctx.quick ? 3 : 20;
  const runs = ctx.quick ? 1 : 3;
  const idealMs = (jobs * JOB_SECONDS * 1000) / WORKERS;

  progress(`5 · batch: ${runs} × ${jobs} jobs with ours, then ${peerJobs} jobs one at a time with the peer`);
  let ours: Outcome<Batch[]> = { ok: true, value: [] };
  for (let n = 0; n < runs && ours.ok; n++) {
    const taken = await attempt(() => runBatch(ctx, jobs, "ours"));
    if (taken.ok) ours.value.push(taken.value);
    else ours = taken;
  }
  const peer = await attempt(() => runBatch(ctx, peerJobs, "peer"));

  const oursWall = map(ours, (list) => median(list.map((b) => b.wallMs)));
  const peerWall = map(peer, (b) => b.wallMs);
  const label = `5 · batch: ${jobs} jobs of ${JOB_SECONDS} s, ${WORKERS} workers, rate limits on`;
  const runsCell = `${runs} (peer: 1 run of ${peerJobs} jobs)`;
  const peerSaid = (row: Row, text: (b: Batch) => string) => {
    if (peer.ok) row.peer = text(peer.value);
    return row;
  };
  const wall = compareRow(label, `wall time (ours: --repeat ${jobs} --concurrency ${WORKERS}); the ideal is ${formatMs(idealMs)}`, oursWall, peerWall, formatMs, runsCell);
  wall.ratio = oursWall.ok ? `${(oursWall.value / idealMs).toFixed(2)}× the ideal` : "—";
  return [
    peerSaid(wall, (b) => `${formatMs(b.wallMs)} for ${b.jobs} jobs, one at a time`),
    peerSaid(
      compareRow(label, "time per job (wall time ÷ jobs)", map(oursWall, (ms) => ms / jobs), map(peer, (b) => b.wallMs / b.jobs), formatMs, runsCell),
      (b) => `${formatMs(b.wallMs / b.jobs)} (over ${b.jobs} jobs)`,
    ),
    peerSaid(
      { ...compareRow(label, "429s met", map(ours, (list) => median(list.map((b) => b.rateLimited))), peerWall, formatCount, runsCell), ratio: "—" },
      (b) => `${b.rateLimited} (in ${b.jobs} jobs)`,
    ),
  ];
}
