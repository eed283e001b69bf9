// Runs the built CLI (bin/virt-dib → dist/) as a child process.
import { type ChildProcess, spawn, spawnSync, type StdioOptions } from 'node:child_process'
import { join, resolve } from 'node:path'

export const root = resolve(import.meta.dirname, '..', '..')
export const DIB_LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
export const DIB_ELEMENTS = '/usr/lib/python3/dist-packages/diskimage_builder/elements'

export interface CliResult {
  status: number | null
  stdout: string
  stderr: string
}

export interface CliRunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** For extra descriptors (`fd:N` tests); stdout and stderr are always pipes. */
  stdio?: StdioOptions
}

export function runCli(args: string[], opts: CliRunOptions = {}): CliResult {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'virt-dib'), ...args], {
    encoding: 'utf8',
    cwd: opts.cwd ?? root,
    env: opts.env ?? process.env,
    timeout: 60_000,
    ...(opts.stdio ? { stdio: opts.stdio } : {}),
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** runCli without blocking the test process, so that many cases can run side by side. */
export function runCliAsync(args: string[], opts: CliRunOptions = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(root, 'bin', 'virt-dib'), ...args], {
      cwd: opts.cwd ?? root,
      env: opts.env ?? process.env,
      timeout: 60_000,
      stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()))
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()))
    child.on('error', reject)
    child.on('close', (status) => resolvePromise({ status, stdout, stderr }))
  })
}

/** A running CLI whose output is collected as it comes (for tests that signal or watch it). */
export interface RunningCli {
  child: ChildProcess
  /** The exit status (null after a signal). */
  exited: Promise<number | null>
  out: () => string
  err: () => string
}

/** Starts the built CLI with `env`, no time limit (appliance builds), stdin closed. */
export function startCli(args: string[], env: NodeJS.ProcessEnv): RunningCli {
  const child = spawn(process.execPath, [join(root, 'bin', 'virt-dib'), ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()))
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  return { child, exited, out: () => stdout, err: () => stderr }
}

/** startCli, awaited: the status and the whole output. */
export async function runCliToEnd(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; out: string; err: string }> {
  const run = startCli(args, env)
  const status = await run.exited
  return { status, out: run.out(), err: run.err() }
}
