import { describe, expect, test } from "bun:test";
import { FRESH_COMFY, RECORDED_CHECKPOINTS, pyBase64Decode, pyJson, pyRepr, runComfyHandler } from "../lib/emulator-comfyui.ts";
import type { ComfyContext, ComfyResult, ComfyState } from "../lib/emulator-comfyui.ts";
import { responseJson } from "./helpers.ts";
import { RECORDED_SESSION, TINY_PNG, comparable, img2img, recorded, sd15 } from "./emulator-recordings.ts";

const CONTEXT: ComfyContext = { jobId: "job-1", workerId: undefined, checkpoints: RECORDED_CHECKPOINTS };

/** The handler on a worker in `state` (fresh by default). */
const run = (input: unknown, state: ComfyState = FRESH_COMFY, context: Partial<ComfyContext> = {}) =>
  runComfyHandler(input, state, { ...CONTEXT, ...context });
const resultOf = (input: unknown, state?: ComfyState, context?: Partial<ComfyContext>): ComfyResult => run(input, state, context).result;

function errorOf(result: ComfyResult): string {
  if (!("error" in result)) throw new Error(`expected an error, got ${JSON.stringify(result).slice(0, 200)}`);
  return result.error;
}
const filenames = (result: ComfyResult) => ("error" in result ? [result.error] : result.output.images.map((image) => image.filename));

/** The crash runpod's run_job reports as a JSON string, parsed. */
const crashOf = (result: ComfyResult) => JSON.parse(errorOf(result)) as Record<string, string>;

/** Runs `inputs` one after the other on one worker; the results. */
function session(inputs: unknown[], context?: Partial<ComfyContext>): ComfyResult[] {
  let state = FRESH_COMFY;
  return inputs.map((input) => {
    const step = run(input, state, context);
    state = step.state;
    return step.result;
  });
}

describe("the recorded session, replayed on one worker", () => {
  // Each job the recorded server ran, with what run_job and the local server keep of its result.
  const jobs = RECORDED_SESSION.flatMap((step) => {
    if (step.route === "runsync") return [{ fixture: step.fixture, input: step.input }];
    if (step.route !== "status") return [];
    // The first status answered (a POST) runs the job its /run stored.
    const submitted = RECORDED_SESSION.find((other) => other.fixture === step.of);
    const first = RECORDED_SESSION.find((other) => other.route === "status" && other.of === step.of && other.httpStatus === 200);
    return first === step && submitted?.route === "run" ? [{ fixture: step.fixture, input: submitted.input }] : [];
  });
  const results = session(jobs.map((job) => job.input));

  test.each(jobs.map((job, index) => [job.fixture, index] as const))("%s", async (fixture, index) => {
    const result = results[index];
    if (!result) throw new Error("no result");
    const { id: _id, status: _status, ...kept } = await recorded(fixture);
    const local = "error" in result ? { error: result.error } : { output: result.output };
    expect(comparable(local)).toBe(comparable(kept));
  });

  test("the cloud keeps what the handler returned beside its error as output.details", () => {
    const byFixture = (name: string) => results[jobs.findIndex((job) => job.fixture === name)];
    expect(byFixture("13-runsync-runtime-error.json")).toEqual({
      error: "Job processing failed",
      output: { details: ["Workflow execution error: Node Type: LoadImage, Node ID: 10, Message: cannot identify image file '/comfyui/input/broken.png'\n"] },
    });
    expect(byFixture("14-runsync-upload-subfolder.json")).toEqual({
      error: "Failed to upload one or more input images",
      output: { details: ["Error uploading masks/ref.png: 500 Server Error: Internal Server Error for url: http://127.0.0.1:8188/upload/image"] },
    });
  });

  test("the cloud fixtures' failures, word for word", async () => {
    const upload = await responseJson<{ error: string; output: unknown }>("worker-comfyui-5-upload-subfolder.json");
    expect(resultOf({ workflow: img2img("masks/ref.png"), images: [{ name: "masks/ref.png", image: TINY_PNG }] })).toEqual({
      error: upload.error,
      output: upload.output as { details: string[] },
    });
    const validation = await responseJson<{ error: string }>("worker-comfyui-5-validation-failed.json");
    const wrongModel = sd15((graph) => (graph["4"]!.inputs.ckpt_name = "does-not-exist.safetensors"));
    expect(resultOf({ workflow: wrongModel })).toEqual({ error: validation.error });
  });

  test("on a fresh worker, the original handler's request fails: reference_images is never uploaded", () => {
    const input = { workflow: img2img(), reference_images: { "input.png": TINY_PNG }, return_base64: true };
    expect(errorOf(resultOf(input))).toBe(
      "Workflow validation failed:\n• Node 10 (errors): [{'type': 'custom_validation_failed', 'message': 'Custom validation failed for node', " +
        "'details': 'image - Invalid image file: input.png', 'extra_info': {'input_name': 'image'}}]\n" +
        "• Node 10 (dependent_outputs): ['9', '12']\n• Node 10 (class_type): LoadImage",
    );
  });
});

