// A build's step cache (--cache): before the launch, the deepest run of snapshots the store holds
// for the plan's keys, checked and marked in use, and the right to store the next one; the same
// lookup for --dry-run without a build. The snapshots themselves are snapshot.ts's.
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

import { CorruptMapError, decodeMap, type ClusterMap } from '../cache/delta.js'
import {
  EntryGoneError,
  firstDifference,
  openStore,
  STORE_VERSION,
  type Entry,
  type Pending,
  type Release,
  type StepStore,
} from '../cache/store.js'
import { BuildAbortedError } from '../errors.js'
import type { EventInput } from '../events.js'
import { isRebuilt, keyOptions, planBoundaries, type Boundary, type DriveName } from './cache-boundaries.js'
import type { BuildContext } from './context.js'
import type { StepInfo } from './pipeline.js'
import type { BuildPlan } from './plan.js'

/** What a snapshot keeps beside the drives: the pipeline state later steps need. */
export interface SnapshotState {
  /** The build's image name then: `$NAME.d` in the aux tree is renamed for a build of another name. */
  imageName: string
  /** The elements' files in the hooks tree then (`install.d/10-x`…): a resumed build replaces the later phases'. */
  hookFiles: string[]
}

/** The cache of one build: what was found, and what this build stores. */
export interface CacheRun {
  /** None when the cache folder cannot be used (the run is off from the start). */
  readonly store: StepStore | undefined
  readonly boundaries: readonly Boundary[]
  /** The deepest boundary restored, its entry and state. */
  readonly resume: { readonly boundary: Boundary; readonly entry: Entry; readonly state: SnapshotState } | undefined
  /** The snapshot the next one is a delta of: its key, and what each drive held. */
  parent: { key: string; maps: Partial<Record<DriveName, ClusterMap>> } | undefined
  /** The last phase stored or restored (a failed build's hint). */
  lastGood: string | undefined
  /** Set once caching stops (a store failed, or a later step cannot be stored): later phases are not stored. */
  off: boolean
  /**
   * Set when a snapshot failed to be written or committed: the ones captured after it are over a
   * parent that is not in the store, and are dropped (those captured before it are committed).
   */
  broken: boolean
  /** The right to store the next boundary, taken before its phase starts. */
  next: Pending | undefined
  /** When the steps of the next boundary started (ms): its entry says how long they took. */
  since: number
  /** The snapshots being written and committed, in order (snapshot.ts); never rejects. */
  writing: Promise<void>
  /** A batch layer resumed from its base's snapshot: its whole hooks tree replaces the base's. */
  fromBase: boolean
}

/**
 * Finds the deepest boundary whose snapshot (with its whole chain) is in the store and intact,
 * emitting a cache-hit for it and a cache-miss (with its reason) for the first boundary after,
 * and takes the right to store that one. If another build is storing it right now, waits for its
 * commit (then looks again: it is a hit) or its failure (then this build stores it). Undefined
 * when the run would not reach `mustReach` boundaries restored (a layer's base prefix).
 */
