// lib/batch.ts: planning a batch (which runs, with which overrides and images, into which folder,
// which ones a resumed batch skips) and the tally line. Pure functions: no network, no files.
import { describe, expect, test } from "bun:test";
import { describeTally, eachImageRuns, numberRuns, parseBatchFile, parseCsvRows, type RunSpec, runOutput, succeededRuns, type Tally } from "../lib/batch.ts";
import { ExitCode } from "../lib/errors.ts";
import type { Workflow, WorkflowNode } from "../lib/workflow.ts";
import { thrown, workflowPath } from "./helpers.ts";

type Planned = Omit<RunSpec, "index">;
const run = (label: string, sets: string[] = [], images: string[] = []): Planned => ({ label, sets, images });

/** The usage error parseBatchFile throws for this text. */
const refusal = (text: string, file: string) => {
  const error = thrown(() => parseBatchFile(text, file));
  expect(error.exitCode).toBe(ExitCode.usage);
  return error.message;
};

describe("parseBatchFile, JSON Lines", () => {
  // one line → one run: strings raw, anything else as JSON; `images` is not an override
  const lines: [string, Planned][] = [
    ['{"6.text": "a fox", "3.seed": 7}', run("line 1", ["6.text=a fox", "3.seed=7"])],
    ['{"3.seed": "7"}', run("line 1", ["3.seed=7"])],
    ['{"3.cfg": 7.5, "3.denoise": 0}', run("line 1", ["3.cfg=7.5", "3.denoise=0"])],
    ['{"3.seed": -1}', run("line 1", ["3.seed=-1"])],
    ['{"10.enabled": true, "11.enabled": false}', run("line 1", ["10.enabled=true", "11.enabled=false"])],
    ['{"5.size": {"w": 512, "h": 768}}', run("line 1", ['5.size={"w":512,"h":768}'])],
    ['{"5.list": [1, "a"]}', run("line 1", ['5.list=[1,"a"]'])],
    ['{"5.x": null}', run("line 1", ["5.x=null"])],
    ['{"6.text": ""}', run("line 1", ["6.text="])],
    ['{"6.text": "a=b, \\"quoted\\"\\nsecond line"}', run("line 1", ['6.text=a=b, "quoted"\nsecond line'])],
    ['{"6.text": "日本語 ✓"}', run("line 1", ["6.text=日本語 ✓"])],
    // titles as NODE: spaces, brackets, dots (the input is after the last dot)
    ['{"CLIP Text Encode (Prompt).text": "x"}', run("line 1", ["CLIP Text Encode (Prompt).text=x"])],
    ['{"v1.5 loader.ckpt_name": "m.safetensors"}', run("line 1", ["v1.5 loader.ckpt_name=m.safetensors"])],
    // the order of the keys is kept
    ['{"b.z": 1, "a.y": 2, "c.x": 3}', run("line 1", ["b.z=1", "a.y=2", "c.x=3"])],
    // no overrides at all: one plain run
    ["{}", run("line 1")],
    // images: a path, a ;-list in one string, a list; blanks dropped, paths trimmed
    ['{"images": "a.png"}', run("line 1", [], ["a.png"])],
    ['{"images": ["a.png", "dir/b c.png"]}', run("line 1", [], ["a.png", "dir/b c.png"])],
    ['{"images": " a.png ; b.png ;"}', run("line 1", [], ["a.png", "b.png"])],
    ['{"images": ["a.png", "", "  "]}', run("line 1", [], ["a.png"])],
    ['{"images": []}', run("line 1")],
    ['{"images": ""}', run("line 1")],
    ['{"6.text": "fox", "images": ["r.png"], "3.seed": 1}', run("line 1", ["6.text=fox", "3.seed=1"], ["r.png"])],
  ];
  for (const [line, expected] of lines) {
    test(`${line} → ${JSON.stringify(expected)}`, () => expect(parseBatchFile(`${line}\n`, "runs.jsonl")).toEqual([expected]));
  }

  test("one run per line, labelled by its line number; blank and whitespace-only lines are skipped but counted", () => {
    const text = '\n{"6.text": "a"}\n\n   \n{"6.text": "b"}\n\t\n{"6.text": "c"}';
    expect(parseBatchFile(text, "runs.jsonl")).toEqual([run("line 2", ["6.text=a"]), run("line 5", ["6.text=b"]), run("line 7", ["6.text=c"])]);
  });

  test("CRLF line ends", () => {
    expect(parseBatchFile('{"6.text": "a"}\r\n\r\n{"6.text": "b"}\r\n', "runs.jsonl")).toEqual([run("line 1", ["6.text=a"]), run("line 3", ["6.text=b"])]);
  });

  test("a large file: one run per line, in order", () => {
    const text = Array.from({ length: 2_000 }, (_, i) => JSON.stringify({ "3.seed": i })).join("\n");
    const runs = parseBatchFile(text, "runs.jsonl");
    expect(runs).toHaveLength(2_000);
    expect(runs[1_999]).toEqual(run("line 2000", ["3.seed=1999"]));
  });

  const refused: [string, string, RegExp][] = [
    ["bad JSON names the line", '{"6.text": "a"}\n\n{"6.text": b}\n', /^runs\.jsonl, line 3: not valid JSON \(.+\)$/],
    ["a line cut short", '{"6.text": "a"', /^runs\.jsonl, line 1: not valid JSON/],
    ["two objects on one line", '{"6.text": "a"} {"6.text": "b"}', /^runs\.jsonl, line 1: not valid JSON/],
    ["a list", '["6.text", "a"]', /^runs\.jsonl, line 1: expected an object of NODE\.INPUT overrides$/],
    ["null", "null", /^runs\.jsonl, line 1: expected an object of NODE\.INPUT overrides$/],
    ["a number", '{"6.text": "a"}\n7', /^runs\.jsonl, line 2: expected an object of NODE\.INPUT overrides$/],
    ["a string", '"6.text=a"', /^runs\.jsonl, line 1: expected an object/],
    ["a key without a dot", '{"text": "a"}', /^runs\.jsonl, line 1: "text" is not NODE\.INPUT$/],
    ["a key ending in a dot", '{"6.": "a"}', /^runs\.jsonl, line 1: "6\." is not NODE\.INPUT$/],
    ["a key starting with its dot", '{".text": "a"}', /^runs\.jsonl, line 1: "\.text" is not NODE\.INPUT$/],
    ["a key with = in the input", '{"6.te=xt": "a"}', /^runs\.jsonl, line 1: "6\.te=xt" is not NODE\.INPUT$/],
    ["an empty key", '{"": "a"}', /^runs\.jsonl, line 1: "" is not NODE\.INPUT$/],
    ["a bad key on a later line", '{"6.text": "a"}\n{"6.text": "b", "seed": 1}', /^runs\.jsonl, line 2: "seed" is not NODE\.INPUT$/],
    ["images with a number in the list", '{"images": ["a.png", 3]}', /^runs\.jsonl, line 1: "images" must be a path or a list of paths$/],
    ["images with a list inside the list", '{"images": [["a.png"]]}', /^runs\.jsonl, line 1: "images" must be a path or a list of paths$/],
    ["an empty file", "", /^runs\.jsonl has no runs$/],
    ["only blank lines", "\n  \n\r\n", /^runs\.jsonl has no runs$/],
  ];
  for (const [what, text, message] of refused) {
    test(`${what} → usage error ${message}`, () => expect(refusal(text, "runs.jsonl")).toMatch(message));
  }

  // lib/batch.ts overridesOf: an "images" value that is neither a string nor a list (5, {}, null, true) is silently ignored instead of refused.
  const oddImages = ["5", '{"a": "b.png"}', "null", "true"];
  for (const value of oddImages) {
    test(`"images": ${value} → usage error, not a run without images`, () => {
      expect(refusal(`{"images": ${value}}`, "runs.jsonl")).toBe('runs.jsonl, line 1: "images" must be a path or a list of paths');
    });
  }
});

