// What an output format is. One file per format declares it with defineFormat() (its options,
// flags, defaults, checks and work); registry.ts lists them and derives everything else.
import type { Readable, Writable } from 'node:stream'

import type { EventInput } from '../events.js'

/**
 * - `archive`: made on the host from the image root's tar archive, which the guest's tar wrote
 *   onto the export drive (see {@link ArchiveFile}); each such format reads the archive itself;
 * - `disk`: produced on the host from the finished raw disk, once nothing writes it any more (the
 *   image frozen read-only, or the appliance stopped).
 */
export type OutputSource = 'archive' | 'disk'

/** The image root's tar archive (GNU tar, pax format: xattrs, sparse files, numeric owners). */
export interface ArchiveFile {
  /** The host file holding the archive (the export drive). */
  readonly path: string
  /** Its length: the archive is the first `bytes` bytes of `path`. */
  readonly bytes: number
  /** A fresh stream of exactly those bytes (each consumer reads its own). */
  read(): Readable
}

/**
 * The chosen formats' settings by format name, as the engine passes them on. Its precise type is
 * `OutputSettings` (registry.ts); here it is only looked into by {@link defineFormat}.
 */
export type SettingsByFormat = { readonly [format: string]: unknown }

/** What the engine gives a format's producing step. */
export interface OutputContext {
  /** Every chosen format's settings (`resolveOutputSettings` in registry.ts). */
  readonly settings: SettingsByFormat
  /** The build's environment (docker reads DOCKER_HOST and the like from it). */
  readonly env: Readonly<NodeJS.ProcessEnv>
  /** SOURCE_DATE_EPOCH: the time a format writes where it would write the current one. */
  readonly sourceDateEpoch?: number
  readonly signal: AbortSignal
  emit(event: EventInput): void
  /** Writes the staged output `target` (its temporary or final path), hashing it on the way with checksums on. */
  fileSink(target: string): FileSink
  /** The final path of the staged output `target` (its temporary path or the final one), for messages. */
  finalPath(target: string): string
}

/** The same, as a format's own code sees it: with its own settings only. */
export interface FormatContext<S> extends Omit<OutputContext, 'settings'> {
  readonly settings: S
}

export interface FileSink extends Writable {
  /**
   * Settles when the file is completely written and closed; rejects with a VirtDibError naming
   * the file when a write fails, or when the sink is destroyed before it ended.
   */
  readonly done: Promise<void>
}

/**
 * A command-line flag a format owns, as neutral data (outputs/ does not know the CLI): cli/flags.ts
 * turns these into rows of its table, so --help and the parser list them with the others.
 */
export interface FormatFlag<O> {
  /** Spellings, short first (`-u`, `--qemu-img-options`). */
  readonly keys: readonly string[]
  /** Placeholder of a required value (`<option>`); absent for switches. */
  readonly arg?: string
  /** The --help text, as the original prints it. */
  readonly help: string
  /** Records the flag (with its value; '' for switches) onto the format's options. */
  apply(options: O, value: string): void
}

/** No options, or no settings. */
export type None = Record<never, never>

/**
 * A format as its file writes it. `O` is the format's part of BuildOptions (flat fields, kept
 * for API compatibility); `S` is what they become once normalised with the format's defaults.
 */
