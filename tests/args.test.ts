import { describe, expect, mock, test } from "bun:test";
import type { ArgsDef } from "citty";
import {
  apiKeyFromConfigToml,
  batchArgs,
  connectionArgs,
  DEFAULT_BASE_URL,
  jobIdArg,
  LOCAL_TEST_SERVER,
  type Options,
  type ParsedValues,
  parseArgv,
  policyArgs,
  preflightArgs,
  reportArgs,
  requestExtras,
  requireCredentials,
  resolveOptions,
  runArgs,
  type Sources,
  submitArgs,
  waitArgs,
} from "../lib/args.ts";
import { ExitCode } from "../lib/errors.ts";
import { DIALECTS } from "../lib/workflow.ts";
import { thrown } from "./helpers.ts";

const sources = (env: Record<string, string | undefined> = {}, configKey?: string) => {
  const configApiKey = mock(() => configKey);
  return { env, configApiKey } satisfies Sources;
};

const resolveArgv = (argv: string[], from: Sources = sources()) => resolveOptions(parseArgv(argv, runArgs), from);

/** The flags of status, cancel and retry: a job id and nothing about waiting. */
const jobDef = { ...jobIdArg, ...connectionArgs, ...reportArgs } as const satisfies ArgsDef;

describe("argument fragments", () => {
  test("runArgs keeps the original script's flags first, in its order", () => {
    expect(Object.keys(runArgs).slice(0, 10)).toEqual([
      "workflow",
      "images",
      "images-dir",
      "output",
      "no-open",
      "timeout",
      "poll-interval",
      "api-key",
      "endpoint-id",
      "base-url",
    ]);
  });

  test("runArgs is exactly the union of submit, wait, preflight, batch, policy, connection and report flags", () => {
    const fragments: ArgsDef[] = [submitArgs, waitArgs, preflightArgs, batchArgs, policyArgs, connectionArgs, reportArgs];
    const union = fragments.flatMap((fragment) => Object.keys(fragment));
    expect(new Set(union).size).toBe(union.length); // no flag in two fragments
    expect(Object.keys(runArgs).sort()).toEqual(union.sort());
    // the same definitions, not copies that could drift
    const byName: ArgsDef = Object.assign({}, ...fragments);
    for (const [name, arg] of Object.entries(runArgs as ArgsDef)) expect(arg).toBe(byName[name]!);
  });

  test("the default command has no positional, so a workflow path is never taken for one", () => {
    expect(Object.values(runArgs as ArgsDef).filter((arg) => arg.type === "positional")).toEqual([]);
    expect(jobIdArg["job-id"].type).toBe("positional");
  });

  test("the defaults resolveOptions falls back to are the ones --help shows", () => {
    expect([waitArgs.output.default, waitArgs.timeout.default, waitArgs["poll-interval"].default, waitArgs["max-output-bytes"].default]).toEqual([
      "./output",
      "600",
      "2",
      "2GB",
    ]);
  });

  // A placeholder (FILE, NODE.INPUT=VALUE), an optional one ([URL]), or choices (N|random, seed|worker-comfyui).
  const PLACEHOLDER = "[A-Z][A-Z_.=]*";
  const CHOICE = `(${PLACEHOLDER}|[a-z][a-z-]*)`;
  const HINT = new RegExp(`^(${PLACEHOLDER}|\\[${PLACEHOLDER}\\]|${CHOICE}(\\|${CHOICE})+)$`);
  test("every flag that takes a value names it for --help", () => {
    for (const [name, arg] of Object.entries({ ...runArgs, ...jobIdArg })) {
      if (arg.type !== "boolean") expect([name, arg.valueHint]).toEqual([name, expect.stringMatching(HINT)]);
    }
    for (const hint of ["file", "URL]", "[url]", "a b", "|seed", ""]) expect([hint, HINT.test(hint)]).toEqual([hint, false]);
  });

  test("the preflight defaults --help shows, and --dialect's choices are the dialects", () => {
    expect([preflightArgs["input-dir"].default, preflightArgs.dialect.default]).toEqual(["./input", "seed"]);
    expect<readonly string[]>(preflightArgs.dialect.options).toEqual([...DIALECTS]);
    expect<string>(preflightArgs.dialect.valueHint).toBe(DIALECTS.join("|"));
    expect(connectionArgs.local.valueHint).toBe("[URL]");
    expect(connectionArgs.local.description).toContain(LOCAL_TEST_SERVER);
  });

  test("the batch flags: --concurrency defaults to 4, the others to nothing; --each-image's value is optional", () => {
    expect(Object.keys(batchArgs)).toEqual(["batch", "each-image", "repeat", "concurrency", "flat", "resume"]);
    expect(batchArgs.concurrency.default).toBe("4");
    expect(Object.values(batchArgs as ArgsDef).filter((arg) => arg.default !== undefined)).toEqual([batchArgs.concurrency]);
    expect([batchArgs.batch.valueHint, batchArgs["each-image"].valueHint, batchArgs.repeat.valueHint, batchArgs.concurrency.valueHint, batchArgs.resume.valueHint]).toEqual([
      "FILE",
      "[NODE.INPUT]",
      "N",
      "N",
      "MANIFEST",
    ]);
    expect(batchArgs.flat.type).toBe("boolean");
  });
});

