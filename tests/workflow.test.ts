import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ExitCode } from "../lib/errors.ts";
import {
  applySeed,
  applySet,
  type Dialect,
  DIALECTS,
  findNode,
  graphProblems,
  inputFiles,
  isEditorFormat,
  isLink,
  isReturned,
  nodeLabel,
  outputNodes,
  parseSeed,
  typedValue,
  unreturnedOutputsWarning,
  unwrap,
  type Workflow,
  type WorkflowNode,
} from "../lib/workflow.ts";
import { FIXTURES, thrown, workflowPath } from "./helpers.ts";

const API_FIXTURE = (await Bun.file(join(FIXTURES, "api-workflow-sd15.json")).json()) as Workflow;
const UI_FIXTURE = (await Bun.file(join(FIXTURES, "ui-workflow-sd15.json")).json()) as Record<string, unknown>;
const INPAINT = (await Bun.file(workflowPath("inpaint.json")).json()) as Workflow;

/** A fresh copy of the fixture, so that no test can see another's changes. */
const sd15 = () => structuredClone(API_FIXTURE);
const node = (class_type: string, inputs: Record<string, unknown> = {}, title?: string): WorkflowNode => ({ class_type, inputs, ...(title && { _meta: { title } }) });
/** A graph of nodes "1", "2", … of the given classes. */
const graphOf = (...classes: string[]): Workflow => Object.fromEntries(classes.map((type, i) => [String(i + 1), node(type)]));
const SAVE = node("SaveImage", { images: ["1", 0], filename_prefix: "x" }, "Save Image");

describe("unwrap", () => {
  const graph = { "1": node("SaveImage") };
  const empty = {};
  const cases: [string, Record<string, unknown>, Record<string, unknown>, string | undefined][] = [
    ["a bare graph", graph, graph, undefined],
    ['{"prompt": graph}', { prompt: graph }, graph, "prompt"],
    ['{"workflow": graph}', { workflow: graph }, graph, "workflow"],
    ['{"input": {"workflow": graph}} (worker-comfyui test files)', { input: { workflow: graph } }, graph, "input.workflow"],
    ['{"prompt", "workflow"} as in PNG metadata: the API graph under "prompt"', { prompt: graph, workflow: { nodes: [], links: [] } }, graph, "prompt"],
    ['an empty {"prompt": {}}', { prompt: empty }, empty, "prompt"],
  ];
  for (const [what, data, expected, wrapper] of cases) {
    test(`${what} → ${wrapper ? `inside "${wrapper}"` : "itself"}`, () => {
      const result = unwrap(data);
      expect(result.graph).toBe(expected as Record<string, unknown>);
      expect(result.wrapper).toBe(wrapper);
    });
  }

  // A node may have the id "prompt" or "workflow": the graph is then bare, not a wrapper.
  const notWrapped: [string, Record<string, unknown>][] = [
    ['a node with the id "prompt"', { prompt: node("CLIPTextEncode", { text: "x" }), "2": SAVE }],
    ['a node with the id "workflow"', { workflow: node("SaveImage"), "2": SAVE }],
    ['a node with the id "input" (its inputs are not a workflow)', { input: node("LoadImage", { image: "a.png" }), "2": SAVE }],
    ['a "prompt" that is a string', { prompt: "a red fox" }],
  ];
  for (const [what, data] of notWrapped) {
    test(`${what} → not unwrapped`, () => {
      const result = unwrap(data);
      expect(result.graph).toBe(data);
      expect(result.wrapper).toBeUndefined();
    });
  }
});

describe("isEditorFormat", () => {
  const cases: [string, Record<string, unknown>, boolean][] = [
    ["nodes and links arrays", { nodes: [], links: [] }, true],
    ["nodes and a version (0.4)", { nodes: [{ id: 1 }], version: 0.4 }, true],
    ["version 1: nodes, links as objects", { version: 1, nodes: [], links: {}, state: {} }, true],
    ["nodes alone", { nodes: [] }, false],
    ["links alone", { links: [] }, false],
    ["nodes not an array", { nodes: {}, links: [] }, false],
    ["an API graph", { "1": node("SaveImage") }, false],
    ['an API graph with a node whose id is "nodes"', { nodes: node("SaveImage"), links: node("PreviewImage") }, false],
  ];
  for (const [what, data, expected] of cases) test(`${what} → ${expected}`, () => expect(isEditorFormat(data)).toBe(expected));

  test("the fixtures: ui-workflow-sd15.json is, api-workflow-sd15.json is not", () => {
    expect(isEditorFormat(UI_FIXTURE)).toBe(true);
    expect(isEditorFormat(API_FIXTURE as Record<string, unknown>)).toBe(false);
  });
});