describe("validate_input", () => {
  const workflow = sd15();
  test.each<[string, unknown, string]>([
    ["no input", null, "Please provide input"],
    ["input as a string that is not JSON", "{workflow:", "Invalid JSON format in input"],
    ["no workflow", { images: [] }, "Missing 'workflow' parameter"],
    ["a null workflow", { workflow: null }, "Missing 'workflow' parameter"],
    ["images as an object", { workflow, images: { "a.png": TINY_PNG } }, "'images' must be a list of objects with 'name' and 'image' keys"],
    ["images as a string", { workflow, images: "a.png" }, "'images' must be a list of objects with 'name' and 'image' keys"],
    ["an image without its data", { workflow, images: [{ name: "a.png" }] }, "'images' must be a list of objects with 'name' and 'image' keys"],
    ["an image list item that fails first", { workflow, images: [{ image: TINY_PNG }, 5] }, "'images' must be a list of objects with 'name' and 'image' keys"],
  ])("%s", (_, input, message) => {
    expect(resultOf(input)).toEqual({ error: message });
  });

  test("input may be a JSON string; other keys are ignored, comfy_org_api_key included", () => {
    const input = { workflow: sd15(), comfy_org_api_key: "k", reference_images: {}, return_base64: true, extra: 1 };
    expect(filenames(resultOf(JSON.stringify(input)))).toEqual(["ComfyUI_00001_.png"]);
    expect(filenames(resultOf(input))).toEqual(["ComfyUI_00001_.png"]);
  });

  test.each<[string, unknown, string, string]>([
    ["a JSON string holding a list", "[1]", "AttributeError", "'list' object has no attribute 'get'"],
    ["a JSON string holding null", "null", "AttributeError", "'NoneType' object has no attribute 'get'"],
    ["an image that is a number", { workflow: sd15(), images: [5] }, "TypeError", "argument of type 'int' is not iterable"],
    ["an image that is a string naming both keys", { workflow: sd15(), images: ["name image"] }, "AttributeError", "'str' object has no attribute 'get'"],
  ])("%s: the handler raises, and run_job reports it as a JSON string", (_, input, type, message) => {
    const crash = crashOf(resultOf(input, FRESH_COMFY, { workerId: "abcdefghijklmn" }));
    expect(Object.keys(crash)).toEqual(["error_type", "error_message", "error_traceback", "hostname", "worker_id", "runpod_version"]);
    expect(crash).toMatchObject({ error_type: `<class '${type}'>`, error_message: message, worker_id: "abcdefghijklmn", runpod_version: "1.12.0" });
    expect(crash.error_traceback).toStartWith("Traceback (most recent call last):\n");
    expect(crash.error_traceback).toEndWith(`\n${type}: ${message}\n`);
  });

  test("the crash's error is Python's json.dumps (spaces after separators); hostname and worker are unknown locally", () => {
    const error = errorOf(resultOf("[1]"));
    expect(error).toStartWith('{"error_type": "<class \'AttributeError\'>", "error_message": ');
    expect(crashOf(resultOf("[1]"))).toMatchObject({ hostname: "unknown", worker_id: "unknown" });
  });
});