export async function openCacheRun(
  ctx: BuildContext,
  boundaries: readonly Boundary[],
  o: { mustReach?: number } = {},
): Promise<CacheRun | undefined> {
  const settings = ctx.plan.cache!
  try {
    const store = await openStore(settings.dir, {
      maxSize: settings.maxSize,
      warn: (text) => ctx.emit({ kind: 'warning', text: `step cache: ${text}` }),
    })
    for (;;) {
      // Said once the lookup is final: after a wait for another build it runs again.
      const said: EventInput[] = []
      const found = await deepestHit({ plan: ctx.plan, emit: (e) => said.push(e) }, store, boundaries)
      const reached = found ? boundaries.indexOf(found.boundary) + 1 : 0
      if (reached < (o.mustReach ?? 0)) {
        // A layer whose base's snapshot is gone: it must not build the base's steps under their keys.
        await found?.release()
        return undefined
      }
      const next = boundaries[reached]
      let pending: Pending | undefined
      if (next) {
        const got = await store.begin(next.key, beginOptions(ctx, next)).catch(async (e: unknown) => {
          await found?.release() // the uncached build this turns into keeps no mark
          throw e
        })
        if (!('commit' in got)) {
          await found?.release()
          if (got.owner) ctx.progress(`Waiting for another build that is storing ${next.phase} in the step cache`)
          await got.wait(ctx.signal)
          continue // committed (a hit now), or failed (ours to build): look again
        }
        pending = got
        ctx.cleanup.defer(`step cache lock ${next.phase}`, () => pending!.abort())
      }
      if (found) ctx.cleanup.defer('step cache use', found.release)
      for (const e of said) ctx.emit(e)
      return {
        store,
        boundaries,
        resume: found ? { boundary: found.boundary, entry: found.entry, state: found.state } : undefined,
        parent: found ? { key: found.entry.meta.key, maps: found.maps } : undefined,
        lastGood: found?.boundary.phase,
        off: false,
        broken: false,
        next: pending,
        since: Date.now(),
        writing: Promise.resolve(),
        fromBase: (o.mustReach ?? 0) > 0,
      }
    }
  } catch (e) {
    if (ctx.signal.aborted || e instanceof BuildAbortedError) throw e
    // The cache is an optimisation: a folder it cannot use makes an uncached build, said once.
    ctx.emit({ kind: 'warning', text: `step cache: ${errorText(e)}; building without it` })
    return {
      store: undefined,
      boundaries,
      resume: undefined,
      parent: undefined,
      lastGood: undefined,
      off: true,
      broken: false,
      next: undefined,
      since: Date.now(),
      writing: Promise.resolve(),
      fromBase: false,
    }
  }
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

/** What a lookup needs of the build: its plan, where events go. */
type Lookup = Pick<BuildContext, 'plan' | 'emit'>

async function deepestHit(
  ctx: Lookup,
  store: StepStore,
  boundaries: readonly Boundary[],
  checksums = true,
): Promise<Found | undefined> {
  const maxAge = ctx.plan.cache!.maxAgeMs
  const hits: Entry[] = []
  let miss: EventInput | undefined
  for (const b of boundaries) {
    if (isRebuilt(ctx.plan, b)) {
      miss = { kind: 'cache-miss', step: b.phase, reason: `rebuilt as asked (--rebuild-from ${ctx.plan.rebuildFrom})` }
      break
    }
    const entry = await store.lookup(b.key, maxAge !== undefined ? { maxAgeMs: maxAge } : {})
    if (!entry) {
      const layer = b.base === undefined && hits.at(-1) !== undefined && boundaries[hits.length - 1]?.base
      const reason = layer
        ? `the first phase of this layer over ‘${layer}’`
        : await missReason(store, b, hits.length === 0, maxAge)
      miss = { kind: 'cache-miss', step: b.phase, reason }
      break
    }
    hits.push(entry)
  }
  const looked = hits.length
  try {
    return await deepestIntact(ctx, store, boundaries, hits, checksums)
  } finally {
    // deepestIntact pops the hits it drops: the first dropped one is what misses.
    if (hits.length < looked) {
      miss = {
        kind: 'cache-miss',
        step: boundaries[hits.length]!.phase,
        reason: 'its snapshot was damaged (removed; rebuilt now)',
      }
    }
    // After the hit's line: what is reused, then why the rest is not.
    if (miss) ctx.emit(miss)
  }
}

async function deepestIntact(
  ctx: Lookup,
  store: StepStore,
  boundaries: readonly Boundary[],
  hits: Entry[],
  checksums: boolean,
): Promise<Found | undefined> {
  // The deepest hit whose every file, and its ancestors', is intact (checksums: it is read anyway).
  // Marked in use before it is checked, so another build's eviction cannot take it meanwhile.
  while (hits.length > 0) {
    const entry = hits[hits.length - 1]!
    const boundary = boundaries[hits.length - 1]!
    let release: Release | undefined
    try {
      release = await store.use([entry.meta.key, ...entry.chain])
      // lookup found its ancestors. Of theirs, only the deltas of the drives restored are read.
      const restored = new Set(boundary.drives.map((d) => `${d}.qcow2`))
      if (!checksums || (await store.verify(entry, { chain: true, ancestorFiles: (f) => restored.has(f) }))) {
        const state = await readState(entry)
        const maps = await readMaps(entry, boundary.drives)
        ctx.emit({
          kind: 'cache-hit',
          steps: boundaries.slice(0, hits.length).map((b) => b.phase),
          key: entry.meta.key,
          ageSeconds: Math.max(0, (Date.now() - entry.meta.createdAt) / 1000),
        })
        return { boundary, entry, state, maps, release }
      }
    } catch (e) {
      // Gone or damaged meanwhile (evicted, a truncated map): a shallower hit, or none.
      if (!(e instanceof EntryGoneError || e instanceof CorruptMapError || isMissingFile(e))) throw e
    }
    await release?.()
    hits.pop()
  }
  return undefined
}

/** A hit, marked in use (`release` ends that), with what its snapshot kept beside the drives. */
interface Found {
  boundary: Boundary
  entry: Entry
  state: SnapshotState
  maps: Partial<Record<DriveName, ClusterMap>>
  release: Release
}

function isMissingFile(e: unknown): boolean {
  return (e as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
}

async function missReason(store: StepStore, b: Boundary, first: boolean, maxAge: number | undefined): Promise<string> {
  if (maxAge !== undefined && (await store.lookup(b.key))) return 'its snapshot is older than --cache-max-age'
  const near = await store.nearest(b.phase, b.inputs)
  if (!near) return first ? 'nothing cached for these elements yet' : 'not cached yet'
  const diff = firstDifference(b.inputs, near.inputs)
  return diff === undefined ? 'an earlier phase changed' : `${describeInput(diff)} changed`
}

/** An input's name as the user knows it. */
function describeInput(name: string): string {
  if (name.startsWith('env:')) return `the variable ${name.slice(4)}`
  if (name.startsWith('option:')) return `the option ${name.slice(7)}`
  if (name === 'scripts') return 'its scripts'
  if (name.startsWith('script:')) return `the script ${name.slice(7)}`
  if (name.startsWith('element-files:')) return `the files of the element ${name.slice(14)}`
  if (name.startsWith('disk:')) return `the disk's ${name.slice(5)}`
  if (name === 'lib') return "diskimage-builder's lib folder (-B)"
  if (name === 'guest-files') return "virt-dib's own guest-side files"
  if (name === 'appliance') return 'the appliance (host packages or kernel)'
  return name
}

async function readState(entry: Entry): Promise<SnapshotState> {
  return JSON.parse(await readFile(entry.path('state.json'), 'utf8')) as SnapshotState
}

export async function readMaps(
  entry: Entry,
  drives: readonly DriveName[],
): Promise<Partial<Record<DriveName, ClusterMap>>> {
  const maps: Partial<Record<DriveName, ClusterMap>> = {}
  for (const d of drives) maps[d] = decodeMap(await readFile(entry.path(`${d}.map`)))
  return maps
}

/** What --dry-run says of the cache: the boundaries, each cached or not, and what a build would reuse. */
export interface CacheForecast {
  readonly dir: string
  readonly boundaries: readonly { phase: string; key: string; cached: boolean }[]
  /** The boundary a build would resume after (entries' checksums are checked only when it runs). */
  readonly resume: Boundary | undefined
  readonly all: readonly Boundary[]
  readonly miss: { step: string; reason: string } | undefined
}

/** The cache lookup of a build, without a build: creates nothing (a missing folder: nothing cached). */
export async function forecastCache(
  plan: BuildPlan,
  table: readonly StepInfo[],
  given?: readonly Boundary[],
): Promise<CacheForecast> {
  const settings = plan.cache!
  const boundaries = given ?? planBoundaries(plan, table, await keyOptions(plan))
  const events: EventInput[] = []
  const found = existsSync(join(settings.dir, `v${STORE_VERSION}`))
    ? await deepestHit({ plan, emit: (e) => events.push(e) }, await openStore(settings.dir), boundaries, false)
    : undefined
  const missed = events.find((e) => e.kind === 'cache-miss')
  const upTo = found ? boundaries.indexOf(found.boundary) : -1
  return {
    dir: settings.dir,
    boundaries: boundaries.map((b, i) => ({ phase: b.phase, key: b.key, cached: i <= upTo })),
    resume: found?.boundary,
    all: boundaries,
    miss:
      missed?.kind === 'cache-miss'
        ? { step: missed.step, reason: missed.reason }
        : found || boundaries.length === 0
          ? undefined
          : { step: boundaries[0]!.phase, reason: 'nothing cached yet' },
  }
}

/** Stores nothing more in this build, saying why once. */
export async function stopCaching(ctx: BuildContext, why: string): Promise<void> {
  const run = ctx.cache!
  if (run.off) return
  run.off = true
  // A build waiting for the next phase must not wait for the end of this one.
  await run.next?.abort().catch(() => undefined)
  run.next = undefined
  ctx.emit({ kind: 'warning', text: `step cache: ${why}; the later phases are not cached` })
}

/** --cache-max-age; and a phase --rebuild-from rebuilds replaces its old entry (age 0: every one is too old). */
export function beginOptions(ctx: BuildContext, b: Boundary): { maxAgeMs?: number } {
  if (isRebuilt(ctx.plan, b)) return { maxAgeMs: 0 }
  const maxAge = ctx.plan.cache!.maxAgeMs
  return maxAge !== undefined ? { maxAgeMs: maxAge } : {}
}