describe("isLink", () => {
  const cases: [unknown, boolean][] = [
    [["4", 0], true],
    [["12:34", 2], true],
    [[4, 0], false],
    [["4", "0"], false],
    [["4", 0.5], false],
    [["4"], false],
    [["4", 0, 1], false],
    ["4", false],
    [{ __value__: ["4", 0] }, false],
  ];
  for (const [value, expected] of cases) test(`${JSON.stringify(value)} → ${expected}`, () => expect(isLink(value)).toBe(expected));
});

describe("nodeLabel", () => {
  const graph = { "1": node("KSampler", {}, "My Sampler"), "2": node("KSampler"), "3": 5, "4": { inputs: {} } };
  const cases: [string, string][] = [
    ["1", "node 1 (My Sampler)"],
    ["2", "node 2 (KSampler)"],
    ["3", "node 3"],
    ["4", "node 4"],
    ["99", "node 99"],
  ];
  for (const [id, expected] of cases) test(`${id} → ${expected}`, () => expect(nodeLabel(graph, id)).toBe(expected));
});

describe("graphProblems", () => {
  test("the API fixture and every sample workflow → no problem", async () => {
    expect(graphProblems(API_FIXTURE)).toEqual([]);
    for (const name of ["sample-txt2img.json", "img2img.json", "inpaint.json", "upscale.json"]) {
      expect([name, graphProblems(await Bun.file(workflowPath(name)).json())]).toEqual([name, []]);
    }
  });

  // One broken node beside a saver: exactly one problem, naming the node by id and title.
  const single: [string, unknown, string][] = [
    ["not an object", 5, "node 3 is not an object"],
    ["null", null, "node 3 is not an object"],
    ["a list", [1, 2], "node 3 is not an object"],
    ["no class_type", { inputs: {}, _meta: { title: "Fancy Node" } }, "node 3 (Fancy Node) has no class_type (a custom node was probably missing when the file was exported)"],
    ["a class_type that is not a string", { class_type: 7, inputs: {} }, "node 3 has no class_type (a custom node was probably missing when the file was exported)"],
    ["no inputs", { class_type: "KSampler" }, "node 3 (KSampler) has no inputs object"],
    ["inputs a string", { class_type: "KSampler", inputs: "seed=1" }, "node 3 (KSampler) has no inputs object"],
    ["inputs a list", { class_type: "KSampler", inputs: [1] }, "node 3 (KSampler) has no inputs object"],
    ["a link to a missing node", { class_type: "KSampler", inputs: { model: ["99", 0] }, _meta: { title: "Sampler" } }, 'node 3 (Sampler) input "model" links to node 99, which is not in the workflow'],
    ["a list of three", { class_type: "KSampler", inputs: { sizes: [1, 2, 3] } }, 'node 3 (KSampler) input "sizes" is a list but not a link [node id, index] (a list value is written {"__value__": [...]})'],
    ["a link with a number id", { class_type: "KSampler", inputs: { model: [1, 0] } }, 'node 3 (KSampler) input "model" is a list but not a link'],
    ["a link with a string index", { class_type: "KSampler", inputs: { model: ["1", "0"] } }, 'node 3 (KSampler) input "model" is a list but not a link'],
    ["an empty list", { class_type: "KSampler", inputs: { model: [] } }, 'node 3 (KSampler) input "model" is a list but not a link'],
  ];
  for (const [what, broken, message] of single) {
    test(`${what} → ${JSON.stringify(message)}`, () => {
      const problems = graphProblems({ "1": node("LoadImage", { image: "a.png" }), "3": broken, "9": SAVE });
      expect(problems).toEqual([{ nodeId: "3", message: expect.stringContaining(message) }]);
      expect(problems[0]!.message).toStartWith(message);
    });
  }

  test("valid values: links, {__value__: [...]}, scalars, nested objects, null", () => {
    const graph = { "1": node("LoadImage", { image: "a.png" }), "2": node("X", { a: ["1", 0], b: { __value__: [1, 2] }, c: 1, d: "s", e: true, f: null, g: { k: [1] } }), "9": SAVE };
    expect(graphProblems(graph)).toEqual([]);
  });

  test("every problem is listed at once, in the graph's order, each with its node id", () => {
    const graph = {
      "1": node("LoadImage", { image: "a.png" }),
      "2": { inputs: {} },
      "3": node("KSampler", { model: ["42", 0], positive: ["43", 0], sizes: [1, 2, 3] }, "Sampler"),
      "4": "broken",
      "5": { class_type: "VAEDecode" },
      "9": SAVE,
    };
    expect(graphProblems(graph)).toEqual([
      { nodeId: "2", message: "node 2 has no class_type (a custom node was probably missing when the file was exported)" },
      { nodeId: "3", message: 'node 3 (Sampler) input "model" links to node 42, which is not in the workflow' },
      { nodeId: "3", message: 'node 3 (Sampler) input "positive" links to node 43, which is not in the workflow' },
      { nodeId: "3", message: 'node 3 (Sampler) input "sizes" is a list but not a link [node id, index] (a list value is written {"__value__": [...]})' },
      { nodeId: "4", message: "node 4 is not an object" },
      { nodeId: "5", message: "node 5 (VAEDecode) has no inputs object" },
    ]);
  });

  test("no nodes → one problem without a node id", () => {
    expect(graphProblems({})).toEqual([{ message: "it has no nodes" }]);
  });

  test("no output node → one problem naming prompt_no_outputs, without a node id", () => {
    expect(graphProblems({ "1": node("CheckpointLoaderSimple", { ckpt_name: "x" }), "2": node("KSampler", { model: ["1", 0] }) })).toEqual([
      { message: "it has no output node (SaveImage or another saver): ComfyUI would refuse it with prompt_no_outputs" },
    ]);
  });

  const outputs: string[] = ["SaveImage", "PreviewImage", "SaveVideo", "SaveAudio", "VHS_VideoCombine", "PreviewAny", "Image Save", "SaveImageWebsocket", "easy imageSave"];
  for (const type of outputs) {
    test(`${type} counts as an output node`, () => {
      expect(graphProblems({ "1": node("KSampler"), "2": node(type) })).toEqual([]);
    });
  }

  // Every problem at once: a missing output too, beside broken nodes.
  test("a dangling link and no output node: both problems at once (all nodes are well-formed, so the outputs are known)", () => {
    const problems = graphProblems({ "1": node("KSampler", { model: ["99", 0] }) });
    expect(problems.map((p) => p.message)).toEqual([
      'node 1 (KSampler) input "model" links to node 99, which is not in the workflow',
      "it has no output node (SaveImage or another saver): ComfyUI would refuse it with prompt_no_outputs",
    ]);
  });

  // ConditioningCombine and LoadImageOutput save nothing.
  test("ConditioningCombine and LoadImageOutput are not output nodes: a graph with only them has none", () => {
    const graph = { "1": node("ConditioningCombine", { conditioning_1: ["2", 0] }), "2": node("LoadImageOutput", { image: "x.png [output]" }) };
    expect(outputNodes(graph)).toEqual([]);
    expect(graphProblems(graph)).toEqual([expect.objectContaining({ message: expect.stringContaining("no output node") })]);
  });
});

