// Phase snapshots of a cached build: after a boundary, the guest's file systems frozen while what
// each live drive changed since the parent snapshot is read; its qcow2 delta then written and
// committed beside the next steps, one snapshot at a time. Before the launch, a resumed build's
// drives restored from its entry. A failure of the store is a warning.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { captureDelta, encodeMap, materialize, type CapturedDelta, type ClusterMap } from '../cache/delta.js'
import { CLUSTER_SIZE } from '../cache/qcow2.js'
import type { Pending, StepStore } from '../cache/store.js'
import { BuildAbortedError, VirtDibError } from '../errors.js'
import { formatSize } from '../util/sizes.js'
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
 * After a boundary's step: freezes the image's file systems in the guest, captures what each drive
 * changed since the parent snapshot, thaws; the deltas are then written and committed beside the
 * build's next steps (see {@link drainSnapshots}). A failure of the store is a warning (the build
 * goes on, later phases uncached); an abort, or a file system that cannot be thawed, is not.
 */
export async function storeSnapshot(ctx: BuildContext, b: Boundary, live: LiveDrives): Promise<void> {
  const run = ctx.cache!
  const store = run.store
  if (run.off || !store) return
  const t0 = Date.now()
  const seconds = (t0 - run.since) / 1000
  let pending = run.next?.key === b.key ? run.next : undefined
  run.next = undefined
  const captured: Partial<Record<DriveName, CapturedDelta>> = {}
  const parent = run.parent
  try {
    if (!pending) {
      const got = await store.begin(b.key, beginOptions(ctx, b))
      if (!('commit' in got)) {
        // Another build stores it (or has): the next delta builds on that entry once it is there.
        const entry = await store.lookup(b.key, beginOptions(ctx, b))
        if (!entry) return await stopCaching(ctx, `another build is storing ${b.phase}`)
        ctx.cleanup.defer(`step cache use ${b.phase}`, await store.use([b.key]))
        run.parent = { key: b.key, maps: await readMaps(entry, b.drives) }
        run.lastGood = b.phase
        return
      }
      pending = got
    }
    const dir = pending.dir
    const times = await frozen(ctx, async () => {
      const got = await Promise.allSettled(
        b.drives.map(async (d) => {
          captured[d] = await captureDelta(live.files[d], parent?.maps[d], {
            virtualSize: live.sizes[d],
            spool: join(dir, `.${d}.spool`),
            signal: ctx.signal,
          })
        }),
      )
      // Every capture has ended (none still reads a drive) before the first failure is said.
      for (const d of got) if (d.status === 'rejected') throw d.reason
    })
    // The previous snapshot failed to be stored while this one was read: this one has no parent.
    if (run.broken) {
      await discardAll(captured)
      return await pending.abort()
    }
    const maps: Partial<Record<DriveName, ClusterMap>> = {}
    for (const d of b.drives) maps[d] = captured[d]!.map
    const changed = b.drives.map((d) => `${d} ${formatSize(captured[d]!.changedClusters * CLUSTER_SIZE)}`)
    ctx.emit({
      kind: 'debug',
      text: `step cache: ${b.phase}: frozen in ${times.freeze.toFixed(2)} s, read in ${times.run.toFixed(2)} s (changed: ${changed.join(', ')}), thawed in ${times.thaw.toFixed(2)} s`,
    })
    // The next capture diffs against this one, whose entry is still being written.
    run.parent = { key: b.key, maps }
    // The next boundary is taken before this one is released: a build waiting on us waits on.
    const following = run.boundaries[run.boundaries.indexOf(b) + 1]
    const next = following ? await store.begin(following.key, beginOptions(ctx, following)) : undefined
    if (next && 'commit' in next) {
      ctx.cleanup.defer(`step cache lock ${following!.phase}`, () => next.abort())
      // The previous snapshot's commit may have stopped caching meanwhile: nobody should wait on this one.
      if (run.off) await next.abort()
      else run.next = next
    }
  } catch (e) {
    await discardAll(captured)
    await pending?.abort().catch(() => undefined)
    if (ctx.signal.aborted || e instanceof BuildAbortedError || e instanceof ThawError) throw e
    return await stopCaching(ctx, `cannot store ${b.phase}: ${errorText(e)}`)
  } finally {
    run.since = Date.now()
  }
  const job: SnapshotJob = { store, boundary: b, pending, captured, parent, seconds, waited: (Date.now() - t0) / 1000 }
  // One at a time, in order: an entry is committed only after its parent. writeSnapshot handles its
  // failures; the catch is a net so that the chain never rejects.
  run.writing = run.writing
    .then(() => writeSnapshot(ctx, job))
    .catch(() => {
      run.broken = true
    })
}

/** Waits until every snapshot taken so far is committed (or given up); never rejects. */
export async function drainSnapshots(ctx: BuildContext): Promise<void> {
  await ctx.cache?.writing
}