describe("parseBatchFile: JSON Lines or CSV", () => {
  const JSONL = '{"6.text": "fox"}\n';
  const CSV = "6.text\nfox\n";
  const asJson = [run("line 1", ["6.text=fox"])];
  const asCsv = [run("line 2", ["6.text=fox"])];
  const cases: [string, string, Planned[] | RegExp][] = [
    // by extension, whatever the text looks like
    ["runs.jsonl", JSONL, asJson],
    ["runs.ndjson", JSONL, asJson],
    ["runs.json", JSONL, asJson],
    ["RUNS.JSONL", JSONL, asJson],
    ["dir.csv/runs.jsonl", JSONL, asJson],
    ["runs.csv", CSV, asCsv],
    ["RUNS.CSV", CSV, asCsv],
    ["runs.jsonl", CSV, /^runs\.jsonl, line 1: not valid JSON/],
    ["runs.csv", "{x}.text\nfox\n", [run("line 2", ["{x}.text=fox"])]],
    ["runs.txt", "{x}.text\nfox\n", /^runs\.txt, line 1: not valid JSON/],
    // otherwise by the first character that is not white space
    ["runs.txt", JSONL, asJson],
    ["runs", `\n  \t${JSONL}`, [run("line 2", ["6.text=fox"])]],
    ["runs.txt", CSV, asCsv],
    ["runs", CSV, asCsv],
    ["runs.json.csv", CSV, asCsv],
    ["runs.csv.txt", JSONL, asJson],
    // a .json file is read as JSON Lines: a JSON array of runs is not taken
    ["runs.json", '[{"6.text": "a"}, {"6.text": "b"}]', /^runs\.json, line 1: expected an object of NODE\.INPUT overrides$/],
  ];
  for (const [file, text, expected] of cases) {
    test(`${file}: ${JSON.stringify(text.slice(0, 24))} → ${expected instanceof RegExp ? expected : "parsed"}`, () => {
      if (expected instanceof RegExp) expect(refusal(text, file)).toMatch(expected);
      else expect(parseBatchFile(text, file)).toEqual(expected);
    });
  }
});

