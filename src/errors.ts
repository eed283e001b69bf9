// The error family of virt-dib. The library throws these; only src/cli/main.ts turns them into
// a message and an exit code. Imports nothing.

/** Base of every error virt-dib reports on purpose. `message` is one line, starting lower-case. */
export class VirtDibError extends Error {
  override name = 'VirtDibError'
  /** Process exit code the CLI uses. */
  exitCode = 1
  /** An optional second line: what the user can do about it. */
  hint: string | undefined

  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.hint = options?.hint
  }
}

/** A bad option or value. The text matches the original virt-dib where it has one. */
export class UsageError extends VirtDibError {
  override name = 'UsageError'
}

/** Missing element, provides conflict, duplicate script, bad element file. */
export class ElementError extends VirtDibError {
  override name = 'ElementError'
}

/** A block-device layout (DIB_BLOCK_DEVICE_CONFIG, block-device-*.yaml) that cannot be built. */
export class BlockDeviceConfigError extends VirtDibError {
  override name = 'BlockDeviceConfigError'
}

/** A host tool or appliance feature that the requested build needs is missing. */
export class PrerequisiteError extends VirtDibError {
  override name = 'PrerequisiteError'
}

export type ScriptLocation = 'host' | 'appliance' | 'chroot'

/** An element script exited non-zero. On the host (extra-data.d) its status is the exit code. */
export class ScriptError extends VirtDibError {
  override name = 'ScriptError'
  readonly hook: string
  readonly script: string
  readonly status: number
  readonly where: ScriptLocation
  /** The last lines the script printed. */
  readonly outputTail: readonly string[]
  /** Where the full log of the build is, if it is kept. */
  readonly logPath: string | undefined
  readonly outOfSpace: boolean

  constructor(details: {
    hook: string
    script: string
    status: number
    where: ScriptLocation
    outputTail?: readonly string[]
    logPath?: string
    cause?: unknown
    /** The disk the script wrote to was full: said first, with what to do about it. */
    outOfSpace?: boolean
  }) {
    const what = `${details.hook}/${details.script} failed with exit status ${details.status}`
    super(details.outOfSpace ? `out of space in the image: ${what}` : what, {
      cause: details.cause,
      ...(details.outOfSpace ? { hint: 'give the image more room with --size' } : {}),
    })
    this.outOfSpace = details.outOfSpace ?? false
    this.hook = details.hook
    this.script = details.script
    this.status = details.status
    this.where = details.where
    this.outputTail = details.outputTail ?? []
    this.logPath = details.logPath
    // compat: a failing extra-data.d script makes virt-dib exit with the script's own status.
    if (details.where === 'host' && details.status > 0 && details.status < 256) this.exitCode = details.status
  }
}

/** A host program virt-dib runs itself (qemu-img, tar, docker, vhd-util) failed. */
export class HostToolError extends VirtDibError {
  override name = 'HostToolError'
  readonly tool: string
  readonly status: number | null
  readonly outputTail: string

  constructor(tool: string, status: number | null, outputTail = '', options?: { cause?: unknown; signal?: string }) {
    const how = status === null ? `was killed by ${options?.signal ?? 'a signal'}` : `exited with error ${status}`
    super(`external command ‘${tool}’ ${how}${outputTail ? `: ${outputTail.trim().split('\n').at(-1)}` : ''}`, options)
    this.tool = tool
    this.status = status
    this.outputTail = outputTail
  }
}

/** The build was cancelled (AbortSignal, SIGINT, SIGTERM). */
export class BuildAbortedError extends VirtDibError {
  override name = 'AbortError'
  readonly code = 'ABORT_ERR'
  /** The signal that caused it, if any; the CLI exits 128 + its number. */
  readonly signal: 'SIGINT' | 'SIGTERM' | undefined

  constructor(message = 'the build was cancelled', options?: { cause?: unknown; signal?: 'SIGINT' | 'SIGTERM' }) {
    super(message, options)
    this.signal = options?.signal
    if (options?.signal === 'SIGINT') this.exitCode = 130
    if (options?.signal === 'SIGTERM') this.exitCode = 143
  }
}