describe("parseArgv", () => {
  const parsed: [string[], ParsedValues][] = [
    [[], {}],
    [["--workflow", "f.json"], { workflow: ["f.json"] }],
    [["--workflow=f.json"], { workflow: ["f.json"] }],
    [["--api-key=abc=def"], { "api-key": ["abc=def"] }],
    [["--images", "a.png", "b.png", "c.png"], { images: ["a.png", "b.png", "c.png"] }],
    [["--images", "a.png", "--images", "b.png", "c.png"], { images: ["a.png", "b.png", "c.png"] }],
    [["--images=a.png", "--images", "b.png"], { images: ["a.png", "b.png"] }],
    [["--images", "a.png", "b.png", "--workflow", "f.json"], { images: ["a.png", "b.png"], workflow: ["f.json"] }],
    [["--images-dir", "in", "--images-dir", "more"], { "images-dir": ["in", "more"] }],
    [["--workflow", "a.json", "--workflow", "b.json"], { workflow: ["a.json", "b.json"] }],
    [["--no-open"], { "no-open": true }],
    [["--no-open=true"], { "no-open": true }],
    [["--no-open=false"], { "no-open": false }],
    [["--verbose"], { verbose: true }],
    [["--verbose=false"], { verbose: false }],
    [["--verbose", "--no-open", "--workflow", "f.json"], { verbose: true, "no-open": true, workflow: ["f.json"] }],
    // values that look like subcommands or negative numbers are still values
    [["--workflow", "emulate.json", "--output", "status"], { workflow: ["emulate.json"], output: ["status"] }],
    [["--output", "emulate"], { output: ["emulate"] }],
    [["--timeout", "-5"], { timeout: ["-5"] }],
    // `--` ends the options (and a variadic list)
    [["--workflow", "f.json", "--"], { workflow: ["f.json"] }],
    [["--images", "a.png", "--"], { images: ["a.png"] }],
    // the flags of issue 3
    [["--no-wait", "--low-priority", "--no-cancel", "--json", "--quiet"], { "no-wait": true, "low-priority": true, "no-cancel": true, json: true, quiet: true }],
    [["--policy-timeout", "60", "--ttl=120"], { "policy-timeout": ["60"], ttl: ["120"] }],
    [["--webhook", "https://hooks.example/x?a=1&b=2"], { webhook: ["https://hooks.example/x?a=1&b=2"] }],
    [["--manifest", "m.json", "--max-output-bytes", "500MB"], { manifest: ["m.json"], "max-output-bytes": ["500MB"] }],
    // the flags of issue 4: --set repeats (one assignment per flag), values may hold spaces, dots and "="
    [["--set", "6.text=a red fox", "--set", "3.steps=30"], { set: ["6.text=a red fox", "3.steps=30"] }],
    [["--set=6.text=a=b", "--set", "CLIP Text Encode (Prompt).text=x"], { set: ["6.text=a=b", "CLIP Text Encode (Prompt).text=x"] }],
    [["--seed", "random", "--input-dir", "in", "--strict", "--dry-run"], { seed: ["random"], "input-dir": ["in"], strict: true, "dry-run": true }],
    [["--print-payload", "-", "--dialect", "worker-comfyui"], { "print-payload": ["-"], dialect: ["worker-comfyui"] }],
    // --local takes its URL only when one follows
    [["--local"], { local: [""] }],
    [["--local", "--dry-run"], { local: [""], "dry-run": true }],
    [["--local", "http://127.0.0.1:9000"], { local: ["http://127.0.0.1:9000"] }],
    [["--local=http://localhost:8001", "--json"], { local: ["http://localhost:8001"], json: true }],
    [["--local", "--"], { local: [""] }],
    // the flags of issue 5
    [["--batch", "runs.jsonl", "--concurrency", "8"], { batch: ["runs.jsonl"], concurrency: ["8"] }],
    [["--repeat", "3", "--flat", "--resume", "done.jsonl"], { repeat: ["3"], flat: true, resume: ["done.jsonl"] }],
    [["--flat=false"], { flat: false }],
    [["--repeat=10", "--concurrency=1"], { repeat: ["10"], concurrency: ["1"] }],
    // --each-image takes a NODE.INPUT only when a word that is not a flag follows
    [["--each-image"], { "each-image": [""] }],
    [["--each-image", "--images", "a.png", "b.png"], { "each-image": [""], images: ["a.png", "b.png"] }],
    [["--images", "a.png", "--each-image", "--repeat", "2"], { images: ["a.png"], "each-image": [""], repeat: ["2"] }],
    [["--each-image", "10.image"], { "each-image": ["10.image"] }],
    [["--each-image", "Load Photo.image", "--images-dir", "in"], { "each-image": ["Load Photo.image"], "images-dir": ["in"] }],
    [["--each-image=4.image"], { "each-image": ["4.image"] }],
    [["--each-image="], { "each-image": [""] }],
    [["--each-image", "--"], { "each-image": [""] }],
    [["--repeat", "-1"], { repeat: ["-1"] }], // a value, refused later by resolveOptions
  ];
  for (const [argv, expected] of parsed) {
    test(`${JSON.stringify(argv)} → ${JSON.stringify(expected)}`, () => {
      expect(parseArgv(argv, runArgs)).toEqual(expected);
    });
  }

  const refused: [string[], RegExp][] = [
    [["--wrkflow", "f.json"], /^unknown option --wrkflow; did you mean --workflow\?$/],
    [["--image", "a.png"], /^unknown option --image; did you mean --images\?$/],
    [["--imagesdir", "in"], /^unknown option --imagesdir; did you mean --images-dir\?$/],
    [["--endpoint_id", "ep"], /^unknown option --endpoint_id; did you mean --endpoint-id\?$/],
    [["--poll_interval=1"], /^unknown option --poll_interval; did you mean --poll-interval\?$/],
    [["--colour"], /^unknown option --colour$/],
    [["--endpoint", "ep"], /^unknown option --endpoint; did you mean --endpoint-id\?$/],
    [["--open"], /^unknown option --open; did you mean --no-open\?$/],
    [["--zzzzzzzzzz=1"], /^unknown option --zzzzzzzzzz$/],
    [["-h"], /^unknown option "-h" \(options are spelled --name\)$/],
    [["-w", "f.json"], /^unknown option "-w"/],
    [["flow.json"], /^unexpected argument "flow.json"; did you mean --workflow flow.json\?$/],
    [["FLOW.JSON"], /did you mean --workflow FLOW.JSON\?$/],
    [["picture.png"], /^unexpected argument "picture.png"$/],
    [["--workflow", "a.json", "b.json"], /^unexpected argument "b.json"; did you mean --workflow b.json\?$/],
    [["--images=a.png", "b.png"], /^unexpected argument "b.png"$/],
    [["--workflow"], /^--workflow needs a value \(FILE\)$/],
    [["--workflow", "--no-open"], /^--workflow needs a value \(FILE\)$/],
    [["--timeout"], /^--timeout needs a value \(SECONDS\)$/],
    [["--images", "--verbose"], /^--images needs a value \(FILE\.\.\.\)$/],
    [["--set"], /^--set needs a value \(NODE\.INPUT=VALUE\)$/],
    [["--set", "--dry-run"], /^--set needs a value/],
    [["--seed"], /^--seed needs a value \(N\|random\)$/],
    [["--dialect"], /^--dialect needs a value \(seed\|worker-comfyui\)$/],
    [["--print-payload"], /^--print-payload needs a value \(FILE\)$/],
    [["--set", "6.text=a", "7.text=b"], /^unexpected argument "7\.text=b"$/], // one assignment per --set
    [["--local", "http://localhost:8000", "http://localhost:8001"], /^unexpected argument "http:\/\/localhost:8001"$/],
    [["--strict=yes"], /^--strict takes no value \(got "yes"\)$/],
    [["--batch"], /^--batch needs a value \(FILE\)$/],
    [["--batch", "--flat"], /^--batch needs a value \(FILE\)$/],
    [["--repeat"], /^--repeat needs a value \(N\)$/],
    [["--concurrency", "--each-image"], /^--concurrency needs a value \(N\)$/],
    [["--resume"], /^--resume needs a value \(MANIFEST\)$/],
    [["--flat=yes"], /^--flat takes no value \(got "yes"\)$/],
    [["--each-image", "4.image", "5.image"], /^unexpected argument "5\.image"$/],
    [["--repeat", "2", "3"], /^unexpected argument "3"$/],
    [["--repat", "2"], /^unknown option --repat; did you mean --repeat\?$/],
    [["--concurency", "2"], /^unknown option --concurency; did you mean --concurrency\?$/],
    [["--each-images"], /^unknown option --each-images; did you mean --each-image\?$/],
    [["--batch-file", "x.csv"], /^unknown option --batch-file/],
    // the Comfy.org key comes from the environment only, never from argv (where ps would show it)
    [["--comfy-org-api-key", "k"], /^unknown option --comfy-org-api-key/],
    [["--no-open=yes"], /^--no-open takes no value \(got "yes"\)$/],
    [["--verbose=1"], /^--verbose takes no value \(got "1"\)$/],
    [["--", "extra"], /^unexpected argument "extra"$/],
    [["--workflow", "f.json", "--", "--verbose"], /^unexpected argument "--verbose"$/],
    // names that exist on Object.prototype are unknown options like any other
    [["--constructor", "x"], /^unknown option --constructor/],
    [["--toString"], /^unknown option --toString/],
    [["--__proto__=x"], /^unknown option --__proto__/],
    [["--hasOwnProperty=1"], /^unknown option --hasOwnProperty/],
  ];
  for (const [argv, message] of refused) {
    test(`${JSON.stringify(argv)} → usage error ${message}`, () => {
      const error = thrown(() => parseArgv(argv, runArgs));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toMatch(message);
    });
  }

  test("only the flags of the given definition are known", () => {
    expect(thrown(() => parseArgv(["--json"], submitArgs)).message).toBe("unknown option --json");
    expect(parseArgv(["--api-key", "k"], connectionArgs)).toEqual({ "api-key": ["k"] });
    expect(thrown(() => parseArgv(["--workflow", "f.json"], connectionArgs)).message).toStartWith("unknown option --workflow");
  });
});