export interface FormatDefinition<N extends string, O extends object, S extends object> {
  /** The --formats name. */
  name: N
  /** File extension of `<name>.<ext>`; undefined when no file is written (docker). */
  extension: string | undefined
  source: OutputSource
  /** raw: the disk itself can be renamed into place. */
  isRawDisk?: boolean
  /** tar: the archive itself is the output (written in place, cut to its length by the engine). */
  isArchive?: boolean
  /**
   * The format's options with its defaults applied; throws a UsageError when they cannot work.
   * Called only when the format is chosen. Default: no settings. Write it before `flags`, with
   * its parameter typed: TypeScript infers `O` from it in the order the properties come.
   */
  resolveSettings?(options: O): S
  flags?: readonly FormatFlag<O>[]
  /** Progress text like the original's (`Converting to qcow2`). */
  progress(settings: S): string
  /** What the dry run lists as the output. Default: `<outputPath>.<extension>`. */
  describeTarget?(outputPath: string, settings: S): string
  /** Host tools needed; throws PrerequisiteError before anything is launched. Options play no part. */
  checkHost?(): void
  /**
   * archive formats (but tar): make the output from the image root's archive. `target` is
   * undefined for docker (no file), else the staged output's temporary path: tgz writes through
   * `ctx.fileSink(target)` (which hashes on the way), squashfs lets tar2sqfs write it (seekable
   * output: the engine hashes it afterwards); `ctx.finalPath(target)` names it in messages.
   */
  fromArchive?(ctx: FormatContext<S>, archive: ArchiveFile, target: string | undefined): Promise<void>
  /** disk formats: write `target` from the raw disk at `disk`. */
  fromDisk?(ctx: FormatContext<S>, disk: string, target: string): Promise<void>
}

/**
 * A format as the registry and the engine hold it: the steps take every chosen format's
 * settings ({@link SettingsByFormat}) and pick their own. The type parameters only record the
 * format's name, options and settings types for registry.ts to derive from.
 */
export interface OutputFormat<N extends string = string, O extends object = object, S = unknown> {
  readonly name: N
  readonly extension: string | undefined
  readonly source: OutputSource
  readonly isRawDisk: boolean
  readonly isArchive: boolean
  readonly flags: readonly FormatFlag<O>[]
  /** The format's settings, frozen (see {@link FormatDefinition.resolveSettings}). */
  resolveSettings(options: Readonly<O>): Readonly<S>
  progress(settings: SettingsByFormat): string
  describeTarget(outputPath: string, settings: SettingsByFormat): string
  checkHost?(): void
  fromArchive?(ctx: OutputContext, archive: ArchiveFile, target: string | undefined): Promise<void>
  fromDisk?(ctx: OutputContext, disk: string, target: string): Promise<void>
}

/** A format from its definition; see {@link FormatDefinition}. */
export function defineFormat<N extends string, O extends object = None, S extends object = None>(
  def: FormatDefinition<N, O, S>,
): OutputFormat<N, O, S> {
  const own = (all: SettingsByFormat): S => {
    // A bug, not a user error: the plan resolves the settings of every format it chose.
    if (!Object.hasOwn(all, def.name)) throw new Error(`output format ${def.name}: settings not resolved`)
    return all[def.name] as S
  }
  const withOwn = (ctx: OutputContext): FormatContext<S> => ({ ...ctx, settings: own(ctx.settings) })
  // Bound copies: the definition's methods are called apart from it.
  const resolveSettings = def.resolveSettings?.bind(def)
  const describeTarget = def.describeTarget?.bind(def)
  const checkHost = def.checkHost?.bind(def)
  const fromArchive = def.fromArchive?.bind(def)
  const fromDisk = def.fromDisk?.bind(def)
  return {
    name: def.name,
    extension: def.extension,
    source: def.source,
    isRawDisk: def.isRawDisk ?? false,
    isArchive: def.isArchive ?? false,
    flags: def.flags ?? [],
    resolveSettings: (options) => Object.freeze(resolveSettings ? resolveSettings(options) : ({} as S)),
    progress: (all) => def.progress(own(all)),
    describeTarget: (outputPath, all) =>
      describeTarget ? describeTarget(outputPath, own(all)) : `${outputPath}.${def.extension}`,
    ...(checkHost ? { checkHost } : {}),
    ...(fromArchive ? { fromArchive: (ctx, archive, target) => fromArchive(withOwn(ctx), archive, target) } : {}),
    ...(fromDisk ? { fromDisk: (ctx, disk, target) => fromDisk(withOwn(ctx), disk, target) } : {}),
  }
}

/** Excludes for the image root's archive, as diskimage-builder and the original use (squashfs drops ./dev/* too). */
export const TREE_EXCLUDES = ['./sys/*', './proc/*']
