// The session recorded in shared/fixtures/responses/worker-comfyui-local/: RunPod's local test server
// running worker-comfyui 5.8.5's handler, sent these requests in this order on one fresh worker. The
// inputs are rebuilt from what the answers show (node ids, prefixes, file names, batch sizes).
import { join } from "node:path";
import { FIXTURES, RESPONSES } from "./helpers.ts";

type Graph = Record<string, { class_type: string; inputs: Record<string, unknown>; _meta?: { title: string } }>;

export const TINY_PNG = Buffer.from(await Bun.file(join(FIXTURES, "tiny.png")).arrayBuffer()).toString("base64");
const SD15: Graph = await Bun.file(join(FIXTURES, "api-workflow-sd15.json")).json();

/** ComfyUI's default SD1.5 graph (checkpoint 4, SaveImage 9), changed by `edit`. */
export function sd15(edit: (graph: Graph) => void = () => {}): Graph {
  const graph = structuredClone(SD15);
  edit(graph);
  return graph;
}

/** sd15 turned img2img: LoadImage 10 → VAEEncode 11 → KSampler 3, and a second SaveImage (12, prefix "second"). */
export const img2img = (image = "input.png") =>
  sd15((graph) => {
    graph["10"] = { class_type: "LoadImage", inputs: { image } };
    graph["11"] = { class_type: "VAEEncode", inputs: { pixels: ["10", 0], vae: ["4", 2] } };
    graph["3"]!.inputs.latent_image = ["11", 0];
    graph["12"] = { class_type: "SaveImage", inputs: { filename_prefix: "second", images: ["8", 0] } };
  });

const batchOf2 = sd15((graph) => (graph["5"]!.inputs.batch_size = 2));
const missingModel = sd15((graph) => (graph["4"]!.inputs.ckpt_name = "does-not-exist.safetensors"));
const IMG2IMG_INPUT = { workflow: img2img(), images: [{ name: "input.png", image: TINY_PNG }] };

export type RecordedStep =
  | { fixture: string; route: "run" | "runsync"; input: unknown }
  /** A status request for the job of the /run recorded in `of`. */
  | { fixture: string; route: "status"; of: string; method: "GET" | "POST"; httpStatus: number };

export const RECORDED_SESSION: RecordedStep[] = [
  { fixture: "01-runsync-img2img.json", route: "runsync", input: IMG2IMG_INPUT },
  { fixture: "02-run-img2img.json", route: "run", input: IMG2IMG_INPUT },
  { fixture: "03-status-GET.json", route: "status", of: "02-run-img2img.json", method: "GET", httpStatus: 405 },
  { fixture: "04-status-POST-completed.json", route: "status", of: "02-run-img2img.json", method: "POST", httpStatus: 200 },
  { fixture: "05-status-POST-again.json", route: "status", of: "02-run-img2img.json", method: "POST", httpStatus: 200 },
  { fixture: "06-runsync-txt2img-batch2.json", route: "runsync", input: { workflow: batchOf2 } },
  { fixture: "07-runsync-worker-test-input.json", route: "runsync", input: { workflow: batchOf2, images: [] } },
  { fixture: "08-runsync-missing-model.json", route: "runsync", input: { workflow: missingModel } },
  { fixture: "09-run-missing-model.json", route: "run", input: { workflow: missingModel } },
  { fixture: "10-status-POST-missing-model.json", route: "status", of: "09-run-missing-model.json", method: "POST", httpStatus: 200 },
  {
    fixture: "11-runsync-bad-node.json",
    route: "runsync",
    input: { workflow: sd15((graph) => (graph["13"] = { class_type: "NotARealNode", inputs: {}, _meta: { title: "Not A Real Node" } })) },
  },
  { fixture: "12-runsync-missing-input-image.json", route: "runsync", input: { workflow: img2img("never-uploaded.png") } },
  // Bytes Pillow cannot open: the LoadImage fails while running.
  { fixture: "13-runsync-runtime-error.json", route: "runsync", input: { workflow: img2img("broken.png"), images: [{ name: "broken.png", image: "aGVsbG8=" }] } },
  { fixture: "14-runsync-upload-subfolder.json", route: "runsync", input: { workflow: img2img("masks/ref.png"), images: [{ name: "masks/ref.png", image: TINY_PNG }] } },
  { fixture: "15-runsync-no-output-node.json", route: "runsync", input: { workflow: sd15((graph) => delete graph["9"]) } },
  { fixture: "16-runsync-no-workflow.json", route: "runsync", input: { prompt: sd15(), images: [] } },
  { fixture: "17-runsync-bad-images-shape.json", route: "runsync", input: { workflow: sd15(), images: { "input.png": TINY_PNG } } },
  // The original handler's request: reference_images is ignored, and input.png is still there from 01 and 02.
  { fixture: "18-runsync-seed-contract-input.json", route: "runsync", input: { workflow: img2img(), reference_images: { "input.png": TINY_PNG }, return_base64: true } },
];

export const recorded = async (fixture: string): Promise<Record<string, unknown>> =>
  Bun.file(join(RESPONSES, "worker-comfyui-local", fixture)).json();

const TEST_ID = /^test-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const PNG_BASE64 = /^iVBORw0KGgo[A-Za-z0-9+/]*={0,2}$/;

/**
 * An answer as JSON text, keys in their order, with what differs from run to run (job ids, image
 * bytes) replaced by placeholders once its form is checked; anything else of the wrong form is kept,
 * so the comparison fails on it.
 */
export function comparable(answer: unknown): string {
  return JSON.stringify(answer, (key, value: unknown) => {
    if (key === "id" && typeof value === "string" && TEST_ID.test(value)) return "test-<uuid4>";
    if (key === "data" && typeof value === "string" && PNG_BASE64.test(value)) return "<png base64>";
    return value;
  });
}
