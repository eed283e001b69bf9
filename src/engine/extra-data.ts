// extra-data.d: the one phase that runs on the host, against a FUSE view of the image
// (mount_local) so that what it writes under TMP_HOOKS_PATH reaches the guest.
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'

import * as L from '../elements/layout.js'
import { VirtDibError } from '../errors.js'
import { releaseFuseMount, trackServing, waitForFuseMount } from '../host/fuse.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/runner/run-scripts.js'
import type { BuildContext } from './context.js'
import type { BuildPlan } from './plan.js'
import { prepareHostPhase } from './prepare-aux.js'

const VIEW = 'extra-data.d: the FUSE view of the image'
/** What the context holds from extra-data.d to extra-data-unmount (ctx.hold / ctx.release). */
export const EXTRA_DATA_VIEW = 'extra-data.d view'

/** Whether extra-data.d has scripts: without, it needs no FUSE view (and no unmount step). */
export function hasExtraData(plan: Pick<BuildPlan, 'hooks'>): boolean {
  return plan.hooks.dirs.includes('extra-data.d')
}

/**
 * Runs extra-data.d against a FUSE view of the image, held by the context for the next step to
 * release ({@link EXTRA_DATA_VIEW}); nothing to hold when the phase has no scripts (no FUSE round
 * trip at all). On failure the view is released at once and the phase's error thrown.
 */
export async function runExtraData(ctx: BuildContext): Promise<void> {
  const p = phase('extra-data.d')
  // Nothing to run: skip the FUSE round trip entirely.
  if (!hasExtraData(ctx.plan)) {
    ctx.emit({ kind: 'phase-start', hook: p.hook, where: p.where })
    ctx.emit({ kind: 'phase-end', hook: p.hook, where: p.where, seconds: 0, status: 0, scripts: [] })
    return
  }
  const mountpoint = join(ctx.workspace, L.WORKSPACE.imageView)
  mkdirSync(mountpoint, { recursive: true })
  // extra-data.d runs where virt-dib was started (its phase file says `cwd: 'caller'`).
  const host = { env: prepareHostPhase(ctx, p, mountpoint), cwd: process.cwd() }
  await ctx.g.mountLocal(mountpoint)
  const served = trackServing(ctx.g.mountLocalRun())
  // Until it is released, removing the workspace would reach into the image through the view.
  const release = () =>
    releaseFuseMount(mountpoint, served, {
      what: VIEW,
      onWarning: (text) => ctx.emit({ kind: 'warning', text }),
      onDebug: (text) => ctx.emit({ kind: 'debug', text }),
      // the shorter timings apply as soon as the build is aborted, also in the middle
      signal: ctx.signal,
    })
  const undo = ctx.cleanup.defer('FUSE mount', release)
  try {
    await waitForFuseMount(mountpoint, served, { what: VIEW, signal: ctx.signal })
    if (!existsSync(join(mountpoint, 'tmp'))) throw new VirtDibError(`${VIEW} has no /tmp`)
    // runPhase stops the scripts' whole process group when they end or on abort.
    await runPhase(ctx, p, host)
  } catch (error) {
    try {
      await release()
    } catch (e) {
      // The phase's own failure (or the abort) says more; the view is detached either way.
      ctx.emit({ kind: 'warning', text: (e as Error).message })
    } finally {
      undo()
    }
    throw error
  }
  ctx.hold(EXTRA_DATA_VIEW, async () => {
    try {
      await release()
    } finally {
      undo()
    }
    const r = await served.done
    if (r instanceof Error && !ctx.signal.aborted) throw r
  })
}
