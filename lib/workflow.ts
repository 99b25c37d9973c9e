// A ComfyUI graph in API format: recognising it, checking it before it costs GPU time, and
// changing it (--set, --seed). Pure: text and values in, graphs and problems out.
import { usageError } from "./errors.ts";

export interface WorkflowNode {
  class_type: string;
  inputs: Record<string, unknown>;
  _meta?: { title?: string };
}
export type Workflow = Record<string, WorkflowNode>;

export type Dialect = "seed" | "worker-comfyui";
export const DIALECTS: readonly Dialect[] = ["seed", "worker-comfyui"];

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

/** Editor ("Save") format: what ComfyUI's UI writes, which a worker cannot run. */
export const isEditorFormat = (x: Record<string, unknown>) => Array.isArray(x.nodes) && (Array.isArray(x.links) || x.version !== undefined);

/** The graph inside the wrappers people's files come in: `{"prompt"}`, `{"workflow"}`, `{"input": {"workflow"}}`. */
export function unwrap(data: Record<string, unknown>): { graph: Record<string, unknown>; wrapper?: string } {
  if (isRecord(data.input) && isRecord(data.input.workflow)) return { graph: data.input.workflow, wrapper: "input.workflow" };
  for (const key of ["prompt", "workflow"]) {
    const inner = data[key];
    // A node may have the id "prompt": only a value that is not itself a node is a wrapper.
    if (isRecord(inner) && !("class_type" in inner)) return { graph: inner, wrapper: key };
  }
  return { graph: data };
}

/** A link is `["node id", output index]`. */
export const isLink = (value: unknown): value is [string, number] =>
  Array.isArray(value) && value.length === 2 && typeof value[0] === "string" && Number.isInteger(value[1]);

export interface Problem {
  nodeId?: string;
  message: string;
}

/** "node 4 (Load Checkpoint)" — how problems name nodes. */
export function nodeLabel(graph: Record<string, unknown>, id: string): string {
  const node = graph[id];
  const title = isRecord(node) && isRecord(node._meta) && typeof node._meta.title === "string" ? node._meta.title : undefined;
  const type = isRecord(node) && typeof node.class_type === "string" ? node.class_type : undefined;
  return `node ${id}${title || type ? ` (${title ?? type})` : ""}`;
}

/** Every shape problem of the graph at once: nodes, links, outputs. */
export function graphProblems(graph: Record<string, unknown>): Problem[] {
  const ids = Object.keys(graph);
  if (ids.length === 0) return [{ message: "it has no nodes" }];
  const problems: Problem[] = [];
  for (const id of ids) {
    const node = graph[id];
    const at = (message: string) => problems.push({ nodeId: id, message: `${nodeLabel(graph, id)} ${message}` });
    if (!isRecord(node)) at("is not an object");
    else if (typeof node.class_type !== "string") at("has no class_type (a custom node was probably missing when the file was exported)");
    else if (!isRecord(node.inputs)) at("has no inputs object");
    else {
      for (const [input, value] of Object.entries(node.inputs)) {
        if (isLink(value) && !Object.hasOwn(graph, value[0])) at(`input "${input}" links to node ${value[0]}, which is not in the workflow`);
        else if (Array.isArray(value) && !isLink(value)) at(`input "${input}" is a list but not a link [node id, index] (a list value is written {"__value__": [...]})`);
      }
    }
  }
  const wellFormed = Object.fromEntries(Object.entries(graph).filter(([, node]) => isRecord(node) && typeof node.class_type === "string" && isRecord(node.inputs)));
  if (outputNodes(wellFormed as Workflow).length === 0) {
    problems.push({ message: "it has no output node (SaveImage or another saver): ComfyUI would refuse it with prompt_no_outputs" });
  }
  return problems;
}

interface OutputKind {
  key: "images" | "audio" | "gifs" | "text";
  /** Temporary files (PreviewImage): workers do not return them. */
  temp?: boolean;
}
const OUTPUT_KINDS: Record<string, OutputKind> = {
  SaveImage: { key: "images" },
  PreviewImage: { key: "images", temp: true },
  SaveAnimatedWEBP: { key: "images" },
  SaveAnimatedPNG: { key: "images" },
  SaveWEBM: { key: "images" },
  SaveVideo: { key: "images" },
  SaveAudio: { key: "audio" },
  SaveAudioMP3: { key: "audio" },
  SaveAudioOpus: { key: "audio" },
  VHS_VideoCombine: { key: "gifs" },
  PreviewAny: { key: "text" },
};
/** Custom savers are output nodes too; their class names say so (but LoadImageOutput reads one). */
const LOOKS_LIKE_OUTPUT = /^(?!Load).*(save|preview)/i;

export interface OutputNode {
  id: string;
  classType: string;
  kind?: OutputKind;
}

export function outputNodes(graph: Workflow): OutputNode[] {
  return Object.entries(graph)
    .filter(([, node]) => OUTPUT_KINDS[node.class_type] || LOOKS_LIKE_OUTPUT.test(node.class_type))
    .map(([id, node]) => ({ id, classType: node.class_type, kind: OUTPUT_KINDS[node.class_type] }));
}

/** Whether the worker sends this output back: worker-comfyui collects only non-temporary `images`. */
export function isReturned(output: OutputNode, dialect: Dialect): boolean {
  if (!output.kind) return true; // a custom saver: no way to know, so no warning
  if (output.kind.temp) return false;
  return dialect === "seed" || output.kind.key === "images";
}

