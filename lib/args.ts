// Flags, environment and RunPod's config file → one validated options object.
// citty describes the flags (and renders --help); parsing is ours, because citty takes the
// last of repeated flags, has no variadic values and accepts unknown flags silently.
import type { ArgsDef } from "citty";
import * as v from "valibot";
import { CliError, ExitCode, usageError } from "./errors.ts";

export const DEFAULT_BASE_URL = "https://api.runpod.ai/v2";

/** Flags shared by every command that talks to an endpoint. */
export const connectionArgs = {
  "api-key": { type: "string", valueHint: "KEY", description: "RunPod API key (env RUNPOD_API_KEY, then ~/.runpod/config.toml)" },
  "endpoint-id": { type: "string", valueHint: "ID", description: "serverless endpoint id (env RUNPOD_ENDPOINT_ID)" },
  "base-url": { type: "string", valueHint: "URL", description: `API base URL (env RUNPOD_ENDPOINT_BASE_URL; default ${DEFAULT_BASE_URL})` },
  verbose: { type: "boolean", description: "show request lines and stack traces" },
} as const satisfies ArgsDef;

export const runArgs = {
  workflow: { type: "string", valueHint: "FILE", required: true, description: "ComfyUI workflow in API format (Export (API) in ComfyUI)" },
  images: { type: "string", valueHint: "FILE...", description: "reference images; several after one flag, and the flag may repeat" },
  "images-dir": { type: "string", valueHint: "DIR", description: "send every image under DIR, named by its path relative to DIR" },
  output: { type: "string", valueHint: "DIR", default: "./output", description: "where results are saved" },
  "no-open": { type: "boolean", description: "do not open the saved files (they open only on a terminal anyway)" },
  timeout: { type: "string", valueHint: "SECONDS", default: "600", description: "give up waiting after this long" },
  "poll-interval": { type: "string", valueHint: "SECONDS", default: "2", description: "time between status checks" },
  ...connectionArgs,
} as const satisfies ArgsDef;

/** Flags that take every following non-flag word (`--images a.png b.png`). All string flags may repeat. */
const VARIADIC = new Set(["images"]);

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

/**
 * argv → values, strictly: an unknown flag, a missing value or a stray word is a usage error.
 * String flags collect every occurrence into an array (the caller decides whether that is allowed);
 * booleans accept `--x`, `--x=true|false`.
 */
export function parseArgv(argv: readonly string[], def: ArgsDef): ParsedValues {
  const values: Record<string, string | boolean | string[]> = Object.create(null);
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
      throw usageError(
        token.startsWith("-") && token.length > 1
          ? `unknown option "${token}" (options are spelled --name)`
          : `unexpected argument "${token}"${suggestFlagFor(token)}`,
      );
    }
    const eq = token.indexOf("=");
    const name = token.slice(2, eq === -1 ? undefined : eq);
    const inline = eq === -1 ? undefined : token.slice(eq + 1);
    const arg = Object.hasOwn(def, name) ? def[name] : undefined;
    if (!arg) throw usageError(`unknown option --${name}${didYouMean(name, Object.keys(def))}`);
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
    const taken: string[] = [];
    while (i + 1 < argv.length && !isFlag(argv[i + 1]!) && (taken.length === 0 || VARIADIC.has(name))) {
      taken.push(argv[++i]!);
    }
    if (taken.length === 0) throw usageError(`--${name} needs a value${arg.valueHint ? ` (${arg.valueHint})` : ""}`);
    for (const value of taken) push(name, value);
  }
  return values;
}

const isFlag = (token: string) => token.startsWith("--");

function suggestFlagFor(word: string): string {
  return /\.json$/i.test(word) ? `; did you mean --workflow ${word}?` : "";
}

