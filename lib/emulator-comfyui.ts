// The emulator's worker in the worker-comfyui dialect: RunPod's official worker-comfyui 5.x handler
// (5.8.5) and the parts of the ComfyUI behind it that a client can see: the image upload
// (/upload/image), the prompt check (/prompt's validate_prompt), the execution and the history.
// Its answers match the recordings in shared/fixtures/responses/worker-comfyui-local/ to the letter,
// Python reprs included. Like emulator-worker.ts it renders tiny PNGs instead of running models.
//
// Pure: what a worker's ComfyUI keeps between jobs (uploaded inputs, saved outputs and SaveImage's
// counters) goes in and comes out as a value; the only effect is the `s3` callback the caller gives.
import { CORE_OUTPUT_NODES, byNodeId, bytesPerImage, isRecord, renderSaveImage, upstreamOf } from "./emulator-worker.ts";
import type { WorkflowNode } from "./emulator-worker.ts";

/** The checkpoints of the worker the fixtures were recorded on (its "Available checkpoint models"). */
export const RECORDED_CHECKPOINTS: readonly string[] = [
  "flux1-dev-fp8.safetensors",
  "sd3_medium_incl_clips_t5xxlfp8.safetensors",
  "sd_xl_base_1.0.safetensors",
  "sd_xl_turbo_1.0_fp16.safetensors",
  "v1-5-pruned-emaonly-fp16.safetensors",
  "v1-5-pruned-emaonly.safetensors",
];

/** What a worker's ComfyUI keeps from one job to the next. */
export interface ComfyState {
  /** The input folder: file name → whether Pillow can open it as an image. */
  readonly inputs: ReadonlyMap<string, boolean>;
  /** The output folder: files saved so far, by path relative to it ("renders/cat_00001_.png"). */
  readonly outputs: ReadonlySet<string>;
  /** SaveImage's last counter, by output sub-folder and prefix ("renders/cat"). */
  readonly counters: ReadonlyMap<string, number>;
}

/** A worker that has run nothing yet. */
export const FRESH_COMFY: ComfyState = { inputs: new Map(), outputs: new Set(), counters: new Map() };

export interface ComfyContext {
  jobId: string;
  /** RUNPOD_POD_ID: the worker's id on RunPod; undefined on the local test server ("unknown"). */
  workerId: string | undefined;
  /** The checkpoints this ComfyUI has; a CheckpointLoaderSimple naming another one fails validation. */
  checkpoints: readonly string[];
  /** With BUCKET_ENDPOINT_URL set, each image goes to S3: stores it and answers its presigned URL. */
  s3?: (file: { jobId: string; filename: string; bytes: Uint8Array }) => string;
  /** When set, the job's images are random noise whose PNG bytes add up to about this much (for benchmarks). */
  outputBytes?: number;
}

export interface ComfyImage {
  filename: string;
  type: "base64" | "s3_url";
  data: string;
}
export type ComfyOutput = { images: ComfyImage[]; errors?: string[] } | { status: "success_no_images"; images: ComfyImage[] };
/** The handler's answer; a failure's `output` holds what it returned beside `error` (RunPod keeps it there). */
export type ComfyResult = { output: ComfyOutput } | { error: string; output?: { details: string[] } };

// ---- Constants of the worker image ---------------------------------------------------------------

const COMFY_HOST = "127.0.0.1:8188";
const COMFY_DIR = "/comfyui";
const RUNPOD_VERSION = "1.12.0";
const IMAGES_SHAPE_ERROR = "'images' must be a list of objects with 'name' and 'image' keys";
const CKPT_TOOLTIP = "The name of the checkpoint (model) to load.";
/** ComfyUI stops listing a combo's values in an error past this many. */
const MAX_LISTED_VALUES = 20;

/** Output nodes of core ComfyUI (no custom nodes). Only SaveImage files are rendered; PreviewImage's are temp files, which the worker skips. */
const OUTPUT_NODES = new Set([...CORE_OUTPUT_NODES, "PreviewAudio", "SaveLatent"]);

