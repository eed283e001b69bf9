// build(): plan the request, then run the plan's step table (src/engine/).
import type { BuildHooks, BuildResult } from '../engine/context.js'
import type { BuildPlan } from '../engine/plan.js'
import { runBuild } from '../engine/run.js'
import type { BuildOptions } from './options.js'
import { planBuild } from './plan.js'

export async function build(options: BuildOptions, hooks: BuildHooks = {}): Promise<BuildResult> {
  return runBuild(planBuild(options), hooks)
}

/** Runs an already checked plan (planBuild → buildPlanned lets callers inspect the plan first). */
export async function buildPlanned(plan: BuildPlan, hooks: BuildHooks = {}): Promise<BuildResult> {
  return runBuild(plan, hooks)
}
