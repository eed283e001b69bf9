// The step cache as a build uses it (--cache): before the launch, the deepest run of phase
// snapshots the store holds for this plan's keys is found and its drives restored; the steps it
// covers are left out of the table; after every later phase a snapshot of the live drives is
// stored. The store (src/cache/store.ts) knows files, the keys (src/cache/keys.ts) the inputs,
// the deltas (src/cache/delta.ts) the disks; this file decides when and what.
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { CorruptMapError, decodeMap, encodeMap, materialize, snapshotDelta, type ClusterMap } from '../cache/delta.js'
import { DIB_BLOCK_DEVICE_SCRIPT } from '../blockdev/getval.js'
import { hashContents, hashTree, PHASE_STEP_NAMES, stepKeys, type StepKeyOptions } from '../cache/keys.js'
import { listPhaseScripts } from '../elements/hooks.js'
import { Guestfs } from '../guestfs/index.js'
import { applianceCacheKey } from '../host/appliance.js'
import { extraPackages, extraPackagesScript } from '../phases/extra-packages.js'
import { PHASE_BY_HOOK } from '../phases/registry.js'
import { formatControlFile, type ControlOptions } from '../phases/runner/control-file.js'
import { FAKE_AWK, FAKE_SUDO, RUNNER_SCRIPT } from '../phases/runner/runner-script.js'
import {
  EntryGoneError,
  firstDifference,
  openStore,
  STORE_VERSION,
  type Release,
  type Entry,
  type Pending,
  type StepStore,
} from '../cache/store.js'
import { BuildAbortedError, VirtDibError } from '../errors.js'
import type { EventInput } from '../events.js'
import { AUX_IMAGE_SIZE, TREE_DISK_SIZE, TREE_MKFS } from './appliance.js'
import type { BuildContext } from './context.js'
import type { StepInfo } from './pipeline.js'
import type { BuildPlan } from './plan.js'
import { freezeScript, frozenMounts, thawScript } from './snapshot-guest.js'

/** A live drive whose content a snapshot keeps. */
export type DriveName = 'tree' | 'disk' | 'aux'

/** A point of the table after which the build's state is stored. */
export interface Boundary {
  /** The table step it follows (the last step of its phase). */
  readonly after: string
  /** The phase it is stored as: a hook (`install.d`) or `block-device`. */
  readonly phase: string
  readonly key: string
  /** Hashes of what the key was made of, by input name (for the reason of a miss). */
  readonly inputs: Readonly<Record<string, string>>
  /** The drives holding the build then: the tree until the block-device step, the image's disk after. */
  readonly drives: readonly DriveName[]
}

/** What a snapshot keeps beside the drives: the pipeline state later steps need. */
export interface SnapshotState {
  /** The build's image name then: `$NAME.d` in the aux tree is renamed for a build of another name. */
  imageName: string
  /** The elements' files in the hooks tree then (`install.d/10-x`…): a resumed build replaces the later phases'. */
  hookFiles: string[]
}

/** The cache of one build: what was found, and what this build stores. */
export interface CacheRun {
  readonly store: StepStore
  readonly boundaries: readonly Boundary[]
  /** The deepest boundary restored, its entry and state. */
  readonly resume: { readonly boundary: Boundary; readonly entry: Entry; readonly state: SnapshotState } | undefined
  /** The snapshot the next one is a delta of: its key, and what each drive held. */
  parent: { key: string; maps: Partial<Record<DriveName, ClusterMap>> } | undefined
  /** The last phase stored or restored (a failed build's hint). */
  lastGood: string | undefined
  /** Set after a store failed: later phases are not stored (their deltas would have no parent). */
  off: boolean
  /** The right to store the next boundary, taken before its phase starts. */
  next: Pending | undefined
  /** When the steps of the next boundary started (ms): its entry says how long they took. */
  since: number
}

/** The raw file of each drive a snapshot may hold, and its virtual size. */
export interface LiveDrives {
  readonly files: Readonly<Record<DriveName, string>>
  readonly sizes: Readonly<Record<DriveName, number>>
}