/** Core ComfyUI's node types (a bare worker-comfyui image has no custom nodes): any other class_type is "not found". */
const KNOWN_NODES = new Set([
  ...OUTPUT_NODES,
  ...["KSampler", "KSamplerAdvanced", "CheckpointLoaderSimple", "CheckpointLoader", "unCLIPCheckpointLoader", "ImageOnlyCheckpointLoader"],
  ...["CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeSDXLRefiner", "CLIPTextEncodeFlux", "CLIPTextEncodeSD3", "CLIPSetLastLayer"],
  ...["VAEDecode", "VAEEncode", "VAEEncodeForInpaint", "VAEDecodeTiled", "VAEEncodeTiled", "VAELoader", "InpaintModelConditioning"],
  ...["EmptyLatentImage", "EmptySD3LatentImage", "LatentUpscale", "LatentUpscaleBy", "LatentFromBatch", "RepeatLatentBatch"],
  ...["LatentComposite", "LatentBlend", "LatentRotate", "LatentFlip", "LatentCrop", "SetLatentNoiseMask", "LoadLatent"],
  ...["LoadImage", "LoadImageMask", "LoadImageOutput", "ImageScale", "ImageScaleBy", "ImageScaleToTotalPixels", "ImageInvert"],
  ...["ImageBatch", "ImagePadForOutpaint", "EmptyImage", "ImageCrop", "ImageBlend", "ImageBlur", "ImageSharpen", "ImageQuantize"],
  ...["ImageToMask", "MaskToImage", "SolidMask", "InvertMask", "GrowMask", "FeatherMask", "CropMask", "ThresholdMask", "MaskComposite"],
  ...["JoinImageWithAlpha", "SplitImageWithAlpha", "PorterDuffImageComposite", "ImageCompositeMasked"],
  ...["UpscaleModelLoader", "ImageUpscaleWithModel", "LoraLoader", "LoraLoaderModelOnly", "CLIPLoader", "DualCLIPLoader"],
  ...["TripleCLIPLoader", "UNETLoader", "CLIPVisionLoader", "CLIPVisionEncode", "StyleModelLoader", "StyleModelApply"],
  ...["unCLIPConditioning", "ControlNetLoader", "DiffControlNetLoader", "ControlNetApply", "ControlNetApplyAdvanced", "GLIGENLoader"],
  ...["GLIGENTextBoxApply", "ConditioningAverage", "ConditioningCombine", "ConditioningConcat", "ConditioningSetArea"],
  ...["ConditioningSetAreaPercentage", "ConditioningSetAreaStrength", "ConditioningSetMask", "ConditioningZeroOut"],
  ...["ConditioningSetTimestepRange", "FluxGuidance", "ModelSamplingFlux", "ModelSamplingSD3", "ModelSamplingDiscrete"],
  ...["SamplerCustom", "SamplerCustomAdvanced", "KSamplerSelect", "BasicScheduler", "KarrasScheduler", "RandomNoise"],
  ...["DisableNoise", "BasicGuider", "CFGGuider", "DualCFGGuider", "LoadVideo", "CreateVideo", "GetVideoComponents", "LoadAudio"],
]);

/** Inputs without which the node types the emulator checks fail validation ("required_input_missing"). */
const REQUIRED_INPUTS: Record<string, readonly string[]> = {
  CheckpointLoaderSimple: ["ckpt_name"],
  LoadImage: ["image"],
  LoadImageMask: ["image", "channel"],
  SaveImage: ["images", "filename_prefix"],
  PreviewImage: ["images"],
};
const IMAGE_LOADERS = new Set(["LoadImage", "LoadImageMask"]);
const FOLDER_ANNOTATIONS = { " [input]": "input", " [output]": "output", " [temp]": "temp" } as const;

// ---- The handler -----------------------------------------------------------------------------------

/** A Python exception that escapes the handler: runpod's run_job turns it into the job's error. */
class PythonError extends Error {
  constructor(
    readonly type: string,
    message: string,
    /** The handler's line that raised it, for the traceback. */
    readonly code: string,
  ) {
    super(message);
  }
}

/** worker-comfyui's `handler(job)`, with the worker's ComfyUI as it was before the job and as it is after. */
export function runComfyHandler(input: unknown, state: ComfyState, context: ComfyContext): { result: ComfyResult; state: ComfyState } {
  const comfy = { inputs: new Map(state.inputs), outputs: new Set(state.outputs), counters: new Map(state.counters) };
  let result: ComfyResult;
  try {
    result = handle(input, comfy, context);
  } catch (error) {
    if (!(error instanceof PythonError)) throw error;
    result = { error: runpodErrorJson(error, context.workerId) };
  }
  return { result, state: comfy };
}

type MutableState = { inputs: Map<string, boolean>; outputs: Set<string>; counters: Map<string, number> };