describe("parseCsvRows", () => {
  const cases: [string, string, string[][]][] = [
    ["plain", "a,b\n1,2", [["a", "b"], ["1", "2"]]],
    ["a trailing newline", "a,b\n1,2\n", [["a", "b"], ["1", "2"]]],
    ["CRLF", "a,b\r\n1,2\r\n", [["a", "b"], ["1", "2"]]],
    ["a lone CR", "a,b\r1,2", [["a", "b"], ["1", "2"]]],
    ["a comma inside quotes", '"a,b",c', [["a,b", "c"]]],
    ['"" for a quote', '"say ""hi""",x', [['say "hi"', "x"]]],
    ["only a quote", '""""', [['"']]],
    ["a newline inside quotes", '"line 1\nline 2",x\ny,z', [["line 1\nline 2", "x"], ["y", "z"]]],
    ["CRLF inside quotes is kept", '"line 1\r\nline 2",x', [["line 1\r\nline 2", "x"]]],
    ["an empty quoted field", '"",x', [["", "x"]]],
    ["empty fields", "a,,c", [["a", "", "c"]]],
    ["a trailing comma", "a,b,", [["a", "b", ""]]],
    ["a leading comma", ",b", [["", "b"]]],
    ["spaces are part of the field", " a , b ", [[" a ", " b "]]],
    ["a quote inside an unquoted field is a character", 'a"b,c', [['a"b', "c"]]],
    ["text after a closing quote is kept", '"a"b,c', [["ab", "c"]]],
    ["blank lines are skipped", "a\n\n\nb\n\n", [["a"], ["b"]]],
    ["whitespace-only lines are skipped", "a\n   \n\t\nb", [["a"], ["b"]]],
    ["a row of empty fields counts as blank", "a,b\n,\n1,2", [["a", "b"], ["1", "2"]]],
    ["CRLF blank lines", "a\r\n\r\nb\r\n", [["a"], ["b"]]],
    ["an unterminated quote runs to the end", '"open,x\ny', [["open,x\ny"]]],
    ["empty", "", []],
    ["only newlines", "\n\r\n\n", []],
    ["unicode", "é,日本\n✓,ok", [["é", "日本"], ["✓", "ok"]]],
  ];
  for (const [what, text, rows] of cases) {
    test(`${what}: ${JSON.stringify(text)} → ${JSON.stringify(rows)}`, () => expect(parseCsvRows(text)).toEqual(rows));
  }
});

