// Shared by the test files: spawning the real CLI (`bun run cli.ts` or the compiled binary) with a
// clean environment, temp dirs, and catching CliErrors.
import { expect } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CliError } from "../lib/errors.ts";

export const ROOT = join(import.meta.dir, "..");
export const CLI = join(ROOT, "cli.ts");
export const BINARY = join(ROOT, "dist", "send-to-runpod");
export const FIXTURES = join(ROOT, "..", "shared", "fixtures");
export const RESPONSES = join(FIXTURES, "responses");
/** A recorded RunPod answer from shared/fixtures/responses, parsed. */
export const responseJson = async <T = unknown>(name: string): Promise<T> => (await Bun.file(join(RESPONSES, name)).json()) as T;
export const workflowPath = (name: string) => join(ROOT, "workflows", name);

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Run the compiled binary instead of `bun run cli.ts`. */
  binary?: boolean;
  /** Called once the child is running, e.g. to signal it. */
  onSpawn?: (child: Bun.Subprocess<"ignore", "pipe", "pipe">, stderr: () => string) => void;
}

/** Runs the CLI asynchronously (an in-process emulator must keep serving meanwhile). */
export async function runCli(args: string[], { env = {}, cwd, binary, onSpawn }: RunOptions = {}): Promise<Run> {
  const command = binary ? [BINARY, ...args] : [process.execPath, "run", CLI, ...args];
  const home = cwd ?? tempDir();
  const child = Bun.spawn(command, {
    cwd: home,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    // A clean environment: no RUNPOD_* of the developer's, no CI/TEST switches, a HOME without ~/.runpod.
    env: { PATH: process.env.PATH, HOME: home, NO_COLOR: "1", ...env } as Record<string, string>,
  });
  let stderr = "";
  const decoder = new TextDecoder();
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  onSpawn?.(child, () => stderr);
  const [stdout, code] = await Promise.all([new Response(child.stdout).text(), child.exited, stderrDone]);
  return { code, stdout, stderr };
}

const made: string[] = [];
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "send-to-runpod-test-"));
  made.push(dir);
  return dir;
}
export function removeTempDirs(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Waits until `predicate` holds, checking every few milliseconds. */
export async function until(predicate: () => boolean, timeoutMs = 4000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(5);
  }
}

/** The CliError a call throws; fails the test when it throws nothing or something else. */
export function thrown(fn: () => unknown): CliError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CliError);
    return error as CliError;
  }
  throw new Error("expected a CliError, nothing was thrown");
}

export async function rejected(promise: Promise<unknown>): Promise<CliError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(CliError);
    return error as CliError;
  }
  throw new Error("expected a CliError, the promise resolved");
}

/** The secret appears in none of the texts, nor in any file under `dir`. */
export function expectSecretNowhere(secret: string, texts: string[], dir?: string): void {
  for (const text of texts) expect(text).not.toContain(secret);
  if (!dir) return;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) expect(readFileSync(join(entry.parentPath, entry.name)).includes(secret)).toBe(false);
  }
}

/**
 * Does `action` once `predicate` holds, for signalling a running child. It gives up quietly: a
 * rejection here would surface in whichever test runs next, and the test's own assertions fail anyway.
 */
export function whenTrue(predicate: () => boolean, action: () => unknown, timeoutMs = 4000): void {
  until(predicate, timeoutMs).then(action, () => {});
}
