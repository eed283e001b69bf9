// Runs host programs virt-dib itself needs (qemu-img, tar, docker, supermin, fusermount) and the
// host side of the phase runner. Output is captured (its tail goes into the error) or streamed to
// callbacks, never printed. With `processGroup` a command and everything it starts form one
// process group that is stopped as a whole: on abort, and whatever is still running when the
// command itself exits. The synchronous variants are for quick probes made while planning.
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process'
import { resolve as resolvePath } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { setTimeout as sleep } from 'node:timers/promises'

import { BuildAbortedError, HostToolError } from '../errors.js'
import { LineSplitter, Tail } from '../util/lines.js'
import { listProcessGroup, type HostProcess } from './proc.js'
import { findExecutable } from './which.js'

export interface RunResult {
  stdout: string
  stderr: string
}

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Fed to stdin; a stream is piped (its errors are the caller's to handle). */
  input?: string | Buffer | Readable
  /** Receives stdout, piped with back-pressure, instead of the result (its errors are the caller's to handle). */
  stdoutTo?: Writable
  /** Aborting stops the command (its whole group with `processGroup`) and rejects with BuildAbortedError. */
  signal?: AbortSignal
  /** Lines of stderr kept for the error message. */
  tailLines?: number
  /**
   * Starts the command in a new session, so a process group of its own, and stops every process
   * still in that group when the call ends (abort, or the command exits leaving children behind):
   * SIGTERM, then SIGKILL after `killGraceMs`.
   */
  processGroup?: boolean
  /** Between SIGTERM and SIGKILL (default {@link KILL_GRACE_MS}). */
  killGraceMs?: number
}

export interface ProcessOptions extends RunOptions {
  /** 'inherit' gives the command our stdin (then `input` is ignored). */
  stdin?: 'pipe' | 'inherit'
  onStdout?: (text: string) => void
  onStderr?: (text: string) => void
}

export interface ProcessResult extends RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  /** With `processGroup`: processes left running in the group when the command exited, now stopped. */
  strays: HostProcess[]
}

/** How long a stopped process group gets to exit on SIGTERM before SIGKILL. */
export const KILL_GRACE_MS = 2000
/** After SIGKILL: how long to wait for the group to be gone (a process in D state may linger). */
const KILL_WAIT_MS = 2000
/** After a process group is gone: how long its output pipes may stay open (a holder outside the group). */
const PIPE_DRAIN_MS = 1000
const POLL_MS = 25

let dieWithParent = false
let setprivPath: string | null | undefined

/**
 * Process-wide: host tools started from now on get SIGKILL when this process dies (a build worker
 * that is SIGKILLed must leave nothing running), through util-linux's `setpriv --pdeathsig`. Without
 * setpriv on the host, commands start as before.
 */
export function setChildrenDieWithParent(on: boolean): void {
  dieWithParent = on
}

/** The command line that starts `cmd`: under setpriv when children must die with us. */
function commandLine(cmd: string, args: readonly string[], o: RunOptions): [string, string[]] {
  if (!dieWithParent) return [cmd, [...args]]
  if (setprivPath === undefined) setprivPath = findExecutable('setpriv') ?? null
  // Resolved first: a missing command must fail as it does without setpriv (ENOENT, not setpriv's exit 127).
  const name = cmd.includes('/') ? resolvePath(o.cwd ?? '.', cmd) : cmd
  const resolved = setprivPath === null ? undefined : findExecutable(name, (o.env ?? process.env)['PATH'] ?? '')
  if (setprivPath === null || resolved === undefined) return [cmd, [...args]]
  return [setprivPath, ['--pdeathsig', 'KILL', '--', resolved, ...args]]
}

/**
 * With children dying with us: a watcher that SIGKILLs process group `pgid` if this process dies
 * before calling the returned release (the death signal reaches only a direct child, not what it
 * started). It waits on a pipe only we hold: our death closes it.
 */
