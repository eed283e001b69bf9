// buildMany's scheduling with fake planning and a fake run (no appliance): the concurrency limit,
// layers after their base, skipped layers, --fail-fast, aborts, tagged events, planning errors.
import { describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import type { BuildHooks, BuildResult } from '../../../src/engine/context.js'
import type { BuildPlan } from '../../../src/engine/plan.js'
import { BuildAbortedError, ElementError, VirtDibError } from '../../../src/errors.js'
import type { BuildEvent } from '../../../src/events.js'
import { BatchPlanError, buildMany, FAIL_FAST_REASON, STOPPED_REASON } from '../../../src/batch/run-many.js'
import type { BatchEvent, BuildManyOptions, BuildOutcome, ManyBuild } from '../../../src/batch/types.js'

/** A plan as far as the batch looks at one: its name, and the layer it was planned as. */
function fakePlan(options: BuildOptions, layer?: { base: BuildPlan; baseName: string }): BuildPlan {
  if (options.elements.includes('bad')) throw new ElementError('element ‘bad’ not found')
  return {
    name: options.name,
    outputPath: `/out/${options.name}`,
    appliance: { memsize: options.memsize },
    cache: options.cache ? { dir: '/cache', maxSize: 1, maxAgeMs: undefined } : undefined,
    layer: layer ? { ...layer, from: 'finalise.d' } : undefined,
  } as unknown as BuildPlan
}

const planners = {
  planBuild: (o: BuildOptions) => fakePlan(o),
  planLayer: async (o: BuildOptions, l: { base: BuildPlan; baseName: string }) => fakePlan(o, l),
}

function build(name: string, o: { base?: string; elements?: string[] } = {}): ManyBuild {
  return {
    name,
    ...(o.base !== undefined ? { base: o.base } : {}),
    options: { name, elements: o.elements ?? ['demo-os'], libPath: '/lib', elementPaths: [] },
  }
}

/** A run whose builds end when the test says: each call is recorded with its hooks. */
function controlledRun() {
  const calls: {
    name: string
    plan: BuildPlan
    hooks: BuildHooks
    ok: () => void
    fail: (e?: unknown) => void
  }[] = []
  let inFlight = 0
  let maxInFlight = 0
  const run = (plan: BuildPlan, hooks: BuildHooks): Promise<BuildResult> => {
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    return new Promise<BuildResult>((resolve, reject) => {
      const end = () => inFlight--
      const call = {
        name: plan.name,
        plan,
        hooks,
        ok: () => (end(), resolve({ outputs: [], seconds: 1 })),
        fail: (e: unknown = new VirtDibError(`${plan.name} broke`)) => (end(), reject(e)),
      }
      // A real build ends (after its cleanup) when aborted.
      hooks.signal?.addEventListener('abort', () => call.fail(hooks.signal!.reason))
      calls.push(call)
    })
  }
  return { run, calls, maxInFlight: () => maxInFlight, inFlight: () => inFlight }
}

/** Lets every settled promise's callbacks run. */
const tick = () => new Promise((r) => setTimeout(r, 0))

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !cond(); i++) await tick()
  if (!cond()) throw new Error('timed out')
}

function start(builds: ManyBuild[], o: BuildManyOptions = {}) {
  const r = controlledRun()
  const events: BatchEvent[] = []
  const result = buildMany(builds, { ...planners, run: r.run, onEvent: (e) => events.push(e), ...o })
  result.catch(() => undefined)
  return { ...r, events, result }
}

const byName = (outcomes: BuildOutcome[]) => Object.fromEntries(outcomes.map((x) => [x.name, x]))