function handle(raw: unknown, comfy: MutableState, context: ComfyContext): ComfyResult {
  const input = validateInput(raw);
  if (typeof input === "string") return { error: input };

  if (Array.isArray(input.images) && input.images.length > 0) {
    const failures = uploadImages(input.images, comfy.inputs);
    if (failures.length > 0) return { error: "Failed to upload one or more input images", output: { details: failures } };
  }

  const queued = queueWorkflow(input.workflow, comfy, context.checkpoints);
  if (typeof queued === "string") return { error: queued };

  const { images, errors } = execute(queued, comfy, context);
  if (images.length === 0 && errors.length > 0) return { error: "Job processing failed", output: { details: errors } };
  if (images.length === 0) return { output: { status: "success_no_images", images: [] } };
  return { output: errors.length > 0 ? { images, errors } : { images } };
}

/** `validate_input`: the workflow and images, or the message the job fails with. */
function validateInput(raw: unknown): { workflow: unknown; images: unknown } | string {
  if (raw === null || raw === undefined) return "Please provide input";
  let input = raw;
  if (typeof raw === "string") {
    try {
      input = JSON.parse(raw);
    } catch {
      return "Invalid JSON format in input";
    }
  }
  if (!isRecord(input)) throw new PythonError("AttributeError", `'${pyType(input)}' object has no attribute 'get'`, 'workflow = job_input.get("workflow")');
  if (input.workflow === undefined || input.workflow === null) return "Missing 'workflow' parameter";
  const images = input.images;
  // `all("name" in image and "image" in image for image in images)`: Python's `in`, short-circuits included.
  if (images !== undefined && images !== null) {
    if (!Array.isArray(images) || !images.every((image) => pyIn("name", image) && pyIn("image", image))) return IMAGES_SHAPE_ERROR;
  }
  return { workflow: input.workflow, images };
}

/** `upload_images`: every image is tried (those that succeed stay in the input folder); the failures' messages. */
function uploadImages(images: unknown[], inputs: Map<string, boolean>): string[] {
  const failures: string[] = [];
  for (const image of images) {
    // A list or string that passed validate_input fails on image["name"], and its except clause on image.get().
    if (!isRecord(image)) {
      throw new PythonError("AttributeError", `'${pyType(image)}' object has no attribute 'get'`, `error_msg = f"Unexpected error uploading {image.get('name', 'unknown')}: {e}"`);
    }
    const name = pyStr(image.name);
    const blob = decodeUpload(image.image);
    if (typeof blob === "string") {
      failures.push(blob.startsWith("binascii:") ? `Error decoding base64 for ${name}: ${blob.slice(9)}` : `Unexpected error uploading ${name}: ${blob}`);
      continue;
    }
    const stored = uploadedPath(name);
    if (typeof stored === "number") {
      const reason = stored === 400 ? "400 Client Error: Bad Request" : "500 Server Error: Internal Server Error";
      failures.push(`Error uploading ${name}: ${reason} for url: http://${COMFY_HOST}/upload/image`);
      continue;
    }
    inputs.set(stored, isImage(blob));
  }
  return failures;
}

/** The bytes of an upload's `image` (a data URI's prefix dropped), or why Python failed: "binascii:…" for base64 errors. */
function decodeUpload(data: unknown): Uint8Array | string {
  if (typeof data !== "string") {
    const type = pyType(data);
    if (data === null || typeof data !== "object") return `argument of type '${type}' is not iterable`;
    if (Array.isArray(data) && data.includes(",")) return `'list' object has no attribute 'split'`;
    return `argument should be a bytes-like object or ASCII string, not '${type}'`;
  }
  const base64 = data.includes(",") ? data.slice(data.indexOf(",") + 1) : data;
  if (/[^\x00-\x7f]/.test(base64)) return "string argument should contain only ASCII characters";
  const decoded = pyBase64Decode(base64);
  return typeof decoded === "string" ? `binascii:${decoded}` : decoded;
}

/**
 * Where ComfyUI's /upload/image writes a file (no sub-folder asked), relative to the input folder, or
 * its error status: 400 for a path outside the folder, 500 when the file cannot be written (a
 * sub-folder that does not exist, no name at all).
 */
