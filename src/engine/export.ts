// Everything a build leaves behind: $NAME.d, then the outputs read from the image root (one
// tar stream for tar, tgz and docker together), the disk outputs (beside the tree outputs once the
// image is frozen read-only, else after the appliance stopped), then checksums; all under
// temporary names until the whole build has worked. One function per step (engine/steps.ts).
import { mkdirSync, rmSync, statfsSync, statSync } from 'node:fs'

import * as L from '../elements/layout.js'
import { HostToolError, VirtDibError } from '../errors.js'
import { hashFile, writeChecksumFile } from '../host/checksums.js'
import { runTool } from '../host/spawn.js'
import { outputWriteError, pumpGuestStream, settleTogether } from '../outputs/stream.js'
import type { FileSink, OutputContext, OutputFormat } from '../outputs/types.js'
import { TREE_EXCLUDES } from '../outputs/types.js'
import type { BuildContext, BuildResult, StagedFile } from './context.js'

/** Less free space than this after a failed write: the file system was full. */
const FULL_BYTES = 1024 * 1024

function outputContext(ctx: BuildContext, files: Map<string, StagedFile>, signal = ctx.signal): OutputContext {
  return {
    settings: ctx.plan.outputSettings,
    env: ctx.plan.env,
    g: ctx.g,
    signal,
    emit: (e) => ctx.emit(e),
    fileSink: (target) => {
      const file = files.get(target) ?? [...files.values()].find((f) => f.temp === target)
      if (!file) throw new Error(`${target} is not a staged output`) // a bug: the CLI says internal error
      return ctx.fileSink(file)
    },
  }
}

/** Copies `$NAME.d` out of the image if elements left anything there; returns its final path. */
export async function exportExtraData(ctx: BuildContext): Promise<string | undefined> {
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
  // Either side failing stops the other: tar exiting early cancels tar_out, a failed tar_out
  // (or an abort) kills tar.
  const stop = new AbortController()
  const signal = AbortSignal.any([ctx.signal, stop.signal])
  const { stream, done } = ctx.g.tarOutStream(guestDir, { numericowner: false }, { signal })
  stream.on('error', () => undefined) // a failed transfer destroys its stream: `done` reports it
  // prettier-ignore
  const tar = runTool('tar', ['-C', staged.temp, '--no-same-owner', '-xf', '-'], { input: stream, signal })
    .catch((e: unknown) => {
      throw extractError(final, e, ctx.plan.outputDir)
    })
  await settleTogether(
    [done, tar],
    (e) => {
      stop.abort(e)
      stream.destroy()
    },
    ctx.signal,
  )
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

/** The formats that consume the one tar stream of the image root. */
export function tarStreamFormats(formats: readonly OutputFormat[]): OutputFormat[] {
  return formats.filter((f) => f.source === 'tar-stream')
}

/** Formats produced from the mounted image root in the appliance, one after the other. */
export function treeFormats(formats: readonly OutputFormat[]): OutputFormat[] {
  return formats.filter((f) => f.source === 'tree')
}

/** Formats converted from the disk file on the host (raw is the disk file itself). */
export function diskConversions(formats: readonly OutputFormat[]): OutputFormat[] {
  return formats.filter((f) => f.source === 'disk' && !f.isRawDisk)
}

/** The tar-stream formats, fed by one tar_out of the mounted image root. */
export async function exportTarStream(ctx: BuildContext): Promise<void> {
  const { plan } = ctx
  const files = new Map<string, StagedFile>()
  // One stop for the transfer and every consumer: the first failing sink (a full disk, docker
  // without a daemon) cancels tar_out and the others at once.
  const stop = new AbortController()
  const sctx = outputContext(ctx, files, AbortSignal.any([ctx.signal, stop.signal]))
  const sinks: FileSink[] = []
  for (const f of tarStreamFormats(plan.formats)) {
    ctx.progress(f.progress(plan.outputSettings))
    let target: string | undefined
    if (f.extension) {
      const s = ctx.stage(ctx.outputPathFor(f), f.name)
      files.set(s.final, s)
      target = s.final
    }
    sinks.push(f.consumeTar!(sctx, target))
  }
  const guest = ctx.g.tarOutStream(
    '/',
    { excludes: TREE_EXCLUDES, xattrs: true, numericowner: true },
    { signal: sctx.signal },
  )
  await pumpGuestStream(guest, sinks, stop, ctx.signal)
}

/** One tree format (squashfs), made from the mounted image root. */
export async function exportTreeFormat(ctx: BuildContext, f: OutputFormat): Promise<void> {
  const files = new Map<string, StagedFile>()
  ctx.progress(f.progress(ctx.plan.outputSettings))
  const s = ctx.stage(ctx.outputPathFor(f), f.name)
  files.set(s.final, s)
  await f.fromTree!(outputContext(ctx, files), s.final)
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
  const files = new Map<string, StagedFile>()
  ctx.progress(f.progress(ctx.plan.outputSettings))
  const s = ctx.stage(ctx.outputPathFor(f), f.name)
  files.set(s.final, s)
  await f.fromDisk!(outputContext(ctx, files, signal), disk, s.temp)
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
