// The step cache's keys: a hash chain over the cached steps of a plan (osbuild's stage ids), each
// link hashing the previous key, the step's name and the hashes of everything the step can see
// that the user controls; content only, never mtimes. Also the tree hash of the lib and element
// folders, and the phase names --rebuild-from and --break accept.
import {
  closeSync,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  realpathSync,
  statSync,
  type Stats,
} from 'node:fs'
import { join } from 'node:path'
import { createHash, type Hash } from 'node:crypto'

import { phaseEnvironment, type HookName, type PhaseFacts } from '../elements/environment.js'
import { listPhaseScripts, type HooksPlan } from '../elements/hooks.js'
import type { BuildPlan } from '../engine/plan.js'
import type { StepPart } from '../engine/pipeline.js'
import { VirtDibError } from '../errors.js'
import { envKeyInputs, sha256 } from './env-keys.js'

/** diskimage-builder's hook directories, in the order virt-dib runs them. */
export const PHASE_HOOKS = [
  'root.d',
  'extra-data.d',
  'pre-install.d',
  'install.d',
  'post-install.d',
  'post-root.d',
  'block-device.d',
  'pre-finalise.d',
  'finalise.d',
  'cleanup.d',
] as const satisfies readonly HookName[]

const HOOK_SET: ReadonlySet<string> = new Set(PHASE_HOOKS)

export interface CachedStep {
  /** A snapshot may be taken after it (see the table's comments for why some may not). */
  readonly boundary: boolean
  /** Its inputs include the disk's (layout, size, …), and so do every later step's. */
  readonly disk?: true
}

/**
 * The steps the cache keys, by step name (src/engine/steps.ts): the phases root.d … cleanup.d and
 * the engine steps between them that change the tree or the state beside it. Every other step
 * (prepare-aux, the appliance, the launch, the outputs) runs on every build. A step that is not a
 * boundary is re-run after the nearest earlier boundary's snapshot is restored.
 */
export const CACHED_STEPS: Readonly<Record<string, CachedStep>> = Object.freeze({
  // An empty file system (or, built in place, the empty layout): made faster than restored.
  'build-root': { boundary: false },
  'root.d': { boundary: true },
  // One file on the aux drive, written in milliseconds after root.d's snapshot is restored.
  'install-type': { boundary: false },
  // When extra-data-unmount follows, the FUSE view still holds the image: the snapshot comes after it.
  'extra-data.d': { boundary: true },
  'extra-data-unmount': { boundary: true },
  'pre-install.d': { boundary: true },
  'extra-packages': { boundary: true },
  'install.d': { boundary: true },
  'post-install.d': { boundary: true },
  'post-root.d': { boundary: true },
  // Gives the step after it a device name (state outside the drives) and rarely touches the tree:
  // the block-device step right after it is the boundary.
  'block-device.d': { boundary: false, disk: true },
  // The layout made and the tree on it: the output disk exists from here on.
  'block-device': { boundary: true, disk: true },
  'pre-finalise.d': { boundary: true },
  'finalise.d': { boundary: true },
  'cleanup.d': { boundary: true },
})

/**
 * A phase name as --rebuild-from, a batch layer's `from:` and --break take it, as the step name:
 * a hook with or without `.d` (`install`, `install.d` → `install.d`), `extra-packages`, and
 * `block-device` (the engine step that makes the layout; `block-device.d` is the hook). Unknown → undefined.
 */
export function normalizePhaseName(s: string): string | undefined {
  if (s === 'extra-packages' || s === 'block-device') return s
  if (HOOK_SET.has(s)) return s
  return HOOK_SET.has(`${s}.d`) ? `${s}.d` : undefined
}

/** What normalizePhaseName returns, in run order (for a hint listing the accepted names). */
export const PHASE_STEP_NAMES: readonly string[] = [
  'root.d',
  'extra-data.d',
  'pre-install.d',
  'extra-packages',
  'install.d',
  'post-install.d',
  'post-root.d',
  'block-device.d',
  'block-device',
  'pre-finalise.d',
  'finalise.d',
  'cleanup.d',
]

