// Batch layers (`base:` in a batch file): where a layer stops sharing its base's steps, and the
// keys of its steps — the base's up to there, its own chained from the base's after.
import { readdirSync } from 'node:fs'

import { PHASE_STEP_NAMES, rechainKeys, stepKeys, type StepKey, type StepKeyOptions } from '../cache/keys.js'
import { keyOptions, planBoundaries, type Boundary } from './cache-boundaries.js'
import type { BuildPlan } from './plan.js'
import { planSteps } from './steps.js'

/**
 * Element files read by phases whose scripts and inputs may all be the base's: a layer element
 * with one changes what that phase does. environment.d is sourced by every phase; the others are
 * read by other elements' extra-data.d scripts through the element list (IMAGE_ELEMENT).
 */
const READ_BY_ELEMENT_LIST: readonly { readonly file: RegExp; readonly phase: string }[] = [
  { file: /^environment\.d$/, phase: 'root.d' },
  { file: /^package-installs\.(yaml|json)$/, phase: 'extra-data.d' }, // package-installs-squash
  { file: /^pkg-map$/, phase: 'extra-data.d' }, // package-installs-squash maps names with it
  { file: /^svc-map$/, phase: 'extra-data.d' }, // svc-map merges them
  { file: /^source-repository-/, phase: 'extra-data.d' }, // source-repositories fetches them
]

/** Inputs that differ between a layer and its base whatever the layer adds: the element list. */
function sharedInputs(inputs: Readonly<Record<string, string>>, layerOnly: ReadonlySet<string>): string {
  const kept = Object.entries(inputs).filter(([name]) => {
    if (name === 'option:elements' || name === 'env:IMAGE_ELEMENT') return false
    return !(name.startsWith('element-files:') && layerOnly.has(name.slice('element-files:'.length)))
  })
  return JSON.stringify(kept.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/** The earliest phase (if any) that reads a layer element's files by the element list. */
function earliestReader(layer: BuildPlan, layerOnly: ReadonlySet<string>): number {
  let at = Infinity
  for (const el of layer.resolution.elements) {
    if (!layerOnly.has(el.name)) continue
    let names: string[]
    try {
      names = readdirSync(el.dir)
    } catch {
      continue // the key of its files says why
    }
    for (const f of names) {
      for (const r of READ_BY_ELEMENT_LIST) if (r.file.test(f)) at = Math.min(at, PHASE_STEP_NAMES.indexOf(r.phase))
    }
  }
  return at
}

/**
 * The first cached step of `layer` (planned with the base's file systems) whose inputs differ from
 * `base`'s, the element list aside, or undefined when no snapshot comes before it (nothing to share). A layer
 * equal to its base in every step (it adds elements without scripts or files that count) starts at
 * its last step: that one runs again.
 */
export async function layerStart(layer: BuildPlan, base: BuildPlan): Promise<string | undefined> {
  const own = stepKeys(layer, planSteps(layer), await keyOptions(layer))
  const theirs = stepKeys(base, planSteps(base), await keyOptions(base))
  const baseElements = new Set(base.resolution.elements.map((e) => e.name))
  const layerOnly = new Set(layer.resolution.elements.map((e) => e.name).filter((n) => !baseElements.has(n)))
  const reader = earliestReader(layer, layerOnly)
  let at = own.findIndex((k, i) => {
    const b = theirs[i]
    if (b === undefined || b.step !== k.step) return true
    const phase = PHASE_STEP_NAMES.indexOf(k.step)
    if (phase >= 0 && phase >= reader) return true
    return sharedInputs(k.inputs, layerOnly) !== sharedInputs(b.inputs, layerOnly)
  })
  if (at === -1) at = own.length - 1
  // Nothing stored before it (build-root is not a boundary): nothing to start from.
  return own.slice(0, at).some((k) => k.boundary) ? own[at]!.step : undefined
}

/** The keys of a plan's cached steps: a layer's are its base's before `from`, then its own chained on. */
export async function effectiveKeys(plan: BuildPlan, o?: StepKeyOptions): Promise<StepKey[]> {
  const own = stepKeys(plan, planSteps(plan), o ?? (await keyOptions(plan)))
  const layer = plan.layer
  if (layer?.from === undefined) return own
  const theirs = await effectiveKeys(layer.base)
  const at = own.findIndex((k) => k.step === layer.from)
  if (at <= 0 || theirs[at - 1]?.step !== own[at - 1]!.step) {
    throw new Error(`layer ${plan.name}: ${layer.from} does not follow its base's steps`) // a bug
  }
  return [...theirs.slice(0, at), ...rechainKeys(own.slice(at), theirs[at - 1]!.key)]
}

/** The step-cache boundaries of a plan, a layer's included (its base's first). */
export async function cacheBoundaries(plan: BuildPlan): Promise<Boundary[]> {
  const o = await keyOptions(plan)
  const table = planSteps(plan)
  const all = planBoundaries(plan, table, o, await effectiveKeys(plan, o))
  const layer = plan.layer
  if (layer?.from === undefined) return all
  const order = table.map((s) => s.name)
  const at = order.indexOf(layer.from)
  return all.map((b) => (order.indexOf(b.after) < at ? { ...b, base: layer.baseName } : b))
}

/** How many of a layer's boundaries are its base's (restored, never stored by the layer). */
export function basePrefixLength(boundaries: readonly Boundary[]): number {
  return boundaries.filter((b) => b.base !== undefined).length
}
