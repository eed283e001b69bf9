// Planning a whole batch before anything runs: every build's plan (layers over their base's), the
// step cache forced on, and every problem of every build reported at once.
import { planBuild as defaultPlanBuild } from '../api/plan.js'
import { planLayer as defaultPlanLayer } from '../api/plan-layer.js'
import type { BuildOptions } from '../api/options.js'
import type { BuildPlan } from '../engine/plan.js'
import { UsageError, VirtDibError } from '../errors.js'
import type { BuildManyOptions, ManyBuild } from './types.js'

/** One build of a batch with its plan (a layer's is planned over its base's). */
export interface PlannedBuild {
  name: string
  base?: string
  plan: BuildPlan
}

/** How builds are planned; tests give fakes. */
export interface BatchPlanners {
  planBuild?: (options: BuildOptions) => BuildPlan
  planLayer?: (options: BuildOptions, o: { base: BuildPlan; baseName: string }) => Promise<BuildPlan>
}

export interface PlanBatchOptions extends BatchPlanners {
  /** The batch's step cache: replaces each build's own (a build without one gets the default folder). */
  cache?: BuildManyOptions['cache']
}

/** A batch that cannot be planned: one line per problem, each naming its build. */
export class BatchPlanError extends VirtDibError {
  override name = 'BatchPlanError'
  readonly problems: readonly { build: string; error: VirtDibError }[]

  constructor(problems: readonly { build: string; error: VirtDibError }[]) {
    super(problems.map((p) => `build ‘${p.build}’: ${p.error.message}`).join('\n'), {
      // A hint only makes sense under a single line.
      ...(problems.length === 1 && problems[0]!.error.hint !== undefined ? { hint: problems[0]!.error.hint } : {}),
    })
    this.problems = problems
    const codes = new Set(problems.map((p) => p.error.exitCode))
    if (codes.size === 1) this.exitCode = [...codes][0]!
  }
}

/** Names unique, every base a build that comes earlier (the batch file's parser checks the same). */
function checkNames(builds: readonly ManyBuild[]): { build: string; error: VirtDibError }[] {
  const problems: { build: string; error: VirtDibError }[] = []
  const seen = new Set<string>()
  const all = new Set(builds.map((b) => b.name))
  for (const b of builds) {
    const bad = (text: string) => problems.push({ build: b.name, error: new UsageError(text) })
    if (b.name === '') bad('a build needs a name')
    else if (seen.has(b.name)) bad('another build has the same name')
    if (b.base !== undefined) {
      if (b.base === b.name) bad('it cannot be a layer over itself')
      else if (!all.has(b.base)) bad(`its base ‘${b.base}’ is not a build of the batch`)
      else if (!seen.has(b.base)) bad(`its base ‘${b.base}’ must come before it`)
    }
    seen.add(b.name)
  }
  return problems
}

/** The options a batch plans a build with: the step cache always on. */
function withCache(options: BuildOptions, cache: PlanBatchOptions['cache']): BuildOptions {
  const own = typeof options.cache === 'object' ? options.cache : {}
  return { ...options, cache: cache ?? own }
}

/**
 * Plans every build, bases before their layers, before anything runs. Throws one {@link BatchPlanError}
 * listing every build that cannot be planned (a layer over a base that cannot be is checked as a
 * flat build, so its own mistakes are listed too, not its base's again). Errors that are not
 * VirtDibErrors are bugs and are thrown as they are.
 */
export async function planBatch(builds: readonly ManyBuild[], o: PlanBatchOptions = {}): Promise<PlannedBuild[]> {
  const planBuild = o.planBuild ?? defaultPlanBuild
  const planLayer = o.planLayer ?? defaultPlanLayer
  const structural = checkNames(builds)
  if (structural.length > 0) throw new BatchPlanError(structural)

  const problems: { build: string; error: VirtDibError }[] = []
  const plans = new Map<string, BuildPlan>()
  const failed = new Map<string, VirtDibError>()
  const out: PlannedBuild[] = []
  for (const b of builds) {
    const options = withCache(b.options, o.cache)
    try {
      const basePlan = b.base === undefined ? undefined : plans.get(b.base)
      let plan: BuildPlan
      if (basePlan !== undefined) {
        plan = await planLayer(options, { base: basePlan, baseName: b.base! })
      } else {
        plan = planBuild(options)
        // Its base failed: planned flat only to find its own mistakes.
        if (b.base !== undefined) continue
      }
      plans.set(b.name, plan)
      out.push({ name: b.name, ...(b.base !== undefined ? { base: b.base } : {}), plan })
    } catch (e) {
      if (!(e instanceof VirtDibError)) throw e
      // A layer inherits its base's elements and options: its base's error is not said twice.
      const baseError = b.base === undefined ? undefined : failed.get(b.base)
      if (baseError === undefined || baseError.message !== e.message) problems.push({ build: b.name, error: e })
      failed.set(b.name, baseError?.message === e.message ? baseError : e)
    }
  }
  problems.push(...checkOutputs(out))
  if (problems.length > 0) throw new BatchPlanError(problems)
  return out
}

/** Two builds that would write the same output path (the batch file's parser checks it too). */
function checkOutputs(planned: readonly PlannedBuild[]): { build: string; error: VirtDibError }[] {
  const byPath = new Map<string, string>()
  const problems: { build: string; error: VirtDibError }[] = []
  for (const p of planned) {
    const other = byPath.get(p.plan.outputPath)
    if (other !== undefined) {
      problems.push({ build: p.name, error: new UsageError(`‘${other}’ writes ${p.plan.outputPath} too`) })
    } else {
      byPath.set(p.plan.outputPath, p.name)
    }
  }
  return problems
}