describe("outputNodes", () => {
  test("the known savers with their kind, custom ones without; other nodes not at all", () => {
    const graph = graphOf("KSampler", "SaveImage", "PreviewImage", "VHS_VideoCombine", "SaveAudio", "Image Save", "VAEDecode");
    expect(outputNodes(graph)).toEqual([
      { id: "2", classType: "SaveImage", kind: { key: "images" } },
      { id: "3", classType: "PreviewImage", kind: { key: "images", temp: true } },
      { id: "4", classType: "VHS_VideoCombine", kind: { key: "gifs" } },
      { id: "5", classType: "SaveAudio", kind: { key: "audio" } },
      { id: "6", classType: "Image Save", kind: undefined },
    ]);
  });

  test("the fixture → node 9 only", () => {
    expect(outputNodes(API_FIXTURE).map((o) => o.id)).toEqual(["9"]);
  });
});

describe("isReturned and unreturnedOutputsWarning, per dialect", () => {
  // [the graph's output classes, returned by seed, returned by worker-comfyui]
  const cases: [string[], boolean, boolean][] = [
    [["SaveImage"], true, true],
    [["PreviewImage"], false, false],
    [["SaveAnimatedWEBP"], true, true],
    [["SaveAnimatedPNG"], true, true],
    [["SaveWEBM"], true, true],
    [["SaveVideo"], true, true],
    [["VHS_VideoCombine"], true, false],
    [["SaveAudio"], true, false],
    [["SaveAudioMP3"], true, false],
    [["SaveAudioOpus"], true, false],
    [["PreviewAny"], true, false],
    [["Image Save"], true, true], // a custom saver: nothing known, so no warning
    [["PreviewImage", "SaveImage"], true, true],
    [["PreviewImage", "VHS_VideoCombine"], true, false],
    [["PreviewImage", "SaveAudio", "SaveVideo"], true, true],
  ];
  for (const [classes, bySeed, byWorkerComfyui] of cases) {
    for (const [dialect, returned] of [["seed", bySeed], ["worker-comfyui", byWorkerComfyui]] as [Dialect, boolean][]) {
      test(`${classes.join(" + ")} on ${dialect} → ${returned ? "no warning" : "a warning"}`, () => {
        const graph = graphOf("KSampler", ...classes);
        expect(outputNodes(graph).some((output) => isReturned(output, dialect))).toBe(returned);
        const warning = unreturnedOutputsWarning(graph, dialect);
        if (returned) expect(warning).toBeUndefined();
        else {
          expect(warning).toStartWith(`no output of this workflow comes back from a ${dialect} worker (`);
          expect(warning).toEndWith("; add a SaveImage node");
          for (const [i, type] of classes.entries()) expect(warning).toContain(`node ${i + 2} (${type}): `);
        }
      });
    }
  }

  test("the warning says what each output is, by its title", () => {
    const graph: Workflow = { "1": node("PreviewImage", {}, "Preview"), "2": node("VHS_VideoCombine", {}, "Video"), "3": node("SaveAudio") };
    expect(unreturnedOutputsWarning(graph, "worker-comfyui")).toBe(
      "no output of this workflow comes back from a worker-comfyui worker (node 1 (Preview): temporary preview, node 2 (Video): gifs, node 3 (SaveAudio): audio); add a SaveImage node",
    );
  });

  test("no output node at all → no warning (graphProblems reports it)", () => {
    for (const dialect of DIALECTS) expect(unreturnedOutputsWarning(graphOf("KSampler"), dialect)).toBeUndefined();
  });
});