/** JSON with object keys sorted (Maps as sorted [key, value] pairs, Sets as arrays): equal values, equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(canonical(value))
}

function canonical(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map((v) => (v === undefined ? null : canonical(v)))
  if (value instanceof Map) {
    return [...value.entries()].map(([k, v]) => [canonical(k), canonical(v)]).sort(byJson)
  }
  if (value instanceof Set) return [...value].map(canonical).sort(byJson)
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[k]
    if (v !== undefined && typeof v !== 'function') out[k] = canonical(v)
  }
  return out
}

function byJson(a: unknown, b: unknown): number {
  const x = JSON.stringify(a)
  const y = JSON.stringify(b)
  return x < y ? -1 : x > y ? 1 : 0
}

const hashJson = (value: unknown) => sha256(canonicalJson(value))

/**
 * Content hashes already computed in this process, by the file's identity and change time: a batch
 * or a worker plans many builds over the same elements, and a 570 MB data element would otherwise
 * be read again for every key (seconds of a blocked event loop each time). ctime cannot be set
 * back by a user, so an edited file is always read again.
 */
const known = new Map<string, string>()
const KNOWN_MAX = 100_000

/** sha256 of a file's content, read in chunks (static/ may hold large files). */
export function hashFile(path: string): string {
  const fd = openSync(path, 'r')
  let id: string | undefined
  try {
    const st = fstatSync(fd, { bigint: true })
    id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`
    const hit = known.get(id)
    if (hit !== undefined) return hit
  } catch {
    // no identity: read it
  }
  const h = createHash('sha256')
  try {
    const buf = Buffer.allocUnsafe(1 << 20)
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      h.update(buf.subarray(0, n))
    }
  } finally {
    closeSync(fd)
  }
  const hex = h.digest('hex')
  if (id !== undefined) {
    if (known.size >= KNOWN_MAX) known.clear()
    known.set(id, hex)
  }
  return hex
}

function cannotRead(path: string, e: unknown): VirtDibError {
  return new VirtDibError(
    `cannot read ‘${path}’ to compute the cache key: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    { cause: e },
  )
}

export type TreeEntryKind = 'file' | 'dir' | 'symlink' | 'other'

/**
 * sha256 of a folder: every entry's path (sorted), type, mode and content; symbolic links by target
 * and, as copies with dereference see them, by what they point at (a loop back into the walk is
 * recorded as such, not followed). Not mtimes, owners or inode numbers. `skip` leaves out entries
 * (relative '/'-separated paths; `kind` as lstat sees them).
 */
export function hashTree(dir: string, opts: { skip?: (rel: string, kind: TreeEntryKind) => boolean } = {}): string {
  const h = createHash('sha256')
  let root: string
  try {
    root = realpathSync(dir)
  } catch (e) {
    throw cannotRead(dir, e)
  }
  walk(h, dir, '', [root], opts.skip)
  return h.digest('hex')
}

function walk(h: Hash, dir: string, rel: string, walking: readonly string[], skip: HashTreeSkip): void {
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch (e) {
    throw cannotRead(dir, e)
  }
  for (const name of names.sort()) {
    const path = join(dir, name)
    const r = rel === '' ? name : `${rel}/${name}`
    let st: Stats = lstatOr(path)
    let link: string | undefined
    if (st.isSymbolicLink()) {
      link = readlinkSync(path)
      if (skip?.(r, 'symlink')) continue
      try {
        st = statSync(path)
      } catch {
        h.update(`${r}\0dangling\0${link}\n`)
        continue
      }
    } else if (skip?.(r, st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other')) continue
    const head = `${r}\0${(st.mode & 0o7777).toString(8)}\0${link ?? ''}`
    if (st.isDirectory()) {
      const real = realpathSync(path)
      // A link back to a folder being walked, or to one holding it (`-> /`), would never end.
      if (walking.some((w) => w === real || w.startsWith(real === '/' ? '/' : `${real}/`))) {
        h.update(`${head}\0loop\n`)
        continue
      }
      h.update(`${head}\0dir\n`)
      walk(h, path, r, [...walking, real], skip)
    } else if (st.isFile()) {
      let content: string
      try {
        content = hashFile(path)
      } catch (e) {
        throw cannotRead(path, e)
      }
      h.update(`${head}\0file\0${content}\n`)
    } else {
      // A device node or a FIFO: never opened (a FIFO would block).
      h.update(`${head}\0other\0${st.mode.toString(8)}\0${st.rdev}\n`)
    }
  }
}

type HashTreeSkip = ((rel: string, kind: TreeEntryKind) => boolean) | undefined

function lstatOr(path: string): Stats {
  try {
    return lstatSync(path)
  } catch (e) {
    throw cannotRead(path, e)
  }
}

/** sha256 of named contents (virt-dib's guest-side files: runner, fake sudo, …) for `guestFilesHash`. */
export function hashContents(files: Readonly<Record<string, string | Buffer>>): string {
  return hashJson(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, sha256(v)])))
}

