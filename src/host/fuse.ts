// A FUSE mount that virt-dib serves itself (extra-data.d's view of the image through libguestfs
// mount_local): waiting for it to appear, and releasing it in bounded time whatever still uses it.
// The FUSE loop only ends once the kernel lets go of the mount, so a process left inside the view
// would otherwise keep the build waiting forever.
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

import { VirtDibError } from '../errors.js'
import { boundedWait } from '../util/wait.js'
import { describeProcesses, findProcessesUsing, killIfSame } from './proc.js'
import { abortError, runTool } from './spawn.js'
import { findExecutable } from './which.js'

/** Timings of {@link waitForFuseMount} and {@link releaseFuseMount}; tests shorten them. */
export interface FuseTimings {
  /** Polling for the mount to appear… */
  mountPollMs: number
  /** …for at most this long. */
  mountWaitMs: number
  /** `fusermount -u` is retried while the mount is busy (a process is still in it)… */
  unmountRetryMs: number
  /** …this many times, then it is detached lazily (`fusermount -uz`). */
  unmountAttempts: number
  /** After a detach: how long the FUSE loop may take to end (the last user letting go). */
  releaseWaitMs: number
}

export const FUSE_TIMINGS: FuseTimings = {
  mountPollMs: 50,
  mountWaitMs: 10_000,
  unmountRetryMs: 250,
  unmountAttempts: 20,
  releaseWaitMs: 5000,
}

/** After an abort nobody waits for leftovers to finish: quicker, so a second Ctrl-C finds it done. */
export const FUSE_TIMINGS_ON_ABORT: FuseTimings = { ...FUSE_TIMINGS, unmountAttempts: 4, releaseWaitMs: 1000 }

/** A promise that never rejects, and says whether it has settled. */
export interface Served {
  readonly done: Promise<unknown>
  readonly settled: boolean
}

/** Tracks the FUSE loop (mount_local_run): `done` resolves with its error, or undefined. */
export function trackServing(loop: Promise<unknown>): Served {
  const s = { settled: false, done: Promise.resolve() as Promise<unknown> }
  s.done = loop.then(
    () => {
      s.settled = true
      return undefined
    },
    (e: unknown) => {
      s.settled = true
      return e
    },
  )
  return s
}

/** `\040` (a space), `\011`, `\012`, `\134`: how /proc/self/mounts escapes a path. */
export function decodeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/** The mount points of /proc/self/mounts, with their octal escapes decoded. */
export function mountPoints(): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter((l) => l)
    .map((l) => decodeMountPath(l.split(' ')[1] ?? ''))
}

export function isMounted(path: string): boolean {
  return mountPoints().includes(path)
}

/**
 * Whether `s` settles within `ms`; once `signal` aborts (also while waiting) at most `abortMs`
 * more.
 */
async function settlesWithin(s: Served, ms: number, signal?: AbortSignal, abortMs = ms): Promise<boolean> {
  if (s.settled) return true
  await Promise.race([s.done, boundedWait(ms, signal, abortMs)])
  return s.settled
}

/** Waits until `mountpoint` is mounted; throws if the FUSE loop ends first or it takes too long. */
export async function waitForFuseMount(
  mountpoint: string,
  served: Served,
  o: { what: string; signal?: AbortSignal; timings?: FuseTimings },
): Promise<void> {
  const t = o.timings ?? FUSE_TIMINGS
  for (const end = Date.now() + t.mountWaitMs; !isMounted(mountpoint);) {
    if (o.signal?.aborted) throw abortError(o.signal)
    if (served.settled) {
      const e = await served.done
      const why = e instanceof Error ? `: ${e.message.trim().split('\n')[0]}` : ''
      throw new VirtDibError(`${o.what} could not be mounted${why}`, { cause: e })
    }
    if (Date.now() >= end) throw new VirtDibError(`${o.what} did not appear within ${t.mountWaitMs / 1000} s`)
    await sleep(t.mountPollMs)
  }
}

export function fusermount(): string {
  return findExecutable('fusermount3') ?? findExecutable('fusermount') ?? 'fusermount'
}

/**
 * Unmounts `mountpoint` and waits for its FUSE loop (`served`) to end, in bounded time. A busy
 * mount is retried, then detached lazily; if its users still keep it after that, they are killed
 * (only the mounting user's processes can use a mount without allow_other) and a VirtDibError
 * names them. Safe to call again once released. Once `signal` aborts (before or during the
 * release) the shorter `abortTimings` apply at once, so the whole release ends within a few
 * seconds of the abort.
 */
export async function releaseFuseMount(
  mountpoint: string,
  served: Served,
  o: {
    what: string
    onWarning?: (text: string) => void
    onDebug?: (text: string) => void
    timings?: FuseTimings
    signal?: AbortSignal
    abortTimings?: FuseTimings
  },
): Promise<void> {
  const normal = o.timings ?? FUSE_TIMINGS
  const onAbort = o.abortTimings ?? FUSE_TIMINGS_ON_ABORT
  const cur = () => (o.signal?.aborted ? onAbort : normal)
  const tool = fusermount()
  for (let i = 0; i < cur().unmountAttempts && isMounted(mountpoint); i++) {
    try {
      await runTool(tool, ['-u', mountpoint])
    } catch (e) {
      // busy: something still has a cwd or a file in it
      if (i === 0) o.onDebug?.(`${o.what} is busy, retrying the unmount: ${(e as Error).message}`)
      await boundedWait(cur().unmountRetryMs, o.signal, onAbort.unmountRetryMs)
    }
  }
  const busy = isMounted(mountpoint)
  // Named while the path still leads to the mount: a detached mount has no path.
  const users = busy ? findProcessesUsing(mountpoint) : []
  if (busy) await runTool(tool, ['-u', '-z', mountpoint]).catch(() => undefined)
  if (await settlesWithin(served, cur().releaseWaitMs, o.signal, onAbort.releaseWaitMs)) {
    if (busy)
      o.onWarning?.(`${o.what} was busy at the end${users.length ? ` (${describeProcesses(users)})` : ''}: detached it`)
    return
  }
  // Seconds have passed since they were found: only a pid that still names the same process.
  for (const p of users) killIfSame(p, 'SIGKILL')
  const released = await settlesWithin(served, cur().releaseWaitMs, o.signal, onAbort.releaseWaitMs)
  const t = cur()
  const waited = (t.unmountAttempts * t.unmountRetryMs + t.releaseWaitMs) / 1000
  const who = users.length > 0 ? describeProcesses(users) : 'a process that is not known'
  throw new VirtDibError(
    `${o.what} was still in use by ${who} ${waited} s after its scripts ended${released ? ': killed it' : ', and could not be released'}`,
    { hint: 'a process started by the scripts left their process group and kept a directory or file of the view open' },
  )
}