describe('buildMany', () => {
  it('runs at most `concurrency` builds at once, starting them in order, and answers in the input order', async () => {
    const b = start(
      ['a', 'b', 'c', 'd', 'e'].map((n) => build(n)),
      { concurrency: 2 },
    )
    await until(() => b.calls.length === 2)
    expect(b.calls.map((c) => c.name)).toEqual(['a', 'b'])
    b.calls[1]!.ok()
    await until(() => b.calls.length === 3)
    expect(b.calls[2]!.name).toBe('c')
    b.calls[0]!.ok()
    await until(() => b.calls.length === 4)
    b.calls[2]!.ok()
    await until(() => b.calls.length === 5)
    for (const c of b.calls.slice(3)) c.ok()
    const outcomes = await b.result
    expect(b.maxInFlight()).toBe(2)
    expect(outcomes.map((o) => [o.name, o.status])).toEqual(['a', 'b', 'c', 'd', 'e'].map((n) => [n, 'ok']))
  })

  it('starts a layer only once its base succeeded, planned over the base’s plan', async () => {
    const b = start([build('base'), build('layer', { base: 'base' }), build('other')], { concurrency: 3 })
    await until(() => b.calls.length === 2)
    // The layer is not ready: the next build in order starts instead.
    expect(b.calls.map((c) => c.name)).toEqual(['base', 'other'])
    b.calls[1]!.ok()
    await tick()
    expect(b.calls).toHaveLength(2)
    b.calls[0]!.ok()
    await until(() => b.calls.length === 3)
    const layer = b.calls[2]!
    expect(layer.name).toBe('layer')
    expect(layer.plan.layer?.baseName).toBe('base')
    expect(layer.plan.layer?.base).toBe(b.calls[0]!.plan)
    layer.ok()
    expect((await b.result).every((o) => o.status === 'ok')).toBe(true)
  })

  it('skips the layers of a failed base (and theirs) while the other builds complete', async () => {
    const b = start([build('base'), build('l1', { base: 'base' }), build('l2', { base: 'l1' }), build('other')], {
      concurrency: 2,
    })
    await until(() => b.calls.length === 2)
    b.calls[0]!.fail()
    await tick()
    b.calls[1]!.ok()
    const o = byName(await b.result)
    expect(o['base']).toMatchObject({ status: 'failed', error: expect.objectContaining({ message: 'base broke' }) })
    expect(o['l1']).toEqual({ name: 'l1', status: 'skipped', reason: 'its base ‘base’ failed' })
    expect(o['l2']).toEqual({ name: 'l2', status: 'skipped', reason: 'its base ‘l1’ was skipped' })
    expect(o['other']!.status).toBe('ok')
    expect(b.calls.map((c) => c.name)).toEqual(['base', 'other'])
    const ends = b.events.filter((e) => e.kind === 'build-end')
    expect(ends.map((e) => [e.build, e.status])).toEqual([
      ['base', 'failed'],
      ['l1', 'skipped'],
      ['l2', 'skipped'],
      ['other', 'ok'],
    ])
    expect(ends[0]).toMatchObject({ reason: 'base broke' })
  })

  it('with failFast, aborts the running builds at the first failure and skips those not started', async () => {
    const b = start([build('a'), build('b'), build('c')], { concurrency: 2, failFast: true })
    await until(() => b.calls.length === 2)
    b.calls[0]!.fail()
    const o = byName(await b.result)
    expect(o['a']!.status).toBe('failed')
    expect(b.calls[1]!.hooks.signal?.aborted).toBe(true)
    expect(o['b']).toMatchObject({ status: 'failed' })
    const err = (o['b'] as { error: unknown }).error
    expect(err).toBeInstanceOf(BuildAbortedError)
    expect((err as Error).message).toBe(`${FAIL_FAST_REASON}: ‘a’ failed`)
    expect(o['c']).toEqual({ name: 'c', status: 'skipped', reason: FAIL_FAST_REASON })
    expect(b.calls).toHaveLength(2)
  })

  it('without failFast, a failure stops nothing', async () => {
    const b = start([build('a'), build('b'), build('c')], { concurrency: 1 })
    await until(() => b.calls.length === 1)
    b.calls[0]!.fail()
    await until(() => b.calls.length === 2)
    b.calls[1]!.ok()
    await until(() => b.calls.length === 3)
    b.calls[2]!.ok()
    expect((await b.result).map((o) => o.status)).toEqual(['failed', 'ok', 'ok'])
  })

  it('on abort, aborts every running build, starts no more, waits for them to end, then rejects', async () => {
    const controller = new AbortController()
    const r = controlledRun()
    let ended = 0
    // Builds that take a moment to clean up after the abort.
    const slow = (plan: BuildPlan, hooks: BuildHooks) =>
      r.run(plan, hooks).finally(() => new Promise((res) => setTimeout(() => res((ended++, undefined)), 20)))
    const events: BatchEvent[] = []
    const result = buildMany([build('a'), build('b'), build('c')], {
      ...planners,
      run: slow,
      concurrency: 2,
      signal: controller.signal,
      onEvent: (e) => events.push(e),
    })
    await until(() => r.calls.length === 2)
    const reason = new BuildAbortedError('the build was interrupted', { signal: 'SIGINT' })
    controller.abort(reason)
    await expect(result).rejects.toBe(reason)
    expect(ended).toBe(2)
    expect(r.calls.every((c) => c.hooks.signal?.aborted)).toBe(true)
    expect(r.calls).toHaveLength(2)
    const c = events.find((e) => e.kind === 'build-end' && e.build === 'c')
    expect(c).toMatchObject({ status: 'skipped', reason: STOPPED_REASON })
  })

  it('rejects with a BuildAbortedError caused by the reason when that is not one', async () => {
    const controller = new AbortController()
    const b = start([build('a')], { concurrency: 1, signal: controller.signal })
    await until(() => b.calls.length === 1)
    const reason = new Error('stdout closed')
    controller.abort(reason)
    const e: unknown = await b.result.catch((x: unknown) => x)
    expect(e).toBeInstanceOf(BuildAbortedError)
    expect((e as Error).cause).toBe(reason)
  })

  it('rejects at once, planning and running nothing, when the signal is already aborted', async () => {
    const controller = new AbortController()
    controller.abort()
    const b = start([build('a', { elements: ['bad'] })], { signal: controller.signal })
    await expect(b.result).rejects.toBeInstanceOf(BuildAbortedError)
    expect(b.calls).toHaveLength(0)
  })

  it('tags every build event with its build, adds build-start/build-end, and says what the cache reused', async () => {
    const b = start([build('a')], { concurrency: 1 })
    await until(() => b.calls.length === 1)
    const emit = (e: BuildEvent) => b.calls[0]!.hooks.onEvent!(e)
    emit({ kind: 'info', text: 'hello', elapsed: 0.5 })
    emit({ kind: 'cache-hit', steps: ['root.d', 'extra-data.d'], key: 'k1', ageSeconds: 3, elapsed: 1 })
    emit({
      kind: 'cache-hit',
      steps: ['extra-data.d', 'pre-install.d', 'install.d'],
      key: 'k2',
      ageSeconds: 3,
      elapsed: 2,
    })
    b.calls[0]!.ok()
    const [a] = await b.result
    expect(a).toMatchObject({ status: 'ok', reused: ['root.d', 'extra-data.d', 'pre-install.d', 'install.d'] })
    expect(b.events.map((e) => e.kind)).toEqual(['build-start', 'info', 'cache-hit', 'cache-hit', 'build-end'])
    expect(b.events.every((e) => e.build === 'a')).toBe(true)
    expect(b.events[1]).toEqual({ kind: 'info', text: 'hello', elapsed: 0.5, build: 'a' })
    expect(b.events[4]).toMatchObject({ kind: 'build-end', status: 'ok', seconds: expect.any(Number) })
  })

  it('is not broken by a listener that throws', async () => {
    const r = controlledRun()
    const result = buildMany([build('a'), build('b')], {
      ...planners,
      run: r.run,
      concurrency: 2,
      onEvent: () => {
        throw new Error('listener bug')
      },
    })
    await until(() => r.calls.length === 2)
    r.calls[0]!.hooks.onEvent!({ kind: 'info', text: 'x', elapsed: 0 })
    r.calls[0]!.ok()
    r.calls[1]!.fail()
    expect((await result).map((o) => o.status)).toEqual(['ok', 'failed'])
  })

  it('counts a run that throws at once as a failed build', async () => {
    const outcomes = await buildMany([build('a'), build('b')], {
      ...planners,
      concurrency: 1,
      run: (plan) => {
        if (plan.name === 'a') throw new VirtDibError('sync throw')
        return Promise.resolve({ outputs: [], seconds: 0 })
      },
    })
    expect(outcomes.map((o) => o.status)).toEqual(['failed', 'ok'])
  })

  it('plans every build first: the problems of all are listed, and nothing runs', async () => {
    const b = start([
      build('a'),
      build('b', { elements: ['demo-os', 'bad'] }),
      build('c'),
      build('d', { elements: ['bad'] }),
      build('d-layer', { base: 'd', elements: ['bad', 'extra'] }),
    ])
    const e: unknown = await b.result.catch((x: unknown) => x)
    expect(e).toBeInstanceOf(BatchPlanError)
    // The layer fails as its base does: said once.
    expect((e as Error).message).toBe('build ‘b’: element ‘bad’ not found\nbuild ‘d’: element ‘bad’ not found')
    expect(b.calls).toHaveLength(0)
    expect(b.events).toHaveLength(0)
  })

  it('refuses a bad concurrency', async () => {
    const b = start([build('a')], { concurrency: 0 })
    await expect(b.result).rejects.toThrow('concurrency must be a whole number greater than zero, not 0')
    expect(b.calls).toHaveLength(0)
  })

  it('defaults the concurrency to what the host holds', async () => {
    const r = controlledRun()
    // 2 cores, memory for 8 builds of the default -m.
    const result = buildMany(
      ['x', 'y', 'z'].map((n) => build(n)),
      {
        ...planners,
        run: r.run,
        host: { cores: 2, freeBytes: 8 * 1580 * 1024 ** 2 },
      },
    )
    await until(() => r.calls.length === 2)
    await tick()
    expect(r.calls).toHaveLength(2)
    r.calls[0]!.ok()
    await until(() => r.calls.length === 3)
    r.calls[1]!.ok()
    r.calls[2]!.ok()
    await result
    expect(r.maxInFlight()).toBe(2)
  })
})