/** Python's byte code beside an element's modules: written by running them, not by the user. */
function isBytecode(rel: string): boolean {
  return rel.split('/').includes('__pycache__') || rel.endsWith('.pyc')
}

/** An element file that is one of a phase's scripts (or a skipped file in a phase folder): keyed per phase. */
function isPhaseFile(rel: string, kind: TreeEntryKind): boolean {
  const slash = rel.indexOf('/')
  return slash > 0 && rel.indexOf('/', slash + 1) === -1 && HOOK_SET.has(rel.slice(0, slash)) && kind !== 'dir'
}

/** The files of one phase folder of the merged hooks tree, in run order, then the skipped ones. */
function phaseScripts(hooks: HooksPlan, hook: string, fileHash: (p: string) => string): Record<string, string> {
  const { scripts, skipped } = listPhaseScripts(hooks, hook)
  const byName = new Map(hooks.files.filter((f) => f.path.startsWith(`${hook}/`)).map((f) => [f.path, f]))
  const describe = (name: string) => {
    const f = byName.get(`${hook}/${name}`)
    if (f === undefined) return { name }
    if (f.dangling) return { name, element: f.element, link: readlinkSync(f.source) }
    const st = statSync(f.source)
    return {
      name,
      element: f.element,
      mode: (st.mode & 0o7777).toString(8),
      sha256: st.isFile() ? fileHash(f.source) : undefined,
    }
  }
  const ran = scripts.map((s) => describe(s.name))
  const rest = [...skipped]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((s) => ({ ...describe(s.name), skipped: s.reason }))
  const out: Record<string, string> = { scripts: hashJson({ ran, skipped: rest }) }
  for (const d of ran) out[`script:${d.name}`] = hashJson(d)
  return out
}

/** What stepKeys needs besides the plan. */
export interface StepKeyOptions {
  /** The appliance's key (it includes the host package versions it was made from). */
  readonly applianceKey: string
  /** hashTree(plan.libPath). */
  readonly libHash: string
  /** hashContents() of virt-dib's guest-side files: the runner, fake sudo/awk, dib-block-device, … */
  readonly guestFilesHash: string
  /**
   * The facts of a phase by its hook (`extra-packages` too): src/phases/ states them and src/cache/
   * may not import it (the engine passes `(h) => PHASE_BY_HOOK.get(h) ?? (h === 'extra-packages' ? extraPackages : undefined)`).
   */
  readonly phaseFacts: (hook: string) => PhaseFacts | undefined
}

export interface StepKey {
  readonly step: string
  /** sha256 hex of the previous key, the step name and `inputs`. */
  readonly key: string
  /** The previous cached step's key ('' for the first). */
  readonly parent: string
  /** A snapshot may be taken after this step (the last step of its phase and a boundary in CACHED_STEPS). */
  readonly boundary: boolean
  /**
   * Input name → sha256 hex (never a value): `scripts`, `script:NAME`, `element-files:ELEMENT`,
   * `env:NAME`, `option:NAME`, `disk:NAME`, `lib`, `guest-files`, `appliance`.
   */
  readonly inputs: Readonly<Record<string, string>>
}

/** The chain's seed: a new store format or key scheme changes every key. */
const KEY_SCHEME = 'virt-dib step key v1'

/**
 * The keys of the cached steps of `steps` (the plan's table, planSteps(plan); other steps are left
 * out), in order. key(step) = sha256(canonical JSON of [scheme, previous key, step name, inputs]).
 * Inputs of every cached step: `lib`, `guest-files`, `appliance`, `element-files:E` per element
 * (every file but the phase scripts), `option:*` (arch, fs-type, network, appliance-packages,
 * stock-appliance, elements, exclude-scripts, build-in-place). A phase adds `scripts` (its folder in
 * run order: name, mode, content; skipped files too), `script:NAME`, its counted `env:NAME` and
 * `option:debug`; install-type adds `option:install-type`, extra-packages `option:extra-packages`.
 * From block-device.d on (from the first step when the tree is built in place), `disk:*`: layout,
 * override-layout, config, size, mkfs, root-label, root-fs-uuid. Throws (a bug) on a variable the
 * table of env-keys.ts does not classify.
 */