function uploadedPath(name: string): string | 400 | 500 {
  if (name === "") return 500;
  const path = normalizePath(name.startsWith("/") ? name : `${COMFY_DIR}/input/${name}`);
  if (path !== `${COMFY_DIR}/input` && !path.startsWith(`${COMFY_DIR}/input/`)) return 400;
  const relative = path.slice(`${COMFY_DIR}/input/`.length);
  return relative === "" || relative.includes("/") ? 500 : relative;
}

/** Python's os.path.normpath of an absolute POSIX path. */
function normalizePath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "..") parts.pop();
    else if (part !== "" && part !== ".") parts.push(part);
  }
  return `/${parts.join("/")}`;
}

/** What Pillow recognises, by its signature: PNG, JPEG, GIF, WebP, BMP, TIFF. */
const IMAGE_SIGNATURES: readonly (readonly [offset: number, signature: string])[] = [
  [0, "\x89PNG\r\n\x1a\n"],
  [0, "\xff\xd8\xff"],
  [0, "GIF87a"],
  [0, "GIF89a"],
  [8, "WEBP"],
  [0, "BM"],
  [0, "II*\0"],
  [0, "MM\0*"],
];

function isImage(bytes: Uint8Array): boolean {
  const at = (offset: number, signature: string) => [...signature].every((char, i) => bytes[offset + i] === char.charCodeAt(0));
  return IMAGE_SIGNATURES.some(([offset, signature]) => at(offset, signature) && (offset === 0 || at(0, "RIFF")));
}

// ---- ComfyUI's /prompt, and how the worker words its refusals ---------------------------------------

interface ComfyError {
  type: string;
  message: string;
  details: string;
  extra_info: Record<string, unknown>;
}
interface NodeError {
  errors: ComfyError[];
  dependent_outputs: string[];
  class_type: string;
}
type PromptAnswer =
  | { status: 500 }
  | { status: 400; error: ComfyError; nodeErrors: Record<string, NodeError> }
  | { status: 200; nodes: Map<string, WorkflowNode>; outputs: string[] };

/** `queue_workflow`: the prompt ComfyUI accepted (its nodes and the outputs it will run), or the worker's message. */
function queueWorkflow(workflow: unknown, comfy: MutableState, checkpoints: readonly string[]): Extract<PromptAnswer, { status: 200 }> | string {
  const answer = validatePrompt(workflow, comfy, checkpoints);
  if (answer.status === 200) return answer;
  if (answer.status === 500) return `Error queuing workflow: 500 Server Error: Internal Server Error for url: http://${COMFY_HOST}/prompt`;

  const { error, nodeErrors } = answer;
  const message = error.type === "prompt_outputs_failed_validation" ? "Workflow validation failed" : error.message;
  const details = Object.entries(nodeErrors).flatMap(([id, node]) =>
    Object.entries(node).map(([key, value]) => `Node ${id} (${key}): ${pyStr(value)}`),
  );
  if (details.length === 0) return `${message}. Raw response: ${pyJson({ error, node_errors: nodeErrors })}`;
  let text = `${message}:\n${details.map((detail) => `• ${detail}`).join("\n")}`;
  if (details.some((detail) => detail.includes("not in list") && detail.includes("ckpt_name"))) {
    text += checkpoints.length > 0
      ? `\n\nAvailable checkpoint models: ${checkpoints.join(", ")}`
      : "\n\nNo checkpoint models appear to be available. Please check your model installation.";
  }
  return text;
}

