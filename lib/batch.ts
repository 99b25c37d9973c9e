// Batches: many runs of one workflow. Pure planning — which runs, with which --set overrides and
// images, into which folder, which ones a resumed batch skips — and the tally of a batch in flight.
import { join } from "node:path";
import { usageError } from "./errors.ts";
import { sha256Hex } from "./save.ts";
import { inputFiles, nodeLabel, type Workflow } from "./workflow.ts";

export interface RunSpec {
  /** 1-based, stable across a resumed batch. */
  index: number;
  /** Where the run comes from, for the summary: "line 3", "image photo.png", "run 7". */
  label: string;
  /** NODE.INPUT=VALUE overrides, applied after the command's own --set. */
  sets: string[];
  /** Extra image files sent with this run only. */
  images: string[];
}

/** A batch file is JSON Lines (one object of overrides per line) or CSV (override names as headers). */
export function parseBatchFile(text: string, file: string): Omit<RunSpec, "index">[] {
  const looksLikeJson = /\.(jsonl|ndjson|json)$/i.test(file) || (!/\.csv$/i.test(file) && text.trimStart().startsWith("{"));
  return looksLikeJson ? parseJsonLines(text, file) : parseCsv(text, file);
}

/** `images` (a path or a list) is the run's images; every other key is a NODE.INPUT override. */
function overridesOf(entries: [string, unknown][], where: string): Pick<RunSpec, "sets" | "images"> {
  const sets: string[] = [];
  const images: string[] = [];
  for (const [key, value] of entries) {
    if (key === "images") {
      const list = Array.isArray(value) ? value : typeof value === "string" ? value.split(";") : [value];
      if (!list.every((path) => typeof path === "string")) throw usageError(`${where}: "images" must be a path or a list of paths`);
      images.push(...(list as string[]).map((path) => path.trim()).filter(Boolean));
    } else {
      if (!/^.+\.[^.=]+$/.test(key)) throw usageError(`${where}: "${key}" is not NODE.INPUT`);
      sets.push(`${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
    }
  }
  return { sets, images };
}

function parseJsonLines(text: string, file: string): Omit<RunSpec, "index">[] {
  const runs: Omit<RunSpec, "index">[] = [];
  for (const [i, line] of text.split(/\r?\n/).entries()) {
    if (!line.trim()) continue;
    let data: unknown;
    try {
      data = JSON.parse(line);
    } catch (error) {
      throw usageError(`${file}, line ${i + 1}: not valid JSON (${(error as Error).message})`);
    }
    if (typeof data !== "object" || data === null || Array.isArray(data)) throw usageError(`${file}, line ${i + 1}: expected an object of NODE.INPUT overrides`);
    runs.push({ ...overridesOf(Object.entries(data), `${file}, line ${i + 1}`), label: `line ${i + 1}` });
  }
  if (runs.length === 0) throw usageError(`${file} has no runs`);
  return runs;
}

/** RFC 4180: fields may be quoted, with "" for a quote and commas or line breaks inside. Blank rows are dropped. */
export function parseCsvRows(text: string): string[][] {
  return csvRecords(text).map((record) => record.cells);
}

/** The rows with the line each starts on (a quoted line break makes a row span lines). */
function csvRecords(text: string): { cells: string[]; line: number }[] {
  const records: { cells: string[]; line: number }[] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  const endRow = () => {
    row.push(field);
    if (row.some((cell) => cell.trim() !== "")) records.push({ cells: row, line: rowLine });
    row = [];
    field = "";
    rowLine = line;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "\n") line++;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"' && field === "") quoted = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") {
        i++;
        line++;
      } else if (c === "\r") line++;
      endRow();
    } else field += c;
  }
  if (field !== "" || row.length) endRow();
  return records;
}

function parseCsv(text: string, file: string): Omit<RunSpec, "index">[] {
  const [header, ...rows] = csvRecords(text);
  if (!header || rows.length === 0) throw usageError(`${file} has no runs (a header of NODE.INPUT names, then one row per run)`);
  const names = header.cells.map((name) => name.trim());
  // The header alone decides whether the file makes sense: say so on its own line.
  overridesOf(names.map((name) => [name, name === "images" ? [] : ""]), `${file}, line ${header.line}`);
  return rows.map(({ cells, line }) => {
    if (cells.length !== names.length) throw usageError(`${file}, line ${line}: ${cells.length} field${cells.length === 1 ? "" : "s"} where the header has ${names.length}`);
    return { ...overridesOf(names.map((name, j): [string, unknown] => [name, cells[j]]), `${file}, line ${line}`), label: `line ${line}` };
  });
}

/** --each-image: one run per image, pointed at by the workflow's single image input or the one named. */
export function eachImageRuns(images: readonly { name: string; path: string }[], workflow: Workflow, target?: string): Omit<RunSpec, "index">[] {
  const into = target ?? singleImageInput(workflow);
  return images.map((image) => ({ label: `image ${image.name}`, sets: [`${into}=${image.name}`], images: [image.path] }));
}

function singleImageInput(workflow: Workflow): string {
  const candidates = inputFiles(workflow).filter((file) => /^LoadImage/.test(workflow[file.nodeId]!.class_type));
  if (candidates.length === 1) return `${candidates[0]!.nodeId}.${candidates[0]!.input}`;
  if (candidates.length === 0) throw usageError("--each-image: this workflow has no image input (LoadImage) to point at each image");
  throw usageError(`--each-image: the workflow has ${candidates.length} image inputs (${candidates.map((c) => `${c.nodeId}.${c.input} in ${nodeLabel(workflow, c.nodeId)}`).join(", ")}); name one: --each-image NODE.INPUT`);
}

/** The runs of a batch: each base run `repeat` times, numbered from 1. */
export function numberRuns(base: readonly Omit<RunSpec, "index">[], repeat: number): RunSpec[] {
  const label = (run: Omit<RunSpec, "index">, r: number) => [run.label, repeat > 1 && `repeat ${r + 1}`].filter(Boolean).join(", ") || "run";
  return base.flatMap((run) => Array.from({ length: repeat }, (_, r) => ({ ...run, label: label(run, r) }))).map((run, i) => ({ ...run, index: i + 1 }));
}

/** Where a run's files go: its own numbered folder, or a name prefix with --flat. */
export function runOutput(output: string, run: RunSpec, total: number, flat: boolean): { dir: string; prefix: string } {
  const number = String(run.index).padStart(Math.max(3, String(total).length), "0");
  return flat ? { dir: output, prefix: `${number}_` } : { dir: join(output, number), prefix: "" };
}

/** What a run sends beyond the command's own flags: a resumed batch skips a run only if this is unchanged. */
export const runKey = (run: Pick<RunSpec, "sets" | "images">) => sha256Hex(JSON.stringify([run.sets, run.images])).slice(0, 16);

/** Runs a resumed batch skips: those its manifest (JSON Lines) records as succeeded, as `index:key`. */
export function succeededRuns(manifest: string): Set<string> {
  const done = new Set<string>();
  for (const line of manifest.split("\n")) {
    if (!line.trim()) continue;
    try {
      const record = JSON.parse(line) as { run?: { index?: unknown; key?: unknown }; exitCode?: unknown };
      if (record.exitCode === 0 && typeof record.run?.index === "number") done.add(`${record.run.index}:${record.run.key}`);
    } catch {
      // a line cut short by a crash: that run is simply done again
    }
  }
  return done;
}

export interface Tally {
  queued: number;
  running: number;
  done: number;
  failed: number;
}

/** "12 done, 1 failed, 4 running, 183 queued · 2.1 runs/s" */
export function describeTally(tally: Tally, elapsedMs: number): string {
  const finished = tally.done + tally.failed;
  const rate = elapsedMs > 0 ? ` · ${((finished * 1000) / elapsedMs).toFixed(1)} runs/s` : "";
  return `${tally.done} done, ${tally.failed} failed, ${tally.running} running, ${tally.queued} queued${rate}`;
}