describe("parseArgv with a positional (status, wait, cancel, retry)", () => {
  const parsed: [string[], ParsedValues][] = [
    [["abc-u1", "--json"], { "job-id": "abc-u1", json: true }],
    [["--json", "abc-u1"], { "job-id": "abc-u1", json: true }],
    [["abc-u1"], { "job-id": "abc-u1" }],
    [[], {}],
    [["--api-key", "k", "abc-u1"], { "api-key": ["k"], "job-id": "abc-u1" }],
    [["--api-key=k", "abc-u1", "--endpoint-id", "ep"], { "api-key": ["k"], "job-id": "abc-u1", "endpoint-id": ["ep"] }],
    // a flag's value may start with "-"; it is the value, not a positional
    [["--api-key", "-k-", "abc-u1"], { "api-key": ["-k-"], "job-id": "abc-u1" }],
    // a job id that looks like a subcommand or a file is still the job id
    [["status", "--quiet"], { "job-id": "status", quiet: true }],
    [["abc-u1", "--"], { "job-id": "abc-u1" }],
  ];
  for (const [argv, expected] of parsed) {
    test(`${JSON.stringify(argv)} → ${JSON.stringify(expected)}`, () => {
      expect(parseArgv(argv, jobDef)).toEqual(expected);
    });
  }

  const refused: [string[], RegExp][] = [
    [["abc-u1", "def-u2"], /^unexpected argument "def-u2"$/],
    [["abc-u1", "--json", "def-u2"], /^unexpected argument "def-u2"$/],
    // a word starting with "-" is never taken as a positional
    [["-abc-u1"], /^unknown option "-abc-u1" \(options are spelled --name\)$/],
    [["-5"], /^unknown option "-5"/],
    [["-"], /^unexpected argument "-"$/],
    [["abc-u1", "--", "def-u2"], /^unexpected argument "def-u2"$/],
    // the positional is not a flag
    [["--job-id", "abc-u1"], /^unknown option --job-id$/],
    [["--job-id=abc-u1"], /^unknown option --job-id$/],
    [["--jobid", "abc-u1"], /^unknown option --jobid$/],
  ];
  for (const [argv, message] of refused) {
    test(`${JSON.stringify(argv)} → usage error ${message}`, () => {
      const error = thrown(() => parseArgv(argv, jobDef));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toMatch(message);
    });
  }

  // Only a command that has --workflow suggests it.
  test("a stray .json word after the job id is not answered with --workflow, which the command does not have", () => {
    const error = thrown(() => parseArgv(["abc-u1", "flow.json"], jobDef));
    expect(error.message).toBe('unexpected argument "flow.json"');
  });

  test("the same words with the default command's flags: no positional there", () => {
    expect(thrown(() => parseArgv(["abc-u1", "--json"], runArgs)).message).toBe('unexpected argument "abc-u1"');
  });
});