describe("parseBatchFile, CSV", () => {
  const cases: [string, string, Planned[]][] = [
    ["headers are overrides, one run per row", "6.text,3.seed\na fox,7\na cat,8\n", [run("line 2", ["6.text=a fox", "3.seed=7"]), run("line 3", ["6.text=a cat", "3.seed=8"])]],
    ["quoted values with commas, quotes and newlines", '6.text,3.seed\n"a fox, red",1\n"say ""hi""",2\n', [run("line 2", ["6.text=a fox, red", "3.seed=1"]), run("line 3", ['6.text=say "hi"', "3.seed=2"])]],
    ["CRLF", "6.text,3.seed\r\na fox,7\r\n", [run("line 2", ["6.text=a fox", "3.seed=7"])]],
    ["header names are trimmed, values kept as they are", " 6.text , 3.seed \n a fox , 7\n", [run("line 2", ["6.text= a fox ", "3.seed= 7"])]],
    ["every value is a string, sent raw", "3.seed,10.enabled,5.x\n7,true,null\n", [run("line 2", ["3.seed=7", "10.enabled=true", "5.x=null"])]],
    ["an empty value is an empty override", "6.text,3.seed\n,7\n", [run("line 2", ["6.text=", "3.seed=7"])]],
    ["titles with spaces and dots", '"CLIP Text Encode (Prompt).text",v1.5 loader.ckpt_name\nx,m\n', [run("line 2", ["CLIP Text Encode (Prompt).text=x", "v1.5 loader.ckpt_name=m"])]],
    ["an images column: ;-separated paths", "6.text,images\nfox,a.png;b.png\ncat, c.png \nowl,\n", [run("line 2", ["6.text=fox"], ["a.png", "b.png"]), run("line 3", ["6.text=cat"], ["c.png"]), run("line 4", ["6.text=owl"])]],
    ["only an images column", "images\na.png\n", [run("line 2", [], ["a.png"])]],
    ["trailing blank lines", "6.text\nfox\n\n\n", [run("line 2", ["6.text=fox"])]],
  ];
  for (const [what, text, expected] of cases) {
    test(`${what}`, () => expect(parseBatchFile(text, "runs.csv")).toEqual(expected));
  }

  const refused: [string, string, string][] = [
    ["too few fields names the line", "6.text,3.seed\nfox,1\ncat\n", "runs.csv, line 3: 1 field where the header has 2"],
    ["too many fields", "6.text,3.seed\nfox,1,extra\n", "runs.csv, line 2: 3 fields where the header has 2"],
    ["a comma not quoted", "6.text\na fox, red\n", "runs.csv, line 2: 2 fields where the header has 1"],
    ["a header only", "6.text,3.seed\n", "runs.csv has no runs (a header of NODE.INPUT names, then one row per run)"],
    ["an empty file", "", "runs.csv has no runs (a header of NODE.INPUT names, then one row per run)"],
    ["blank lines only", "\n \n", "runs.csv has no runs (a header of NODE.INPUT names, then one row per run)"],
  ];
  for (const [what, text, message] of refused) {
    test(`${what} → usage error "${message}"`, () => expect(refusal(text, "runs.csv")).toBe(message));
  }

  // lib/batch.ts parseCsv checks the header names only while reading each row, so a bad header is reported on line 2 (the first row), not line 1.
  const badHeaders: [string, string, string][] = [
    ["a header that is not NODE.INPUT", "text,3.seed\nfox,1\n", 'runs.csv, line 1: "text" is not NODE.INPUT'],
    ["an empty header name (a trailing comma)", "6.text,\nfox,1\n", 'runs.csv, line 1: "" is not NODE.INPUT'],
  ];
  for (const [what, text, message] of badHeaders) {
    test(`${what} → a usage error about the header`, () => expect(refusal(text, "runs.csv")).toMatch(/^runs\.csv, line \d: .* is not NODE\.INPUT$/));
    test(`${what} → the error names line 1, where the header is`, () => expect(refusal(text, "runs.csv")).toBe(message));
  }

  // lib/batch.ts parseCsv labels rows by their position among non-blank rows (i + 2), not by their line in the file:
  // a blank line or a quoted line break before a row puts its label and its errors on the wrong line.
  test("a row after a blank line is labelled with its own line", () => {
    expect(parseBatchFile("6.text\n\nfox\n", "runs.csv")).toEqual([run("line 3", ["6.text=fox"])]);
  });
  test("a row after a value with a line break in it is labelled with its own line", () => {
    expect(parseBatchFile('6.text\n"two\nlines"\nfox\n', "runs.csv").map((r) => r.label)).toEqual(["line 2", "line 4"]);
  });
  test("a wrong field count after a blank line names the line it is on", () => {
    expect(refusal("6.text,3.seed\n\nfox,1\n\ncat\n", "runs.csv")).toBe("runs.csv, line 5: 1 field where the header has 2");
  });
});

