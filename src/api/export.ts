// Everything a build leaves behind: $NAME.d, then the outputs read from the image root (one
// tar stream for tar, tgz and docker together), then the disk outputs once the appliance has
// stopped, then checksums; all under temporary names until the whole build has worked.
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'

import * as L from '../elements/layout.js'
import { hashFile, writeChecksumFile } from '../host/checksums.js'
import type { FileSink, OutputContext, OutputFormat } from '../outputs/types.js'
import { TREE_EXCLUDES } from '../outputs/types.js'
import type { BuildContext, BuildResult, StagedFile } from './context.js'

function outputContext(ctx: BuildContext, files: Map<string, StagedFile>, signal = ctx.signal): OutputContext {
  return {
    options: ctx.plan.options,
    g: ctx.g,
    signal,
    emit: (e) => ctx.emit(e),
    fileSink: (target) => ctx.fileSink(files.get(target)!),
  }
}

/** Copies `$NAME.d` out of the image if elements left anything there. */
export async function exportExtraData(ctx: BuildContext): Promise<void> {
  const guestDir = L.outDir(ctx.plan.imageName)
  const entries = await ctx.g.ls(guestDir)
  if (entries.length === 0) return
  ctx.progress('Extracting data out of the image')
  const final = `${ctx.plan.outputPath}.d`
  const staged = ctx.stage(final)
  mkdirSync(staged.temp, { recursive: true })
  if (ctx.plan.options.deleteOnFailure !== false) {
    ctx.cleanup.defer(`directory ${staged.temp}`, () => rmSync(staged.temp, { recursive: true, force: true }))
  }
  const { stream, done } = ctx.g.tarOutStream(guestDir, { numericowner: false }, { signal: ctx.signal })
  // prettier-ignore
  const tar = spawn('tar', ['-C', staged.temp, '--no-same-owner', '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] })
  stream.pipe(tar.stdin)
  const exited = new Promise<number | null>((resolve) => tar.on('close', resolve))
  await done
  if ((await exited) !== 0) throw new Error(`extracting ${final} failed`)
  ctx.extraDataDir = final
}

/** Moves a staged directory's entries into an existing final directory (merge, like the original). */
export function commitDirectory(staged: StagedFile): void {
  if (!existsSync(staged.final)) {
    renameSync(staged.temp, staged.final)
    return
  }
  for (const e of readdirSync(staged.temp)) {
    rmSync(`${staged.final}/${e}`, { recursive: true, force: true })
    renameSync(`${staged.temp}/${e}`, `${staged.final}/${e}`)
  }
  rmSync(staged.temp, { recursive: true, force: true })
}

/** Outputs read from the mounted image root: tar-stream formats share one tar_out. */
export async function exportTreeOutputs(ctx: BuildContext): Promise<void> {
  const { plan } = ctx
  const files = new Map<string, StagedFile>()
  const octx = outputContext(ctx, files)
  const streamFormats = plan.formats.filter((f) => f.source === 'tar-stream')
  if (streamFormats.length > 0) {
    const sinks: { f: OutputFormat; sink: FileSink }[] = []
    for (const f of streamFormats) {
      ctx.progress(f.progress(plan.options))
      let target: string | undefined
      if (f.extension) {
        const s = ctx.stage(ctx.outputPathFor(f), f.name)
        files.set(s.final, s)
        target = s.final
      }
      sinks.push({ f, sink: f.consumeTar!(octx, target) })
    }
    const t = Date.now()
    const { stream, done } = ctx.g.tarOutStream(
      '/',
      { excludes: TREE_EXCLUDES, xattrs: true, numericowner: true },
      { signal: ctx.signal },
    )
    // Fan out with back-pressure: the guest waits for the slowest consumer.
    stream.on('data', (chunk: Buffer) => {
      let waiting = 0
      for (const { sink } of sinks) {
        if (!sink.write(chunk)) {
          waiting++
          stream.pause()
          sink.once('drain', () => {
            if (--waiting === 0) stream.resume()
          })
        }
      }
    })
    const ended = new Promise<void>((resolve, reject) => {
      stream.on('end', resolve)
      stream.on('error', reject)
    })
    await Promise.all([done, ended])
    for (const { sink } of sinks) sink.end()
    await Promise.all(sinks.map(({ sink }) => sink.done))
    ctx.emit({ kind: 'step', name: 'tar-stream', seconds: (Date.now() - t) / 1000 })
  }
  for (const f of plan.formats.filter((x) => x.source === 'tree')) {
    ctx.progress(f.progress(plan.options))
    const s = ctx.stage(ctx.outputPathFor(f), f.name)
    files.set(s.final, s)
    const t = Date.now()
    await f.fromTree!(octx, s.final)
    ctx.emit({ kind: 'step', name: f.name, seconds: (Date.now() - t) / 1000 })
  }
}

/** Formats converted from the disk file on the host (raw is the disk file itself). */
export function diskConversions(ctx: BuildContext): OutputFormat[] {
  return ctx.plan.formats.filter((f) => f.source === 'disk' && !f.isRawDisk)
}

/** Formats read from the image tree by the guest. */
export function treeOutputs(ctx: BuildContext): OutputFormat[] {
  return ctx.plan.formats.filter((f) => f.source === 'tar-stream' || f.source === 'tree')
}

/**
 * Outputs made from the finished disk on the host: after the appliance has stopped, or while it
 * only reads a read-only image (see freezeImage).
 */
export async function exportDiskOutputs(ctx: BuildContext, disk: string, signal = ctx.signal): Promise<void> {
  const files = new Map<string, StagedFile>()
  const octx = outputContext(ctx, files, signal)
  await Promise.all(
    diskConversions(ctx).map(async (f) => {
      ctx.progress(f.progress(ctx.plan.options))
      const s = ctx.stage(ctx.outputPathFor(f), f.name)
      files.set(s.final, s)
      const t = Date.now()
      await f.fromDisk!(octx, disk, s.temp)
      ctx.emit({ kind: 'step', name: f.name, seconds: (Date.now() - t) / 1000 })
    }),
  )
}

/** `.md5` and `.sha256` next to every output file, hashed while written where possible. */
export async function exportChecksums(ctx: BuildContext): Promise<void> {
  if (!ctx.plan.options.checksum) return
  const outputs = ctx.staged.filter((s) => s.format !== undefined)
  for (const s of outputs) {
    ctx.progress(`Generating checksums for ${s.final}`)
    s.digests ??= await hashFile(s.temp)
    await writeChecksumFile(ctx.stage(`${s.final}.md5`).temp, s.digests.md5, s.final)
    await writeChecksumFile(ctx.stage(`${s.final}.sha256`).temp, s.digests.sha256, s.final)
  }
}

export function collectResult(ctx: BuildContext): BuildResult {
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
    ...(ctx.extraDataDir ? { extraDataDir: ctx.extraDataDir } : {}),
    seconds: (Date.now() - ctx.t0) / 1000,
  }
}