/** ComfyUI's validate_prompt behind POST /prompt: 500 where Python raises, 400 with its error, or the outputs to run. */
function validatePrompt(prompt: unknown, comfy: MutableState, checkpoints: readonly string[]): PromptAnswer {
  // `for x in prompt`: an empty string or list has no nodes; anything else that is no dict raises.
  if (!isRecord(prompt)) return (typeof prompt === "string" || Array.isArray(prompt)) && prompt.length === 0 ? noOutputs() : { status: 500 };

  const outputs: string[] = [];
  for (const [id, node] of Object.entries(prompt)) {
    if (!isRecord(node)) return { status: 500 };
    // `node.get('_meta', {})` is read only to word an error, and raises when it is no dict.
    const meta = node._meta ?? {};
    if (!("class_type" in node)) {
      if (!isRecord(meta)) return { status: 500 };
      const title = meta.title;
      const shown = pyTruthy(title) ? pyStr(title) : `#${id}`;
      return missingNodeType(`Node '${shown}' has no class_type. The workflow may be corrupted or a custom node is missing.`, id, null, title ?? null);
    }
    const classType = node.class_type;
    if (typeof classType === "object" && classType !== null) return { status: 500 }; // unhashable
    if (typeof classType !== "string" || !KNOWN_NODES.has(classType)) {
      if (!isRecord(meta)) return { status: 500 };
      const title = "title" in meta ? meta.title : classType;
      return missingNodeType(`Node '${pyStr(title)}' not found. The custom node may not be installed.`, id, classType, title);
    }
    if (OUTPUT_NODES.has(classType)) outputs.push(id);
  }
  if (outputs.length === 0) return noOutputs();

  const validator = new InputValidator(prompt, comfy, checkpoints);
  const good: string[] = [];
  const failed: [string, ComfyError[]][] = [];
  const nodeErrors: Record<string, NodeError> = {};
  for (const output of outputs.sort(byNodeId)) {
    const reasons = validator.validateOutput(output);
    if (reasons === true) {
      good.push(output);
      continue;
    }
    failed.push([output, reasons]);
    for (const [id, result] of validator.validated) {
      if (result.valid || result.reasons.length === 0) continue;
      nodeErrors[id] ??= { errors: result.reasons, dependent_outputs: [], class_type: String((prompt[id] as Record<string, unknown>).class_type) };
      nodeErrors[id].dependent_outputs.push(output);
    }
  }
  if (good.length > 0) return { status: 200, nodes: validator.nodes(), outputs: good };
  const details = failed.flatMap(([, reasons]) => reasons.map((reason) => `${reason.message}: ${reason.details}`)).join("\n");
  const error = { type: "prompt_outputs_failed_validation", message: "Prompt outputs failed validation", details, extra_info: {} };
  return { status: 400, error, nodeErrors };
}

const noOutputs = (): PromptAnswer => ({
  status: 400,
  error: { type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} },
  nodeErrors: {},
});

function missingNodeType(message: string, id: string, classType: unknown, title: unknown): PromptAnswer {
  const extra_info = { node_id: id, class_type: classType, node_title: title };
  return { status: 400, error: { type: "missing_node_type", message, details: `Node ID '#${id}'`, extra_info }, nodeErrors: {} };
}

/** A Python exception raised while validating (a link to a node that does not exist, a node without inputs). */
class ValidationException {
  constructor(
    readonly type: string,
    readonly text: string,
    /** The line of validate_inputs that raised it. */
    readonly code: string,
  ) {}
}

/**
 * ComfyUI's validate_inputs, recursive and memoised in `validated` (in the order nodes finish), for
 * the checks the emulator knows: links, the required inputs and combos of the node types it models,
 * and LoadImage's file check.
 */
class InputValidator {
  readonly validated = new Map<string, { valid: boolean; reasons: ComfyError[] }>();

  constructor(
    private readonly prompt: Record<string, unknown>,
    private readonly comfy: MutableState,
    private readonly checkpoints: readonly string[],
  ) {}

  /** true, or the reasons validate_prompt gives for this output (an exception is pinned on it). */
  validateOutput(id: string): true | ComfyError[] {
    try {
      if (this.validate(id)) return true;
      return this.validated.get(id)?.reasons ?? [];
    } catch (error) {
      if (!(error instanceof ValidationException)) throw error;
      const reasons = [
        {
          type: "exception_during_validation",
          message: "Exception when validating node",
          details: error.text,
          extra_info: { exception_type: error.type, traceback: traceback("validate_prompt", error.code) },
        },
      ];
      this.validated.set(id, { valid: false, reasons });
      return reasons;
    }
  }

  /** Every node as executed: id, class_type and inputs (validated ones all have an inputs object). */
  nodes(): Map<string, WorkflowNode> {
    const nodes = new Map<string, WorkflowNode>();
    for (const [id, node] of Object.entries(this.prompt) as [string, Record<string, unknown>][]) {
      nodes.set(id, { id, classType: String(node.class_type), inputs: isRecord(node.inputs) ? node.inputs : {} });
    }
    return nodes;
  }