describe("upload_images", () => {
  const uploadError = (name: string, status: 400 | 500) =>
    `Error uploading ${name}: ${status === 400 ? "400 Client Error: Bad Request" : "500 Server Error: Internal Server Error"} for url: http://127.0.0.1:8188/upload/image`;
  test.each<[string, unknown, string]>([
    ["a sub-folder", TINY_PNG, uploadError("masks/a.png", 500)],
    ["an empty name", TINY_PNG, uploadError("", 500)],
    ["a path out of the input folder", TINY_PNG, uploadError("../a.png", 400)],
    ["an absolute path", TINY_PNG, uploadError("/etc/a.png", 400)],
    ["base64 one character too long", "abcde", "Error decoding base64 for x.png: Invalid base64-encoded string: number of data characters (5) cannot be 1 more than a multiple of 4"],
    ["base64 without its padding", "abcdef", "Error decoding base64 for x.png: Incorrect padding"],
    ["data outside ASCII", "é", "Unexpected error uploading x.png: string argument should contain only ASCII characters"],
    ["data as a number", 5, "Unexpected error uploading x.png: argument of type 'int' is not iterable"],
    ["data as null", null, "Unexpected error uploading x.png: argument of type 'NoneType' is not iterable"],
    ["data as a list", ["a"], "Unexpected error uploading x.png: argument should be a bytes-like object or ASCII string, not 'list'"],
  ])("%s fails the job", (what, image, detail) => {
    const names: Record<string, string> = { "a sub-folder": "masks/a.png", "an empty name": "", "a path out of the input folder": "../a.png", "an absolute path": "/etc/a.png" };
    const input = { workflow: sd15(), images: [{ name: names[what] ?? "x.png", image }] };
    expect(resultOf(input)).toEqual({ error: "Failed to upload one or more input images", output: { details: [detail] } });
  });

  test("every image is tried: the details list each failure, and the images that did upload stay", () => {
    const images = [
      { name: "a/b.png", image: TINY_PNG },
      { name: "good.png", image: `data:image/png;base64,${TINY_PNG}` },
      { name: "c/d.png", image: TINY_PNG },
    ];
    const failed = run({ workflow: sd15(), images });
    expect(failed.result).toMatchObject({ output: { details: [expect.stringContaining("a/b.png"), expect.stringContaining("c/d.png")] } });
    expect([...failed.state.inputs]).toEqual([["good.png", true]]);
    expect(filenames(resultOf({ workflow: img2img("good.png") }, failed.state))).toEqual(["ComfyUI_00001_.png", "second_00001_.png"]);
  });

  test("a name that normalises into the input folder is written there; padding ends the data", () => {
    const { state } = run({ workflow: sd15(), images: [{ name: "x/../in.png", image: `${TINY_PNG}==garbage` }] });
    expect([...state.inputs]).toEqual([["in.png", true]]);
  });

  test("bytes Pillow cannot open upload fine, and fail the LoadImage that reads them", () => {
    const input = { workflow: img2img("text.png"), images: [{ name: "text.png", image: Buffer.from("not an image").toString("base64") }] };
    expect(resultOf(input)).toEqual({
      error: "Job processing failed",
      output: { details: ["Workflow execution error: Node Type: LoadImage, Node ID: 10, Message: cannot identify image file '/comfyui/input/text.png'\n"] },
    });
  });
});

