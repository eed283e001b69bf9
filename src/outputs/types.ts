// What an output format is. One file per format; registry.ts lists them.
import type { Writable } from 'node:stream'

import type { BuildOptions, OutputFormatName } from '../api/options.js'
import type { Guestfs } from '../guestfs/index.js'
import type { EventInput } from '../phases/types.js'

/**
 * - `tar-stream`: consumes the tar stream of the finished image root (read once for all of them);
 * - `tree`: produces its file from the mounted root in the appliance;
 * - `disk`: produced on the host from the finished raw disk, after the appliance stopped.
 */
export type OutputSource = 'tar-stream' | 'tree' | 'disk'

export interface OutputContext {
  readonly options: Readonly<BuildOptions>
  readonly g: Guestfs
  readonly signal: AbortSignal
  emit(event: EventInput): void
  /** A writable that writes `target` (hashing it on the way when checksums are on). */
  fileSink(target: string): FileSink
}

export interface FileSink extends Writable {
  /**
   * Settles when the file is completely written and closed; rejects with a VirtDibError naming
   * the file when a write fails, or when the sink is destroyed before it ended.
   */
  readonly done: Promise<void>
}

export interface OutputFormat {
  /** The --formats name. */
  name: OutputFormatName
  /** File extension of `<name>.<ext>`; undefined when no file is written (docker). */
  extension: string | undefined
  source: OutputSource
  /** Progress text like the original's (`Converting to qcow2`). */
  progress(options: Readonly<BuildOptions>): string
  /** Host tools needed; throws PrerequisiteError before anything is launched. */
  checkHost?(options: Readonly<BuildOptions>): void
  /** tar-stream formats: a writable that receives the tar bytes and finishes `target`. */
  consumeTar?(ctx: OutputContext, target: string | undefined): FileSink
  /** tree formats: write `target` from the image root mounted at / in the appliance. */
  fromTree?(ctx: OutputContext, target: string): Promise<void>
  /** disk formats: write `target` from the raw disk at `disk`. */
  fromDisk?(ctx: OutputContext, disk: string, target: string): Promise<void>
  /** raw: the disk itself can be renamed into place. */
  isRawDisk?: boolean
}

/** Excludes for tarballs of the image root, as diskimage-builder and the original use. */
export const TREE_EXCLUDES = ['./sys/*', './proc/*']
