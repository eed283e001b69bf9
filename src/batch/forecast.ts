// `virt-dib batch --dry-run`: for each build, its snapshots and what becomes of each phase — taken
// from its base (a layer), already in the step cache, shared with an earlier build of the batch
// (same key), or built — without launching anything.
import { describePlan } from '../api/dry-run.js'
import type { Boundary } from '../engine/cache-boundaries.js'
import { forecastCache } from '../engine/cache-run.js'
import { cacheBoundaries } from '../engine/layer.js'
import type { BuildPlan } from '../engine/plan.js'
import { planSteps } from '../engine/steps.js'
import type { PlannedBuild } from './plan-batch.js'

/** What becomes of one phase of a build. */
export type PhaseFate =
  { kind: 'base'; build: string } | { kind: 'cached' } | { kind: 'shared'; build: string } | { kind: 'built' }

export interface BuildForecast {
  name: string
  base?: string
  /** A layer's first own phase; undefined for a layer that shares nothing with its base (built flat). */
  layerFrom?: string
  elements: string[]
  outputs: string[]
  /** The step cache's folder (every build of a batch has it on). */
  cacheDir: string | undefined
  phases: { phase: string; key: string; fate: PhaseFate }[]
  /** Why the first phase missing from the store misses. */
  miss?: { step: string; reason: string }
}

export interface BatchForecast {
  builds: BuildForecast[]
  /** Snapshot phases in all, and how many of them run (the others are shared, cached or a base's). */
  phases: { total: number; built: number }
}

/** How the forecast looks at plans and the store; tests give fakes. */
export interface ForecastDeps {
  boundaries?: (plan: BuildPlan) => Promise<readonly Boundary[]>
  /** Per boundary, whether the store holds it (a prefix: the deepest hit and those before it). */
  cached?: (
    plan: BuildPlan,
    boundaries: readonly Boundary[],
  ) => Promise<{ cached: boolean[]; miss?: { step: string; reason: string } }>
}

async function storeForecast(plan: BuildPlan, boundaries: readonly Boundary[]) {
  const f = await forecastCache(plan, planSteps(plan), boundaries)
  return { cached: f.boundaries.map((b) => b.cached), ...(f.miss ? { miss: f.miss } : {}) }
}

/** The forecast of planned builds, in their order (bases before their layers). Looks, creates nothing. */
export async function forecastBatch(planned: readonly PlannedBuild[], deps: ForecastDeps = {}): Promise<BatchForecast> {
  const boundariesOf = deps.boundaries ?? cacheBoundaries
  const cachedOf = deps.cached ?? storeForecast
  /** The first build of the batch to have each key. */
  const firstWith = new Map<string, string>()
  const builds: BuildForecast[] = []
  let total = 0
  let built = 0
  for (const { name, base, plan } of planned) {
    const boundaries = plan.cache ? await boundariesOf(plan) : []
    const store = boundaries.length > 0 ? await cachedOf(plan, boundaries) : { cached: [] }
    const phases = boundaries.map((b, i) => {
      const earlier = firstWith.get(b.key)
      const fate: PhaseFate =
        b.base !== undefined
          ? { kind: 'base', build: b.base }
          : store.cached[i]
            ? { kind: 'cached' }
            : earlier !== undefined
              ? { kind: 'shared', build: earlier }
              : { kind: 'built' }
      if (earlier === undefined) firstWith.set(b.key, name)
      total++
      if (fate.kind === 'built') built++
      return { phase: b.phase, key: b.key, fate }
    })
    builds.push({
      name,
      ...(base !== undefined ? { base } : {}),
      ...(plan.layer?.from !== undefined ? { layerFrom: plan.layer.from } : {}),
      elements: [...plan.resolution.requested],
      outputs: describePlan(plan).outputs,
      cacheDir: plan.cache?.dir,
      phases,
      // The store's first miss, when this build is the one to run it (not when an earlier build of the batch does).
      ...(store.miss && phases.find((p) => p.phase === store.miss!.step)?.fate.kind === 'built'
        ? { miss: store.miss }
        : {}),
    })
  }
  return { builds, phases: { total, built } }
}

function describeFate(f: PhaseFate): string {
  switch (f.kind) {
    case 'base':
      return `from base ‘${f.build}’`
    case 'cached':
      return 'cached'
    case 'shared':
      return `shared with ‘${f.build}’`
    case 'built':
      return 'built'
  }
}

/** The text `virt-dib batch --dry-run` prints. */
export function formatBatchForecast(f: BatchForecast): string {
  const out: string[] = []
  const dirs = [...new Set(f.builds.map((b) => b.cacheDir).filter((d) => d !== undefined))]
  out.push(
    `Batch of ${f.builds.length} build${f.builds.length === 1 ? '' : 's'}${dirs.length === 1 ? ` (step cache: ${dirs[0]})` : ''}:`,
  )
  for (const b of f.builds) {
    const layer =
      b.base === undefined
        ? ''
        : b.layerFrom !== undefined
          ? `  (layer over ‘${b.base}’ from ${b.layerFrom} on)`
          : `  (layer over ‘${b.base}’, sharing none of its phases: built flat)`
    out.push('', `${b.name}${layer}`)
    out.push(`  elements: ${b.elements.join(' ')}`)
    out.push(`  outputs:  ${b.outputs.join(' ')}`)
    if (dirs.length > 1 && b.cacheDir !== undefined) out.push(`  step cache: ${b.cacheDir}`)
    if (b.phases.length === 0) out.push('  (no snapshots: the step cache is off)')
    for (const p of b.phases) out.push(`  ${p.phase.padEnd(16)} ${p.key.slice(0, 12)}  ${describeFate(p.fate)}`)
    if (b.miss) out.push(`  not in the cache: ${b.miss.step} (${b.miss.reason})`)
  }
  const { total, built } = f.phases
  out.push('', `Phases: ${built} of ${total} run; ${total - built} shared, cached or taken from a base`)
  return out.join('\n') + '\n'
}