describe("ComfyUI's /prompt", () => {
  const INTERNAL = "Error queuing workflow: 500 Server Error: Internal Server Error for url: http://127.0.0.1:8188/prompt";
  const rawNoOutputs = 'Prompt has no outputs. Raw response: {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}}';
  const missingType = (message: string, id: string, classType: string, title: string) =>
    `${message}. Raw response: {"error": {"type": "missing_node_type", "message": "${message}", "details": "Node ID '#${id}'", ` +
    `"extra_info": {"node_id": "${id}", "class_type": ${classType}, "node_title": ${title}}}, "node_errors": {}}`;
  const notFound = "not found. The custom node may not be installed.";
  const noClassType = "has no class_type. The workflow may be corrupted or a custom node is missing.";

  test.each<[string, unknown, string]>([
    ["an editor-format file", { last_node_id: 9, nodes: [], links: [], version: 0.4 }, INTERNAL],
    ["a workflow as a string", JSON.stringify(sd15()), INTERNAL],
    ["a workflow as a number", 5, INTERNAL],
    ["a node that is not an object", { ...sd15(), "20": "x" }, INTERNAL],
    ["an unknown node whose _meta is not an object", { ...sd15(), "20": { class_type: "Custom", inputs: {}, _meta: 1 } }, INTERNAL],
    ["a class_type that is a list", { ...sd15(), "20": { class_type: ["SaveImage"], inputs: {} } }, INTERNAL],
    ["an empty workflow", {}, rawNoOutputs],
    ["an empty list", [], rawNoOutputs],
    ["no output node", sd15((graph) => delete graph["9"]), rawNoOutputs],
    ["a custom node without a title", { ...sd15(), "20": { class_type: "VHS_VideoCombine", inputs: {} } }, missingType(`Node 'VHS_VideoCombine' ${notFound}`, "20", '"VHS_VideoCombine"', '"VHS_VideoCombine"')],
    ["a non-string class_type", { ...sd15(), "20": { class_type: 5, inputs: {} } }, missingType(`Node '5' ${notFound}`, "20", "5", "5")],
    ["a node without class_type, titled", { ...sd15(), "20": { inputs: {}, _meta: { title: "Mystery" } } }, missingType(`Node 'Mystery' ${noClassType}`, "20", "null", '"Mystery"')],
    ["a node without class_type, untitled", { ...sd15(), "20": { inputs: {} } }, missingType(`Node '#20' ${noClassType}`, "20", "null", "null")],
    ["a title outside ASCII", { ...sd15(), "20": { class_type: "X", inputs: {}, _meta: { title: "Nœud" } } }, missingType(`Node 'Nœud' ${notFound}`, "20", '"X"', '"N\\u0153ud"').replace(`"message": "Node 'Nœud'`, `"message": "Node 'N\\u0153ud'`)],
  ])("%s", (_, workflow, message) => {
    expect(resultOf({ workflow })).toEqual({ error: message });
  });

  const validationFailed = (...lines: string[]) => ["Workflow validation failed:", ...lines.map((line) => `• ${line}`)].join("\n");

  test.each<[string, string[], string]>([
    ["none", [], "ckpt_name: 'x.safetensors' not in []\", 'extra_info': {'input_name': 'ckpt_name', 'input_config': [[], {'tooltip': 'The name of the checkpoint (model) to load.'}]"],
    ["21", Array.from({ length: 21 }, (_, i) => `m${i}.safetensors`), "ckpt_name: 'x.safetensors' not in (list of length 21)\", 'extra_info': {'input_name': 'ckpt_name', 'input_config': None"],
  ])("a missing model with %s checkpoints installed", (_, checkpoints, excerpt) => {
    const workflow = sd15((graph) => (graph["4"]!.inputs.ckpt_name = "x.safetensors"));
    const error = errorOf(resultOf({ workflow }, FRESH_COMFY, { checkpoints }));
    expect(error).toContain(excerpt);
    expect(error).toEndWith(
      checkpoints.length > 0
        ? `\n\nAvailable checkpoint models: ${checkpoints.join(", ")}`
        : "\n\nNo checkpoint models appear to be available. Please check your model installation.",
    );
  });

  test("required inputs of the node types it checks", () => {
    const workflow = sd15((graph) => {
      delete graph["4"]!.inputs.ckpt_name;
      delete graph["9"]!.inputs.filename_prefix;
    });
    const missing = (name: string) => `[{'type': 'required_input_missing', 'message': 'Required input is missing', 'details': '${name}', 'extra_info': {'input_name': '${name}'}}]`;
    expect(errorOf(resultOf({ workflow }))).toBe(
      validationFailed(
        `Node 4 (errors): ${missing("ckpt_name")}`,
        "Node 4 (dependent_outputs): ['9']",
        "Node 4 (class_type): CheckpointLoaderSimple",
        `Node 9 (errors): ${missing("filename_prefix")}`,
        "Node 9 (dependent_outputs): ['9']",
        "Node 9 (class_type): SaveImage",
      ),
    );
  });

  test("a malformed link is a bad_linked_input of its node", () => {
    const workflow = sd15((graph) => (graph["8"]!.inputs.samples = ["3", 0, 1]));
    expect(errorOf(resultOf({ workflow }))).toStartWith(
      validationFailed(
        "Node 8 (errors): [{'type': 'bad_linked_input', 'message': 'Bad linked input, must be a length-2 list of [node_id, slot_index]', 'details': 'samples', " +
          "'extra_info': {'input_name': 'samples', 'input_config': None, 'received_value': ['3', 0, 1]}}]",
      ),
    );
  });

  test("a link to a missing node raises KeyError: pinned on the node that links to it, or on the output itself", () => {
    const inner = errorOf(resultOf({ workflow: sd15((graph) => (graph["8"]!.inputs.vae = ["99", 2])) }));
    expect(inner).toStartWith(
      "Workflow validation failed:\n• Node 8 (errors): [{'type': 'exception_during_inner_validation', 'message': 'Exception when validating inner node', " +
        "'details': \"'99'\", 'extra_info': {'input_name': 'images', 'input_config': None, 'exception_message': \"'99'\", 'exception_type': 'KeyError', 'traceback': [",
    );
    expect(inner).toEndWith("'linked_node': ['8', 0]}}]\n• Node 8 (dependent_outputs): ['9']\n• Node 8 (class_type): VAEDecode");
    const outer = errorOf(resultOf({ workflow: sd15((graph) => (graph["9"]!.inputs.images = [8, 0])) }));
    expect(outer).toStartWith(
      "Workflow validation failed:\n• Node 9 (errors): [{'type': 'exception_during_validation', 'message': 'Exception when validating node', " +
        "'details': '8', 'extra_info': {'exception_type': 'KeyError', 'traceback': ['  File \"/comfyui/execution.py\", line ",
    );
  });

  test("an output that fails validation is dropped while the valid ones run", () => {
    const workflow = img2img();
    workflow["12"]!.inputs.images = ["13", 0];
    workflow["13"] = { class_type: "LoadImage", inputs: { image: "absent.png" } };
    workflow["10"]!.inputs.image = "input.png";
    const result = resultOf({ workflow, images: [{ name: "input.png", image: TINY_PNG }] });
    expect(filenames(result)).toEqual(["ComfyUI_00001_.png"]);
  });

  test("a known node's _meta is never read", () => {
    expect(filenames(resultOf({ workflow: { ...sd15(), "4": { ...sd15()["4"]!, _meta: 1 } } }))).toEqual(["ComfyUI_00001_.png"]);
  });

  test("nodes that feed no output are not validated", () => {
    const workflow = { ...sd15(), "20": { class_type: "LoadImage", inputs: { image: "absent.png" } } };
    expect(filenames(resultOf({ workflow }))).toEqual(["ComfyUI_00001_.png"]);
  });
});