function guardGroup(pgid: number): () => void {
  const script = 'read -r done; [ -n "$done" ] || kill -9 -"$1" 2>/dev/null; exit 0'
  const guard = spawn('/bin/sh', ['-c', script, 'sh', String(pgid)], { stdio: ['pipe', 'ignore', 'ignore'] })
  guard.on('error', () => undefined)
  guard.stdin.on('error', () => undefined)
  return () => void guard.stdin.end('done\n')
}

/** Sends `sig` to every process of group `pgid`; false if the group is gone. */
export function signalProcessGroup(pgid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, sig)
    return true
  } catch {
    return false // ESRCH: nobody left
  }
}

/**
 * Stops process group `pgid`: SIGTERM, then SIGKILL to whatever is left after `graceMs`. Resolves
 * when no live process is left in it, or after a bounded wait following SIGKILL.
 */
export async function stopProcessGroup(pgid: number, graceMs = KILL_GRACE_MS): Promise<void> {
  if (listProcessGroup(pgid).length === 0 || !signalProcessGroup(pgid, 'SIGTERM')) return
  for (const end = Date.now() + graceMs; Date.now() < end;) {
    await sleep(POLL_MS)
    if (listProcessGroup(pgid).length === 0) return
  }
  signalProcessGroup(pgid, 'SIGKILL')
  for (const end = Date.now() + KILL_WAIT_MS; Date.now() < end;) {
    await sleep(POLL_MS)
    if (listProcessGroup(pgid).length === 0) return
  }
}

/** The error an aborted call rejects with: the signal's reason if it is one of ours. */
export function abortError(signal: AbortSignal): BuildAbortedError {
  const reason: unknown = signal.reason
  return reason instanceof BuildAbortedError ? reason : new BuildAbortedError(undefined, { cause: reason })
}

/**
 * Runs a command to its end and says how it ended (any exit status). Rejects with HostToolError if
 * it cannot be started, with BuildAbortedError once an abort has stopped it.
 */
export function runProcess(cmd: string, args: readonly string[], o: ProcessOptions = {}): Promise<ProcessResult> {
  if (o.signal?.aborted) return Promise.reject(abortError(o.signal))
  return new Promise((resolve, reject) => {
    const stdin = o.stdin ?? 'pipe'
    const spawnOptions: SpawnOptions = {
      cwd: o.cwd,
      env: o.env,
      stdio: [stdin, 'pipe', 'pipe'],
      // detached on Linux is setsid(): a new session and process group led by the child.
      detached: o.processGroup === true,
    }
    const [file, argv] = commandLine(cmd, args, o)
    const child = spawn(file, argv, spawnOptions)
    const release = o.processGroup && dieWithParent && child.pid !== undefined ? guardGroup(child.pid) : undefined
    const grace = o.killGraceMs ?? KILL_GRACE_MS
    const out: Buffer[] = []
    let err = ''
    let stopping: Promise<void> | undefined
    const stop = (): Promise<void> => {
      if (stopping) return stopping
      const pid = child.pid
      if (pid === undefined) return (stopping = Promise.resolve())
      if (o.processGroup) return (stopping = stopProcessGroup(pid, grace))
      child.kill('SIGTERM')
      const kill = setTimeout(() => child.kill('SIGKILL'), grace)
      return (stopping = new Promise<void>((r) => child.once('exit', () => r())).finally(() => clearTimeout(kill)))
    }
    const onAbort = () => void stop()
    o.signal?.addEventListener('abort', onAbort, { once: true })

    // Decoders keep a character split between two chunks whole.
    const outText = new StringDecoder('utf8')
    const errText = new StringDecoder('utf8')
    if (o.stdoutTo) {
      child.stdout!.pipe(o.stdoutTo)
      // A failed destination unpipes itself: the rest is drained, so the command's exit is still seen.
      o.stdoutTo.once('close', () => child.stdout!.resume())
    } else {
      child.stdout!.on('data', (b: Buffer) => {
        out.push(b)
        if (o.onStdout) o.onStdout(outText.write(b))
      })
    }
    child.stderr!.on('data', (b: Buffer) => {
      const s = errText.write(b)
      err += s
      o.onStderr?.(s)
    })
    const closed = Promise.all(
      [child.stdout!, child.stderr!].map((s) => new Promise<void>((r) => (s.readableEnded ? r() : s.once('close', r)))),
    )
    let failed = false
    child.on('error', (e) => {
      failed = true
      release?.()
      o.signal?.removeEventListener('abort', onAbort)
      reject(new HostToolError(cmd, null, e.message, { cause: e }))
    })
    child.on('exit', (code, sig) => {
      if (failed) return
      void (async () => {
        const strays = o.processGroup && child.pid !== undefined ? listProcessGroup(child.pid) : []
        if (o.processGroup && (strays.length > 0 || o.signal?.aborted)) await stop()
        release?.() // the group is gone
        if (o.processGroup) {
          // A process that left the group may still hold our pipes: do not wait for it forever.
          const drained = await Promise.race([closed.then(() => true), sleep(PIPE_DRAIN_MS).then(() => false)])
          // One more turn of the event loop reads what is still buffered in the pipes.
          if (!drained) await new Promise((r) => setImmediate(r))
          child.stdout!.destroy()
          child.stderr!.destroy()
        } else {
          await closed
        }
        const outRest = outText.end()
        if (outRest) o.onStdout?.(outRest)
        const errRest = errText.end()
        err += errRest
        if (errRest) o.onStderr?.(errRest)
        o.signal?.removeEventListener('abort', onAbort)
        if (o.signal?.aborted) return reject(abortError(o.signal))
        resolve({ code, signal: sig, stdout: Buffer.concat(out).toString(), stderr: err, strays })
      })()
    })
    if (child.stdin) {
      child.stdin.on('error', () => undefined)
      if (o.input === undefined || typeof o.input === 'string' || Buffer.isBuffer(o.input)) {
        child.stdin.end(o.input ?? '')
      } else {
        o.input.pipe(child.stdin)
      }
    }
  })
}