/** A snapshot captured, to be written and committed. */
interface SnapshotJob {
  readonly store: StepStore
  readonly boundary: Boundary
  readonly pending: Pending
  readonly captured: Partial<Record<DriveName, CapturedDelta>>
  /** The snapshot its deltas are over. */
  readonly parent: CacheRun['parent']
  /** How long the steps since the previous boundary took. */
  readonly seconds: number
  /** How long the build waited for the capture. */
  readonly waited: number
}

async function writeSnapshot(ctx: BuildContext, job: SnapshotJob): Promise<void> {
  const run = ctx.cache!
  const { boundary: b, pending, captured, parent } = job
  const t0 = Date.now()
  try {
    // A snapshot before this one was not stored (this one would be over a parent not in the store),
    // or the build was aborted: nothing more is committed. Caching stopped by a later step does
    // not make this one wrong: it is committed.
    if (run.broken || ctx.signal.aborted) return await pending.abort()
    const hashes: Record<string, string> = {}
    const writes = await Promise.allSettled(
      b.drives.map(async (d) => {
        const backing =
          parent?.maps[d] !== undefined ? { file: `../${parent.key}/${d}.qcow2`, format: 'qcow2' as const } : undefined
        const r = await captured[d]!.write(join(pending.dir, `${d}.qcow2`), {
          ...(backing ? { backing } : {}),
          // Binaries and text deflate to about a third; the writer stops trying on data that does not shrink.
          compress: true,
          signal: ctx.signal,
        })
        hashes[`${d}.qcow2`] = r.sha256
      }),
    )
    await discardAll(captured) // before the commit reads the folder
    // Every delta has ended (none still writes into the folder) before the first failure is said.
    for (const w of writes) if (w.status === 'rejected') throw w.reason
    for (const d of b.drives) await writeFile(join(pending.dir, `${d}.map`), encodeMap(captured[d]!.map))
    const state: SnapshotState = { imageName: ctx.plan.imageName, hookFiles: ctx.plan.hooks.files.map((f) => f.path) }
    await writeFile(join(pending.dir, 'state.json'), JSON.stringify(state))
    const done = await pending.commit({
      step: b.phase,
      parent: parent?.key ?? null,
      elements: ctx.plan.resolution.elements.map((e) => e.name),
      inputs: { ...b.inputs },
      seconds: job.seconds,
      hashes,
    })
    if (!done.stored && !done.entry) throw new Error('its parent snapshot was evicted meanwhile')
    // Kept from eviction (by other builds' commits too) until this build ends: the next delta names it.
    ctx.cleanup.defer(`step cache use ${b.phase}`, await job.store.use([b.key]))
    // The entry of that key holds other blocks than the ones the next capture was diffed against.
    if (!done.stored) {
      run.broken = true
      return await stopCaching(
        ctx,
        `another snapshot of ${b.phase} is in the cache (another build stored it, or uses it)`,
      )
    }
    run.lastGood = b.phase
    ctx.emit({
      kind: 'cache-store',
      step: b.phase,
      key: b.key,
      bytes: done.meta.bytes,
      seconds: job.waited,
      writeSeconds: (Date.now() - t0) / 1000,
    })
  } catch (e) {
    run.broken = true
    await pending.abort().catch(() => undefined)
    if (!ctx.signal.aborted) await stopCaching(ctx, `cannot store ${b.phase}: ${errorText(e)}`)
  } finally {
    await discardAll(captured).catch(() => undefined)
  }
}

async function discardAll(captured: Partial<Record<DriveName, CapturedDelta>>): Promise<void> {
  await Promise.all(Object.values(captured).map((c) => c.discard()))
}

/** A file system left frozen would hang the next phase: the build stops instead. */
class ThawError extends VirtDibError {
  override name = 'ThawError'
}

/**
 * Runs `fn` while the guest's file systems are frozen (or, those that cannot be, such as vfat,
 * synced: the guest is idle between phases), and thaws them whatever happens.
 */
async function frozen(
  ctx: BuildContext,
  fn: () => Promise<void>,
): Promise<{ freeze: number; run: number; thaw: number }> {
  const since = (t: number) => (performance.now() - t) / 1000
  let t = performance.now()
  const { frozen: held, synced, failed } = frozenMounts(await ctx.g.shOutside(freezeScript(), { signal: ctx.signal }))
  // Returned from the try block and completed by the finally block (the same object).
  const times = { freeze: since(t), run: 0, thaw: 0 }
  t = performance.now()
  if (synced.length > 0) ctx.emit({ kind: 'debug', text: `step cache: synced, not frozen: ${synced.join(' ')}` })
  try {
    if (failed.length > 0) throw new Error(`cannot freeze or sync ${failed.join(' ')} in the appliance`)
    await fn()
    times.run = since(t)
    return times
  } finally {
    try {
      // Not cancellable: an abort still kills the appliance, which releases them anyway.
      t = performance.now()
      await ctx.g.shOutside(thawScript(held))
      times.thaw = since(t)
    } catch (e) {
      if (!ctx.signal.aborted) {
        // eslint-disable-next-line no-unsafe-finally -- the thaw's failure outranks the snapshot's
        throw new ThawError(`cannot thaw the image's file systems after a snapshot: ${errorText(e)}`, { cause: e })
      }
    }
  }
}
