import { describe, expect, mock, test } from "bun:test";
import {
  apiKeyFromConfigToml,
  connectionArgs,
  DEFAULT_BASE_URL,
  type ParsedValues,
  parseArgv,
  requireCredentials,
  resolveRunOptions,
  runArgs,
  type Sources,
} from "../lib/args.ts";
import { ExitCode } from "../lib/errors.ts";
import { thrown } from "./helpers.ts";

const sources = (env: Record<string, string | undefined> = {}, configKey?: string) => {
  const configApiKey = mock(() => configKey);
  return { env, configApiKey } satisfies Sources;
};

const resolveArgv = (argv: string[], from: Sources = sources()) => resolveRunOptions(parseArgv(argv, runArgs), from);

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
    expect(parseArgv(["--api-key", "k"], connectionArgs)).toEqual({ "api-key": ["k"] });
    expect(thrown(() => parseArgv(["--workflow", "f.json"], connectionArgs)).message).toStartWith("unknown option --workflow");
  });
});

describe("resolveRunOptions", () => {
  test("defaults: ./output, 600 s, 2 s, open, the RunPod base URL", () => {
    expect(resolveArgv(["--workflow", "f.json"])).toEqual({
      workflow: "f.json",
      images: [],
      imagesDirs: [],
      output: "./output",
      open: true,
      timeoutMs: 600_000,
      pollIntervalMs: 2_000,
      apiKey: undefined,
      endpointId: undefined,
      baseUrl: DEFAULT_BASE_URL,
      verbose: false,
    });
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
      "--verbose",
    ];
    expect(resolveArgv(argv)).toEqual({
      workflow: "f.json",
      images: ["a.png", "b.png", "c.png"],
      imagesDirs: ["in", "more"],
      output: "renders",
      open: false,
      timeoutMs: 1_200_000,
      pollIntervalMs: 500,
      apiKey: "KEY",
      endpointId: "ep",
      baseUrl: "http://127.0.0.1:8000",
      verbose: true,
    });
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
  ];
  for (const [flag, value, expected] of numbers) {
    test(`--${flag} ${JSON.stringify(value)} → ${expected}`, () => {
      const run = () => resolveArgv(["--workflow", "f.json", `--${flag}=${value}`]);
      if (typeof expected === "number") {
        const options = run();
        expect(flag === "timeout" ? options.timeoutMs : options.pollIntervalMs).toBe(expected);
      } else {
        const error = thrown(run);
        expect(error.exitCode).toBe(ExitCode.usage);
        expect(error.message).toMatch(expected);
      }
    });
  }

  test("--workflow is required", () => {
    const error = thrown(() => resolveArgv(["--output", "o"]));
    expect([error.exitCode, error.message]).toEqual([ExitCode.usage, "--workflow FILE is required"]);
  });

  for (const flag of ["workflow", "output", "timeout", "poll-interval", "api-key", "endpoint-id", "base-url"]) {
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
