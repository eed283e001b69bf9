// Runs a plan: opens the build's context, runs its step table, commits the outputs all or
// nothing, and always cleans up. Failures are explained here (an abort, a full host disk, a
// killed appliance), so every caller gets the same errors.
import { BuildAbortedError, VirtDibError } from '../errors.js'
import { GuestfsError, AbortError as GuestfsAbortError } from '../guestfs/index.js'
import { BuildContext, type BuildHooks, type BuildResult } from './context.js'
import { collectResult } from './export.js'
import { runPipeline } from './pipeline.js'
import type { BuildPlan } from './plan.js'
import { keyOptions, planBoundaries } from './cache-boundaries.js'
import { openCacheRun } from './cache-run.js'
import { basePrefixLength, cacheBoundaries } from './layer.js'
import { drainSnapshots } from './snapshot.js'
import { planSteps, type BuildStep } from './steps.js'

export async function runBuild(plan: BuildPlan, hooks: BuildHooks = {}): Promise<BuildResult> {
  const ctx = await BuildContext.open(plan, hooks)
  let ok = false
  try {
    announce(ctx)
    const state = await runPipeline(ctx, await stepTable(ctx), ctx.planReads)
    // The last snapshots were written beside the outputs: the build ends with them committed.
    await drainSnapshots(ctx)
    ctx.checkAborted()
    await ctx.commitOutputs()
    ok = true
    const result = collectResult(ctx, state.extraDataDir)
    for (const o of result.outputs) ctx.emit({ kind: 'output', ...o })
    ctx.progress('Done')
    return result
  } catch (e) {
    // A failed build keeps what it snapshotted before: its error says where a re-run resumes.
    await drainSnapshots(ctx)
    throw explain(ctx, e)
  } finally {
    if (!ok && plan.keepPartialOutputs) {
      const kept = ctx.staged.map((s) => s.temp)
      if (kept.length > 0) ctx.emit({ kind: 'info', text: `partial outputs kept: ${kept.join(' ')}` })
    }
    const failures = await ctx.cleanup.run()
    for (const f of failures) ctx.emit({ kind: 'warning', text: `cleanup of ${f.label} failed: ${String(f.error)}` })
    reportUndeclaredReads(ctx)
  }
}

/** The plan's steps; with the step cache on, less what it restores and with its snapshots. */
async function stepTable(ctx: BuildContext): Promise<BuildStep[]> {
  const { plan } = ctx
  const table = planSteps(plan)
  if (!plan.cache) return table
  let boundaries = await cacheBoundaries(plan)
  const prefix = basePrefixLength(boundaries)
  let run = await openCacheRun(ctx, boundaries, { mustReach: prefix })
  if (run === undefined) {
    const layer = plan.layer!
    ctx.emit({
      kind: 'warning',
      text: `the step cache holds no snapshot of ‘${layer.baseName}’ before ${layer.from}: built with every step, as a flat build`,
    })
    boundaries = planBoundaries(plan, table, await keyOptions(plan))
    run = (await openCacheRun(ctx, boundaries))!
  } else if (prefix > 0) {
    ctx.emit({ kind: 'info', text: `Layer over ‘${plan.layer!.baseName}’: its steps run from ${plan.layer!.from} on` })
  }
  ctx.cache = run
  return planSteps(plan, { boundaries, resume: run.resume?.boundary })
}

function announce(ctx: BuildContext): void {
  const { plan } = ctx
  ctx.emit({ kind: 'info', text: `Elements: ${plan.resolution.requested.join(' ')}` })
  ctx.emit({ kind: 'info', text: `Expanded elements: ${plan.resolution.elements.map((e) => e.name).join(' ')}` })
  const carried = plan.envInputs.envvars.map((e) => e.name)
  ctx.emit({ kind: 'info', text: `Carried environment variables: ${[...new Set(carried)].join(' ')}` })
  for (const w of plan.warnings) ctx.emit({ kind: 'warning', text: w })
}

/**
 * A step that read a plan field it does not declare has incomplete inputs (a bug the step cache
 * would turn into stale images): said as a debug event, which the tests check never comes.
 */
function reportUndeclaredReads(ctx: BuildContext): void {
  for (const [step, fields] of Object.entries(ctx.planReads.undeclared())) {
    ctx.emit({ kind: 'debug', text: `internal: step ${step} read undeclared plan fields: ${fields.join(' ')}` })
  }
}

/**
 * Aborts become BuildAbortedError; an appliance killed by us is not reported as a crash. With the
 * step cache, a failure also says where a re-run would resume.
 */
function explain(ctx: BuildContext, e: unknown): unknown {
  const err = explainFailure(ctx, e)
  const resumable = ctx.cache?.lastGood
  if (resumable !== undefined && err instanceof VirtDibError && !(err instanceof BuildAbortedError)) {
    const resume = `a re-run with the same cache options resumes after ${resumable}`
    err.hint = err.hint === undefined ? resume : `${err.hint}; ${resume}`
  }
  return err
}

function explainFailure(ctx: BuildContext, e: unknown): unknown {
  if (ctx.signal.aborted) {
    const reason: unknown = ctx.signal.reason
    if (reason instanceof BuildAbortedError) return reason
    return new BuildAbortedError(undefined, { cause: reason ?? e })
  }
  if (ctx.hostFull !== undefined) {
    return new VirtDibError(`out of space on the host: the file system of ${ctx.hostFull} is full`, {
      cause: e,
      hint: 'free some space there, or build elsewhere (TMPDIR, --name)',
    })
  }
  if (e instanceof GuestfsAbortError) return new BuildAbortedError(undefined, { cause: e })
  if (e instanceof GuestfsError && e.applianceDied) {
    // libguestfs explains at length how to debug it; the first line says what happened.
    return new VirtDibError(`the appliance died: ${e.message.trim().split('\n')[0]!.replace(/\.$/, '')}`, {
      cause: e,
      hint: 'was qemu killed or out of memory? try -m',
    })
  }
  return e
}