/** A warning when nothing the graph outputs comes back from the chosen worker. */
export function unreturnedOutputsWarning(graph: Workflow, dialect: Dialect): string | undefined {
  const outputs = outputNodes(graph);
  if (outputs.length === 0 || outputs.some((output) => isReturned(output, dialect))) return undefined;
  const listed = outputs.map((output) => `${nodeLabel(graph, output.id)}: ${output.kind?.temp ? "temporary preview" : output.kind?.key}`).join(", ");
  return `no output of this workflow comes back from a ${dialect} worker (${listed}); add a SaveImage node`;
}

/** Nodes that read a file from ComfyUI's input folder, and the input naming it. */
const FILE_INPUTS: Record<string, string> = {
  LoadImage: "image",
  LoadImageMask: "image",
  LoadVideo: "file",
  LoadAudio: "audio",
  VHS_LoadVideo: "video",
  VHS_LoadVideoFFmpeg: "video",
  VHS_LoadAudioUpload: "audio",
};

export interface InputFile {
  nodeId: string;
  input: string;
  /** As the worker will look it up: the " [input]" annotation dropped. */
  name: string;
}

/** Every input-folder file the graph reads. Files annotated [output] or [temp] live elsewhere on the worker. */
export function inputFiles(graph: Workflow): InputFile[] {
  return Object.entries(graph).flatMap(([nodeId, node]) => {
    const input = FILE_INPUTS[node.class_type];
    const value = input ? node.inputs[input] : undefined;
    if (!input || typeof value !== "string" || /\s\[(output|temp)\]$/.test(value)) return [];
    return [{ nodeId, input, name: value.replace(/\s\[input\]$/, "") }];
  });
}

// ---- Changing the graph ------------------------------------------------------------------------

/** The node a --set names: an id, or else a `_meta.title` that only one node has. */
export function findNode(graph: Workflow, ref: string): string {
  if (Object.hasOwn(graph, ref)) return ref;
  const titled = Object.keys(graph).filter((id) => graph[id]!._meta?.title === ref);
  if (titled.length === 1) return titled[0]!;
  if (titled.length > 1) throw usageError(`--set: more than one node is titled "${ref}": ${titled.map((id) => nodeLabel(graph, id)).join(", ")}; use the node id`);
  throw usageError(`--set: no node has the id or title "${ref}"`);
}

/** A --set value as the type of the value it replaces; JSON for anything else. */
export function typedValue(current: unknown, text: string, what: string): unknown {
  if (typeof current === "number") {
    if (!/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(text.trim()) || !Number.isFinite(Number(text))) throw usageError(`--set ${what}: "${text}" is not a number, as the value it replaces (${current}) is`);
    return Number(text);
  }
  if (typeof current === "boolean") {
    if (text !== "true" && text !== "false") throw usageError(`--set ${what}: "${text}" is not true or false, as the value it replaces is`);
    return text === "true";
  }
  if (typeof current === "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    throw usageError(`--set ${what}: "${text}" is not valid JSON (the value it replaces is not a number, boolean or string)`);
  }
}

/** `NODE.INPUT=VALUE`, NODE an id or a title (which may contain dots: the input is after the last one). */
export function applySet(graph: Workflow, assignment: string): Workflow {
  const eq = assignment.indexOf("=");
  const dot = eq === -1 ? -1 : assignment.lastIndexOf(".", eq);
  if (eq === -1 || dot <= 0 || dot === eq - 1) throw usageError(`--set "${assignment}" is not NODE.INPUT=VALUE`);
  const [ref, input, text] = [assignment.slice(0, dot), assignment.slice(dot + 1, eq), assignment.slice(eq + 1)];
  const id = findNode(graph, ref);
  const node = graph[id]!;
  const what = `${nodeLabel(graph, id)}.${input}`;
  if (!Object.hasOwn(node.inputs, input)) {
    throw usageError(`--set: ${nodeLabel(graph, id)} has no input "${input}"; its inputs are ${Object.keys(node.inputs).join(", ")}`);
  }
  const current = node.inputs[input];
  if (isLink(current)) throw usageError(`--set ${what}: that input is a link from node ${current[0]}, not a value; setting it would cut the graph`);
  return { ...graph, [id]: { ...node, inputs: { ...node.inputs, [input]: typedValue(current, text, what) } } };
}

const SEED_INPUTS = ["seed", "noise_seed"];

/** Every numeric seed or noise_seed input set to `seed`; the ids of the nodes changed. */
export function applySeed(graph: Workflow, seed: number): { graph: Workflow; nodeIds: string[] } {
  const nodeIds: string[] = [];
  const changed = Object.fromEntries(
    Object.entries(graph).map(([id, node]) => {
      const inputs = { ...node.inputs };
      for (const name of SEED_INPUTS) if (typeof inputs[name] === "number") inputs[name] = seed;
      if (SEED_INPUTS.some((name) => typeof node.inputs[name] === "number")) nodeIds.push(id);
      return [id, { ...node, inputs }];
    }),
  );
  return { graph: changed, nodeIds };
}

/** `--seed N|random` → the seed; random stays below 2^48 so that JSON carries it exactly. */
export function parseSeed(text: string, random: () => number = Math.random): { seed: number; random: boolean } {
  if (text === "random") return { seed: Math.floor(random() * 2 ** 48), random: true };
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw usageError(`--seed takes a whole number or "random" (got "${text}")`);
  return { seed: Number(text), random: false };
}
