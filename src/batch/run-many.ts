// buildMany(): a batch's builds planned first, then run at most `concurrency` at once, each layer
// after its base, every event tagged with its build; one outcome per build, in the input order.
import type { BuildHooks, BuildResult } from '../engine/context.js'
import type { BuildPlan } from '../engine/plan.js'
import { runBuild } from '../engine/run.js'
import { BuildAbortedError, UsageError } from '../errors.js'
import { defaultConcurrency, type HostCapacity } from './concurrency.js'
import { planBatch, type BatchPlanners, type PlannedBuild } from './plan-batch.js'
import type { BatchEvent, BuildManyOptions, BuildOutcome, ManyBuild } from './types.js'

export { BatchPlanError, planBatch, type PlannedBuild } from './plan-batch.js'

/** Runs one plan (runBuild; tests give a fake). */
export type RunPlan = (plan: BuildPlan, hooks: BuildHooks) => Promise<BuildResult>

/** What buildMany can be given besides its options: tests replace the planning, the running and the host. */
export interface BuildManyDeps extends BatchPlanners {
  run?: RunPlan
  /** For the default concurrency. */
  host?: HostCapacity
}

/** Why builds never started are skipped. */
export const FAIL_FAST_REASON = 'stopped by --fail-fast'
export const STOPPED_REASON = 'the batch was stopped'

function abortError(signal: AbortSignal): BuildAbortedError {
  const reason: unknown = signal.reason
  return reason instanceof BuildAbortedError ? reason : new BuildAbortedError(undefined, { cause: reason })
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Plans every build ({@link planBatch}: nothing runs if one cannot be planned), then runs them.
 * A failed build does not stop the others unless `failFast`: then the running ones are aborted
 * (they end failed) and those not started are skipped. A layer runs once its base succeeded,
 * else it is skipped. `signal` aborts every running build, starts no more, waits for all to end
 * (their cleanup included) and rejects with a BuildAbortedError.
 */
export async function buildMany(
  builds: readonly ManyBuild[],
  o: BuildManyOptions & BuildManyDeps = {},
): Promise<BuildOutcome[]> {
  const t0 = Date.now()
  const elapsed = () => (Date.now() - t0) / 1000
  const emit = (e: BatchEvent) => {
    try {
      o.onEvent?.(e)
    } catch {
      // A failing listener must not break the batch.
    }
  }
  const { signal } = o
  if (signal?.aborted) throw abortError(signal)
  const planned = await planBatch(builds, o)
  if (signal?.aborted) throw abortError(signal)

  const limit =
    o.concurrency ??
    defaultConcurrency(
      planned.map((p) => p.plan),
      o.host,
    )
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new UsageError(`concurrency must be a whole number greater than zero, not ${limit}`)
  }
  return runPlanned(planned, { limit, run: o.run ?? runBuild, failFast: o.failFast ?? false, signal, emit, elapsed })
}

interface Scheduler {
  limit: number
  run: RunPlan
  failFast: boolean
  signal: AbortSignal | undefined
  emit: (e: BatchEvent) => void
  elapsed: () => number
}

function runPlanned(planned: readonly PlannedBuild[], s: Scheduler): Promise<BuildOutcome[]> {
  const outcomes: (BuildOutcome | undefined)[] = planned.map(() => undefined)
  const indexOf = new Map(planned.map((p, i) => [p.name, i]))
  const running = new Map<number, AbortController>()
  /** Set once no more builds start: why the others are skipped. */
  let stopped: string | undefined

  return new Promise((resolve, reject) => {
    const finish = (i: number, outcome: BuildOutcome) => {
      outcomes[i] = outcome
      s.emit({
        kind: 'build-end',
        build: outcome.name,
        elapsed: s.elapsed(),
        status: outcome.status,
        seconds: outcome.status === 'skipped' ? 0 : outcome.seconds,
        ...(outcome.status === 'failed' ? { reason: messageOf(outcome.error) } : {}),
        ...(outcome.status === 'skipped' ? { reason: outcome.reason } : {}),
      })
    }

    const stop = (reason: string, abortWith: unknown) => {
      if (stopped !== undefined) return
      stopped = reason
      for (const c of running.values()) c.abort(abortWith)
    }

    const onAbort = () => stop(STOPPED_REASON, s.signal!.reason)
    s.signal?.addEventListener('abort', onAbort, { once: true })

    const start = (i: number) => {
      const { name, plan } = planned[i]!
      const controller = new AbortController()
      running.set(i, controller)
      const reused: string[] = []
      const begun = Date.now()
      const seconds = () => (Date.now() - begun) / 1000
      s.emit({ kind: 'build-start', build: name, elapsed: s.elapsed() })
      const hooks: BuildHooks = {
        signal: controller.signal,
        onEvent: (e) => {
          if (e.kind === 'cache-hit') for (const step of e.steps) if (!reused.includes(step)) reused.push(step)
          s.emit({ ...e, build: name })
        },
      }
      // A run that throws at once is a failure like any other.
      Promise.resolve()
        .then(() => s.run(plan, hooks))
        .then(
          (result) => finish(i, { name, status: 'ok', result, seconds: seconds(), reused }),
          (error: unknown) => {
            finish(i, { name, status: 'failed', error, seconds: seconds(), reused })
            if (s.failFast && !s.signal?.aborted) {
              stop(FAIL_FAST_REASON, new BuildAbortedError(`${FAIL_FAST_REASON}: ‘${name}’ failed`))
            }
          },
        )
        .finally(() => {
          running.delete(i)
          step()
        })
        .catch(reject) // a bug in the scheduler itself
    }

    /** Starts what can start, skips what never will, and settles once every build has an outcome. */
    const step = () => {
      for (let i = 0; i < planned.length; i++) {
        if (outcomes[i] !== undefined || running.has(i)) continue
        if (stopped !== undefined) {
          finish(i, { name: planned[i]!.name, status: 'skipped', reason: stopped })
          continue
        }
        const baseName = planned[i]!.base
        if (baseName !== undefined) {
          const base = outcomes[indexOf.get(baseName)!]
          if (base === undefined) continue // still to run, or running
          if (base.status !== 'ok') {
            const how = base.status === 'failed' ? 'failed' : 'was skipped'
            finish(i, { name: planned[i]!.name, status: 'skipped', reason: `its base ‘${baseName}’ ${how}` })
            continue
          }
        }
        if (running.size < s.limit) start(i)
      }
      if (running.size > 0 || outcomes.some((x) => x === undefined)) return
      s.signal?.removeEventListener('abort', onAbort)
      if (s.signal?.aborted) reject(abortError(s.signal))
      else resolve(outcomes as BuildOutcome[])
    }

    step()
  })
}