/** The hook folders of the phases after `phase` (a boundary's), in run order. */
export function hooksAfter(phase: string): string[] {
  const at = PHASE_STEP_NAMES.indexOf(phase)
  return PHASE_STEP_NAMES.slice(at + 1).filter((p) => p.endsWith('.d'))
}

/** A control file of every feature, whose text stands for the format in the keys. */
const SAMPLE_CONTROL: ControlOptions = {
  hook: 'install.d',
  hooksDir: '/hooks',
  console: '/dev/console',
  cwd: '/',
  exclude: ['x'],
  trace: true,
  extraEnv: '/extra.env',
  vars: [{ name: 'V', value: "a 'b'", source: 'virt-dib' }],
  elementArray: '[e]=/e ',
  scriptsDir: '/scripts',
  where: 'chroot',
}

/** What the keys need besides the plan: the appliance, the lib folder, virt-dib's guest-side files. */
export async function keyOptions(plan: BuildPlan): Promise<StepKeyOptions> {
  // A handle that is never launched: only where libguestfs's appliance is (LIBGUESTFS_PATH…).
  const g = await Guestfs.create({ program: 'virt-dib' })
  let stockPath: string
  try {
    stockPath = await g.getPath()
  } finally {
    await g.close()
  }
  return {
    applianceKey: applianceCacheKey({
      stockPath,
      extraPackages: plan.appliance.packages,
      stock: plan.appliance.stock,
    }),
    libHash: hashTree(plan.libPath),
    guestFilesHash: hashContents({
      runner: RUNNER_SCRIPT,
      sudo: FAKE_SUDO,
      awk: FAKE_AWK,
      'dib-block-device': DIB_BLOCK_DEVICE_SCRIPT,
      // The template only: the packages are extra-packages' own input.
      'extra-packages': extraPackagesScript([]).content,
      // How the tree's drive is made.
      'tree-drive': `${TREE_DISK_SIZE} ${AUX_IMAGE_SIZE} ${TREE_MKFS}`,
      // What the runners are told and how: a change of the control file's format changes what scripts see.
      'control-file': formatControlFile(SAMPLE_CONTROL),
    }),
    phaseFacts: (hook) => PHASE_BY_HOOK.get(hook) ?? (hook === extraPackages.hook ? extraPackages : undefined),
  }
}

/**
 * The boundaries of `table` (the plan's steps without the cache): after every cached phase that
 * runs a script, and after the block-device step. A phase without scripts changes nothing a
 * snapshot would keep: its key still chains into the next one.
 */
export function planBoundaries(plan: BuildPlan, table: readonly StepInfo[], o: StepKeyOptions): Boundary[] {
  const names = table.map((s) => s.name)
  const layoutAt = names.indexOf('block-device')
  return stepKeys(plan, table, o)
    .filter((k) => k.boundary && runsScripts(plan, table, k.step))
    .map((k) => ({
      after: k.step,
      phase: phaseOfStep(table, k.step),
      key: k.key,
      inputs: k.inputs,
      drives:
        names.indexOf(k.step) >= layoutAt && layoutAt >= 0 ? (['disk', 'aux'] as const) : (['tree', 'aux'] as const),
    }))
}

/** The phase a step belongs to (extra-data-unmount is extra-data.d's), or the engine step's name. */
function phaseOfStep(table: readonly StepInfo[], name: string): string {
  const part = table.find((s) => s.name === name)!.part
  return part.kind === 'phase' ? part.hook : name
}

function runsScripts(plan: BuildPlan, table: readonly StepInfo[], name: string): boolean {
  const phase = phaseOfStep(table, name)
  if (phase === 'block-device' || phase === extraPackages.hook) return true
  return listPhaseScripts(plan.hooks, phase).scripts.length > 0
}

/**
 * Finds the deepest boundary whose snapshot (with its whole chain) is in the store and intact,
 * emitting a cache-hit for it and a cache-miss (with its reason) for the first boundary after,
 * and takes the right to store that one. If another build is storing it right now, waits for its
 * commit (then looks again: it is a hit) or its failure (then this build stores it).
 */