const IMG2IMG = (await Bun.file(workflowPath("img2img.json")).json()) as Workflow; // node 4 LoadImage
const INPAINT = (await Bun.file(workflowPath("inpaint.json")).json()) as Workflow; // nodes 4 LoadImage, 5 LoadImageMask
const TXT2IMG = (await Bun.file(workflowPath("sample-txt2img.json")).json()) as Workflow; // no image input

describe("eachImageRuns", () => {
  const node = (class_type: string, inputs: Record<string, unknown>, title?: string): WorkflowNode => ({ class_type, inputs, ...(title && { _meta: { title } }) });
  const images = [
    { name: "a.png", path: "/in/a.png" },
    { name: "b c.jpg", path: "/other/b c.jpg" },
  ];

  test("the workflow's single image input is pointed at each image, which is sent with its run", () => {
    expect(eachImageRuns(images, IMG2IMG)).toEqual([run("image a.png", ["4.image=a.png"], ["/in/a.png"]), run("image b c.jpg", ["4.image=b c.jpg"], ["/other/b c.jpg"])]);
  });

  test("an explicit NODE.INPUT is used as given, even where the workflow has several image inputs", () => {
    expect(eachImageRuns(images, INPAINT, "5.image")).toEqual([run("image a.png", ["5.image=a.png"], ["/in/a.png"]), run("image b c.jpg", ["5.image=b c.jpg"], ["/other/b c.jpg"])]);
    expect(eachImageRuns(images.slice(0, 1), INPAINT, "Load Photo.image")).toEqual([run("image a.png", ["Load Photo.image=a.png"], ["/in/a.png"])]);
    // not checked here: applying the --set checks it
    expect(eachImageRuns(images.slice(0, 1), TXT2IMG, "9.image")[0]!.sets).toEqual(["9.image=a.png"]);
  });

  test("no images → no runs", () => expect(eachImageRuns([], IMG2IMG)).toEqual([]));

  const refused: [string, Workflow, string][] = [
    ["no image input", TXT2IMG, "--each-image: this workflow has no image input (LoadImage) to point at each image"],
    ["two image inputs", INPAINT, "--each-image: the workflow has 2 image inputs (4.image in node 4 (Load Photo), 5.image in node 5 (Load Mask)); name one: --each-image NODE.INPUT"],
    [
      "three, untitled ones named by class",
      { "1": node("LoadImage", { image: "x.png" }), "2": node("LoadImage", { image: "y.png" }), "3": node("LoadImageMask", { image: "m.png", channel: "red" }) },
      "--each-image: the workflow has 3 image inputs (1.image in node 1 (LoadImage), 2.image in node 2 (LoadImage), 3.image in node 3 (LoadImageMask)); name one: --each-image NODE.INPUT",
    ],
    ["a LoadImage reading an output file is not an input", { "1": node("LoadImage", { image: "prev.png [output]" }) }, "--each-image: this workflow has no image input (LoadImage) to point at each image"],
    ["a LoadImage fed by a link is not an input", { "1": node("Other", {}), "2": node("LoadImage", { image: ["1", 0] }) }, "--each-image: this workflow has no image input (LoadImage) to point at each image"],
    ["a video or audio input is not an image input", { "1": node("LoadVideo", { file: "v.mp4" }), "2": node("LoadAudio", { audio: "a.wav" }) }, "--each-image: this workflow has no image input (LoadImage) to point at each image"],
  ];
  for (const [what, workflow, message] of refused) {
    test(`${what} → usage error`, () => {
      const error = thrown(() => eachImageRuns(images, workflow));
      expect([error.exitCode, error.message]).toEqual([ExitCode.usage, message]);
    });
  }

  const single: [string, Workflow, string][] = [
    ["a LoadImageMask alone", { "7": node("LoadImageMask", { image: "m.png", channel: "alpha" }) }, "7.image"],
    ["a LoadImage beside a video input", { "1": node("LoadVideo", { file: "v.mp4" }), "2": node("LoadImage", { image: "x.png [input]" }) }, "2.image"],
    ["beside a LoadImage reading an output", { "1": node("LoadImage", { image: "prev.png [output]" }), "2": node("LoadImage", { image: "x.png" }) }, "2.image"],
  ];
  for (const [what, workflow, target] of single) {
    test(`${what} → ${target}`, () => expect(eachImageRuns(images.slice(0, 1), workflow)[0]!.sets).toEqual([`${target}=a.png`]));
  }
});

