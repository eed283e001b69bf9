// The build as a table of steps, and the one loop that runs any table: abort checks, `step`
// timing events, the typed state passed from step to step, steps started early to run beside
// the steps that follow, and the check that a step reads no plan field it did not declare. (The step cache of
// a later issue looks steps up here, by their declared inputs.)
import { AsyncLocalStorage } from 'node:async_hooks'

import type { EventInput } from '../events.js'
import type { BuildPlan } from './plan.js'
import type { BuildState } from './state.js'

/** What a step belongs to: a diskimage-builder phase, an output format, or the engine itself. */
export type StepPart = { kind: 'engine' } | { kind: 'phase'; hook: string } | { kind: 'output'; format: string }

/** What the loop needs of the build (BuildContext provides it). */
export interface PipelineContext {
  readonly signal: AbortSignal
  emit(event: EventInput): void
  checkAborted(): void
  /** Runs `fn` when the build is cleaned up, unless the returned undo is called first. */
  readonly cleanup: { defer(label: string, fn: () => Promise<void> | void): () => void }
}

/** What a step is, apart from its state signature. */
export interface StepInfo {
  /** Unique in a table; the name of its `step` event. */
  readonly name: string
  readonly part: StepPart
  /**
   * The plan fields it depends on: a superset of what it reads through `ctx.plan` (checked as it
   * runs, see {@link PlanReads}), and for phases also what their scripts see through the aux tree.
   */
  readonly reads: readonly (keyof BuildPlan)[]
  /**
   * The name of an earlier step: this one starts as soon as that step has finished (steps started
   * after the same step start in table order) and runs beside the steps that follow; the loop
   * waits for it, and emits its event, at its own place in the table.
   */
  readonly startsAfter?: string
}

export interface Step<C, N extends keyof BuildState, G extends keyof BuildState> extends StepInfo {
  /** State fields earlier steps must have given (up to `startsAfter`, for a step started early). */
  readonly needs: readonly N[]
  /** State fields it gives. */
  readonly gives: readonly G[]
  run(ctx: C, state: Pick<BuildState, N>, signal: AbortSignal): Promise<Pick<BuildState, G>>
}

/** A step of any state signature, as tables hold them (defineStep checked each row's own). */
export interface AnyStep<C> extends StepInfo {
  readonly needs: readonly (keyof BuildState)[]
  readonly gives: readonly (keyof BuildState)[]
  run(ctx: C, state: Partial<BuildState>, signal: AbortSignal): Promise<Partial<BuildState>>
}

/** Declares a step with its state signature checked: `run` gets `needs` and must return `gives`. */
export function defineStep<C, N extends keyof BuildState = never, G extends keyof BuildState = never>(
  step: Step<C, N, G>,
): Step<C, N, G> {
  return step
}

/** The plan fields each running step reads (through a tracking view of the plan). */
export class PlanReads {
  readonly #current = new AsyncLocalStorage<Set<string>>()
  readonly #undeclared = new Map<string, Set<string>>()

  /** A view of `plan` that records, per running step, the fields read. */
  view(plan: BuildPlan): BuildPlan {
    return new Proxy(plan, {
      get: (target, key, receiver) => {
        if (typeof key === 'string') this.#current.getStore()?.add(key)
        return Reflect.get(target, key, receiver) as unknown
      },
    })
  }

  async during<T>(step: { name: string; reads: readonly string[] }, fn: () => Promise<T>): Promise<T> {
    const read = new Set<string>()
    try {
      return await this.#current.run(read, fn)
    } finally {
      const extra = [...read].filter((k) => !step.reads.includes(k))
      if (extra.length > 0) this.#undeclared.set(step.name, new Set(extra))
    }
  }

