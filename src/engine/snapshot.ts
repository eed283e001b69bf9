// Phase snapshots of a cached build: after a boundary, the guest's file systems frozen, a qcow2
// delta of each live drive against the parent snapshot written and committed; before the launch,
// a resumed build's drives restored from its entry. A failure of the store is a warning.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { encodeMap, materialize, snapshotDelta, type ClusterMap } from '../cache/delta.js'
import { BuildAbortedError, VirtDibError } from '../errors.js'
import type { Boundary, DriveName } from './cache-boundaries.js'
import { beginOptions, errorText, readMaps, stopCaching, type CacheRun, type SnapshotState } from './cache-run.js'
import type { BuildContext } from './context.js'
import { freezeScript, frozenMounts, thawScript } from './snapshot-guest.js'

/** The raw file of each drive a snapshot may hold, and its virtual size. */
export interface LiveDrives {
  readonly files: Readonly<Record<DriveName, string>>
  readonly sizes: Readonly<Record<DriveName, number>>
}

/** Restores `drive` of the resumed entry into `file` (a raw file of the drive's size). */
export async function restoreDrive(ctx: BuildContext, run: CacheRun, drive: DriveName, file: string): Promise<void> {
  await materialize(run.resume!.entry.path(`${drive}.qcow2`), file, { signal: ctx.signal })
}

/**
 * After a boundary's step: freezes the image's file systems in the guest, writes each drive's
 * delta against the parent snapshot, thaws, commits. A failure of the store is a warning (the
 * build goes on, later phases uncached); an abort, or a file system that cannot be thawed, is not.
 */
export async function storeSnapshot(ctx: BuildContext, b: Boundary, live: LiveDrives): Promise<void> {
  const run = ctx.cache!
  if (run.off) return
  const t0 = Date.now()
  const seconds = (t0 - run.since) / 1000
  let pending = run.next?.key === b.key ? run.next : undefined
  run.next = undefined
  try {
    if (!pending) {
      const got = await run.store.begin(b.key, beginOptions(ctx, b))
      if (!('commit' in got)) {
        // Another build stores it (or has): the next delta builds on that entry once it is there.
        const entry = await run.store.lookup(b.key, beginOptions(ctx, b))
        if (!entry) return await stopCaching(ctx, `another build is storing ${b.phase}`)
        ctx.cleanup.defer(`step cache use ${b.phase}`, await run.store.use([b.key]))
        run.parent = { key: b.key, maps: await readMaps(entry, b.drives) }
        run.lastGood = b.phase
        return
      }
      pending = got
    }
    const dir = pending.dir
    const hashes: Record<string, string> = {}
    const maps: Partial<Record<DriveName, ClusterMap>> = {}
    await frozen(ctx, async () => {
      const parent = run.parent
      const deltas = await Promise.allSettled(
        b.drives.map(async (d) => {
          const backing =
            parent?.maps[d] !== undefined
              ? { file: `../${parent.key}/${d}.qcow2`, format: 'qcow2' as const }
              : undefined
          const r = await snapshotDelta(live.files[d], parent?.maps[d], join(dir, `${d}.qcow2`), {
            virtualSize: live.sizes[d],
            ...(backing ? { backing } : {}),
            // Binaries and text deflate to about a third; the writer stops trying on data that does not shrink.
            compress: true,
            signal: ctx.signal,
          })
          maps[d] = r.map
          hashes[`${d}.qcow2`] = r.sha256
        }),
      )
      // Every delta has ended (none still writes into the folder) before the first failure is said.
      for (const d of deltas) if (d.status === 'rejected') throw d.reason
    })
    for (const d of b.drives) await writeFile(join(dir, `${d}.map`), encodeMap(maps[d]!))
    const state: SnapshotState = { imageName: ctx.plan.imageName, hookFiles: ctx.plan.hooks.files.map((f) => f.path) }
    await writeFile(join(dir, 'state.json'), JSON.stringify(state))
    // The next boundary is taken before this one is released: a build waiting on us waits on.
    const following = run.boundaries[run.boundaries.indexOf(b) + 1]
    const next = following ? await run.store.begin(following.key, beginOptions(ctx, following)) : undefined
    if (next && 'commit' in next) {
      run.next = next
      ctx.cleanup.defer(`step cache lock ${following!.phase}`, () => next.abort())
    }
    const done = await pending.commit({
      step: b.phase,
      parent: run.parent?.key ?? null,
      elements: ctx.plan.resolution.elements.map((e) => e.name),
      inputs: { ...b.inputs },
      seconds,
      hashes,
    })
    if (!done.stored && !done.entry) throw new Error('its parent snapshot was evicted meanwhile')
    // Kept from eviction (by other builds' commits too) until this build ends: the next delta names it.
    ctx.cleanup.defer(`step cache use ${b.phase}`, await run.store.use([b.key]))
    run.parent = done.stored ? { key: b.key, maps } : { key: b.key, maps: await readMaps(done.entry!, b.drives) }
    run.lastGood = b.phase
    if (done.stored) {
      ctx.emit({
        kind: 'cache-store',
        step: b.phase,
        key: b.key,
        bytes: done.meta.bytes,
        seconds: (Date.now() - t0) / 1000,
      })
    }
  } catch (e) {
    await pending?.abort().catch(() => undefined)
    if (ctx.signal.aborted || e instanceof BuildAbortedError || e instanceof ThawError) throw e
    await stopCaching(ctx, `cannot store ${b.phase}: ${errorText(e)}`)
  } finally {
    run.since = Date.now()
  }
}

/** A file system left frozen would hang the next phase: the build stops instead. */
class ThawError extends VirtDibError {
  override name = 'ThawError'
}

/**
 * Runs `fn` while the guest's file systems are frozen (or, those that cannot be, such as vfat,
 * synced: the guest is idle between phases), and thaws them whatever happens.
 */
async function frozen(ctx: BuildContext, fn: () => Promise<void>): Promise<void> {
  const { frozen: held, synced, failed } = frozenMounts(await ctx.g.shOutside(freezeScript(), { signal: ctx.signal }))
  if (synced.length > 0) ctx.emit({ kind: 'debug', text: `step cache: synced, not frozen: ${synced.join(' ')}` })
  try {
    if (failed.length > 0) throw new Error(`cannot freeze or sync ${failed.join(' ')} in the appliance`)
    await fn()
  } finally {
    try {
      // Not cancellable: an abort still kills the appliance, which releases them anyway.
      await ctx.g.shOutside(thawScript(held))
    } catch (e) {
      if (!ctx.signal.aborted) {
        // eslint-disable-next-line no-unsafe-finally -- the thaw's failure outranks the snapshot's
        throw new ThawError(`cannot thaw the image's file systems after a snapshot: ${errorText(e)}`, { cause: e })
      }
    }
  }
}
