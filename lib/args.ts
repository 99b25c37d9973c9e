// Flags, environment and RunPod's config file → one validated options object.
// citty describes the flags (and renders --help); parsing is ours, because citty takes the
// last of repeated flags, has no variadic values and accepts unknown flags silently.
import type { ArgsDef } from "citty";
import * as v from "valibot";
import { isSecureOrLoopback } from "./api.ts";
import { CliError, ExitCode, usageError } from "./errors.ts";
import { DIALECTS } from "./workflow.ts";

export const DEFAULT_BASE_URL = "https://api.runpod.ai/v2";
/** Where `python handler.py --rp_serve_api` listens. */
export const LOCAL_TEST_SERVER = "http://localhost:8000";

// Argument fragments, spread into each command's args (as nuxi does); --help lists them in this order.

/** Which job a subcommand acts on. */
export const jobIdArg = {
  "job-id": { type: "positional", valueHint: "JOB_ID", description: "the job id printed when the job was submitted" },
} as const satisfies ArgsDef;

/** What is sent: the default command only. */
export const submitArgs = {
  workflow: { type: "string", valueHint: "FILE", required: true, description: "ComfyUI workflow in API format (Export (API) in ComfyUI)" },
  images: { type: "string", valueHint: "FILE...", description: "reference images; several after one flag, and the flag may repeat" },
  "images-dir": { type: "string", valueHint: "DIR", description: "send every image under DIR, named by its path relative to DIR" },
} as const satisfies ArgsDef;

/** Checking and changing the workflow before it is sent (README "Preflight"). */
export const preflightArgs = {
  set: { type: "string", valueHint: "NODE.INPUT=VALUE", description: "change an input of a node (by id or title); repeatable: --set 6.text=\"a red fox\" --set 3.steps=30" },
  seed: { type: "string", valueHint: "N|random", description: "set every sampler's seed / noise_seed; random picks one and reports it" },
  "input-dir": { type: "string", valueHint: "DIR", default: "./input", description: "where files the workflow names, but that were not given, are looked for and attached" },
  strict: { type: "boolean", description: "a file the workflow names that is found nowhere is an error, not a warning" },
  "dry-run": { type: "boolean", description: "check and summarise what would be sent, then exit 0 (no credentials needed, nothing sent)" },
  "print-payload": { type: "string", valueHint: "FILE", description: "write the exact JSON body of /run to FILE (- for stdout)" },
  dialect: { type: "enum", options: ["seed", "worker-comfyui"], valueHint: "seed|worker-comfyui", default: "seed", description: "the worker's request shape: the original handler, or RunPod's worker-comfyui (env RUNPOD_DIALECT)" },
} as const satisfies ArgsDef;

/** Waiting for a job and saving its results: the default command and `wait`. */
export const waitArgs = {
  output: { type: "string", valueHint: "DIR", default: "./output", description: "where results are saved" },
  "no-open": { type: "boolean", description: "do not open the saved files (they open only on a terminal anyway)" },
  timeout: { type: "string", valueHint: "SECONDS", default: "600", description: "give up after this long; the job is then cancelled (exit 5)" },
  "poll-interval": { type: "string", valueHint: "SECONDS", default: "2", description: "time between status checks" },
  "no-cancel": { type: "boolean", description: "when --timeout runs out, leave the job running and print how to resume" },
  manifest: { type: "string", valueHint: "FILE", description: "write a JSON record of the run: job, timings, workflow and file sha256" },
  "max-output-bytes": { type: "string", valueHint: "BYTES", default: "2GB", description: "refuse any single output larger than this (e.g. 500MB)" },
} as const satisfies ArgsDef;