  /** Steps that read plan fields they did not declare (a bug: their inputs would be incomplete). */
  undeclared(): Record<string, string[]> {
    return Object.fromEntries([...this.#undeclared].map(([k, v]) => [k, [...v].sort()]))
  }
}

/**
 * Checks a table: unique names, every `needs` given by an earlier step, every `startsAfter` an
 * earlier step that is not itself started early. Throws on a bug in the table (the CLI says
 * internal error).
 */
export function checkTable<C>(steps: readonly AnyStep<C>[]): void {
  const given = new Set<string>()
  // What was given once each step finished: a step started early sees only that.
  const after = new Map<string, ReadonlySet<string>>()
  for (const s of steps) {
    if (after.has(s.name)) throw new Error(`step table: ${s.name} is listed twice`)
    const anchor = s.startsAfter === undefined ? undefined : steps.find((x) => x.name === s.startsAfter)
    if (s.startsAfter !== undefined && (!after.has(s.startsAfter) || anchor?.startsAfter !== undefined)) {
      throw new Error(`step table: ${s.name} starts after ${s.startsAfter}, which is not an earlier step run in place`)
    }
    const visible = s.startsAfter === undefined ? given : after.get(s.startsAfter)!
    for (const n of s.needs) {
      if (!visible.has(n)) throw new Error(`step table: ${s.name} needs ${n}, which no step before it gives`)
    }
    for (const g of s.gives) given.add(g)
    after.set(s.name, new Set(given))
  }
}

interface Running {
  done: Promise<Partial<BuildState>>
  seconds: () => number
  undo: () => void
}

/**
 * Runs the table in order and returns the state the steps gave. Each step: an abort check, then
 * its run, then its `step` event. A step with `startsAfter` is started once that step has
 * finished, with a signal of its own that the build's failure aborts (its undo on the cleanup
 * stack); the loop awaits it at its own place; while it waits for one, the first failure of any other
 * step running beside is the error (as Promise.all would). `reads` attributes plan reads to the running step.
 */
export async function runPipeline<C extends PipelineContext>(
  ctx: C,
  steps: readonly AnyStep<C>[],
  reads?: PlanReads,
): Promise<Partial<BuildState>> {
  checkTable(steps)
  const state: Partial<BuildState> = {}
  const early = new Map<string, Running>()
  // The first failure of a step running beside: whoever is awaited then fails with it.
  let failBeside!: (e: unknown) => void
  const besideFailed = new Promise<never>((_, reject) => (failBeside = reject))
  besideFailed.catch(() => undefined)
  const during = <T>(s: AnyStep<C>, fn: () => Promise<T>) => (reads ? reads.during(s, fn) : fn())

  const start = (s: AnyStep<C>): Running => {
    const stop = new AbortController()
    const signal = AbortSignal.any([ctx.signal, stop.signal])
    const t0 = Date.now()
    let t1: number | undefined
    const done = during(s, () => s.run(ctx, pick(state, s.needs), signal)).finally(() => (t1 = Date.now()))
    done.catch(failBeside) // reported when the loop reaches it or another step; never unhandled
    const undo = ctx.cleanup.defer(`step ${s.name}`, async () => {
      stop.abort()
      await done.catch(() => undefined)
    })
    return { done, seconds: () => ((t1 ?? Date.now()) - t0) / 1000, undo }
  }

  for (const s of steps) {
    ctx.checkAborted()
    const running = early.get(s.name)
    if (running) {
      const given = await Promise.race([running.done, besideFailed])
      running.undo()
      Object.assign(state, given)
      ctx.emit({ kind: 'step', name: s.name, seconds: running.seconds() })
      continue
    }
    const t0 = Date.now()
    const given = await during(s, () => s.run(ctx, pick(state, s.needs), ctx.signal))
    Object.assign(state, given)
    ctx.emit({ kind: 'step', name: s.name, seconds: (Date.now() - t0) / 1000 })
    for (const later of steps) {
      if (later.startsAfter !== s.name) continue
      ctx.checkAborted()
      early.set(later.name, start(later))
    }
  }
  return state
}

function pick(state: Partial<BuildState>, keys: readonly (keyof BuildState)[]): Partial<BuildState> {
  const out: Partial<BuildState> = {}
  for (const k of keys) {
    // checkTable proved an earlier step gives it; a step may give `undefined` on purpose.
    if (!(k in state)) throw new Error(`step state: ${String(k)} was not given`)
    Object.assign(out, { [k]: state[k] })
  }
  return out
}