describe("outputs", () => {
  test("SaveImage files are numbered per prefix and sub-folder, across jobs of one worker, batch items in turn", () => {
    const prefixed = (prefix: string, batch = 1) =>
      sd15((graph) => {
        graph["9"]!.inputs.filename_prefix = prefix;
        graph["5"]!.inputs.batch_size = batch;
      });
    const results = session([
      { workflow: prefixed("cat", 2) },
      { workflow: prefixed("renders/cat") },
      { workflow: prefixed("cat") },
      { workflow: prefixed("dog_%batch_num%", 2) },
    ]);
    expect(results.map(filenames)).toEqual([
      ["cat_00001_.png", "cat_00002_.png"],
      ["cat_00001_.png"],
      ["cat_00003_.png"],
      ["dog_0_00001_.png", "dog_1_00002_.png"],
    ]);
  });

  test("a LoadImage can read a saved output by its [output] name", () => {
    const [, second] = session([{ workflow: sd15() }, { workflow: img2img("ComfyUI_00001_.png [output]") }]);
    expect(filenames(second!)).toEqual(["ComfyUI_00002_.png", "second_00001_.png"]);
  });

  test("previews are temp files: a workflow that only previews succeeds without images", async () => {
    const expected = await responseJson<{ output: unknown }>("worker-comfyui-5-no-images.json");
    const workflow = sd15((graph) => (graph["9"]!.class_type = "PreviewImage"));
    expect(resultOf({ workflow })).toEqual({ output: expected.output as never });
    expect(filenames(resultOf({ workflow: { ...sd15(), "20": { class_type: "PreviewImage", inputs: { images: ["8", 0] } } } }))).toEqual(["ComfyUI_00001_.png"]);
  });

  test("an execution error after an output was saved: the images, with the error as a warning", async () => {
    const shape = await responseJson<{ output: object }>("worker-comfyui-5-completed.json");
    const workflow = img2img("bad.png");
    workflow["3"]!.inputs.latent_image = ["5", 0]; // output 9 no longer needs the image; 12 does, through 13
    workflow["13"] = { class_type: "VAEDecode", inputs: { samples: ["11", 0], vae: ["4", 2] } };
    workflow["12"]!.inputs.images = ["13", 0];
    const result = resultOf({ workflow, images: [{ name: "bad.png", image: "aGVsbG8=" }] });
    if ("error" in result) throw new Error(result.error);
    expect(Object.keys(result.output)).toEqual(Object.keys(shape.output));
    expect(result.output).toEqual({
      images: [{ filename: "ComfyUI_00001_.png", type: "base64", data: expect.stringMatching(/^iVBORw0KGgo/) }],
      errors: ["Workflow execution error: Node Type: LoadImage, Node ID: 10, Message: cannot identify image file '/comfyui/input/bad.png'\n"],
    });
  });

  test("with S3, each image is handed over with its job and name, and comes back as its URL", async () => {
    const stored: { jobId: string; filename: string; bytes: Uint8Array }[] = [];
    const s3 = (file: (typeof stored)[number]) => (stored.push(file), `http://127.0.0.1:1/s3/${stored.length}.png`);
    const result = resultOf({ workflow: sd15((graph) => (graph["5"]!.inputs.batch_size = 2)) }, FRESH_COMFY, { s3 });
    const shape = await responseJson<{ output: { images: object[] } }>("worker-comfyui-5-s3.json");
    if ("error" in result) throw new Error(result.error);
    expect(Object.keys(result.output.images[0] ?? {})).toEqual(Object.keys(shape.output.images[0] ?? {}));
    expect(result.output).toEqual({
      images: [
        { filename: "ComfyUI_00001_.png", type: "s3_url", data: "http://127.0.0.1:1/s3/1.png" },
        { filename: "ComfyUI_00002_.png", type: "s3_url", data: "http://127.0.0.1:1/s3/2.png" },
      ],
    });
    expect(stored.map(({ jobId, filename, bytes }) => [jobId, filename, Buffer.from(bytes.subarray(1, 4)).toString()])).toEqual([
      ["job-1", "ComfyUI_00001_.png", "PNG"],
      ["job-1", "ComfyUI_00002_.png", "PNG"],
    ]);
  });

  test("pure: the same input on the same worker gives the same result, and the state given is left as it was", () => {
    const before = run({ workflow: img2img(), images: [{ name: "input.png", image: TINY_PNG }] });
    const snapshot = structuredClone(before.state);
    const again = () => run({ workflow: img2img() }, before.state);
    expect(again()).toEqual(again());
    expect(before.state).toEqual(snapshot);
    expect(FRESH_COMFY).toEqual({ inputs: new Map(), outputs: new Set(), counters: new Map() });
  });
});