/** Many runs of one workflow (README "Batches"). */
export const batchArgs = {
  batch: { type: "string", valueHint: "FILE", description: "one run per line of a JSON Lines or CSV file of --set overrides (and images)" },
  "each-image": { type: "string", valueHint: "[NODE.INPUT]", description: "one run per image of --images/--images-dir, pointed at by the workflow's image input (or NODE.INPUT)" },
  repeat: { type: "string", valueHint: "N", description: "N runs of each (a new seed for each with --seed random)" },
  concurrency: { type: "string", valueHint: "N", default: "4", description: "jobs in flight at once in a batch" },
  flat: { type: "boolean", description: "a batch's files all in --output, prefixed with the run number, not in a folder per run" },
  resume: { type: "string", valueHint: "MANIFEST", description: "skip the runs this batch manifest records as succeeded (it is appended to)" },
} as const satisfies ArgsDef;

/** Request-level settings of /run. */
export const policyArgs = {
  "no-wait": { type: "boolean", description: "submit, print the job id and exit 0" },
  "policy-timeout": { type: "string", valueHint: "SECONDS", description: "RunPod's policy.executionTimeout: the longest the job may run (5 s to 7 days)" },
  ttl: { type: "string", valueHint: "SECONDS", description: "RunPod's policy.ttl: the job's whole life, queue included (10 s to 7 days)" },
  webhook: { type: "string", valueHint: "URL", description: "RunPod posts the finished job to this URL" },
  "low-priority": { type: "boolean", description: "RunPod's policy.lowPriority: the job does not trigger scaling up" },
} as const satisfies ArgsDef;

/** Flags shared by every command that talks to an endpoint. */
export const connectionArgs = {
  "api-key": { type: "string", valueHint: "KEY", description: "RunPod API key (env RUNPOD_API_KEY, then ~/.runpod/config.toml)" },
  "endpoint-id": { type: "string", valueHint: "ID", description: "serverless endpoint id (env RUNPOD_ENDPOINT_ID)" },
  "base-url": { type: "string", valueHint: "URL", description: `API base URL (env RUNPOD_ENDPOINT_BASE_URL; default ${DEFAULT_BASE_URL})` },
  local: { type: "string", valueHint: "[URL]", description: `RunPod's local test server (python handler.py --rp_serve_api) instead, at URL (default ${LOCAL_TEST_SERVER}); no credentials` },
} as const satisfies ArgsDef;

/** How much is said, and in which form. */
export const reportArgs = {
  json: { type: "boolean", description: "print one JSON document on stdout at the end, and nothing else there" },
  quiet: { type: "boolean", description: "print only errors on stderr" },
  verbose: { type: "boolean", description: "also print request lines (never the key), tracebacks and stack traces" },
} as const satisfies ArgsDef;

// The original script's flags first, in its order; the newer ones after them.
const { output, "no-open": noOpen, timeout, "poll-interval": pollInterval, ...laterWaitArgs } = waitArgs;
export const runArgs = {
  ...submitArgs,
  output,
  "no-open": noOpen,
  timeout,
  "poll-interval": pollInterval,
  ...connectionArgs,
  ...preflightArgs,
  ...batchArgs,
  ...policyArgs,
  ...laterWaitArgs,
  ...reportArgs,
} as const satisfies ArgsDef;