export function stepKeys(
  plan: BuildPlan,
  steps: readonly { readonly name: string; readonly part: StepPart }[],
  o: StepKeyOptions,
): StepKey[] {
  const fileHashes = new Map<string, string>()
  const fileHash = (p: string) => {
    let h = fileHashes.get(p)
    if (h === undefined) {
      try {
        h = hashFile(p)
      } catch (e) {
        throw cannotRead(p, e)
      }
      fileHashes.set(p, h)
    }
    return h
  }
  const common: Record<string, string> = {
    lib: o.libHash,
    'guest-files': o.guestFilesHash,
    appliance: sha256(o.applianceKey),
    'option:arch': sha256(plan.arch),
    'option:fs-type': sha256(plan.fsType),
    'option:network': sha256(String(plan.appliance.network)),
    'option:appliance-packages': hashJson(plan.appliance.packages),
    'option:stock-appliance': sha256(String(plan.appliance.stock)),
    'option:elements': hashJson(plan.resolution.elements.map((e) => e.name)),
    'option:exclude-scripts': hashJson(plan.excludeScripts),
    'option:build-in-place': sha256(String(plan.buildInPlace)),
  }
  for (const el of plan.resolution.elements) {
    common[`element-files:${el.name}`] = hashTree(el.dir, {
      skip: (rel, kind) => isPhaseFile(rel, kind) || isBytecode(rel),
    })
  }
  const diskInputs: Record<string, string> = {
    'disk:layout': hashJson(plan.layout),
    'disk:override-layout': hashJson(plan.overrideLayout),
    'disk:config': hashJson(plan.layoutSource),
    'disk:size': sha256(String(plan.size)),
    'disk:mkfs': hashJson(plan.mkfs),
    'disk:root-label': sha256(plan.rootLabel),
    'disk:root-fs-uuid': sha256(plan.rootFsUuid),
  }

  const cached = steps.filter((s) => CACHED_STEPS[s.name] !== undefined)
  const out: StepKey[] = []
  let parent = ''
  let disk = plan.buildInPlace
  cached.forEach((s, i) => {
    const row = CACHED_STEPS[s.name]!
    if (row.disk) disk = true
    const inputs: Record<string, string> = { ...common, ...(disk ? diskInputs : {}) }
    const hook = s.part.kind === 'phase' && (s.name === s.part.hook || s.name === 'extra-packages') ? s.name : undefined
    if (hook !== undefined) {
      if (HOOK_SET.has(hook)) Object.assign(inputs, phaseScripts(plan.hooks, hook, fileHash))
      const facts = o.phaseFacts(hook)
      if (facts === undefined) throw new Error(`cache key: no phase facts for ${hook}`)
      const env = envKeyInputs(phaseEnvironment(plan.envInputs, facts).vars, facts.where, disk, plan.env)
      if (env.unclassified.length > 0) {
        throw new Error(`cache key: ${env.unclassified.join(', ')} not classified in src/cache/env-keys.ts`)
      }
      Object.assign(inputs, env.inputs, { 'option:debug': sha256(String(plan.debug)) })
    }
    if (s.name === 'install-type') inputs['option:install-type'] = sha256(plan.installType)
    if (s.name === 'extra-packages') inputs['option:extra-packages'] = hashJson(plan.extraPackages)
    const key = sha256(canonicalJson([KEY_SCHEME, parent, s.name, inputs]))
    // The last step of a phase (extra-data.d, then its unmount) carries the snapshot.
    const next = cached[i + 1]
    const samePhase =
      next !== undefined && s.part.kind === 'phase' && next.part.kind === 'phase' && next.part.hook === s.part.hook
    out.push({ step: s.name, key, parent, boundary: row.boundary && !samePhase, inputs })
    parent = key
  })
  return out
}

/**
 * The input names whose hashes differ between two steps' inputs (present in one only, too), in
 * a stable order: what a cache miss names as its reason.
 */
export function diffInputs(want: Readonly<Record<string, string>>, have: Readonly<Record<string, string>>): string[] {
  const names = new Set([...Object.keys(want), ...Object.keys(have)])
  return [...names].filter((n) => want[n] !== have[n]).sort()
}

/**
 * `keys` chained anew from `parent` (their inputs kept): a batch layer's own steps, which follow
 * its base's key of the step before them instead of its own.
 */
export function rechainKeys(keys: readonly StepKey[], parent: string): StepKey[] {
  return keys.map((k) => {
    const key = sha256(canonicalJson([KEY_SCHEME, parent, k.step, k.inputs]))
    const out = { ...k, key, parent }
    parent = key
    return out
  })
}
