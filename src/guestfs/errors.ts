// The errors of the binding: GuestfsError for anything libguestfs (or the handle) refuses, and
// the DOM-style AbortError for cancelled calls. Knows nothing about virt-dib.
import { constants } from 'node:os'

import type { NativeError } from './native.js'

const errnoNames = new Map<number, string>()
for (const [name, value] of Object.entries(constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name)
}

/** The text libguestfs adds for guestfish users; meaningless to callers of this library. */
const guestfishHint = /\s*\(in guestfish, don't forget to use the 'run' command\)/

/** Messages meaning qemu or the daemon went away while a call was running. */
const applianceDiedPattern =
  /appliance closed the connection unexpectedly|child process died|connection reset by peer|killed by signal|guestfsd exited/i

export type GuestfsErrorCode = 'ERR_GUESTFS' | 'ERR_GUESTFS_CLOSED' | 'ERR_GUESTFS_INTERNAL' | (string & {})

/** A libguestfs call failed. */
export class GuestfsError extends Error {
  override name = 'GuestfsError'
  /** The libguestfs API name without `guestfs_`, e.g. `mount`. */
  readonly op: string
  /** Positive errno, or 0 when libguestfs gave none (common for library-side errors and `sh`). */
  readonly errno: number
  /** The errno name (`ENOENT`…), `ERR_GUESTFS` without errno, or a binding code. */
  readonly code: GuestfsErrorCode
  /** qemu or the daemon died during the call (killed, crashed, or the appliance was shut down). */
  readonly applianceDied: boolean
  /** For launch failures: the last appliance and library log lines (verbose mode gives more). */
  readonly applianceLog: readonly string[]

  constructor(
    message: string,
    details: { op: string; errno?: number; code?: string; applianceLog?: readonly string[]; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.op = details.op
    this.errno = details.errno ?? 0
    this.code = details.code ?? (this.errno ? (errnoNames.get(this.errno) ?? 'ERR_GUESTFS') : 'ERR_GUESTFS')
    this.applianceDied = this.errno === constants.errno.EPIPE || applianceDiedPattern.test(message)
    this.applianceLog = details.applianceLog ?? []
  }

  /**
   * Turns a native rejection into a GuestfsError whose stack points at the caller (`site` was
   * created before the call crossed threads).
   */
  static from(e: unknown, op: string, site?: Error, applianceLog?: readonly string[]): GuestfsError {
    const n = e as Partial<NativeError>
    const message = String(n?.message ?? e).replace(guestfishHint, '')
    const err = new GuestfsError(message, {
      op: n?.op ?? op,
      errno: typeof n?.errno === 'number' ? n.errno : 0,
      ...(n?.code ? { code: n.code } : {}),
      ...(applianceLog ? { applianceLog } : {}),
    })
    if (site?.stack) err.stack = `${err.name}: ${err.message}\n${site.stack.split('\n').slice(1).join('\n')}`
    return err
  }
}

/** The call was cancelled through its AbortSignal. */
export class AbortError extends Error {
  override name = 'AbortError'
  readonly code = 'ABORT_ERR'
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options)
  }
}
