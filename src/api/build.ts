// build(): the whole image build, one named step per line, in diskimage-builder's order.
import { BuildAbortedError, VirtDibError } from '../errors.js'
import { GuestfsError, AbortError as GuestfsAbortError } from '../guestfs/index.js'
import { watchHostSpace } from '../host/space-watch.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/run-scripts.js'
import { launchAppliance, prepareBuildRoot } from '../engine/appliance.js'
import { BuildContext, type BuildResult } from '../engine/context.js'
import {
  collectResult,
  exportChecksums,
  diskConversions,
  exportDiskOutputs,
  exportExtraData,
  exportTreeOutputs,
  treeOutputs,
} from '../engine/export.js'
import { runExtraData } from '../engine/extra-data.js'
import { createBlockDevice, finalizeImage, freezeImage, releaseImage } from '../engine/image.js'
import type { BuildHooks, BuildOptions } from './options.js'
import { planBuild, type BuildPlan } from './plan.js'
import { installTypeFile, prepareAuxTree } from '../engine/prepare-aux.js'

export async function build(options: BuildOptions, hooks: BuildHooks = {}): Promise<BuildResult> {
  const plan = planBuild(options)
  return buildPlanned(plan, hooks)
}

/** Runs an already checked plan (planBuild → buildPlanned lets callers inspect the plan first). */
export async function buildPlanned(plan: BuildPlan, hooks: BuildHooks = {}): Promise<BuildResult> {
  const ctx = await BuildContext.open(plan, hooks)
  let ok = false
  try {
    announce(ctx)
    const auxDir = await timed(ctx, 'prepare-aux', async () => prepareAuxTree(ctx))
    const disk = await launchAppliance(ctx, auxDir)
    // The disk files grow while the guest writes: a full host file system must stop the build.
    const scratchDir = await ctx.g.getTmpdir()
    const watch = watchHostSpace(ctx.hostWriteDirs(disk, scratchDir), (dir) => {
      ctx.hostFull = dir
      try {
        ctx.g.killAppliance()
      } catch {
        // already closed: the host step writing there fails by itself
      }
    })
    ctx.cleanup.defer('host space watch', () => watch.stop())
    await timed(ctx, 'build-root', () => prepareBuildRoot(ctx))
    await step(ctx, () => runPhase(ctx, phase('root.d')))
    const installType = installTypeFile(ctx)
    await ctx.g.write(installType.path, installType.content)
    await step(ctx, () => runExtraData(ctx))
    await step(ctx, () => runPhase(ctx, phase('pre-install.d')))
    if ((plan.options.extraPackages ?? []).length > 0) {
      ctx.progress(`Installing: ${plan.options.extraPackages!.join(' ')}`)
      await step(ctx, () => runPhase(ctx, { hook: 'extra-packages', where: 'chroot' }))
    }
    await step(ctx, () => runPhase(ctx, phase('install.d')))
    await step(ctx, () => runPhase(ctx, phase('post-install.d')))
    await step(ctx, () => runPhase(ctx, phase('post-root.d')))
    await step(ctx, () => createBlockDevice(ctx))
    await step(ctx, () => runPhase(ctx, phase('pre-finalise.d')))
    await step(ctx, () => runPhase(ctx, phase('finalise.d')))
    await step(ctx, () => runPhase(ctx, phase('cleanup.d')))
    await timed(ctx, 'extract-data', () => exportExtraData(ctx))
    await timed(ctx, 'finalize-image', () => finalizeImage(ctx))
    // divergence: in ramdisk mode no image is written at all (the original still wrote tarballs).
    let conversions: Promise<void> | undefined
    if (!plan.ramdisk) {
      const overlap = diskConversions(ctx).length > 0 && treeOutputs(ctx).length > 0
      // The guest tars the tree while the host converts the (now read-only) disk.
      if (overlap) conversions = (await startConversions(ctx, disk)).running
      await step(ctx, () => exportTreeOutputs(ctx))
    }
    ctx.progress('Umounting the disks')
    await timed(ctx, 'shutdown', async () => {
      await releaseImage(ctx)
      await ctx.g.shutdown()
      await ctx.g.close()
    })
    if (!plan.ramdisk) {
      await (conversions ?? step(ctx, () => exportDiskOutputs(ctx, disk)))
      await timed(ctx, 'checksums', () => exportChecksums(ctx))
    }
    ctx.checkAborted()
    await ctx.commitOutputs()
    ok = true
    const result = collectResult(ctx)
    for (const o of result.outputs) ctx.emit({ kind: 'output', ...o })
    ctx.progress('Done')
    return result
  } catch (e) {
    throw explain(ctx, e)
  } finally {
    if (!ok && plan.options.deleteOnFailure === false) {
      const kept = ctx.staged.map((s) => s.temp)
      if (kept.length > 0) ctx.emit({ kind: 'info', text: `partial outputs kept: ${kept.join(' ')}` })
    }
    const failures = await ctx.cleanup.run()
    for (const f of failures) ctx.emit({ kind: 'warning', text: `cleanup of ${f.label} failed: ${String(f.error)}` })
  }
}