export async function openCacheRun(ctx: BuildContext, boundaries: readonly Boundary[]): Promise<CacheRun> {
  const settings = ctx.plan.cache!
  try {
    const store = await openStore(settings.dir, {
      maxSize: settings.maxSize,
      warn: (text) => ctx.emit({ kind: 'warning', text: `step cache: ${text}` }),
    })
    for (;;) {
      const found = await deepestHit(ctx, store, boundaries)
      if (found) ctx.cleanup.defer('step cache use', found.release)
      const next = boundaries[found ? boundaries.indexOf(found.boundary) + 1 : 0]
      let pending: Pending | undefined
      if (next) {
        const got = await store.begin(next.key, beginOptions(ctx, next))
        if (!('commit' in got)) {
          if (got.owner) ctx.progress(`Waiting for another build that is storing ${next.phase} in the step cache`)
          await got.wait(ctx.signal)
          continue // committed (a hit now), or failed (ours to build): look again
        }
        pending = got
        ctx.cleanup.defer(`step cache lock ${next.phase}`, () => pending!.abort())
      }
      return {
        store,
        boundaries,
        resume: found ? { boundary: found.boundary, entry: found.entry, state: found.state } : undefined,
        parent: found ? { key: found.entry.meta.key, maps: found.maps } : undefined,
        lastGood: found?.boundary.phase,
        off: false,
        next: pending,
        since: Date.now(),
      }
    }
  } catch (e) {
    if (ctx.signal.aborted || e instanceof BuildAbortedError) throw e
    // The cache is an optimisation: a folder it cannot use makes an uncached build, said once.
    ctx.emit({ kind: 'warning', text: `step cache: ${errorText(e)}; building without it` })
    const store = await openStore(join(ctx.workspace, 'no-cache'))
    return {
      store,
      boundaries,
      resume: undefined,
      parent: undefined,
      lastGood: undefined,
      off: true,
      next: undefined,
      since: Date.now(),
    }
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}

/** --rebuild-from: the boundaries of that phase and after it are not looked up. */
function isRebuilt(plan: BuildPlan, b: Boundary): boolean {
  if (plan.rebuildFrom === undefined) return false
  const at = PHASE_STEP_NAMES.indexOf(plan.rebuildFrom)
  return at >= 0 && PHASE_STEP_NAMES.indexOf(b.phase) >= at
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
      miss = { kind: 'cache-miss', step: b.phase, reason: await missReason(store, b, hits.length === 0, maxAge) }
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
      if (await intactChain(store, entry, checksums)) {
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

/** Whether `entry` and its ancestors are all there and (with `checksums`) pass them. */
async function intactChain(store: StepStore, entry: Entry, checksums: boolean): Promise<string[] | undefined> {
  const keys: string[] = []
  for (let e: Entry | undefined = entry; e;) {
    if (checksums && !(await store.verify(e))) return undefined
    keys.push(e.meta.key)
    const parent: string | null = e.meta.parent
    if (parent === null) return keys
    e = await store.lookup(parent)
    if (!e) return undefined
  }
  return undefined
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

async function readMaps(entry: Entry, drives: readonly DriveName[]): Promise<Partial<Record<DriveName, ClusterMap>>> {
  const maps: Partial<Record<DriveName, ClusterMap>> = {}
  for (const d of drives) maps[d] = decodeMap(await readFile(entry.path(`${d}.map`)))
  return maps
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
export async function forecastCache(plan: BuildPlan, table: readonly StepInfo[]): Promise<CacheForecast> {
  const settings = plan.cache!
  const boundaries = planBoundaries(plan, table, await keyOptions(plan))
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
function beginOptions(ctx: BuildContext, b: Boundary): { maxAgeMs?: number } {
  if (isRebuilt(ctx.plan, b)) return { maxAgeMs: 0 }
  const maxAge = ctx.plan.cache!.maxAgeMs
  return maxAge !== undefined ? { maxAgeMs: maxAge } : {}
}