export function didYouMean(name: string, candidates: readonly string[]): string {
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

const seconds = (flag: string, min: number) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^\d+(\.\d+)?$/, `--${flag} must be a number of seconds`),
    v.transform(Number),
    v.minValue(min, `--${flag} must be at least ${min} s`),
    v.transform((s) => Math.round(s * 1000)),
  );

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

export const baseUrlSchema = v.pipe(
  v.string(),
  v.trim(),
  v.check((s) => URL.canParse(s), "the base URL is not a valid URL"),
  v.transform((s) => new URL(s)),
  v.check(
    (url) => url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.test(url.hostname)),
    "the base URL must use https (plain http only for localhost)",
  ),
  v.check((url) => !url.search && !url.hash && !url.username && !url.password, "the base URL must not carry a query, a fragment or credentials"),
  v.transform((url) => url.href.replace(/\/+$/, "")),
);

const single = (flag: string) =>
  v.pipe(
    v.array(v.string()),
    v.check((list) => list.length <= 1, `--${flag} was given more than once`),
    v.transform((list) => list[0]),
  );
const path = (flag: string) => v.pipe(v.string(), v.minLength(1, `--${flag} needs a non-empty value`));

const nonEmpty = v.optional(v.pipe(v.string(), v.trim(), v.transform((s) => s || undefined)));

const RunOptionsSchema = v.object({
  workflow: v.pipe(single("workflow"), v.string("--workflow FILE is required"), path("workflow")),
  images: v.optional(v.array(v.string()), []),
  imagesDirs: v.optional(v.array(v.string()), []),
  output: v.pipe(single("output"), v.string(), path("output")),
  open: v.boolean(),
  timeoutMs: v.pipe(single("timeout"), v.string(), seconds("timeout", 1)),
  pollIntervalMs: v.pipe(single("poll-interval"), v.string(), seconds("poll-interval", 0.1)),
  apiKey: nonEmpty,
  endpointId: nonEmpty,
  baseUrl: baseUrlSchema,
  verbose: v.boolean(),
});
export type RunOptions = v.InferOutput<typeof RunOptionsSchema>;

/** Where settings come from besides flags. `configApiKey` is read lazily: only when no other key is set. */
export interface Sources {
  env: Record<string, string | undefined>;
  configApiKey: () => string | undefined;
}

/** The one value of a flag that may not repeat; blank counts as absent. */
function flagValue(values: ParsedValues, name: string): string | undefined {
  const list = values[name];
  if (!Array.isArray(list)) return undefined;
  if (list.length > 1) throw usageError(`--${name} was given more than once`);
  return list[0]?.trim() || undefined;
}

/** Flags beat the environment, which beats ~/.runpod/config.toml. */
export function resolveConnection(values: ParsedValues, { env, configApiKey }: Sources) {
  const fromEnv = (name: string) => env[name]?.trim() || undefined;
  return {
    apiKey: flagValue(values, "api-key") ?? fromEnv("RUNPOD_API_KEY") ?? configApiKey(),
    endpointId: flagValue(values, "endpoint-id") ?? fromEnv("RUNPOD_ENDPOINT_ID"),
    baseUrl: flagValue(values, "base-url") ?? fromEnv("RUNPOD_ENDPOINT_BASE_URL") ?? DEFAULT_BASE_URL,
  };
}

export function resolveRunOptions(values: ParsedValues, sources: Sources): RunOptions {
  const withDefault = (name: "output" | "timeout" | "poll-interval") => values[name] ?? [runArgs[name].default];
  const raw = {
    workflow: values.workflow ?? [],
    images: values.images,
    imagesDirs: values["images-dir"],
    output: withDefault("output"),
    open: values["no-open"] !== true,
    timeoutMs: withDefault("timeout"),
    pollIntervalMs: withDefault("poll-interval"),
    verbose: values.verbose === true,
    ...resolveConnection(values, sources),
  };
  const parsed = v.safeParse(RunOptionsSchema, raw);
  if (!parsed.success) throw usageError(parsed.issues[0].message);
  return parsed.output;
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
