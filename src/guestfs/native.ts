// Declarations of what the C++ addon exports, and the one place that loads it.
// Only src/guestfs/ may import this file; everything else uses Guestfs from handle.ts.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Raw event as delivered by the addon: name, payload bytes, numeric array (progress). */
export type NativeEventDispatcher = (name: NativeEventName, buf: Buffer, array: number[]) => void

export type NativeEventName =
  'close' | 'subprocess_quit' | 'launch_done' | 'progress' | 'appliance' | 'library' | 'trace' | 'warning'

/** The error object the addon rejects with; `GuestfsError.from` gives it its final shape. */
export interface NativeError extends Error {
  op: string
  errno: number
  code?: string
  cancelled: boolean
}

export interface NativeHandleOptions {
  /** Parse LIBGUESTFS_* variables from the process environment (default true). */
  environment?: boolean
  /** With environment false: a `NAME=value` list parsed instead of the process environment. */
  env?: string[]
  // The addon also reads a test-only option (see test/native/settle.test.ts); not part of this type.
}

/**
 * One libguestfs handle with its own worker thread. Every libguestfs call is a method named as in
 * C (without `guestfs_`) returning a Promise; calls run one at a time, in order.
 */
export interface NativeHandle {
  /** Queues the close as the last job; resolves after the CLOSE event was delivered. */
  close(): Promise<void>
  /** 0 unknown/finished, 1 dropped from the queue, 2 transfer cancel requested, 3 running, not cancellable. */
  cancel(jobId: number): 0 | 1 | 2 | 3
  /** guestfs_user_cancel on the running transfer; false if none runs. */
  user_cancel(): boolean
  /** SIGKILL this handle's qemu; the running call then fails with EPIPE. */
  kill_appliance(): boolean
  /** Which libguestfs events are copied to JS (bit mask of GUESTFS_EVENT_*). */
  set_event_mask(mask: number): void
  readonly state: 'open' | 'closing' | 'closed'
  /** The id of the job queued by the most recent call on this handle (read right after calling). */
  readonly lastJobId: number
  readonly busy: boolean
  [call: string]: unknown
}

export interface NativeAddon {
  GuestfsHandle: new (dispatcher: NativeEventDispatcher, options?: NativeHandleOptions) => NativeHandle
  /** [readFd, writeFd], both O_CLOEXEC. */
  pipe(): [number, number]
  /** Names of the wrapped libguestfs calls. */
  calls: string[]
  buildSystem: 'cmake-js' | 'node-gyp' | 'unknown'
  napiVersion: number
  cppExceptions: boolean
  /** Probes for test/native; nothing in src/ uses them. */
  __test: NativeTestProbes
}

/**
 * Test-only probes of the addon. Together with the handle method `__test_fault(kind)` (the next
 * settle on that handle fails at 1–3 stages: 'settle' | 'settle-error' | 'settle-all'), they let
 * test/native make faults happen that cannot be produced on demand.
 */
export interface NativeTestProbes {
  /** Native sessions alive in this process (each handle has one until its worker is done). */
  liveSessions(): number
  /** Runs kill_appliance's qemu selection over the children of thread `tid`; the pids killed. */
  killQemuChildrenOf(tid: number, hv: string): number[]
}

/** GUESTFS_EVENT_* bits. */
export const EventBits: Readonly<Record<NativeEventName, number>> = {
  close: 0x0001,
  subprocess_quit: 0x0002,
  launch_done: 0x0004,
  progress: 0x0008,
  appliance: 0x0010,
  library: 0x0020,
  trace: 0x0040,
  warning: 0x0200,
}

export interface LoadedAddon {
  addon: NativeAddon
  /** Absolute path of the .node file that was loaded. */
  path: string
}

let loaded: LoadedAddon | undefined

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * Loads the addon once. `VIRT_DIB_ADDON` may name a .node file explicitly (used for the
 * node-gyp and sanitizer builds); otherwise `bindings` searches build/ from the package root.
 */
export function loadAddon(): LoadedAddon {
  if (loaded) return loaded
  const require = createRequire(import.meta.url)
  const explicit = process.env['VIRT_DIB_ADDON']
  let path: string
  if (explicit) {
    path = explicit
  } else {
    const bindings = require('bindings') as (o: { bindings: string; module_root: string; path: true }) => string
    try {
      path = bindings({ bindings: 'virt_dib', module_root: packageRoot, path: true })
    } catch (cause) {
      throw new Error(
        'the native addon is not built: run ‘npm install’ (or ‘npm run build:native’) in ' +
          `${packageRoot}; it needs libguestfs-dev, cmake and pkg-config`,
        { cause },
      )
    }
  }
  const addon = require(path) as NativeAddon
  loaded = { addon, path }
  return loaded
}
