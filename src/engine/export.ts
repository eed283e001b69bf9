// Everything a build leaves behind: $NAME.d, then the image root's archive and the outputs made
// from it on the host, the disk outputs (beside the tree outputs once the image is frozen
// read-only, else after the appliance stopped), then checksums; all under temporary names until
// the whole build has worked. One function per step (engine/steps.ts).
//
// Archives never go through the guestfs daemon: the guest's own tar writes them straight onto the
// export drive (block I/O), and the host reads them from that file at host speed.
import { mkdirSync, rmSync, statfsSync, statSync } from 'node:fs'
import { truncate } from 'node:fs/promises'

import type { BlockDeviceLayout } from '../blockdev/layout.js'
import * as L from '../elements/layout.js'
import { HostToolError, VirtDibError } from '../errors.js'
import { hashFile, writeChecksumFile } from '../host/checksums.js'
import { archiveExt4, Ext4ReaderDeclined } from '../host/ext4-reader.js'
import { runTool } from '../host/spawn.js'
import { archiveFile, outputWriteError } from '../outputs/stream.js'
import type { ArchiveFile, OutputContext, OutputFormat } from '../outputs/types.js'
import { TREE_EXCLUDES } from '../outputs/types.js'
import { reproducibleTarArgs } from '../repro/epoch.js'
import { shellQuote } from '../util/shell-quote.js'
import { DRIVE } from './appliance.js'
import type { BuildContext, BuildResult, StagedFile } from './context.js'
import { freezeImage } from './image.js'
import { chooseTreeReader } from './tree-reader.js'

/** Less free space than this after a failed write: the file system was full. */
const FULL_BYTES = 1024 * 1024

/**
 * Starts one output step: its progress line, its staged file (none for docker), and the context
 * its format writes through.
 */
function startOutput(
  ctx: BuildContext,
  f: OutputFormat,
  signal: AbortSignal,
): { file: StagedFile | undefined; octx: OutputContext } {
  ctx.progress(f.progress(ctx.plan.outputSettings))
  const file = f.extension ? ctx.stage(ctx.outputPathFor(f), f.name) : undefined
  const staged = (target: string): StagedFile => {
    if (!file || (target !== file.temp && target !== file.final)) {
      throw new Error(`${target} is not a staged output`) // a bug: the CLI says internal error
    }
    return file
  }
  const octx: OutputContext = {
    settings: ctx.plan.outputSettings,
    env: ctx.plan.env,
    ...(ctx.plan.sourceDateEpoch !== undefined ? { sourceDateEpoch: ctx.plan.sourceDateEpoch } : {}),
    signal,
    emit: (e) => ctx.emit(e),
    fileSink: (target) => ctx.fileSink(staged(target)),
    finalPath: (target) => staged(target).final,
  }
  return { file, octx }
}

/** What the guest's tar puts in an archive (as guestfsd's tar_out options). */
interface GuestTarOptions {
  excludes?: readonly string[]
  xattrs?: boolean
  numericOwner?: boolean
  /** Holes of sparse files stay holes (GNU sparse entries), instead of archived zeros. */
  sparse?: boolean
  /** SOURCE_DATE_EPOCH: entries sorted, times clamped (src/repro/epoch.ts). */
  sourceDateEpoch?: number
}

/**
 * The guest's own tar writes `dir` (an appliance path) as an archive at the start of the export
 * drive; returns the archive's length (tar's total: the end-of-archive blocks and the padding to
 * its record size included). Its errors are tar's (through the appliance call), as tar_out's were.
 */