/** Flags that take every following non-flag word (`--images a.png b.png`). All string flags may repeat. */
const VARIADIC = new Set(["images"]);
/** Flags whose value may be left out (`--local` alone means the default URL), and what a value of theirs looks like. */
const OPTIONAL_VALUE: Record<string, RegExp> = { local: /^https?:\/\//i, "each-image": /^[^=]+\.[^.=]+$/, "rate-limits": /^[a-z-]+\s*=/i };

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

/**
 * argv → values, strictly: an unknown flag, a missing value or a stray word is a usage error.
 * String flags collect every occurrence into an array (the caller decides whether that is allowed);
 * booleans accept `--x`, `--x=true|false`.
 */
export function parseArgv(argv: readonly string[], def: ArgsDef): ParsedValues {
  const values: Record<string, string | boolean | string[]> = Object.create(null);
  const positionals = Object.keys(def).filter((name) => def[name]!.type === "positional");
  const push = (name: string, value: string) => {
    const list = (values[name] ??= []) as string[];
    list.push(value);
  };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === "--") {
      if (i + 1 < argv.length) throw usageError(`unexpected argument "${argv[i + 1]}"`);
      break;
    }
    if (!token.startsWith("--")) {
      const slot = positionals.find((name) => values[name] === undefined);
      if (slot && !token.startsWith("-")) {
        values[slot] = token;
        continue;
      }
      throw usageError(
        token.startsWith("-") && token.length > 1
          ? `unknown option "${token}" (options are spelled --name)`
          : `unexpected argument "${token}"${Object.hasOwn(def, "workflow") ? suggestWorkflowFor(token) : ""}`,
      );
    }
    const eq = token.indexOf("=");
    const name = token.slice(2, eq === -1 ? undefined : eq);
    const inline = eq === -1 ? undefined : token.slice(eq + 1);
    const arg = Object.hasOwn(def, name) && def[name]!.type !== "positional" ? def[name] : undefined;
    if (!arg) throw usageError(`unknown option --${name}${didYouMean(name, Object.keys(def).filter((key) => !positionals.includes(key)))}`);
    if (arg.type === "boolean") {
      if (inline === undefined || inline === "true") values[name] = true;
      else if (inline === "false") values[name] = false;
      else throw usageError(`--${name} takes no value (got "${inline}")`);
      continue;
    }
    if (inline !== undefined) {
      push(name, inline);
      continue;
    }
    // An optional value is taken only when it looks like one (`status --local JOB_ID` keeps the id).
    const takes = (next: string) => !isFlag(next) && (OPTIONAL_VALUE[name]?.test(next) ?? true);
    const taken: string[] = [];
    while (i + 1 < argv.length && takes(argv[i + 1]!) && (taken.length === 0 || VARIADIC.has(name))) {
      taken.push(argv[++i]!);
    }
    if (taken.length === 0 && Object.hasOwn(OPTIONAL_VALUE, name)) taken.push("");
    if (taken.length === 0) throw usageError(`--${name} needs a value${arg.valueHint ? ` (${arg.valueHint})` : ""}`);
    for (const value of taken) push(name, value);
  }
  return values;
}

const isFlag = (token: string) => token.startsWith("--");

function suggestWorkflowFor(word: string): string {
  return /\.json$/i.test(word) ? `; did you mean --workflow ${word}?` : "";
}

function didYouMean(name: string, candidates: readonly string[]): string {
  const extended = candidates.find((c) => c === `no-${name}` || (name.length >= 3 && c.startsWith(name)));
  if (extended) return `; did you mean --${extended}?`;
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best ? `; did you mean --${best}?` : "";
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

const seconds = (flag: string, min: number, max = Infinity) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^\d+(\.\d+)?$/, `--${flag} must be a number of seconds`),
    v.transform(Number),
    v.minValue(min, `--${flag} must be at least ${min} s`),
    v.maxValue(max, `--${flag} must be at most ${max} s`),
    v.transform((s) => Math.round(s * 1000)),
  );

const count = (flag: string, min: number, max: number) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^\d+$/, `--${flag} must be a whole number`),
    v.transform(Number),
    v.minValue(min, `--${flag} must be at least ${min}`),
    v.maxValue(max, `--${flag} must be at most ${max}`),
  );

const UNITS: Record<string, number> = { "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12 };
const byteCount = (flag: string) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^\d+(\.\d+)?\s*(b|kb|mb|gb|tb)?$/i, `--${flag} must be a size such as 500MB or 2GB`),
    v.transform((s) => {
      const [, number, unit = ""] = /^([\d.]+)\s*([a-z]*)$/i.exec(s)!;
      return Math.floor(Number(number) * UNITS[unit.toLowerCase()]!);
    }),
    v.minValue(1, `--${flag} must be at least 1 byte`),
  );

const url = (what: string) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.check((s) => URL.canParse(s), `${what} is not a valid URL`),
    v.transform((s) => new URL(s)),
  );

export const baseUrlSchema = v.pipe(
  url("the base URL"),
  v.check(isSecureOrLoopback, "the base URL must use https (plain http only for localhost)"),
  v.check((url) => !url.search && !url.hash && !url.username && !url.password, "the base URL must not carry a query, a fragment or credentials"),
  v.transform((url) => url.href.replace(/\/+$/, "")),
);