  private validate(id: string): boolean {
    const known = this.validated.get(id);
    if (known) return known.valid;
    const node = this.prompt[id] as Record<string, unknown>;
    const classType = String(node.class_type);
    if (!isRecord(node.inputs)) throw new ValidationException("KeyError", "'inputs'", "inputs = prompt[unique_id]['inputs']");
    const inputs = node.inputs;
    const errors: ComfyError[] = [];
    let valid = true;

    for (const [name, value] of Object.entries(inputs)) {
      if (!Array.isArray(value)) continue;
      if (value.length !== 2) {
        errors.push({
          type: "bad_linked_input",
          message: "Bad linked input, must be a length-2 list of [node_id, slot_index]",
          details: name,
          extra_info: { input_name: name, input_config: null, received_value: value },
        });
        continue;
      }
      const source: unknown = value[0];
      if (typeof source !== "string" || !Object.hasOwn(this.prompt, source)) {
        const unhashable = typeof source === "object" && source !== null;
        const text = unhashable ? `unhashable type: '${pyType(source)}'` : pyRepr(source);
        throw new ValidationException(unhashable ? "TypeError" : "KeyError", text, "o_class_type = prompt[o_id]['class_type']");
      }
      try {
        if (!this.validate(source)) valid = false;
      } catch (error) {
        if (!(error instanceof ValidationException)) throw error;
        valid = false;
        const reasons = [
          {
            type: "exception_during_inner_validation",
            message: "Exception when validating inner node",
            details: error.text,
            extra_info: {
              input_name: name,
              input_config: null,
              exception_message: error.text,
              exception_type: error.type,
              traceback: traceback("validate_inputs", error.code),
              linked_node: value,
            },
          },
        ];
        this.validated.set(source, { valid: false, reasons });
      }
    }
    errors.push(...this.widgetErrors(classType, inputs));
    const result = { valid: valid && errors.length === 0, reasons: errors };
    this.validated.set(id, result);
    return result.valid;
  }

  private widgetErrors(classType: string, inputs: Record<string, unknown>): ComfyError[] {
    const errors: ComfyError[] = [];
    for (const name of REQUIRED_INPUTS[classType] ?? []) {
      if (!(name in inputs)) {
        errors.push({ type: "required_input_missing", message: "Required input is missing", details: name, extra_info: { input_name: name } });
      }
    }
    const ckpt = inputs.ckpt_name;
    if (classType === "CheckpointLoaderSimple" && ckpt !== undefined && !Array.isArray(ckpt) && !this.checkpoints.includes(ckpt as string)) {
      const listed = this.checkpoints.length <= MAX_LISTED_VALUES;
      errors.push({
        type: "value_not_in_list",
        message: "Value not in list",
        details: `ckpt_name: '${pyStr(ckpt)}' not in ${listed ? pyRepr(this.checkpoints) : `(list of length ${this.checkpoints.length})`}`,
        extra_info: {
          input_name: "ckpt_name",
          input_config: listed ? [this.checkpoints, { tooltip: CKPT_TOOLTIP }] : null,
          received_value: ckpt,
        },
      });
    }
    const image = inputs.image;
    if (IMAGE_LOADERS.has(classType) && image !== undefined && !Array.isArray(image) && !this.fileExists(image)) {
      errors.push({
        type: "custom_validation_failed",
        message: "Custom validation failed for node",
        details: `image - Invalid image file: ${pyStr(image)}`,
        extra_info: { input_name: "image" },
      });
    }
    return errors;
  }

  /** folder_paths.exists_annotated_filepath: "name", "name [input]", "name [output]" or "name [temp]". */
  private fileExists(annotated: unknown): boolean {
    if (typeof annotated !== "string") return false;
    const located = locate(annotated);
    if (located.folder === "input") return this.comfy.inputs.has(located.name);
    return located.folder === "output" && this.comfy.outputs.has(located.name);
  }
}

/** A file name as a loader node gives it, split from its folder annotation. */
function locate(annotated: string): { name: string; folder: "input" | "output" | "temp" } {
  for (const [suffix, folder] of Object.entries(FOLDER_ANNOTATIONS)) {
    if (annotated.endsWith(suffix)) return { name: annotated.slice(0, -suffix.length), folder };
  }
  return { name: annotated, folder: "input" };
}

/**
 * traceback.format_tb of a validation exception, from the frame that caught it (validate_prompt for
 * an output node, the linking node's validate_inputs otherwise) to the line that raised it. The line
 * numbers are made up.
 */
function traceback(caughtIn: "validate_prompt" | "validate_inputs", raisedBy: string): string[] {
  const frame = (fn: string, line: number, code: string) => `  File "${COMFY_DIR}/execution.py", line ${line}, in ${fn}\n    ${code}\n`;
  const call = caughtIn === "validate_prompt" ? "m = await validate_inputs(prompt_id, prompt, o, validated)" : "r = await validate_inputs(prompt_id, prompt, o_id, validated)";
  return [frame(caughtIn, caughtIn === "validate_prompt" ? 1080 : 848, call), frame("validate_inputs", 832, raisedBy)];
}