describe("numberRuns", () => {
  const PLAIN = run("");
  const fromFile = [run("line 2", ["6.text=a"], ["x.png"]), run("line 4", ["6.text=b"])];
  const cases: [string, Planned[], number, [number, string][]][] = [
    ["a single plain run", [PLAIN], 1, [[1, "run"]]],
    ["plain repeats", [PLAIN], 3, [[1, "repeat 1"], [2, "repeat 2"], [3, "repeat 3"]]],
    ["lines", fromFile, 1, [[1, "line 2"], [2, "line 4"]]],
    ["lines repeated: each line's repeats together", fromFile, 2, [[1, "line 2, repeat 1"], [2, "line 2, repeat 2"], [3, "line 4, repeat 1"], [4, "line 4, repeat 2"]]],
    ["images", [run("image a.png"), run("image b.png")], 1, [[1, "image a.png"], [2, "image b.png"]]],
    ["no base runs", [], 3, []],
    ["no repeats", fromFile, 0, []],
  ];
  for (const [what, base, repeat, expected] of cases) {
    test(`${what} ×${repeat} → ${JSON.stringify(expected)}`, () => expect(numberRuns(base, repeat).map((r) => [r.index, r.label])).toEqual(expected));
  }

  test("each run keeps its overrides and images", () => {
    expect(numberRuns(fromFile, 2)).toEqual([
      { index: 1, label: "line 2, repeat 1", sets: ["6.text=a"], images: ["x.png"] },
      { index: 2, label: "line 2, repeat 2", sets: ["6.text=a"], images: ["x.png"] },
      { index: 3, label: "line 4, repeat 1", sets: ["6.text=b"], images: [] },
      { index: 4, label: "line 4, repeat 2", sets: ["6.text=b"], images: [] },
    ]);
  });

  test("the base runs are left as they were", () => {
    const base = [run("line 1", ["6.text=a"])];
    numberRuns(base, 3);
    expect(base).toEqual([run("line 1", ["6.text=a"])]);
  });

  test("indexes are 1…N, in order, for a large batch", () => {
    const runs = numberRuns(Array.from({ length: 500 }, (_, i) => run(`line ${i + 1}`)), 4);
    expect(runs.map((r) => r.index)).toEqual(Array.from({ length: 2_000 }, (_, i) => i + 1));
  });
});

describe("runOutput", () => {
  const at = (index: number): RunSpec => ({ index, label: "x", sets: [], images: [] });
  const cases: [number, number, boolean, { dir: string; prefix: string }][] = [
    [1, 1, false, { dir: "out/001", prefix: "" }],
    [7, 20, false, { dir: "out/007", prefix: "" }],
    [999, 999, false, { dir: "out/999", prefix: "" }],
    // the width grows with the batch, so that names sort
    [1, 1_000, false, { dir: "out/0001", prefix: "" }],
    [1_000, 1_000, false, { dir: "out/1000", prefix: "" }],
    [42, 12_345, false, { dir: "out/00042", prefix: "" }],
    [5, 100_000, false, { dir: "out/000005", prefix: "" }],
    // --flat: one folder, the number as a prefix
    [1, 1, true, { dir: "out", prefix: "001_" }],
    [7, 20, true, { dir: "out", prefix: "007_" }],
    [1, 1_000, true, { dir: "out", prefix: "0001_" }],
    [1_000, 1_000, true, { dir: "out", prefix: "1000_" }],
  ];
  for (const [index, total, flat, expected] of cases) {
    test(`run ${index} of ${total}${flat ? ", --flat" : ""} → ${JSON.stringify(expected)}`, () => expect(runOutput("out", at(index), total, flat)).toEqual(expected));
  }

  test("the names of a batch sort in run order", () => {
    const names = Array.from({ length: 1_200 }, (_, i) => runOutput("o", at(i + 1), 1_200, false).dir);
    expect([...names].sort()).toEqual(names);
    expect(new Set(names).size).toBe(1_200);
  });
});