describe("resolveOptions", () => {
  const DEFAULTS: Options = {
    jobId: undefined,
    workflow: undefined,
    images: [],
    imagesDirs: [],
    output: "./output",
    open: true,
    timeoutMs: 600_000,
    pollIntervalMs: 2_000,
    cancelOnTimeout: true,
    manifest: undefined,
    maxOutputBytes: 2_000_000_000,
    wait: true,
    executionTimeoutMs: undefined,
    ttlMs: undefined,
    webhook: undefined,
    lowPriority: false,
    sets: [],
    seed: undefined,
    inputDir: "./input",
    strict: false,
    dryRun: false,
    printPayload: undefined,
    dialect: "seed",
    local: false,
    batchFile: undefined,
    eachImage: undefined,
    repeat: undefined,
    concurrency: 4,
    flat: false,
    resume: undefined,
    comfyOrgApiKey: undefined,
    apiKey: undefined,
    endpointId: undefined,
    baseUrl: DEFAULT_BASE_URL,
    json: false,
    quiet: false,
    verbose: false,
    yes: false,
  };

  test("defaults: ./output, 600 s, 2 s, open, cancel on timeout, wait, 2 GB cap, the RunPod base URL, ./input, seed dialect, not local", () => {
    // toStrictEqual: every field is present, even when undefined
    expect(resolveArgv(["--workflow", "f.json"])).toStrictEqual({ ...DEFAULTS, workflow: "f.json" });
  });

  test("every flag lands in its field", () => {
    const argv = [
      "--workflow=f.json",
      "--images", "a.png", "b.png",
      "--images", "c.png",
      "--images-dir", "in",
      "--images-dir", "more",
      "--output", "renders",
      "--no-open",
      "--timeout", "1200",
      "--poll-interval", "0.5",
      "--api-key", "KEY",
      "--endpoint-id", "ep",
      "--base-url", "http://127.0.0.1:8000/",
      "--no-wait",
      "--policy-timeout", "300",
      "--ttl", "3600",
      "--webhook", "https://hooks.example/done",
      "--low-priority",
      "--no-cancel",
      "--manifest", "run.json",
      "--max-output-bytes", "500MB",
      "--set", "6.text=a red fox",
      "--set", "3.steps=30",
      "--seed", "random",
      "--input-dir", "refs",
      "--strict",
      "--dry-run",
      "--print-payload", "payload.json",
      "--dialect", "worker-comfyui",
      "--batch", "runs.csv",
      "--each-image",
      "--repeat", "3",
      "--concurrency", "16",
      "--flat",
      "--resume", "done.jsonl",
      "--json",
      "--quiet",
      "--verbose",
    ];
    expect(resolveArgv(argv)).toStrictEqual({
      jobId: undefined,
      workflow: "f.json",
      images: ["a.png", "b.png", "c.png"],
      imagesDirs: ["in", "more"],
      output: "renders",
      open: false,
      timeoutMs: 1_200_000,
      pollIntervalMs: 500,
      cancelOnTimeout: false,
      manifest: "run.json",
      maxOutputBytes: 500_000_000,
      wait: false,
      executionTimeoutMs: 300_000,
      ttlMs: 3_600_000,
      webhook: "https://hooks.example/done",
      lowPriority: true,
      sets: ["6.text=a red fox", "3.steps=30"],
      seed: "random",
      inputDir: "refs",
      strict: true,
      dryRun: true,
      printPayload: "payload.json",
      dialect: "worker-comfyui",
      local: false,
      batchFile: "runs.csv",
      eachImage: "",
      repeat: 3,
      concurrency: 16,
      flat: true,
      resume: "done.jsonl",
      comfyOrgApiKey: undefined,
      apiKey: "KEY",
      endpointId: "ep",
      baseUrl: "http://127.0.0.1:8000",
      json: true,
      quiet: true,
      verbose: true,
      yes: false,
    });
  });

  test("a subcommand's flags: the job id from the positional, every flag it lacks at its default", () => {
    const options = resolveOptions(parseArgv(["abc-u1", "--json", "--api-key", "KEY"], jobDef), sources());
    expect(options).toStrictEqual({ ...DEFAULTS, jobId: "abc-u1", json: true, apiKey: "KEY" });
  });

  test("wait's flags: job id, output and the wait settings", () => {
    const def = { ...jobIdArg, ...waitArgs, ...connectionArgs, ...reportArgs };
    const argv = ["--output", "o", "abc-u1", "--no-cancel", "--timeout=30", "--manifest=m.json", "--max-output-bytes", "1kB"];
    expect(resolveOptions(parseArgv(argv, def), sources())).toStrictEqual({
      ...DEFAULTS,
      jobId: "abc-u1",
      output: "o",
      timeoutMs: 30_000,
      cancelOnTimeout: false,
      manifest: "m.json",
      maxOutputBytes: 1_000,
    });
  });

  test("--yes (a flag of purge-queue) lands in yes", () => {
    const def = { ...connectionArgs, ...reportArgs, yes: { type: "boolean" } } as const satisfies ArgsDef;
    expect(resolveOptions(parseArgv(["--yes"], def), sources()).yes).toBe(true);
    expect(resolveOptions(parseArgv(["--yes=false"], def), sources()).yes).toBe(false);
  });

  test("--no-open=false and --verbose=false keep the defaults", () => {
    const options = resolveArgv(["--workflow", "f.json", "--no-open=false", "--verbose=false"]);
    expect([options.open, options.verbose]).toEqual([true, false]);
  });

  const numbers: [string, string, number | RegExp][] = [
    ["timeout", "1", 1_000],
    ["timeout", "1.5", 1_500],
    ["timeout", " 30 ", 30_000],
    ["timeout", "0", /^--timeout must be at least 1 s$/],
    ["timeout", "0.5", /^--timeout must be at least 1 s$/],
    ["timeout", "-5", /^--timeout must be a number of seconds$/],
    ["timeout", "0x10", /^--timeout must be a number of seconds$/],
    ["timeout", "1e3", /^--timeout must be a number of seconds$/],
    ["timeout", "abc", /^--timeout must be a number of seconds$/],
    ["timeout", "10s", /^--timeout must be a number of seconds$/],
    ["timeout", "Infinity", /^--timeout must be a number of seconds$/],
    ["timeout", " ", /^--timeout must be a number of seconds$/],
    ["poll-interval", "0.1", 100],
    ["poll-interval", "0.25", 250],
    ["poll-interval", "5", 5_000],
    ["poll-interval", "0.05", /^--poll-interval must be at least 0.1 s$/],
    ["poll-interval", "0", /^--poll-interval must be at least 0.1 s$/],
    ["poll-interval", "fast", /^--poll-interval must be a number of seconds$/],
    // RunPod's policy.executionTimeout: 5 s to 7 days, sent in ms
    ["policy-timeout", "5", 5_000],
    ["policy-timeout", "60.5", 60_500],
    ["policy-timeout", "604800", 604_800_000],
    ["policy-timeout", "4.99", /^--policy-timeout must be at least 5 s$/],
    ["policy-timeout", "0", /^--policy-timeout must be at least 5 s$/],
    ["policy-timeout", "604800.5", /^--policy-timeout must be at most 604800 s$/],
    ["policy-timeout", "1000000", /^--policy-timeout must be at most 604800 s$/],
    ["policy-timeout", "1h", /^--policy-timeout must be a number of seconds$/],
    // RunPod's policy.ttl: 10 s to 7 days
    ["ttl", "10", 10_000],
    ["ttl", "86400", 86_400_000],
    ["ttl", "604800", 604_800_000],
    ["ttl", "9.99", /^--ttl must be at least 10 s$/],
    ["ttl", "5", /^--ttl must be at least 10 s$/],
    ["ttl", "604801", /^--ttl must be at most 604800 s$/],
    ["ttl", "-10", /^--ttl must be a number of seconds$/],
    // --max-output-bytes: decimal units, any letter case, whole bytes
    ["max-output-bytes", "2GB", 2_000_000_000],
    ["max-output-bytes", "500MB", 500_000_000],
    ["max-output-bytes", "500 mb", 500_000_000],
    ["max-output-bytes", "1.5kB", 1_500],
    ["max-output-bytes", "1.5KB", 1_500],
    ["max-output-bytes", "10", 10],
    ["max-output-bytes", "10b", 10],
    ["max-output-bytes", "1TB", 1_000_000_000_000],
    ["max-output-bytes", " 3MB ", 3_000_000],
    ["max-output-bytes", "1.0009kB", 1_000], // rounded down to whole bytes
    ["max-output-bytes", "0", /^--max-output-bytes must be at least 1 byte$/],
    ["max-output-bytes", "0.5", /^--max-output-bytes must be at least 1 byte$/],
    ["max-output-bytes", "-1", /^--max-output-bytes must be a size such as 500MB or 2GB$/],
    ["max-output-bytes", "2GiB", /must be a size such as 500MB or 2GB$/],
    ["max-output-bytes", "500 megabytes", /must be a size/],
    ["max-output-bytes", "1e6", /must be a size/],
    ["max-output-bytes", "1.2.3", /must be a size/],
    ["max-output-bytes", "MB", /must be a size/],
    ["max-output-bytes", ".5MB", /must be a size/],
    ["max-output-bytes", "Infinity", /must be a size/],
    // --repeat: whole runs, 1 to 100000
    ["repeat", "1", 1],
    ["repeat", "2", 2],
    ["repeat", " 3 ", 3],
    ["repeat", "007", 7],
    ["repeat", "100000", 100_000],
    ["repeat", "0", /^--repeat must be at least 1$/],
    ["repeat", "100001", /^--repeat must be at most 100000$/],
    ["repeat", "99999999999999999999", /^--repeat must be at most 100000$/],
    ["repeat", "1.5", /^--repeat must be a whole number$/],
    ["repeat", "2.0", /^--repeat must be a whole number$/],
    ["repeat", "-1", /^--repeat must be a whole number$/],
    ["repeat", "+2", /^--repeat must be a whole number$/],
    ["repeat", "1e3", /^--repeat must be a whole number$/],
    ["repeat", "0x10", /^--repeat must be a whole number$/],
    ["repeat", "ten", /^--repeat must be a whole number$/],
    ["repeat", "", /^--repeat must be a whole number$/],
    ["repeat", " ", /^--repeat must be a whole number$/],
    // --concurrency: 1 to 256 jobs in flight
    ["concurrency", "1", 1],
    ["concurrency", "4", 4],
    ["concurrency", "256", 256],
    ["concurrency", " 32 ", 32],
    ["concurrency", "0", /^--concurrency must be at least 1$/],
    ["concurrency", "257", /^--concurrency must be at most 256$/],
    ["concurrency", "1000", /^--concurrency must be at most 256$/],
    ["concurrency", "2.5", /^--concurrency must be a whole number$/],
    ["concurrency", "-4", /^--concurrency must be a whole number$/],
    ["concurrency", "many", /^--concurrency must be a whole number$/],
    ["concurrency", "", /^--concurrency must be a whole number$/],
  ];
  const FIELD: Record<string, keyof Options> = {
    timeout: "timeoutMs",
    "poll-interval": "pollIntervalMs",
    "policy-timeout": "executionTimeoutMs",
    ttl: "ttlMs",
    "max-output-bytes": "maxOutputBytes",
    repeat: "repeat",
    concurrency: "concurrency",
  };
  for (const [flag, value, expected] of numbers) {
    test(`--${flag} ${JSON.stringify(value)} → ${expected}`, () => {
      const run = () => resolveArgv(["--workflow", "f.json", `--${flag}=${value}`]);
      if (typeof expected === "number") {
        expect(run()[FIELD[flag]!]).toBe(expected);
      } else {
        const error = thrown(run);
        expect(error.exitCode).toBe(ExitCode.usage);
        expect(error.message).toMatch(expected);
      }
    });
  }

  const batch: [string[], Partial<Options>][] = [
    [[], { batchFile: undefined, eachImage: undefined, repeat: undefined, concurrency: 4, flat: false, resume: undefined }],
    [["--batch", "runs.jsonl"], { batchFile: "runs.jsonl" }],
    [["--batch=dir with space/runs.csv"], { batchFile: "dir with space/runs.csv" }],
    // absent, the single image input, or a NODE.INPUT
    [["--each-image"], { eachImage: "" }],
    [["--each-image", "--images", "a.png"], { eachImage: "", images: ["a.png"] }],
    [["--each-image", "5.image", "--images", "a.png"], { eachImage: "5.image", images: ["a.png"] }],
    [["--each-image=Load Photo.image"], { eachImage: "Load Photo.image" }],
    [["--repeat", "5", "--concurrency", "2"], { repeat: 5, concurrency: 2 }],
    [["--flat"], { flat: true }],
    [["--flat=false"], { flat: false }],
    [["--resume", "output/manifest.jsonl"], { resume: "output/manifest.jsonl" }],
  ];
  for (const [argv, expected] of batch) {
    test(`${JSON.stringify(argv)} → ${JSON.stringify(expected)}`, () => {
      expect(resolveArgv(["--workflow", "f.json", ...argv])).toMatchObject(expected);
    });
  }

  const batchRefused: [string[], string][] = [
    [["--batch="], "--batch needs a file"],
    [["--resume="], "--resume needs a manifest file"],
    [["--batch", "a.csv", "--batch", "b.csv"], "--batch was given more than once"],
    [["--each-image", "--each-image", "4.image"], "--each-image was given more than once"],
    [["--repeat", "2", "--repeat", "3"], "--repeat was given more than once"],
    [["--concurrency=2", "--concurrency=2"], "--concurrency was given more than once"],
    [["--resume", "a.jsonl", "--resume", "a.jsonl"], "--resume was given more than once"],
  ];
  for (const [argv, message] of batchRefused) {
    test(`${JSON.stringify(argv)} → usage error "${message}"`, () => {
      const error = thrown(() => resolveArgv(["--workflow", "f.json", ...argv]));
      expect([error.exitCode, error.message]).toEqual([ExitCode.usage, message]);
    });
  }

  test("a subcommand without the batch flags gets their defaults", () => {
    const options = resolveOptions(parseArgv(["abc-u1"], jobDef), sources());
    expect([options.batchFile, options.eachImage, options.repeat, options.concurrency, options.flat, options.resume]).toEqual([undefined, undefined, undefined, 4, false, undefined]);
  });

  test("--workflow is optional here (the default command checks it; subcommands have none)", () => {
    expect(resolveArgv(["--output", "o"]).workflow).toBeUndefined();
    expect(resolveArgv([]).workflow).toBeUndefined();
  });

  for (const flag of ["workflow", "output", "timeout", "poll-interval", "api-key", "endpoint-id", "base-url", "manifest", "max-output-bytes", "policy-timeout", "ttl", "webhook"]) {
    test(`repeated --${flag} is an error`, () => {
      const error = thrown(() => resolveArgv(["--workflow", "f.json", `--${flag}`, "5", `--${flag}`, "6"].slice(flag === "workflow" ? 2 : 0)));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toBe(`--${flag} was given more than once`);
    });
  }

  // An empty value would only fail later (an empty --output after the GPU job has run, exit 6).
  const empty: [string[], string][] = [
    [["--workflow="], "--workflow"],
    [["--workflow=f.json", "--output="], "--output"],
    [["--workflow=f.json", "--manifest="], "--manifest"],
    [["--workflow=f.json", "--max-output-bytes="], "--max-output-bytes"],
    [["--workflow=f.json", "--policy-timeout="], "--policy-timeout"],
    [["--workflow=f.json", "--ttl="], "--ttl"],
    [["--workflow=f.json", "--webhook="], "--webhook"],
  ];
  for (const [argv, flag] of empty) {
    test(`${JSON.stringify(argv)} → usage error naming ${flag}, caught before anything runs`, () => {
      const error = thrown(() => resolveArgv(argv));
      expect(error.exitCode).toBe(ExitCode.usage);
      expect(error.message).toContain(flag);
    });
  }

  describe("precedence: flags > environment > ~/.runpod/config.toml", () => {
    const keys: [flag: string | undefined, env: string | undefined, config: string | undefined, expected: string | undefined, configRead: boolean][] = [
      ["FLAG", "ENV", "CONFIG", "FLAG", false],
      ["FLAG", undefined, "CONFIG", "FLAG", false],
      [undefined, "ENV", "CONFIG", "ENV", false],
      [undefined, undefined, "CONFIG", "CONFIG", true],
      [undefined, "", "CONFIG", "CONFIG", true],
      [undefined, undefined, undefined, undefined, true],
      [" FLAG ", undefined, "CONFIG", "FLAG", false],
      ["  ", "  ", "CONFIG", "CONFIG", true], // blank counts as unset
    ];
    for (const [flag, env, config, expected, configRead] of keys) {
      test(`api key: flag ${flag} env ${env} config ${config} → ${expected}${configRead ? "" : " (config not read)"}`, () => {
        const from = sources({ RUNPOD_API_KEY: env }, config);
        const argv = ["--workflow", "f.json", ...(flag === undefined ? [] : ["--api-key", flag])];
        expect(resolveArgv(argv, from).apiKey).toBe(expected);
        expect(from.configApiKey).toHaveBeenCalledTimes(configRead ? 1 : 0);
      });
    }

    const endpoints: [string | undefined, string | undefined, string | undefined][] = [
      ["flag-ep", "env-ep", "flag-ep"],
      [undefined, "env-ep", "env-ep"],
      [undefined, undefined, undefined],
    ];
    for (const [flag, env, expected] of endpoints) {
      test(`endpoint id: flag ${flag} env ${env} → ${expected}`, () => {
        const argv = ["--workflow", "f.json", ...(flag === undefined ? [] : ["--endpoint-id", flag])];
        expect(resolveArgv(argv, sources({ RUNPOD_ENDPOINT_ID: env })).endpointId).toBe(expected);
      });
    }

    const bases: [string | undefined, string | undefined, string][] = [
      ["https://flag.example/v2", "https://env.example/v2", "https://flag.example/v2"],
      [undefined, "https://env.example/v2", "https://env.example/v2"],
      [undefined, undefined, DEFAULT_BASE_URL],
    ];
    for (const [flag, env, expected] of bases) {
      test(`base URL: flag ${flag} env ${env} → ${expected}`, () => {
        const argv = ["--workflow", "f.json", ...(flag === undefined ? [] : ["--base-url", flag])];
        expect(resolveArgv(argv, sources({ RUNPOD_ENDPOINT_BASE_URL: env })).baseUrl).toBe(expected);
      });
    }
  });

  const webhooks: [string, string | RegExp][] = [
    ["https://hooks.example/runpod", "https://hooks.example/runpod"],
    ["https://hooks.example", "https://hooks.example/"],
    ["  https://hooks.example/x?token=1  ", "https://hooks.example/x?token=1"],
    // RunPod calls it from its side: plain http and any host are the user's choice
    ["http://hooks.example:8080/done", "http://hooks.example:8080/done"],
    ["HTTP://Hooks.Example/a", "http://hooks.example/a"],
    ["ftp://hooks.example/x", /^--webhook must be an http\(s\) URL$/],
    ["javascript:alert(1)", /^--webhook must be an http\(s\) URL$/],
    ["file:///etc/passwd", /^--webhook must be an http\(s\) URL$/],
    ["mailto:me@example.com", /^--webhook must be an http\(s\) URL$/],
    ["hooks.example/x", /^--webhook is not a valid URL$/],
    ["not a url", /^--webhook is not a valid URL$/],
    [" ", /^--webhook is not a valid URL$/],
  ];
  for (const [input, expected] of webhooks) {
    test(`--webhook ${JSON.stringify(input)} → ${expected}`, () => {
      const run = () => resolveArgv(["--webhook", input]);
      if (typeof expected === "string") expect(run().webhook).toBe(expected);
      else {
        const error = thrown(run);
        expect(error.exitCode).toBe(ExitCode.usage);
        expect(error.message).toMatch(expected);
      }
    });
  }

  const switches: [flag: string, field: keyof Options, value: boolean][] = [
    ["--no-open", "open", false],
    ["--no-cancel", "cancelOnTimeout", false],
    ["--no-wait", "wait", false],
    ["--low-priority", "lowPriority", true],
    ["--json", "json", true],
    ["--quiet", "quiet", true],
    ["--verbose", "verbose", true],
  ];
  for (const [flag, field, value] of switches) {
    test(`${flag} → ${field} ${value}; ${flag}=false keeps the default ${!value}`, () => {
      expect(resolveArgv([flag])[field]).toBe(value);
      expect(resolveArgv([`${flag}=false`])[field]).toBe(!value);
      expect(resolveArgv([])[field]).toBe(!value);
    });
  }

  const baseUrls: [string, string | RegExp][] = [
    ["https://api.runpod.ai/v2", "https://api.runpod.ai/v2"],
    ["https://api.runpod.ai/v2/", "https://api.runpod.ai/v2"],
    ["https://proxy.example/v2///", "https://proxy.example/v2"],
    ["https://proxy.example", "https://proxy.example"],
    ["  https://proxy.example/v2  ", "https://proxy.example/v2"],
    ["http://localhost:8000", "http://localhost:8000"],
    ["http://localhost:8000/", "http://localhost:8000"],
    ["HTTP://LOCALHOST:8000/v2", "http://localhost:8000/v2"],
    ["http://127.0.0.1:8000/v2/", "http://127.0.0.1:8000/v2"],
    ["http://127.1.2.3", "http://127.1.2.3"],
    ["http://[::1]:8000", "http://[::1]:8000"],
    ["http://api.runpod.ai/v2", /^the base URL must use https \(plain http only for localhost\)$/],
    ["http://localhost.evil.example", /must use https/],
    ["http://127.0.0.1.evil.example", /must use https/],
    ["http://10.0.0.1:8000", /must use https/],
    ["ftp://localhost/v2", /must use https/],
    ["localhost:8000", /must use https/],
    ["https://proxy.example/v2?a=1", /must not carry a query, a fragment or credentials/],
    ["https://proxy.example/v2#f", /must not carry a query/],
    ["https://user:pw@proxy.example/v2", /must not carry a query/],
    ["api.runpod.ai/v2", /^the base URL is not a valid URL$/],
    ["not a url", /^the base URL is not a valid URL$/],
  ];
  for (const [input, expected] of baseUrls) {
    test(`--base-url ${JSON.stringify(input)} → ${expected}`, () => {
      const run = () => resolveArgv(["--workflow", "f.json", "--base-url", input]);
      if (typeof expected === "string") expect(run().baseUrl).toBe(expected);
      else {
        const error = thrown(run);
        expect(error.exitCode).toBe(ExitCode.usage);
        expect(error.message).toMatch(expected);
      }
    });
  }

  test("RUNPOD_ENDPOINT_BASE_URL is held to the same rules", () => {
    const error = thrown(() => resolveArgv(["--workflow", "f.json"], sources({ RUNPOD_ENDPOINT_BASE_URL: "http://example.com" })));
    expect(error.exitCode).toBe(ExitCode.usage);
  });

  describe("preflight flags", () => {
    // [--dialect, RUNPOD_DIALECT, the dialect or the error]
    const dialects: [string | undefined, string | undefined, string | RegExp][] = [
      [undefined, undefined, "seed"],
      ["worker-comfyui", undefined, "worker-comfyui"],
      ["seed", undefined, "seed"],
      [undefined, "worker-comfyui", "worker-comfyui"],
      [undefined, " worker-comfyui ", "worker-comfyui"],
      [undefined, "", "seed"],
      [undefined, "  ", "seed"],
      ["seed", "worker-comfyui", "seed"], // the flag wins
      ["worker-comfyui", "seed", "worker-comfyui"],
      ["comfy", undefined, /^the dialect must be one of seed, worker-comfyui \(--dialect or RUNPOD_DIALECT\)$/],
      ["Seed", undefined, /^the dialect must be one of seed, worker-comfyui/],
      [undefined, "worker_comfyui", /^the dialect must be one of seed, worker-comfyui \(--dialect or RUNPOD_DIALECT\)$/],
      ["", "worker-comfyui", /^the dialect must be one of/], // an empty flag is not the environment's
    ];
    for (const [flag, env, expected] of dialects) {
      test(`--dialect ${JSON.stringify(flag)}, RUNPOD_DIALECT ${JSON.stringify(env)} → ${expected}`, () => {
        const run = () => resolveArgv(flag === undefined ? [] : [`--dialect=${flag}`], sources({ RUNPOD_DIALECT: env }));
        if (typeof expected === "string") expect<string>(run().dialect).toBe(expected);
        else {
          const error = thrown(run);
          expect(error.exitCode).toBe(ExitCode.usage);
          expect(error.message).toMatch(expected);
        }
      });
    }

    test("--set: every occurrence, in order; none → []", () => {
      expect(resolveArgv(["--set", "6.text=a red fox", "--set=3.steps=30", "--set", "Load Checkpoint.ckpt_name=x"]).sets).toEqual(["6.text=a red fox", "3.steps=30", "Load Checkpoint.ckpt_name=x"]);
      expect(resolveArgv([]).sets).toEqual([]);
    });

    test("--seed is kept as given (prepareRequest reads it); twice is an error", () => {
      expect(resolveArgv(["--seed", "42"]).seed).toBe("42");
      expect(resolveArgv(["--seed", "random"]).seed).toBe("random");
      expect(thrown(() => resolveArgv(["--seed", "1", "--seed", "2"])).message).toBe("--seed was given more than once");
    });

    const values: [string[], keyof Options, unknown][] = [
      [["--input-dir", "refs"], "inputDir", "refs"],
      [[], "inputDir", "./input"],
      [["--print-payload", "-"], "printPayload", "-"],
      [["--print-payload=out/payload.json"], "printPayload", "out/payload.json"],
      [["--strict"], "strict", true],
      [["--strict=false"], "strict", false],
      [["--dry-run"], "dryRun", true],
      [[], "dryRun", false],
    ];
    for (const [argv, field, expected] of values) {
      test(`${JSON.stringify(argv)} → ${field} ${JSON.stringify(expected)}`, () => expect<unknown>(resolveArgv(argv)[field]).toEqual(expected));
    }

    const empty: [string, RegExp][] = [
      ["--input-dir=", /^--input-dir needs a non-empty value$/],
      ["--print-payload=", /^--print-payload needs a file name \(or - for stdout\)$/],
    ];
    for (const [flag, message] of empty) {
      test(`${flag} → usage error`, () => {
        const error = thrown(() => resolveArgv([flag]));
        expect(error.exitCode).toBe(ExitCode.usage);
        expect(error.message).toMatch(message);
      });
    }

    for (const flag of ["input-dir", "print-payload", "dialect"]) {
      test(`repeated --${flag} is an error`, () => {
        expect(thrown(() => resolveArgv([`--${flag}`, "seed", `--${flag}`, "seed"])).message).toBe(`--${flag} was given more than once`);
      });
    }

    const comfyKeys: [string | undefined, string | undefined][] = [
      ["comfyui-key-1", "comfyui-key-1"],
      ["  comfyui-key-1 ", "comfyui-key-1"],
      ["", undefined],
      ["   ", undefined],
      [undefined, undefined],
    ];
    for (const [env, expected] of comfyKeys) {
      test(`COMFY_ORG_API_KEY ${JSON.stringify(env)} → comfyOrgApiKey ${JSON.stringify(expected)}`, () => {
        expect(resolveArgv([], sources({ COMFY_ORG_API_KEY: env })).comfyOrgApiKey).toBe(expected);
      });
    }

    test("the Comfy.org key is not the RunPod key, nor the other way round", () => {
      const options = resolveArgv([], sources({ COMFY_ORG_API_KEY: "comfy", RUNPOD_API_KEY: "runpod" }));
      expect([options.apiKey, options.comfyOrgApiKey]).toEqual(["runpod", "comfy"]);
      expect(resolveArgv(["--api-key", "runpod"]).comfyOrgApiKey).toBeUndefined();
    });
  });

  describe("--local", () => {
    // [argv, environment, local, base URL or the error]
    const cases: [string[], Record<string, string>, boolean, string | RegExp][] = [
      [[], {}, false, DEFAULT_BASE_URL],
      [["--local"], {}, true, LOCAL_TEST_SERVER],
      [["--local="], {}, true, LOCAL_TEST_SERVER],
      [["--local", "--json"], {}, true, LOCAL_TEST_SERVER],
      [["--local", "http://127.0.0.1:9000/"], {}, true, "http://127.0.0.1:9000"],
      [["--local=http://localhost:8001"], {}, true, "http://localhost:8001"],
      [["--local", "https://dev-box.example:8000"], {}, true, "https://dev-box.example:8000"],
      // it replaces the endpoint: --base-url and RUNPOD_ENDPOINT_BASE_URL give way
      [["--local", "--base-url", "https://proxy.example/v2"], {}, true, LOCAL_TEST_SERVER],
      [["--base-url", "https://proxy.example/v2", "--local", "http://127.0.0.1:7000"], {}, true, "http://127.0.0.1:7000"],
      [["--local"], { RUNPOD_ENDPOINT_BASE_URL: "https://env.example/v2" }, true, LOCAL_TEST_SERVER],
      [["--local"], { RUNPOD_ENDPOINT_BASE_URL: "http://not-loopback.example" }, true, LOCAL_TEST_SERVER],
      // held to the base URL's rules
      [["--local", "http://10.0.0.5:8000"], {}, true, /^the base URL must use https \(plain http only for localhost\)$/],
      // a value that is not a URL is not --local's (it stays a word of its own)
      [["--local", "localhost:8000"], {}, true, /^unexpected argument "localhost:8000"$/],
      [["--local", "http://localhost:8000?x=1"], {}, true, /must not carry a query/],
      [["--local", "--local"], {}, true, /^--local was given more than once$/],
    ];
    for (const [argv, env, local, expected] of cases) {
      test(`${JSON.stringify(argv)} ${JSON.stringify(env)} → ${typeof expected === "string" ? `local ${local}, ${expected}` : expected}`, () => {
        const run = () => resolveArgv(argv, sources(env));
        if (typeof expected === "string") expect([run().local, run().baseUrl]).toEqual([local, expected]);
        else {
          const error = thrown(run);
          expect(error.exitCode).toBe(ExitCode.usage);
          expect(error.message).toMatch(expected);
        }
      });
    }

    test("with a subcommand: --local after the job id", () => {
      const options = resolveOptions(parseArgv(["abc-u1", "--local"], jobDef), sources());
      expect([options.jobId, options.local, options.baseUrl]).toEqual(["abc-u1", true, LOCAL_TEST_SERVER]);
    });

    // An optional value is taken only when it looks like a URL, so the job id stays the job id.
    test("with a subcommand: --local before the job id leaves the job id alone", () => {
      const options = resolveOptions(parseArgv(["--local", "abc-u1"], jobDef), sources());
      expect([options.jobId, options.local, options.baseUrl]).toEqual(["abc-u1", true, LOCAL_TEST_SERVER]);
    });
  });
});