async function archiveToExportDrive(ctx: BuildContext, dir: string, o: GuestTarOptions): Promise<number> {
  // prettier-ignore
  const args = [
    '-C', dir,
    ...(o.numericOwner ? ['--numeric-owner'] : []),
    ...(o.excludes ?? []).map((e) => `--exclude=${e}`),
    ...(o.xattrs ? ['--xattrs'] : []),
    ...(o.sparse ? ['--sparse'] : []),
    ...(o.sourceDateEpoch !== undefined ? reproducibleTarArgs(o.sourceDateEpoch) : []),
    '-cf', DRIVE.export, '--totals', '.',
  ]
  // The appliance's own tar (outside the chroot, as tar_out). Its page cache is flushed to the
  // drive before the host reads the file.
  const script = [
    `tar ${args.map(shellQuote).join(' ')} 2>/tmp/vdib-tar.err`,
    'rc=$?',
    'cat /tmp/vdib-tar.err',
    `blockdev --flushbufs ${DRIVE.export}`,
    'exit $rc',
  ].join('; ')
  const out = await ctx.g.shOutside(script, { signal: ctx.signal })
  const total = /Total bytes written: (\d+)/.exec(out)
  if (!total) throw new VirtDibError(`the guest's tar of ${dir} gave no length: ${out.trim().split('\n').pop() ?? ''}`)
  return Number(total[1])
}

/** Copies `$NAME.d` out of the image if elements left anything there; returns its final path. */
export async function exportExtraData(ctx: BuildContext, exportDrive: string): Promise<string | undefined> {
  const guestDir = L.outDir(ctx.plan.imageName)
  const entries = await ctx.g.ls(guestDir)
  if (entries.length === 0) return undefined
  ctx.progress('Extracting data out of the image')
  const final = `${ctx.plan.outputPath}.d`
  const staged = ctx.stage(final)
  try {
    mkdirSync(staged.temp, { recursive: true })
  } catch (e) {
    throw outputWriteError(final, e)
  }
  if (!ctx.plan.keepPartialOutputs) {
    ctx.cleanup.defer(`directory ${staged.temp}`, () => rmSync(staged.temp, { recursive: true, force: true }))
  }
  const bytes = await archiveToExportDrive(ctx, L.inAppliance(guestDir), {})
  // prettier-ignore
  await runTool('tar', ['-C', staged.temp, '--no-same-owner', '-xf', '-'], {
    input: archiveFile(exportDrive, bytes).read(),
    signal: ctx.signal,
  }).catch((e: unknown) => {
    throw extractError(final, e, ctx.plan.outputDir)
  })
  return final
}

/**
 * tar's own reason (`./x: Wrote only 2048 of 10240 bytes`), not its closing summary line; said
 * as out of space when the output directory's file system is (nearly) full, which tar does not say.
 */
function extractError(final: string, e: unknown, outputDir: string): unknown {
  if (!(e instanceof HostToolError)) return e
  const lines = e.outputTail
    .split('\n')
    .filter((l) => l && !/Exiting with failure status|Error is not recoverable/.test(l))
  const why = lines[0]?.replace(/^tar: /, '') ?? e.message
  let full = /No space left on device/.test(why)
  try {
    const s = statfsSync(outputDir)
    full ||= s.bavail * s.bsize < FULL_BYTES
  } catch {
    // the directory went away: report what tar said
  }
  const what = `extracting ‘${final}’ failed: ${why}`
  return full
    ? new VirtDibError(`out of space on the host: ${what}`, {
        cause: e,
        hint: 'free some space there, or build elsewhere (--name)',
      })
    : new VirtDibError(what, { cause: e })
}

/** The formats made from the image root's archive (tar itself, tgz, docker, squashfs). */
export function archiveFormats(formats: readonly OutputFormat[]): OutputFormat[] {
  return formats.filter((f) => f.source === 'archive')
}

/**
 * The image root's archive on the export drive: xattrs, numeric owners, hard links, device nodes,
 * sparse files as holes; /proc and /sys contents left out. Read on the host from the frozen disk
 * file when it can be (tree-reader.ts), else written by the guest's tar. Returns its length.
 */