describe("Python's texts", () => {
  test.each<[unknown, string]>([
    [null, "None"],
    [true, "True"],
    [3, "3"],
    [0.6, "0.6"],
    [1e-5, "1e-05"],
    [1.5e16, "1.5e+16"],
    [2.5, "2.5"],
    ["plain", "'plain'"],
    ["it's", `"it's"`],
    [`it's "x"`, `'it\\'s "x"'`],
    ["a\\b\n\t\u0001é\u00a0", "'a\\\\b\\n\\t\\x01é\\xa0'"],
    [[1, "a", [null]], "[1, 'a', [None]]"],
    [{ a: 1, "b'": { c: [] } }, `{'a': 1, "b'": {'c': []}}`],
  ])("repr(%p) is %s", (value, text) => {
    expect(pyRepr(value)).toBe(text);
  });

  test("json.dumps: spaced separators, non-ASCII escaped", () => {
    expect(pyJson({ a: [1, 2.5, null, true], "é": "x\u007f😀\n" })).toBe('{"a": [1, 2.5, null, true], "\\u00e9": "x\\u007f\\ud83d\\ude00\\n"}');
  });

  test.each<[string, string | number[]]>([
    ["aGk=", [104, 105]],
    ["aGk", "Incorrect padding"],
    ["a", "Invalid base64-encoded string: number of data characters (1) cannot be 1 more than a multiple of 4"],
    ["aG!k=", [104, 105]],
    ["aGk=trailing", [104, 105]],
    ["a=Gk=", [104, 105]],
    ["", []],
  ])("b64decode(%p)", (text, expected) => {
    const decoded = pyBase64Decode(text);
    expect(typeof decoded === "string" ? decoded : [...decoded]).toEqual(expected);
  });
});