describe("succeededRuns", () => {
  const record = (index: unknown, exitCode: unknown) => JSON.stringify({ run: { index, label: `line ${index}` }, exitCode, job: { id: `j${index}` } });
  const cases: [string, string, number[]][] = [
    ["empty", "", []],
    ["only exit code 0 counts", [record(1, 0), record(2, 1), record(3, 4), record(4, 0)].join("\n"), [1, 4]],
    ["a numeric index only", [record("5", 0), record(null, 0), JSON.stringify({ exitCode: 0 }), JSON.stringify({ run: 6, exitCode: 0 })].join("\n"), []],
    ["exit code 0, not \"0\" or false", [record(7, "0"), record(8, false), record(9, null), JSON.stringify({ run: { index: 10 } })].join("\n"), []],
    ["a truncated last line is ignored", `${record(1, 0)}\n${record(2, 0).slice(0, 20)}`, [1]],
    ["a garbled line in the middle is ignored", `${record(1, 0)}\n\u0000garbage{\n${record(3, 0)}\n`, [1, 3]],
    ["lines that are JSON but not records", ["null", "[]", "7", '"x"', "true", record(2, 0)].join("\n"), [2]],
    ["blank lines and CRLF", `\r\n${record(1, 0)}\r\n\r\n  \n${record(2, 0)}\r\n`, [1, 2]],
    ["a run that failed, then succeeded when resumed", [record(3, 1), record(3, 0)].join("\n"), [3]],
    ["a run that succeeded, then failed again", [record(3, 0), record(3, 1)].join("\n"), [3]],
    ["a pretty-printed record is not JSON Lines", JSON.stringify({ run: { index: 1 }, exitCode: 0 }, null, 2), []],
  ];
  for (const [what, manifest, expected] of cases) {
    test(`${what} → ${JSON.stringify(expected)}`, () => expect([...succeededRuns(manifest)].map((key) => Number(key.split(":")[0])).sort((a, b) => a - b)).toEqual(expected));
  }
});

describe("describeTally", () => {
  const tally = (done: number, failed: number, running: number, queued: number): Tally => ({ done, failed, running, queued });
  const cases: [Tally, number, string][] = [
    [tally(12, 1, 4, 183), 6_190, "12 done, 1 failed, 4 running, 183 queued · 2.1 runs/s"],
    [tally(0, 0, 0, 5), 0, "0 done, 0 failed, 0 running, 5 queued"],
    [tally(3, 0, 1, 0), 0, "3 done, 0 failed, 1 running, 0 queued"],
    [tally(3, 0, 1, 0), -5, "3 done, 0 failed, 1 running, 0 queued"],
    [tally(0, 0, 4, 196), 1_000, "0 done, 0 failed, 4 running, 196 queued · 0.0 runs/s"],
    [tally(3, 0, 0, 0), 2_000, "3 done, 0 failed, 0 running, 0 queued · 1.5 runs/s"],
    [tally(1, 0, 0, 0), 3_000, "1 done, 0 failed, 0 running, 0 queued · 0.3 runs/s"],
    // failed runs count in the rate too
    [tally(0, 10, 0, 0), 1_000, "0 done, 10 failed, 0 running, 0 queued · 10.0 runs/s"],
    [tally(200, 0, 0, 0), 7_000, "200 done, 0 failed, 0 running, 0 queued · 28.6 runs/s"],
  ];
  for (const [t, elapsed, expected] of cases) {
    test(`${JSON.stringify(t)} after ${elapsed} ms → ${expected}`, () => expect(describeTally(t, elapsed)).toBe(expected));
  }
});