export async function exportTreeArchive(
  ctx: BuildContext,
  at: { layout: BlockDeviceLayout; disk: string; exportDrive: string; outDevice: string },
): Promise<number> {
  const epoch = ctx.plan.sourceDateEpoch !== undefined ? { sourceDateEpoch: ctx.plan.sourceDateEpoch } : {}
  let reader = await chooseTreeReader(ctx, at.layout, at.outDevice)
  if (reader.kind === 'host') {
    // Read-only in the guest first: its page cache is then on the disk file, and nothing changes under the reader.
    await freezeImage(ctx, at.layout)
    ctx.progress('Archiving the image tree (read on the host)')
    try {
      return await archiveExt4({
        image: at.disk,
        offset: reader.offset,
        dest: at.exportDrive,
        excludes: TREE_EXCLUDES,
        ...epoch,
        signal: ctx.signal,
        workDir: ctx.workspace,
        onDebug: (text) => ctx.emit({ kind: 'debug', text }),
        onWarning: (text) => ctx.emit({ kind: 'warning', text }),
      })
    } catch (e) {
      if (!(e instanceof Ext4ReaderDeclined)) {
        throw e instanceof VirtDibError || e instanceof HostToolError ? e : outputWriteError(at.exportDrive, e)
      }
      reader = { kind: 'guest', reason: e.message }
    }
  }
  ctx.emit({ kind: 'debug', text: `the guest archives the image tree: ${reader.reason}` })
  ctx.progress('Archiving the image tree')
  return archiveToExportDrive(ctx, `${L.SYSROOT}/`, {
    excludes: TREE_EXCLUDES,
    xattrs: true,
    numericOwner: true,
    sparse: true,
    ...epoch,
  })
}

/** The tar output is the archive itself, written in place on its staged file: cut to its length. */
export async function exportTar(ctx: BuildContext, f: OutputFormat, archive: ArchiveFile): Promise<void> {
  ctx.progress(f.progress(ctx.plan.outputSettings))
  await truncate(archive.path, archive.bytes).catch((e: unknown) => {
    throw outputWriteError(`${ctx.plan.outputPath}.tar`, e)
  })
}

/** One format made on the host from the image root's archive (tgz, docker, squashfs). */
export async function exportArchiveFormat(
  ctx: BuildContext,
  f: OutputFormat,
  archive: ArchiveFile,
  signal = ctx.signal,
): Promise<void> {
  const { file, octx } = startOutput(ctx, f, signal)
  await f.fromArchive!(octx, archive, file?.temp)
}

/** Formats converted from the disk file on the host (raw is the disk file itself). */
export function diskConversions(formats: readonly OutputFormat[]): OutputFormat[] {
  return formats.filter((f) => f.source === 'disk' && !f.isRawDisk)
}

/**
 * One output made from the finished disk on the host: after the appliance has stopped, or while
 * it only reads a read-only image (see freezeImage).
 */
export async function exportDiskOutput(
  ctx: BuildContext,
  f: OutputFormat,
  disk: string,
  signal = ctx.signal,
): Promise<void> {
  const { file, octx } = startOutput(ctx, f, signal)
  await f.fromDisk!(octx, disk, file!.temp)
}

/** `.md5` and `.sha256` next to every output file, hashed while written where possible. */
export async function exportChecksums(ctx: BuildContext): Promise<void> {
  const outputs = ctx.staged.filter((s) => s.format !== undefined)
  for (const s of outputs) {
    ctx.progress(`Generating checksums for ${s.final}`)
    s.digests ??= await hashFile(s.temp).catch((e: unknown) => {
      throw outputWriteError(s.final, e, 'reading')
    })
    for (const [ext, hex] of [
      ['md5', s.digests.md5],
      ['sha256', s.digests.sha256],
    ] as const) {
      const file = ctx.stage(`${s.final}.${ext}`)
      await writeChecksumFile(file.temp, hex, s.final).catch((e: unknown) => {
        throw outputWriteError(file.final, e)
      })
    }
  }
}

export function collectResult(ctx: BuildContext, extraDataDir: string | undefined): BuildResult {
  const outputs = ctx.staged
    .filter((s) => s.format !== undefined)
    .map((s) => ({
      format: s.format!,
      path: s.final,
      size: statSync(s.final).size,
      ...(s.digests ? { md5: s.digests.md5, sha256: s.digests.sha256 } : {}),
    }))
  return {
    outputs,
    ...(extraDataDir ? { extraDataDir } : {}),
    seconds: (Date.now() - ctx.t0) / 1000,
  }
}