describe("inputFiles", () => {
  // Every node kind of the reference table that reads a file from ComfyUI's input folder.
  const kinds: [string, string][] = [
    ["LoadImage", "image"],
    ["LoadImageMask", "image"],
    ["LoadVideo", "file"],
    ["LoadAudio", "audio"],
    ["VHS_LoadVideo", "video"],
    ["VHS_LoadVideoFFmpeg", "video"],
    ["VHS_LoadAudioUpload", "audio"],
  ];
  for (const [type, input] of kinds) {
    test(`${type} names its file in "${input}"`, () => {
      const graph = { "7": node(type, { [input]: "clip.bin", other: "not a file.png" }) };
      expect(inputFiles(graph)).toEqual([{ nodeId: "7", input, name: "clip.bin" }]);
    });
  }

  const values: [string, unknown, string | undefined][] = [
    ["a plain name", "ref.png", "ref.png"],
    ["a sub-folder", "masks/m.png", "masks/m.png"],
    ['" [input]" dropped', "ref.png [input]", "ref.png"],
    ['" [output]" skipped (the output folder)', "ComfyUI_00001_.png [output]", undefined],
    ['" [temp]" skipped', "ComfyUI_temp_x.png [temp]", undefined],
    ["a link skipped", ["3", 0], undefined],
    ["a number skipped", 5, undefined],
    ["a name with spaces", "my photo.png", "my photo.png"],
  ];
  for (const [what, value, expected] of values) {
    test(`LoadImage with ${what} → ${expected ?? "nothing"}`, () => {
      expect(inputFiles({ "1": node("LoadImage", { image: value }) })).toEqual(expected === undefined ? [] : [{ nodeId: "1", input: "image", name: expected }]);
    });
  }

  test("nodes that do not read the input folder are ignored (LoadImageOutput, paths, directories, anything else)", () => {
    const graph = {
      "1": node("LoadImageOutput", { image: "x.png [output]" }),
      "2": node("VHS_LoadVideoPath", { video: "https://example.com/v.mp4" }),
      "3": node("VHS_LoadImages", { directory: "frames" }),
      "4": node("CLIPTextEncode", { text: "photo.png" }),
      "5": node("LoadImage", {}),
    };
    expect(inputFiles(graph)).toEqual([]);
  });

  test("inpaint.json → photo.png and mask.png, in the graph's order", () => {
    expect(inputFiles(INPAINT)).toEqual([
      { nodeId: "4", input: "image", name: "photo.png" },
      { nodeId: "5", input: "image", name: "mask.png" },
    ]);
  });

  test("the fixture (text to image) → none", () => expect(inputFiles(API_FIXTURE)).toEqual([]));
});