describe("requestExtras", () => {
  type Extras = Parameters<typeof requestExtras>[0];
  const none: Extras = { executionTimeoutMs: undefined, ttlMs: undefined, lowPriority: false, webhook: undefined };
  const cases: [string, Partial<Extras>, Record<string, unknown>][] = [
    ["nothing", {}, {}],
    ["policy.executionTimeout", { executionTimeoutMs: 300_000 }, { policy: { executionTimeout: 300_000 } }],
    ["policy.ttl", { ttlMs: 3_600_000 }, { policy: { ttl: 3_600_000 } }],
    ["policy.lowPriority", { lowPriority: true }, { policy: { lowPriority: true } }],
    ["webhook", { webhook: "https://hooks.example/x" }, { webhook: "https://hooks.example/x" }],
    [
      "all together",
      { executionTimeoutMs: 5_000, ttlMs: 10_000, lowPriority: true, webhook: "https://hooks.example/x" },
      { policy: { executionTimeout: 5_000, ttl: 10_000, lowPriority: true }, webhook: "https://hooks.example/x" },
    ],
  ];
  for (const [what, given, expected] of cases) {
    test(`${what} → ${JSON.stringify(expected)}`, () => {
      expect(requestExtras({ ...none, ...given })).toStrictEqual(expected);
    });
  }

  test("from flags, end to end", () => {
    const options = resolveArgv(["--policy-timeout", "60", "--ttl", "120", "--low-priority", "--webhook", "https://hooks.example"]);
    expect(requestExtras(options)).toStrictEqual({ policy: { executionTimeout: 60_000, ttl: 120_000, lowPriority: true }, webhook: "https://hooks.example/" });
    expect(requestExtras(resolveArgv([]))).toStrictEqual({});
  });
});

