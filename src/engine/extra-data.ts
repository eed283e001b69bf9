// extra-data.d: the one phase that runs on the host, against a FUSE view of the image
// (mount_local) so that what it writes under TMP_HOOKS_PATH reaches the guest.
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'

import { VirtDibError } from '../errors.js'
import { releaseFuseMount, trackServing, waitForFuseMount } from '../host/fuse.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/run-scripts.js'
import type { BuildContext } from './context.js'
import { prepareHostPhase } from './prepare-aux.js'

const VIEW = 'extra-data.d: the FUSE view of the image'

export async function runExtraData(ctx: BuildContext): Promise<void> {
  const p = phase('extra-data.d')
  // Nothing to run: skip the FUSE round trip entirely.
  if (!ctx.plan.hooks.dirs.includes('extra-data.d')) {
    ctx.emit({ kind: 'phase-start', hook: p.hook, where: p.where })
    ctx.emit({ kind: 'phase-end', hook: p.hook, where: p.where, seconds: 0, status: 0, scripts: [] })
    return
  }
  const mountpoint = join(ctx.workspace, 'extra-data.d')
  mkdirSync(mountpoint, { recursive: true })
  ctx.hostEnv = prepareHostPhase(ctx, p, mountpoint)
  ctx.hostCwd = process.cwd()
  await ctx.g.mountLocal(mountpoint)
  const served = trackServing(ctx.g.mountLocalRun())
  // Until it is released, removing the workspace would reach into the image through the view.
  const release = async () => {
    const t = Date.now()
    await releaseFuseMount(mountpoint, served, {
      what: VIEW,
      onWarning: (text) => ctx.emit({ kind: 'warning', text }),
      onDebug: (text) => ctx.emit({ kind: 'debug', text }),
      // the shorter timings apply as soon as the build is aborted, also in the middle
      signal: ctx.signal,
    })
    ctx.emit({ kind: 'step', name: 'extra-data-unmount', seconds: (Date.now() - t) / 1000 })
  }
  const undo = ctx.cleanup.defer('FUSE mount', release)
  let failure: { error: unknown } | undefined
  try {
    await waitForFuseMount(mountpoint, served, { what: VIEW, signal: ctx.signal })
    if (!existsSync(join(mountpoint, 'tmp'))) throw new VirtDibError(`${VIEW} has no /tmp`)
    // runPhase stops the scripts' whole process group when they end or on abort.
    await runPhase(ctx, p)
  } catch (error) {
    failure = { error }
  }
  try {
    await release()
  } catch (e) {
    // The phase's own failure (or the abort) says more; the view is detached either way.
    if (!failure) throw e
    ctx.emit({ kind: 'warning', text: (e as Error).message })
  } finally {
    undo()
  }
  if (failure) throw failure.error
  const r = await served.done
  if (r instanceof Error && !ctx.signal.aborted) throw r
}