describe("findNode", () => {
  test("by id", () => expect(findNode(API_FIXTURE, "6")).toBe("6"));
  test("by a title only one node has", () => {
    expect(findNode(API_FIXTURE, "Load Checkpoint")).toBe("4");
    expect(findNode(API_FIXTURE, "KSampler")).toBe("3");
  });
  test("an id wins over another node's title", () => {
    expect(findNode({ "1": node("A", {}, "2"), "2": node("B") }, "2")).toBe("2");
  });
  test("a title two nodes share → usage error listing both, asking for the id", () => {
    const error = thrown(() => findNode(API_FIXTURE, "CLIP Text Encode (Prompt)"));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe(
      '--set: more than one node is titled "CLIP Text Encode (Prompt)": node 6 (CLIP Text Encode (Prompt)), node 7 (CLIP Text Encode (Prompt)); use the node id',
    );
  });
  test("neither an id nor a title → usage error", () => {
    const error = thrown(() => findNode(API_FIXTURE, "Positive Prompt"));
    expect(error.exitCode).toBe(ExitCode.usage);
    expect(error.message).toBe('--set: no node has the id or title "Positive Prompt"');
  });
  test("titles are matched exactly (case, spaces)", () => {
    expect(thrown(() => findNode(API_FIXTURE, "load checkpoint")).message).toContain("no node has");
    expect(thrown(() => findNode(API_FIXTURE, "Load Checkpoint ")).message).toContain("no node has");
  });
});

describe("typedValue", () => {
  const ok: [unknown, string, unknown][] = [
    [20, "30", 30],
    [8, "7.5", 7.5],
    [1, "-2", -2],
    [1, "1e3", 1000],
    [1, "2.5E-1", 0.25],
    [1, " 30 ", 30],
    [1, "0", 0],
    [true, "false", false],
    [false, "true", true],
    ["euler", "dpmpp_2m", "dpmpp_2m"],
    ["text", "42", "42"], // a string stays a string
    ["text", "true", "true"],
    ["text", "", ""],
    ["text", "  spaced  ", "  spaced  "],
    [null, "null", null],
    [null, "5", 5],
    [null, '"s"', "s"],
    [{}, '{"a": 1}', { a: 1 }],
    [{ __value__: [1] }, '{"__value__": [1, 2]}', { __value__: [1, 2] }],
    [[1, 2, 3], "[4]", [4]],
  ];
  for (const [current, text, expected] of ok) {
    test(`replacing ${JSON.stringify(current)} with ${JSON.stringify(text)} → ${JSON.stringify(expected)}`, () => {
      expect(typedValue(current, text, "node 3 (KSampler).x")).toStrictEqual(expected);
    });
  }

  const refused: [unknown, string, string][] = [
    [20, "abc", '--set node 3 (KSampler).x: "abc" is not a number, as the value it replaces (20) is'],
    [20, "", '--set node 3 (KSampler).x: "" is not a number, as the value it replaces (20) is'],
    [20, "0x10", '"0x10" is not a number'],
    [20, "NaN", '"NaN" is not a number'],
    [20, "Infinity", '"Infinity" is not a number'],
    [20, "1,5", '"1,5" is not a number'],
    [20, "30 steps", '"30 steps" is not a number'],
    [true, "yes", '--set node 3 (KSampler).x: "yes" is not true or false, as the value it replaces is'],
    [true, "1", '"1" is not true or false'],
    [true, "True", '"True" is not true or false'],
    [null, "not json", '--set node 3 (KSampler).x: "not json" is not valid JSON (the value it replaces is not a number, boolean or string)'],
    [{}, "{a: 1}", "is not valid JSON"],
  ];
  for (const [current, text, message] of refused) {
    test(`replacing ${JSON.stringify(current)} with ${JSON.stringify(text)} → usage error`, () => {
      const error = thrown(() => typedValue(current, text, "node 3 (KSampler).x"));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toContain(message);
    });
  }

  // Infinity would be sent as null.
  test('a number too large for a double ("1e999") is refused, not sent as null', () => {
    expect(thrown(() => typedValue(20, "1e999", "node 3 (KSampler).steps")).exitCode).toBe(ExitCode.usage);
  });
});