const DAY_S = 24 * 3600;

const OptionsSchema = v.object({
  jobId: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1, "missing JOB_ID (the id printed when the job was submitted)"))),
  workflow: v.optional(v.pipe(v.string(), v.minLength(1, "--workflow needs a non-empty value"))),
  images: v.array(v.string()),
  imagesDirs: v.array(v.string()),
  output: v.pipe(v.string(), v.minLength(1, "--output needs a non-empty value")),
  open: v.boolean(),
  timeoutMs: seconds("timeout", 1),
  pollIntervalMs: seconds("poll-interval", 0.1),
  cancelOnTimeout: v.boolean(),
  manifest: v.optional(v.pipe(v.string(), v.minLength(1, "--manifest needs a non-empty value"))),
  maxOutputBytes: byteCount("max-output-bytes"),
  wait: v.boolean(),
  executionTimeoutMs: v.optional(seconds("policy-timeout", 5, 7 * DAY_S)),
  ttlMs: v.optional(seconds("ttl", 10, 7 * DAY_S)),
  webhook: v.optional(
    v.pipe(
      url("--webhook"),
      v.check((url) => url.protocol === "https:" || url.protocol === "http:", "--webhook must be an http(s) URL"),
      v.transform((url) => url.href),
    ),
  ),
  lowPriority: v.boolean(),
  sets: v.array(v.string()),
  seed: v.optional(v.string()),
  inputDir: v.pipe(v.string(), v.minLength(1, "--input-dir needs a non-empty value")),
  strict: v.boolean(),
  dryRun: v.boolean(),
  printPayload: v.optional(v.pipe(v.string(), v.minLength(1, "--print-payload needs a file name (or - for stdout)"))),
  dialect: v.picklist(DIALECTS, `the dialect must be one of ${DIALECTS.join(", ")} (--dialect or RUNPOD_DIALECT)`),
  /** RunPod's local test server: no endpoint id, no credentials, status by POST. */
  local: v.boolean(),
  batchFile: v.optional(v.pipe(v.string(), v.minLength(1, "--batch needs a file"))),
  /** Absent: no --each-image; "": the workflow's single image input. */
  eachImage: v.optional(v.string()),
  repeat: v.optional(count("repeat", 1, 100_000)),
  concurrency: count("concurrency", 1, 256),
  flat: v.boolean(),
  resume: v.optional(v.pipe(v.string(), v.minLength(1, "--resume needs a manifest file"))),
  comfyOrgApiKey: v.optional(v.string()),
  apiKey: v.optional(v.string()),
  endpointId: v.optional(v.string()),
  baseUrl: baseUrlSchema,
  json: v.boolean(),
  quiet: v.boolean(),
  verbose: v.boolean(),
  yes: v.boolean(),
});
export type Options = v.InferOutput<typeof OptionsSchema>;

/** Where settings come from besides flags. `configApiKey` is read lazily: only when no other key is set. */
export interface Sources {
  env: Record<string, string | undefined>;
  configApiKey: () => string | undefined;
}

/** The one value of a flag that may not repeat; blank counts as absent for settings that can come from elsewhere. */
function flagValue(values: ParsedValues, name: string): string | undefined {
  const value = values[name];
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) return undefined;
  if (value.length > 1) throw usageError(`--${name} was given more than once`);
  return value[0];
}

/** Flags beat the environment, which beats ~/.runpod/config.toml. */
export function resolveConnection(values: ParsedValues, { env, configApiKey }: Sources) {
  const given = (name: string) => flagValue(values, name)?.trim() || undefined;
  const fromEnv = (name: string) => env[name]?.trim() || undefined;
  return {
    apiKey: given("api-key") ?? fromEnv("RUNPOD_API_KEY") ?? configApiKey(),
    endpointId: given("endpoint-id") ?? fromEnv("RUNPOD_ENDPOINT_ID"),
    baseUrl: given("base-url") ?? fromEnv("RUNPOD_ENDPOINT_BASE_URL") ?? DEFAULT_BASE_URL,
  };
}