// ---- Execution and the worker's collection of images -----------------------------------------------

/**
 * Runs the accepted outputs in id order. A loader whose file Pillow cannot open stops the prompt with
 * an execution error; images saved before it are still returned. The worker then collects the
 * `images` of every output node in the history, skipping temp files.
 */
function execute(prompt: { nodes: Map<string, WorkflowNode>; outputs: string[] }, comfy: MutableState, context: ComfyContext) {
  const { nodes } = prompt;
  const saves = prompt.outputs.flatMap((id) => nodes.get(id) ?? []).filter((node) => node.classType === "SaveImage");
  const imageBytes = bytesPerImage(context.outputBytes, saves, nodes);
  const images: ComfyImage[] = [];
  const errors: string[] = [];
  for (const id of prompt.outputs) {
    const output = nodes.get(id);
    if (!output) continue;
    const broken = upstreamOf([output], nodes).find((node) => {
      const file = locate(String(node.inputs.image));
      return IMAGE_LOADERS.has(node.classType) && file.folder === "input" && comfy.inputs.get(file.name) === false;
    });
    if (broken) {
      const path = `${COMFY_DIR}/input/${locate(String(broken.inputs.image)).name}`;
      const message = `cannot identify image file '${path}'\n`; // ComfyUI's "{exception}\n{tips}", tips empty
      errors.push(`Workflow execution error: Node Type: ${broken.classType}, Node ID: ${broken.id}, Message: ${message}`);
      break;
    }
    if (output.classType !== "SaveImage") continue;
    for (const file of saveImage(output, nodes, comfy, imageBytes)) {
      const entry: ComfyImage = context.s3
        ? { filename: file.filename, type: "s3_url", data: context.s3({ jobId: context.jobId, filename: file.filename, bytes: Buffer.from(file.base64, "base64") }) }
        : { filename: file.filename, type: "base64", data: file.base64 };
      images.push(entry);
    }
  }
  return { images, errors };
}

/** SaveImage: one PNG per batch item, named `<prefix>_<counter:05>_.png` with the counter of its folder and prefix. */
function saveImage(node: WorkflowNode, nodes: Map<string, WorkflowNode>, comfy: MutableState, imageBytes: number | undefined): { filename: string; base64: string }[] {
  const prefix = normalizePath(`/${pyStr(node.inputs.filename_prefix ?? "ComfyUI")}`).slice(1);
  const slash = prefix.lastIndexOf("/");
  const [subfolder, base] = [prefix.slice(0, Math.max(0, slash)), prefix.slice(slash + 1)];
  const key = `${subfolder}/${base}`;
  let counter = comfy.counters.get(key) ?? 0;
  return renderSaveImage(node, nodes, imageBytes).map((base64, batchNumber) => {
    counter += 1;
    comfy.counters.set(key, counter);
    const filename = `${base.replaceAll("%batch_num%", String(batchNumber))}_${String(counter).padStart(5, "0")}_.png`;
    comfy.outputs.add(subfolder ? `${subfolder}/${filename}` : filename);
    return { filename, base64 };
  });
}

/** What runpod's run_job makes of an exception the handler raised: a JSON string as the job's error. */
function runpodErrorJson(error: PythonError, workerId: string | undefined): string {
  const trace =
    "Traceback (most recent call last):\n" +
    '  File "/usr/local/lib/python3.12/site-packages/runpod/serverless/modules/rp_job.py", line 164, in run_job\n' +
    "    handler_return = handler(job)\n" +
    "                     ^^^^^^^^^^^^\n" +
    '  File "/handler.py", line 573, in handler\n' +
    `    ${error.code}\n` +
    `${error.type}: ${error.message}\n`;
  return pyJson({
    error_type: `<class '${error.type}'>`,
    error_message: error.message,
    error_traceback: trace,
    hostname: workerId ?? "unknown",
    worker_id: workerId ?? "unknown",
    runpod_version: RUNPOD_VERSION,
  });
}

// ---- Python, as the texts need it ------------------------------------------------------------------

/** The name of a JSON value's Python type. */
export function pyType(value: unknown): string {
  if (value === null || value === undefined) return "NoneType";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "number") return Number.isInteger(value) ? "int" : "float";
  if (typeof value === "string") return "str";
  return Array.isArray(value) ? "list" : "dict";
}

