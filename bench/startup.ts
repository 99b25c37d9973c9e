// 1. Start-up: `--help` and `--version` of the compiled binary, spawn to exit; the peer's `--help`.
import { BINARY, checkExit, compareRow, type Context, formatBytes, formatMs, medianOf, PEER, type Row, run, sample } from "./harness.ts";

export async function startup(ctx: Context): Promise<Row[]> {
  const runs = ctx.quick ? 10 : 30;
  const time = (cmd: string[], label: string) => async () => checkExit(await run(cmd, { cwd: ctx.tmp }), label);
  const samples = await sample(
    runs,
    {
      help: time([BINARY, "--help"], "send-to-runpod --help"),
      version: time([BINARY, "--version"], "send-to-runpod --version"),
      peerHelp: time(["python3", PEER, "--help"], "send_to_runpod.py --help"),
    },
    2,
  );
  const wall = (key: keyof typeof samples) => medianOf(samples[key], (r) => r.wallMs);
  const rss = (key: keyof typeof samples) => medianOf(samples[key], (r) => r.maxRssBytes ?? Number.NaN);
  const label = "1 · start-up";
  return [
    compareRow(label, "`--help`: spawn to exit", wall("help"), wall("peerHelp"), formatMs, `${runs}`),
    compareRow(label, "`--version`: spawn to exit (the peer has none)", wall("version"), undefined, formatMs, `${runs}`),
    compareRow(label, "`--help`: peak RSS (the idle size)", rss("help"), rss("peerHelp"), formatBytes, `${runs}`),
  ];
}