describe("requireCredentials", () => {
  const cases: [{ apiKey?: string; endpointId?: string }, string[], string[]][] = [
    [{}, ["RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID"], []],
    [{ apiKey: "", endpointId: "" }, ["RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID"], []],
    [{ endpointId: "ep" }, ["RUNPOD_API_KEY", "--api-key"], ["RUNPOD_ENDPOINT_ID"]],
    [{ apiKey: "KEY" }, ["RUNPOD_ENDPOINT_ID", "--endpoint-id"], ["RUNPOD_API_KEY", "KEY"]],
  ];
  for (const [given, named, notNamed] of cases) {
    test(`${JSON.stringify(given)} → exit 3 naming ${named.join(", ")}`, () => {
      const error = thrown(() => requireCredentials(given));
      expect(error.exitCode).toBe(ExitCode.credentials);
      expect(error.exitCode).toBe(3);
      for (const word of named) expect(error.message).toContain(word);
      for (const word of notNamed) expect(error.message).not.toContain(word);
    });
  }

  test("both present → returned as they are", () => {
    expect(requireCredentials({ apiKey: "KEY", endpointId: "ep" })).toEqual({ apiKey: "KEY", endpointId: "ep" });
  });
});

describe("apiKeyFromConfigToml", () => {
  const cases: [string, string | undefined][] = [
    ['[default]\napi_key = "rpa_123"\n', "rpa_123"],
    ['[default]\napi_key = "  rpa_123  "\n', "rpa_123"],
    ['[default]\napi_key = "rpa_first"\n\n[other]\napi_key = "rpa_other"\n', "rpa_first"],
    ['[other]\napi_key = "rpa_other"\n', undefined],
    ['api_key = "top-level"\n', undefined],
    ['[default]\napi_key = ""\n', undefined],
    ['[default]\napi_key = "   "\n', undefined],
    ["[default]\napi_key = 12345\n", undefined],
    ["[default]\n", undefined],
    ["", undefined],
    ['[default\napi_key = "rpa_123"\n', undefined],
    ["[default]\napi_key = \n", undefined],
    ['[default]\napi_key = "rpa_123"\napi_key = "again"\n', undefined],
  ];
  for (const [text, expected] of cases) {
    test(`${JSON.stringify(text)} → ${expected}`, () => {
      expect(apiKeyFromConfigToml(text)).toBe(expected);
    });
  }
});
