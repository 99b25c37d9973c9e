// 3. Completion lag: from the moment the emulator marks a job COMPLETED (its event log) to the
// client's exit (seen here), and the status requests made (counted by a proxy in front of the
// emulator). Ours twice, with long polling and with plain polling, and the peer. The three run
// side by side, each against its own emulator, so the lengths' sum is paid once per round.
import { join } from "node:path";
import {
  attempt,
  BASELINE,
  type Client,
  compareRow,
  completedAt,
  type Context,
  type Emulator,
  formatCount,
  formatMs,
  map,
  median,
  OURS,
  type Outcome,
  progress,
  type Proxy,
  type Row,
  runJob,
  startEmulator,
  startProxy,
  WORKFLOWS,
} from "./harness.ts";

interface Lane {
  client: Client;
  /** Emulator flags beyond the job's timing. */
  flags: string[];
}

const LANES = {
  longPoll: { client: OURS, flags: [] },
  plainPolling: { client: OURS, flags: ["--no-status-sync"] },
  peer: { client: BASELINE, flags: [] },
} satisfies Record<string, Lane>;
type LaneName = keyof typeof LANES;
const LANE_NAMES = Object.keys(LANES) as LaneName[];

interface Measured {
  lagMs: number;
  statusRequests: number;
  /** status-sync answered 404 or 405: the client fell back to plain polling. */
  fellBack: boolean;
}

interface Opened {
  emulator: Emulator;
  proxy: Proxy;
}

async function open(ctx: Context, lane: Lane, seconds: number): Promise<Opened> {
  const emulator = await startEmulator(["--queue-delay", "0", "--execution-time", String(seconds), ...lane.flags], { dir: ctx.tmp, events: true });
  return { emulator, proxy: startProxy(emulator) };
}

async function measure(ctx: Context, lane: Lane, { emulator, proxy }: Opened): Promise<Measured> {
  proxy.reset();
  const result = await runJob(ctx, lane.client, { workflow: join(WORKFLOWS, "sample-txt2img.json"), env: proxy.env });
  const jobId = proxy.jobIds[0];
  if (jobId === undefined) throw new Error(`${lane.client.label} asked for no job's status`);
  const sync = proxy.answers.get("status-sync") ?? [];
  return {
    lagMs: result.exitAt - (await completedAt(emulator, jobId)),
    statusRequests: (proxy.counts.get("status") ?? 0) + sync.length,
    fellBack: sync.some((status) => status === 404 || status === 405),
  };
}

export async function lag(ctx: Context): Promise<Row[]> {
  const lengths = ctx.quick ? [0.5, 3] : [0.5, 3, 7, 19];
  const rounds = ctx.quick ? 1 : 3;
  const rows: Row[] = [];
  for (const seconds of lengths) {
    progress(`3 · completion lag: ${seconds} s jobs, ${rounds} round${rounds === 1 ? "" : "s"}`);
    const opened = Object.fromEntries(await Promise.all(LANE_NAMES.map(async (name) => [name, await attempt(() => open(ctx, LANES[name], seconds))]))) as Record<
      LaneName,
      Outcome<Opened>
    >;
    const results = Object.fromEntries(LANE_NAMES.map((name) => [name, map(opened[name], () => [] as Measured[])])) as Record<LaneName, Outcome<Measured[]>>;
    try {
      for (let round = 0; round < rounds; round++) {
        await Promise.all(
          LANE_NAMES.map(async (name) => {
            const lane = opened[name];
            const kept = results[name];
            if (!lane.ok || !kept.ok) return;
            const taken = await attempt(() => measure(ctx, LANES[name], lane.value));
            if (taken.ok) kept.value.push(taken.value);
            else results[name] = taken;
          }),
        );
      }
    } finally {
      for (const lane of Object.values(opened)) {
        if (!lane.ok) continue;
        lane.value.proxy.stop();
        await lane.value.emulator.stop();
      }
    }
    const lagOf = (name: LaneName) => map(results[name], (list) => median(list.map((m) => m.lagMs)));
    const requestsOf = (name: LaneName) => map(results[name], (list) => median(list.map((m) => m.statusRequests)));
    const long = results.longPoll;
    const fellBack = long.ok && long.value.some((m) => m.fellBack) ? " (emulator without status-sync: fell back to polling)" : "";
    for (const [name, label] of [
      ["longPoll", `long poll${fellBack}`],
      ["plainPolling", "plain polling"],
    ] as const) {
      const scenario = `3 · ${seconds} s job, ours with ${label}`;
      rows.push(compareRow(scenario, "lag: COMPLETED → client exit", lagOf(name), lagOf("peer"), formatMs, `${rounds}`));
      rows.push(compareRow(scenario, "status requests", requestsOf(name), requestsOf("peer"), formatCount, `${rounds}`));
    }
  }
  return rows;
}
