// `bun run bench [--quick]`: builds the binary, runs every scenario against the emulator (in its own
// process, on loopback), and prints one markdown table with the machine and the command. Progress
// goes to stderr, the report to stdout. Every child is killed at the end, on failure and on Ctrl-C.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { batch } from "./batch.ts";
import { bytes } from "./bytes.ts";
import { type Context, killAll, progress, renderTable, ROOT, type Row, run } from "./harness.ts";
import { lag } from "./lag.ts";
import { overhead } from "./overhead.ts";
import { startup } from "./startup.ts";

const SCENARIOS: [string, (ctx: Context) => Promise<Row[]>][] = [
  ["1 · start-up", startup],
  ["2 · overhead", overhead],
  ["3 · completion lag", lag],
  ["4 · bytes", bytes],
  ["5 · batch", batch],
];

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: bun run bench [--quick]\n`);
  process.exit(2);
}

async function machine(cwd: string): Promise<string> {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown CPU";
  const os = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? process.platform;
  const python = await run(["python3", "-c", "import platform, requests; print(platform.python_version(), requests.__version__)"], { cwd });
  const [pythonVersion = "?", requestsVersion = "?"] = python.stdout.trim().split(" ");
  return [
    `${cpu}, ${cpus().length} cores`,
    `${(totalmem() / 1024 ** 3).toFixed(1)} GiB RAM`,
    `${os} (Linux ${release()})`,
    `Bun ${Bun.version}`,
    `Python ${pythonVersion} (requests ${requestsVersion})`,
  ].join(" · ");
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  for (const arg of args) if (arg !== "--quick") usage(`unknown option ${arg}`);
  const quick = args.includes("--quick");
  const started = performance.now();
  const tmp = mkdtempSync(join(tmpdir(), "send-to-runpod-bench-"));
  const cleanUp = async () => {
    await killAll();
    rmSync(tmp, { recursive: true, force: true });
  };
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.on(signal, () => {
      process.stderr.write(`\n${signal}: stopping every emulator and client\n`);
      void cleanUp().finally(() => process.exit(code));
    });
  }
  try {
    progress("building dist/send-to-runpod (bun run build)");
    const build = await run(["bun", "run", "build"], { cwd: ROOT });
    if (build.code !== 0) {
      process.stderr.write(`${build.stdout}${build.stderr}bun run build failed (exit ${build.code})\n`);
      return 1;
    }
    const ctx: Context = { quick, tmp, warmup: quick ? 0 : 1 };
    const rows: Row[] = [];
    for (const [name, scenario] of SCENARIOS) {
      progress(name);
      rows.push(...(await scenario(ctx)));
    }
    const seconds = Math.round((performance.now() - started) / 1000);
    process.stdout.write(
      [
        `Machine: ${await machine(tmp)}`,
        `Command: \`bun run bench${quick ? " --quick" : ""}\` (${seconds} s, build included)`,
        "",
        renderTable(rows),
        "",
        "Each figure is the median of the runs shown; ratios compare ours with the peer measured in the same run.",
        "The peer is bench/baseline/send_to_runpod.py (requests, a fixed sleep of --poll-interval before each status check);",
        "both clients use --poll-interval 2 and run against `send-to-runpod emulate` in its own process on loopback.",
        "Lag: the emulator's event log time of COMPLETED to the client's exit seen by the bench (both epoch clocks);",
        "status requests counted by a loopback proxy in front of the emulator; the three clients of a round run side by side.",
        "Peak RSS: getrusage's maxrss of the client process (Bun's resourceUsage().maxRSS, in bytes).",
        "",
      ].join("\n"),
    );
    return rows.some((row) => /^failed/.test(row.ours) || /^failed/.test(row.peer)) ? 1 : 0;
  } finally {
    await cleanUp();
  }
}

process.exit(await main());