/**
 * Starts the disk conversions on the read-only image. The returned promise never rejects
 * unhandled: a failure is reported when it is awaited; a failed build stops the conversions.
 */
async function startConversions(ctx: BuildContext, disk: string): Promise<{ running: Promise<void> }> {
  await freezeImage(ctx)
  const stop = new AbortController()
  const signal = AbortSignal.any([ctx.signal, stop.signal])
  const running = exportDiskOutputs(ctx, disk, signal)
  running.catch(() => undefined)
  ctx.cleanup.defer('disk conversions', async () => {
    stop.abort()
    await running.catch(() => undefined)
  })
  return { running }
}

async function step<T>(ctx: BuildContext, fn: () => Promise<T>): Promise<T> {
  ctx.checkAborted()
  return fn()
}

/** A step whose duration is reported (`step` events: where the time goes, for users and bench/). */
async function timed<T>(ctx: BuildContext, name: string, fn: () => Promise<T>): Promise<T> {
  ctx.checkAborted()
  const t = Date.now()
  const r = await fn()
  ctx.emit({ kind: 'step', name, seconds: (Date.now() - t) / 1000 })
  return r
}

function announce(ctx: BuildContext): void {
  const { plan } = ctx
  ctx.emit({ kind: 'info', text: `Elements: ${plan.resolution.requested.join(' ')}` })
  ctx.emit({ kind: 'info', text: `Expanded elements: ${plan.resolution.elements.map((e) => e.name).join(' ')}` })
  const carried = (plan.options.envvars ?? []).map((e) => e.name)
  ctx.emit({ kind: 'info', text: `Carried environment variables: ${[...new Set(carried)].join(' ')}` })
  for (const w of plan.warnings) ctx.emit({ kind: 'warning', text: w })
}

/** Aborts become BuildAbortedError; an appliance killed by us is not reported as a crash. */
function explain(ctx: BuildContext, e: unknown): unknown {
  if (ctx.signal.aborted) {
    const reason: unknown = ctx.signal.reason
    if (reason instanceof BuildAbortedError) return reason
    return new BuildAbortedError(undefined, { cause: reason ?? e })
  }
  if (ctx.hostFull !== undefined) {
    return new VirtDibError(`out of space on the host: the file system of ${ctx.hostFull} is full`, {
      cause: e,
      hint: 'free some space there, or build elsewhere (TMPDIR, --name)',
    })
  }
  if (e instanceof GuestfsAbortError) return new BuildAbortedError(undefined, { cause: e })
  if (e instanceof GuestfsError && e.applianceDied) {
    // libguestfs explains at length how to debug it; the first line says what happened.
    return new VirtDibError(`the appliance died: ${e.message.trim().split('\n')[0]!.replace(/\.$/, '')}`, {
      cause: e,
      hint: 'was qemu killed or out of memory? try -m',
    })
  }
  return e
}