/** Runs a command to completion; throws HostToolError on a non-zero exit or a signal. */
export async function runTool(cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  const tail = new Tail<string>(o.tailLines ?? 20)
  // Whole lines: a tool may write one line in several pieces (GNU tar writes `tar: ` apart).
  const lines = new LineSplitter()
  const keep = (ls: string[]) => ls.forEach((l) => l && tail.push(l))
  const r = await runProcess(cmd, args, { ...o, onStderr: (s) => keep(lines.push(s)) })
  keep(lines.flush())
  if (r.code === 0) return { stdout: r.stdout, stderr: r.stderr }
  throw new HostToolError(cmd, r.code, tail.items.join('\n'), r.signal ? { signal: r.signal } : undefined)
}

export interface SyncOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Fed to stdin (without it the command gets no stdin). */
  input?: string | Buffer
  /** Stops the command with SIGTERM after this long; that is a failure to run it. */
  timeoutMs?: number
  /** 'ignore' discards stdout and stderr (the result's are then empty). Default 'capture'. */
  output?: 'capture' | 'ignore'
}

export interface SyncResult extends RunResult {
  code: number | null
  signal: NodeJS.Signals | null
}

/**
 * {@link runProcess} without the event loop, for short probes: runs a command to its end and says
 * how it ended (any exit status). Throws HostToolError if it cannot be started or times out.
 */
export function runProcessSync(cmd: string, args: readonly string[], o: SyncOptions = {}): SyncResult {
  const out = o.output === 'ignore' ? 'ignore' : 'pipe'
  const r = spawnSync(cmd, args, {
    cwd: o.cwd,
    env: o.env,
    input: o.input,
    timeout: o.timeoutMs,
    encoding: 'utf8',
    stdio: [o.input === undefined ? 'ignore' : 'pipe', out, out],
  })
  if (r.error) {
    throw new HostToolError(cmd, null, r.error.message, { cause: r.error, ...(r.signal ? { signal: r.signal } : {}) })
  }
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

/** Does the command run and exit 0? False when it fails, cannot be started or times out. */
export function probeSync(cmd: string, args: readonly string[], o: SyncOptions = {}): boolean {
  try {
    return runProcessSync(cmd, args, { output: 'ignore', ...o }).code === 0
  } catch (e) {
    if (e instanceof HostToolError) return false
    throw e
  }
}
