// The library API: build(), planning, and the dry run.
export { build, buildPlanned } from './build.js'
export type { BuildResult } from '../engine/context.js'
export {
  DEFAULT_CACHE_MAX_SIZE,
  DEFAULT_FORMATS,
  DEFAULT_SIZE,
  defaultCacheDir,
  type BuildHooks,
  type BuildOptions,
  type OutputFormatName,
} from './options.js'
export { planBuild } from './plan.js'
export type { BuildPlan, PlanSeed } from '../engine/plan.js'
export { describePlan, describePlanWithCache, formatDryRun, type DryRunReport } from './dry-run.js'
export { stopBuildsNow, HURRY_CLEANUP_MS } from './interrupt.js'
export { buildMany, BatchPlanError, planBatch, type PlannedBuild, type RunPlan } from '../batch/run-many.js'
export { defaultConcurrency } from '../batch/concurrency.js'
export { forecastBatch, formatBatchForecast, type BatchForecast } from '../batch/forecast.js'
export type { BatchEvent, BuildManyOptions, BuildOutcome, ManyBuild } from '../batch/types.js'
export { BatchFileError, loadBatchFile, parseBatch, type BatchBuild, type BatchSpec } from '../batch/batch-file.js'