function pyTruthy(value: unknown): boolean {
  if (value === null || value === undefined || value === false || value === 0 || value === "") return false;
  if (Array.isArray(value)) return value.length > 0;
  return typeof value !== "object" || Object.keys(value).length > 0;
}

/** Python's `needle in container` for a JSON value; TypeError where Python raises one. */
function pyIn(needle: string, container: unknown): boolean {
  if (typeof container === "string") return container.includes(needle);
  if (Array.isArray(container)) return container.includes(needle);
  if (isRecord(container)) return needle in container;
  throw new PythonError("TypeError", `argument of type '${pyType(container)}' is not iterable`, `"name" in image and "image" in image for image in images`);
}

/** Python's str() of a JSON value. */
export function pyStr(value: unknown): string {
  return typeof value === "string" ? value : pyRepr(value);
}

/** Python's repr() of a JSON value (integers as int, other numbers as float). */
export function pyRepr(value: unknown): string {
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value === "number") return pyNumber(value);
  if (typeof value === "string") return pyStringRepr(value);
  if (Array.isArray(value)) return `[${value.map(pyRepr).join(", ")}]`;
  return `{${Object.entries(value).map(([key, item]) => `${pyStringRepr(key)}: ${pyRepr(item)}`).join(", ")}}`;
}

function pyNumber(value: number): string {
  if (Number.isSafeInteger(value)) return String(value);
  if (!Number.isFinite(value)) return Number.isNaN(value) ? "nan" : value > 0 ? "inf" : "-inf";
  // float.__repr__: the shortest digits, positional from 1e-4 to 1e16, else d.ddde±XX.
  const [mantissa = "", exponentText = "0"] = value.toExponential().split("e");
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= 16) return `${mantissa}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  const text = String(value);
  return text.includes(".") ? text : `${text}.0`;
}

function pyStringRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if (char === "\\" || char === quote) out += `\\${char}`;
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "\t") out += "\\t";
    else if (char !== " " && /[\p{C}\p{Z}]/u.test(char)) {
      out += code <= 0xff ? `\\x${hex(code, 2)}` : code <= 0xffff ? `\\u${hex(code, 4)}` : `\\U${hex(code, 8)}`;
    } else out += char;
  }
  return out + quote;
}

const hex = (code: number, width: number) => code.toString(16).padStart(width, "0");

/** Python's json.dumps with its defaults: ", " and ": " separators, everything outside ASCII escaped. */
export function pyJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return String(value);
  if (typeof value === "number") return Number.isFinite(value) ? pyNumber(value) : pyNumber(value) === "nan" ? "NaN" : value > 0 ? "Infinity" : "-Infinity";
  if (typeof value === "string") return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (char) => `\\u${hex(char.charCodeAt(0), 4)}`);
  if (Array.isArray(value)) return `[${value.map(pyJson).join(", ")}]`;
  return `{${Object.entries(value).map(([key, item]) => `${pyJson(key)}: ${pyJson(item)}`).join(", ")}}`;
}

const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** base64.b64decode(text) (validate=False) of an ASCII text: the bytes, or binascii.Error's message. */
export function pyBase64Decode(text: string): Uint8Array | string {
  const out: number[] = [];
  let quadPos = 0;
  let left = 0;
  let pads = 0;
  for (const char of text) {
    if (char === "=") {
      if (quadPos >= 2 && quadPos + ++pads >= 4) return Uint8Array.from(out);
      continue;
    }
    const value = BASE64_ALPHABET.indexOf(char);
    if (value < 0) continue; // characters outside the alphabet are discarded
    pads = 0;
    if (quadPos === 0) left = value;
    else if (quadPos === 1) out.push(((left << 2) | (value >> 4)) & 0xff), (left = value & 0x0f);
    else if (quadPos === 2) out.push(((left << 4) | (value >> 2)) & 0xff), (left = value & 0x03);
    else out.push(((left << 6) | value) & 0xff);
    quadPos = (quadPos + 1) % 4;
  }
  if (quadPos === 1) {
    return `Invalid base64-encoded string: number of data characters (${Math.floor(out.length / 3) * 4 + 1}) cannot be 1 more than a multiple of 4`;
  }
  return quadPos === 0 ? Uint8Array.from(out) : "Incorrect padding";
}