/** Parsed flags of any command → the one options object; a flag the command lacks takes its default. */
export function resolveOptions(values: ParsedValues, sources: Sources): Options {
  const flag = (name: string) => flagValue(values, name);
  const withDefault = (name: "output" | "timeout" | "poll-interval" | "max-output-bytes") => flag(name) ?? waitArgs[name].default;
  const list = (name: string) => (Array.isArray(values[name]) ? (values[name] as string[]) : []);
  const raw = {
    jobId: flag("job-id"),
    workflow: flag("workflow"),
    images: list("images"),
    imagesDirs: list("images-dir"),
    output: withDefault("output"),
    open: values["no-open"] !== true,
    timeoutMs: withDefault("timeout"),
    pollIntervalMs: withDefault("poll-interval"),
    cancelOnTimeout: values["no-cancel"] !== true,
    manifest: flag("manifest"),
    maxOutputBytes: withDefault("max-output-bytes"),
    wait: values["no-wait"] !== true,
    executionTimeoutMs: flag("policy-timeout"),
    ttlMs: flag("ttl"),
    webhook: flag("webhook"),
    lowPriority: values["low-priority"] === true,
    sets: list("set"),
    seed: flag("seed"),
    inputDir: flag("input-dir") ?? preflightArgs["input-dir"].default,
    strict: values.strict === true,
    dryRun: values["dry-run"] === true,
    printPayload: flag("print-payload"),
    dialect: flag("dialect") ?? (sources.env.RUNPOD_DIALECT?.trim() || preflightArgs.dialect.default),
    local: flag("local") !== undefined,
    batchFile: flag("batch"),
    eachImage: flag("each-image"),
    repeat: flag("repeat"),
    concurrency: flag("concurrency") ?? batchArgs.concurrency.default,
    flat: values.flat === true,
    resume: flag("resume"),
    comfyOrgApiKey: sources.env.COMFY_ORG_API_KEY?.trim() || undefined,
    json: values.json === true,
    quiet: values.quiet === true,
    verbose: values.verbose === true,
    yes: values.yes === true,
    ...resolveConnection(values, sources),
    // The local test server replaces the endpoint: its URL is the base, and it wants no credentials.
    ...(flag("local") !== undefined && { baseUrl: flag("local") || LOCAL_TEST_SERVER }),
  };
  const parsed = v.safeParse(OptionsSchema, raw);
  if (!parsed.success) throw usageError(parsed.issues[0].message);
  return parsed.output;
}

/** The request-level fields of /run beside `input`. */
export function requestExtras(options: Pick<Options, "executionTimeoutMs" | "ttlMs" | "lowPriority" | "webhook">): Record<string, unknown> {
  const policy = {
    ...(options.executionTimeoutMs !== undefined && { executionTimeout: options.executionTimeoutMs }),
    ...(options.ttlMs !== undefined && { ttl: options.ttlMs }),
    ...(options.lowPriority && { lowPriority: true }),
  };
  return { ...(Object.keys(policy).length && { policy }), ...(options.webhook && { webhook: options.webhook }) };
}

/** Credentials are checked after the input files and before any network call. */
export function requireCredentials(options: { apiKey?: string; endpointId?: string }): { apiKey: string; endpointId: string } {
  const { apiKey, endpointId } = options;
  if (apiKey && endpointId) return { apiKey, endpointId };
  const missing = [!apiKey && "RUNPOD_API_KEY (or --api-key)", !endpointId && "RUNPOD_ENDPOINT_ID (or --endpoint-id)"].filter(Boolean);
  throw new CliError(`missing ${missing.join(" and ")}`, ExitCode.credentials);
}

/** `[default] api_key` of RunPod's own config file; a broken file is ignored, as RunPod's tools would fail on it anyway. */
export function apiKeyFromConfigToml(text: string): string | undefined {
  try {
    const parsed = Bun.TOML.parse(text) as { default?: { api_key?: unknown } };
    const key = parsed.default?.api_key;
    return typeof key === "string" && key.trim() ? key.trim() : undefined;
  } catch {
    return undefined;
  }
}