describe("applySet", () => {
  const ok: [string, string, string, unknown][] = [
    ["6.text=a red fox", "6", "text", "a red fox"],
    ["3.steps=30", "3", "steps", 30],
    ["3.cfg=7.5", "3", "cfg", 7.5],
    ["3.sampler_name=dpmpp_2m", "3", "sampler_name", "dpmpp_2m"],
    ["6.text=", "6", "text", ""],
    ["6.text=a=b", "6", "text", "a=b"], // the value is everything after the first "="
    ["6.text=v1.5, f/2.8.", "6", "text", "v1.5, f/2.8."],
    ["Load Checkpoint.ckpt_name=sd_xl_base_1.0.safetensors", "4", "ckpt_name", "sd_xl_base_1.0.safetensors"],
    ["KSampler.seed=1", "3", "seed", 1],
    ["Empty Latent Image.width=768", "5", "width", 768],
  ];
  for (const [assignment, id, input, value] of ok) {
    test(`${JSON.stringify(assignment)} → node ${id} ${input} = ${JSON.stringify(value)}`, () => {
      const before = sd15();
      const after = applySet(before, assignment);
      expect(after[id]!.inputs[input]).toStrictEqual(value);
      // nothing else changes
      expect({ ...after, [id]: { ...after[id]!, inputs: { ...after[id]!.inputs, [input]: API_FIXTURE[id]!.inputs[input] } } }).toEqual(API_FIXTURE);
    });
  }

  test("a title with spaces and dots names its node; the input is after the last dot", () => {
    const graph: Workflow = { "1": node("CheckpointLoaderSimple", { ckpt_name: "a" }, "SD 1.5 Loader (v2.1)"), "2": SAVE };
    expect(applySet(graph, "SD 1.5 Loader (v2.1).ckpt_name=b.safetensors")["1"]!.inputs.ckpt_name).toBe("b.safetensors");
  });

  test("the sample workflows' titles: --set \"Positive Prompt.text=a red fox\"", async () => {
    const graph = (await Bun.file(workflowPath("sample-txt2img.json")).json()) as Workflow;
    expect(applySet(graph, "Positive Prompt.text=a red fox")["2"]!.inputs.text).toBe("a red fox");
  });

  test("assignments apply one after the other", () => {
    const graph = ["6.text=a", "6.text=b", "3.steps=5"].reduce(applySet, sd15());
    expect([graph["6"]!.inputs.text, graph["3"]!.inputs.steps]).toEqual(["b", 5]);
  });

  test("the original graph is not changed", () => {
    const before = sd15();
    const after = applySet(before, "3.steps=30");
    expect(before).toEqual(API_FIXTURE);
    expect(after).not.toBe(before);
    expect(after["3"]).not.toBe(before["3"]);
    expect(after["3"]!.inputs).not.toBe(before["3"]!.inputs);
  });

  const refused: [string, string][] = [
    ["CLIP Text Encode (Prompt).text=x", '--set: more than one node is titled "CLIP Text Encode (Prompt)": node 6 (CLIP Text Encode (Prompt)), node 7 (CLIP Text Encode (Prompt)); use the node id'],
    ["3.step=30", '--set: node 3 (KSampler) has no input "step"; its inputs are seed, steps, cfg, sampler_name, scheduler, denoise, model, positive, negative, latent_image'],
    ["3.model=x", "--set node 3 (KSampler).model: that input is a link from node 4, not a value; setting it would cut the graph"],
    ["99.text=x", '--set: no node has the id or title "99"'],
    ["3.steps=many", '--set node 3 (KSampler).steps: "many" is not a number, as the value it replaces (20) is'],
    ["6text=x", '--set "6text=x" is not NODE.INPUT=VALUE'],
    ["6.text", '--set "6.text" is not NODE.INPUT=VALUE'],
    ["=x", '--set "=x" is not NODE.INPUT=VALUE'],
    [".text=x", '--set ".text=x" is not NODE.INPUT=VALUE'],
    ["6.=x", '--set "6.=x" is not NODE.INPUT=VALUE'],
    ["", '--set "" is not NODE.INPUT=VALUE'],
    ["text=a.b", '--set "text=a.b" is not NODE.INPUT=VALUE'], // the dot must come before the "="
  ];
  for (const [assignment, message] of refused) {
    test(`${JSON.stringify(assignment)} → usage error`, () => {
      const graph = sd15();
      const error = thrown(() => applySet(graph, assignment));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toBe(message);
      expect(graph).toEqual(API_FIXTURE);
    });
  }
});

