// extra-data.d: the one phase that runs on the host, against a FUSE view of the image
// (mount_local) so that what it writes under TMP_HOOKS_PATH reaches the guest.
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/run-scripts.js'
import type { BuildContext } from './context.js'
import { prepareHostPhase } from './prepare-aux.js'

function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === path)
}

async function unmount(mountpoint: string): Promise<void> {
  const tool = findExecutable('fusermount3') ?? findExecutable('fusermount') ?? 'fusermount'
  for (let i = 0; i < 20 && isMounted(mountpoint); i++) {
    try {
      await runTool(tool, ['-u', mountpoint])
    } catch {
      await new Promise((r) => setTimeout(r, 250)) // busy: a script left a process behind
    }
  }
}

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
  const serving = ctx.g.mountLocalRun().catch((e: unknown) => e)
  const undo = ctx.cleanup.defer('FUSE mount', () => unmount(mountpoint))
  try {
    for (let i = 0; i < 200 && !isMounted(mountpoint); i++) await new Promise((r) => setTimeout(r, 50))
    if (!existsSync(join(mountpoint, 'tmp'))) throw new Error('the FUSE view of the image did not appear')
    await runPhase(ctx, p)
  } finally {
    await unmount(mountpoint)
    undo()
    const served = await serving
    if (served instanceof Error && !ctx.signal.aborted) throw served
  }
}
