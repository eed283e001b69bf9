// The --machine-readable channel: stdout, stderr, a file or an inherited file descriptor.
// Opened synchronously, before anything else starts, so a bad path or descriptor is refused
// with one line; a write that fails later (a full disk, a closed pipe) is reported once, through
// `onError`, and never as an unhandled 'error' event.
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs'
import type { Writable } from 'node:stream'

import { UsageError, VirtDibError } from '../errors.js'
import { describeSystemError } from '../util/system-error.js'

// main.ts takes it from here too.
export { describeSystemError }

export interface MachineChannel {
  /** What the channel is, for messages (`the --machine-readable file /x`). */
  readonly what: string
  /** Queues text; after a write error, does nothing. */
  write(text: string): void
  /** Flushes (and closes what we opened); rejects with the write error, if one happened. */
  close(): Promise<void>
  /** The first write error, as the error the CLI reports. */
  readonly error: VirtDibError | undefined
}

function openFd(spec: string): { fd: number; what: string; owned: boolean } {
  if (spec.startsWith('file:') && spec.length > 5) {
    const path = spec.slice(5)
    const what = `the --machine-readable file ${path}`
    try {
      return { fd: openSync(path, 'w'), what, owned: true }
    } catch (e) {
      throw new VirtDibError(`cannot open ${what}: ${describeSystemError(e)}`, { cause: e })
    }
  }
  const m = /^fd:(\d+)$/.exec(spec)
  if (m) {
    const fd = Number(m[1])
    const what = `--machine-readable file descriptor ${m[1]}`
    if (!Number.isSafeInteger(fd) || fd > 2 ** 31 - 1) throw new UsageError(`invalid ${what}`)
    const check = (f: () => void, ebadf: string) => {
      try {
        f()
      } catch (e) {
        const why = (e as NodeJS.ErrnoException).code === 'EBADF' ? ebadf : describeSystemError(e)
        throw new VirtDibError(`cannot use ${what}: ${why}`, { cause: e })
      }
    }
    check(() => fstatSync(fd), 'it is not open')
    // A zero-length write checks that the descriptor is open for writing (EBADF otherwise).
    check(() => writeSync(fd, ''), 'it is not open for writing')
    return { fd, what, owned: false }
  }
  throw new UsageError(`invalid format string for --machine-readable: ${spec}`)
}

/**
 * Opens the channel named by `--machine-readable[=FORMAT]` (`true`: stdout). Throws a
 * VirtDibError if it cannot be opened. `onError` is called once, on the first failed write.
 */
export function openMachineChannel(
  spec: string | true,
  onError: (e: VirtDibError) => void = () => undefined,
): MachineChannel {
  if (spec === true || spec === 'stream:stdout') {
    return channelOver(process.stdout, 'standard output (--machine-readable)', false, onError)
  }
  if (spec === 'stream:stderr') {
    return channelOver(process.stderr, 'standard error (--machine-readable)', false, onError)
  }
  const { fd, what, owned } = openFd(spec)
  return fdChannel(fd, what, owned, onError)
}

const EAGAIN_WAIT_MS = 10
// The wait blocks the event loop (signals, the space watch, the hard exit wait behind it), so a
// reader stuck for longer than this fails the channel, and with it the build, with one line.
const EAGAIN_GIVE_UP_MS = 2_000

/**
 * Writes to a file or descriptor synchronously, as the original does: a write error is known
 * before the next build step starts (`onError` runs inside the event that failed), so a
 * full disk stops the build at once. A non-blocking pipe whose reader is slow is waited for.
 */
function fdChannel(fd: number, what: string, owned: boolean, onError: (e: VirtDibError) => void): MachineChannel {
  let error: VirtDibError | undefined
  let closed = false
  const fail = (e: unknown) => {
    error ??= new VirtDibError(`cannot write to ${what}: ${describeSystemError(e)}`, { cause: e })
    onError(error)
  }
  const pause = new Int32Array(new SharedArrayBuffer(4))
  return {
    what,
    get error() {
      return error
    },
    write(text) {
      if (error || closed) return
      const buf = Buffer.from(text, 'utf8')
      let off = 0
      let waited = 0
      try {
        while (off < buf.length) {
          try {
            off += writeSync(fd, buf, off)
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || waited >= EAGAIN_GIVE_UP_MS) throw e
            Atomics.wait(pause, 0, 0, EAGAIN_WAIT_MS)
            waited += EAGAIN_WAIT_MS
          }
        }
      } catch (e) {
        fail(e)
      }
    },
    close() {
      if (!closed) {
        closed = true
        if (owned) {
          try {
            closeSync(fd)
          } catch (e) {
            if (!error) fail(e)
          }
        }
      }
      return error ? Promise.reject(error) : Promise.resolve()
    },
  }
}

/** The channel over a stream (stdout, stderr; a failing fake in tests). */
export function channelOver(
  stream: Writable,
  what: string,
  owned: boolean,
  onError: (e: VirtDibError) => void,
): MachineChannel {
  let error: VirtDibError | undefined
  let last: Promise<void> = Promise.resolve()
  const fail = (e: unknown) => {
    if (error) return
    error = new VirtDibError(`cannot write to ${what}: ${describeSystemError(e)}`, { cause: e })
    onError(error)
  }
  stream.on('error', fail)
  return {
    what,
    get error() {
      return error
    },
    write(text) {
      if (error || stream.destroyed) return
      last = new Promise<void>((resolve) => {
        stream.write(text, (e) => {
          if (e) fail(e)
          resolve()
        })
      })
    },
    async close() {
      if (owned && !error && !stream.destroyed) {
        await new Promise<void>((resolve) => {
          stream.end(() => resolve())
          stream.once('error', () => resolve())
        })
      } else {
        await last
      }
      if (error) throw error
    },
  }
}