describe("applySeed", () => {
  test("the fixture: node 3's seed, and only that", () => {
    const before = sd15();
    const { graph, nodeIds } = applySeed(before, 5);
    expect(nodeIds).toEqual(["3"]);
    expect(graph["3"]!.inputs.seed).toBe(5);
    expect<Workflow>({ ...graph, "3": { ...graph["3"]!, inputs: { ...graph["3"]!.inputs, seed: API_FIXTURE["3"]!.inputs.seed } } }).toEqual(API_FIXTURE);
    expect(before).toEqual(API_FIXTURE); // not mutated
  });

  test("seed and noise_seed set, links and non-numbers left alone; the nodes changed reported in order", () => {
    const graph: Workflow = {
      "1": node("KSampler", { seed: 1, steps: 20 }),
      "2": node("KSamplerAdvanced", { noise_seed: 2, add_noise: "enable" }),
      "3": node("KSampler", { seed: ["10", 0] }), // fed by a primitive node: left alone
      "4": node("Custom", { seed: 3, noise_seed: 4 }),
      "5": node("Text", { seed: "abc" }),
      "6": node("SaveImage"),
      "10": node("PrimitiveNode", { value: 9 }),
    };
    const result = applySeed(graph, 123);
    expect(result.nodeIds).toEqual(["1", "2", "4"]);
    expect(Object.fromEntries(Object.entries(result.graph).map(([id, n]) => [id, n.inputs]))).toEqual({
      "1": { seed: 123, steps: 20 },
      "2": { noise_seed: 123, add_noise: "enable" },
      "3": { seed: ["10", 0] },
      "4": { seed: 123, noise_seed: 123 },
      "5": { seed: "abc" },
      "6": {},
      "10": { value: 9 },
    });
    expect(graph["1"]!.inputs.seed).toBe(1);
  });

  test("a graph without seeds → unchanged, no node ids", () => {
    const graph = graphOf("LoadImage", "SaveImage");
    const result = applySeed(graph, 1);
    expect(result).toEqual({ graph, nodeIds: [] });
  });
});

describe("parseSeed", () => {
  const ok: [string, number][] = [
    ["0", 0],
    ["42", 42],
    ["007", 7],
    ["156680208700286", 156680208700286],
    [String(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
  ];
  for (const [text, seed] of ok) test(`${JSON.stringify(text)} → ${seed}`, () => expect(parseSeed(text, () => 0.5)).toEqual({ seed, random: false }));

  const refused = ["-1", "1.5", "abc", "", " 5", "5 ", "1e3", "Random", "RANDOM", "0x10", String(2 ** 53), "18446744073709551615"];
  for (const text of refused) {
    test(`${JSON.stringify(text)} → usage error`, () => {
      const error = thrown(() => parseSeed(text));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toBe(`--seed takes a whole number or "random" (got "${text}")`);
    });
  }

  const randoms: [number, number][] = [
    [0, 0],
    [0.5, 2 ** 47],
    [0.25, 2 ** 46],
  ];
  for (const [drawn, seed] of randoms) test(`random with random() = ${drawn} → ${seed}`, () => expect(parseSeed("random", () => drawn)).toEqual({ seed, random: true }));

  test("random stays a whole number below 2^48, which JSON carries exactly", () => {
    const { seed } = parseSeed("random", () => 1 - Number.EPSILON);
    expect(Number.isSafeInteger(seed)).toBe(true);
    expect(seed).toBeLessThan(2 ** 48);
    expect(JSON.parse(JSON.stringify(seed))).toBe(seed);
    for (let i = 0; i < 20; i++) {
      const drawn = parseSeed("random");
      expect(drawn.random).toBe(true);
      expect(Number.isSafeInteger(drawn.seed) && drawn.seed >= 0 && drawn.seed < 2 ** 48).toBe(true);
    }
  });
});
