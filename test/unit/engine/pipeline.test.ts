// The step loop with fake steps: order and events, the typed state, abort checks between steps,
// steps started early, failures on either side, the table checks, and the plan-read record.
import { setTimeout as sleep } from 'node:timers/promises'

import { describe, expect, it } from 'vitest'

import { checkTable, defineStep, PlanReads, runPipeline, type AnyStep } from '../../../src/engine/pipeline.js'
import type { BuildPlan } from '../../../src/engine/plan.js'
import { BuildAbortedError } from '../../../src/errors.js'
import type { EventInput } from '../../../src/phases/types.js'
import { CleanupStack } from '../../../src/util/cleanup.js'

class FakeContext {
  readonly events: EventInput[] = []
  readonly log: string[] = []
  readonly cleanup = new CleanupStack()
  constructor(readonly signal: AbortSignal = new AbortController().signal) {}
  emit(e: EventInput): void {
    this.events.push(e)
  }
  checkAborted(): void {
    if (this.signal.aborted) throw new BuildAbortedError()
  }
  steps(): string[] {
    return this.events.flatMap((e) => (e.kind === 'step' ? [e.name] : []))
  }
}

type Step = AnyStep<FakeContext>
const engine = { kind: 'engine' } as const

function plain(name: string, body: (ctx: FakeContext, signal: AbortSignal) => Promise<void> = async () => {}): Step {
  return defineStep<FakeContext>({
    name,
    part: engine,
    reads: [],
    needs: [],
    gives: [],
    async run(ctx, _state, signal) {
      ctx.log.push(`start ${name}`)
      await body(ctx, signal)
      ctx.log.push(`end ${name}`)
      return {}
    },
  })
}

describe('runPipeline', () => {
  it('runs the steps in order, one step event each, and passes the typed state along', async () => {
    const ctx = new FakeContext()
    const gives = defineStep<FakeContext, never, 'disk'>({
      name: 'gives',
      part: engine,
      reads: [],
      needs: [],
      gives: ['disk'],
      run: async () => ({ disk: '/tmp/disk.raw' }),
    })
    let seen: string | undefined
    const needs = defineStep<FakeContext, 'disk'>({
      name: 'needs',
      part: engine,
      reads: [],
      needs: ['disk'],
      gives: [],
      async run(_ctx, { disk }) {
        seen = disk
        return {}
      },
    })
    const state = await runPipeline(ctx, [plain('a'), gives, needs, plain('b')])
    expect(ctx.steps()).toEqual(['a', 'gives', 'needs', 'b'])
    expect(seen).toBe('/tmp/disk.raw')
    expect(state).toEqual({ disk: '/tmp/disk.raw' })
    for (const e of ctx.events) if (e.kind === 'step') expect(e.seconds).toBeGreaterThanOrEqual(0)
  })

  it('checks the abort before every step: nothing runs after it, and no event for the step not run', async () => {
    const ac = new AbortController()
    const ctx = new FakeContext(ac.signal)
    const e = await runPipeline(ctx, [plain('a', async () => ac.abort()), plain('b')]).catch((x: unknown) => x)
    expect(e).toBeInstanceOf(BuildAbortedError)
    expect(ctx.log).toEqual(['start a', 'end a'])
    expect(ctx.steps()).toEqual(['a'])
  })

  it('a failing step stops the table: its error, no event for it', async () => {
    const ctx = new FakeContext()
    const boom = plain('boom', async () => {
      throw new Error('boom')
    })
    await expect(runPipeline(ctx, [plain('a'), boom, plain('b')])).rejects.toThrow('boom')
    expect(ctx.steps()).toEqual(['a'])
    expect(ctx.log).not.toContain('start b')
  })

  it('a step started early runs beside the steps that follow; its event comes at its own place', async () => {
    const ctx = new FakeContext()
    const slow = { ...plain('convert', () => sleep(80)), startsAfter: 'freeze' }
    await runPipeline(ctx, [plain('freeze'), plain('tar', () => sleep(20)), plain('shutdown'), slow, plain('sums')])
    expect(ctx.log.slice(0, 4)).toEqual(['start freeze', 'end freeze', 'start convert', 'start tar'])
    expect(ctx.log.indexOf('end shutdown')).toBeLessThan(ctx.log.indexOf('end convert'))
    expect(ctx.log.indexOf('end convert')).toBeLessThan(ctx.log.indexOf('start sums'))
    expect(ctx.steps()).toEqual(['freeze', 'tar', 'shutdown', 'convert', 'sums'])
    const convert = ctx.events.find((e) => e.kind === 'step' && e.name === 'convert')
    expect(convert?.kind === 'step' && convert.seconds).toBeGreaterThanOrEqual(0.07)
    await ctx.cleanup.run()
  })

  it('steps started after the same step start in table order and run together; events in table order', async () => {
    const ctx = new FakeContext()
    await runPipeline(ctx, [
      plain('shutdown'),
      { ...plain('qcow2', () => sleep(40)), startsAfter: 'shutdown' },
      { ...plain('vhd', () => sleep(10)), startsAfter: 'shutdown' },
    ])
    expect(ctx.log.slice(0, 4)).toEqual(['start shutdown', 'end shutdown', 'start qcow2', 'start vhd'])
    expect(ctx.log.indexOf('end vhd')).toBeLessThan(ctx.log.indexOf('end qcow2'))
    expect(ctx.steps()).toEqual(['shutdown', 'qcow2', 'vhd'])
  })

  it('while one is awaited, the first failure of another running beside is the error at once', async () => {
    const ctx = new FakeContext()
    const t = Date.now()
    const e = await runPipeline(ctx, [
      plain('shutdown'),
      { ...plain('qcow2', (_c, signal) => sleep(5000, undefined, { signal })), startsAfter: 'shutdown' },
      {
        ...plain('vhd', async () => {
          throw new Error('vhd failed')
        }),
        startsAfter: 'shutdown',
      },
    ]).catch((x: unknown) => x)
    expect((e as Error).message).toBe('vhd failed')
    expect(Date.now() - t).toBeLessThan(2000)
    expect(ctx.steps()).toEqual(['shutdown'])
    expect(await ctx.cleanup.run()).toEqual([]) // qcow2 stopped through its undo
  })

  it('a failing step stops the step started early (through the cleanup), which is awaited', async () => {
    const ctx = new FakeContext()
    let stopped = false
    const convert = {
      ...plain('convert', async (_c, signal) => {
        await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()))
        stopped = true
      }),
      startsAfter: 'freeze',
    }
    const tar = plain('tar', async () => {
      throw new Error('tar failed')
    })
    await expect(runPipeline(ctx, [plain('freeze'), tar, plain('shutdown'), convert])).rejects.toThrow('tar failed')
    expect(stopped).toBe(false)
    expect(await ctx.cleanup.run()).toEqual([])
    expect(stopped).toBe(true)
  })

  it('the failure of a step started early is reported at its place, after the steps between', async () => {
    const ctx = new FakeContext()
    const convert = {
      ...plain('convert', async () => {
        throw new Error('qemu-img failed')
      }),
      startsAfter: 'freeze',
    }
    await expect(
      runPipeline(ctx, [plain('freeze'), plain('tar', () => sleep(20)), plain('shutdown'), convert]),
    ).rejects.toThrow('qemu-img failed')
    expect(ctx.steps()).toEqual(['freeze', 'tar', 'shutdown'])
    await ctx.cleanup.run()
  })
})

describe('checkTable', () => {
  const needsDisk = defineStep<FakeContext, 'disk'>({
    name: 'needs-disk',
    part: engine,
    reads: [],
    needs: ['disk'],
    gives: [],
    run: async () => ({}),
  })
  const givesDisk = defineStep<FakeContext, never, 'disk'>({
    name: 'gives-disk',
    part: engine,
    reads: [],
    needs: [],
    gives: ['disk'],
    run: async () => ({ disk: 'd' }),
  })

  it('refuses a name twice, a need nobody gave before, and a start at a step that is not earlier', () => {
    expect(() => checkTable([plain('a'), plain('a')])).toThrow('step table: a is listed twice')
    expect(() => checkTable([needsDisk, givesDisk])).toThrow('step table: needs-disk needs disk')
    expect(() => checkTable([{ ...plain('a'), startsAfter: 'b' }, plain('b')])).toThrow('starts after b')
    const early = { ...plain('b'), startsAfter: 'a' }
    expect(() => checkTable([plain('a'), early, { ...plain('c'), startsAfter: 'b' }])).toThrow('starts after b')
    expect(() => checkTable([givesDisk, needsDisk])).not.toThrow()
  })

  it('a step started early sees only what was given up to the step it starts after', () => {
    expect(() => checkTable([plain('tar'), givesDisk, { ...needsDisk, startsAfter: 'tar' }])).toThrow(
      'needs-disk needs disk',
    )
    expect(() => checkTable([givesDisk, plain('tar'), { ...needsDisk, startsAfter: 'tar' }])).not.toThrow()
    expect(() => checkTable([givesDisk, { ...needsDisk, startsAfter: 'gives-disk' }])).not.toThrow()
  })
})

describe('PlanReads', () => {
  it('records, per running step, the plan fields read that the step did not declare', async () => {
    const reads = new PlanReads()
    const plan = reads.view({ size: 1, arch: 'amd64', fsType: 'ext4' } as unknown as BuildPlan)
    const ctx = new FakeContext()
    const step = (name: string, declared: (keyof BuildPlan)[], use: (p: BuildPlan) => unknown): Step =>
      defineStep<FakeContext>({
        name,
        part: engine,
        reads: declared,
        needs: [],
        gives: [],
        async run() {
          await sleep(5)
          use(plan)
          return {}
        },
      })
    await runPipeline(
      ctx,
      [
        step('honest', ['size'], (p) => p.size),
        step('sloppy', ['size'], (p) => [p.arch, p.size, p.fsType]),
        { ...step('beside', [], (p) => p.arch), startsAfter: 'honest' },
      ],
      reads,
    )
    void plan.fsType // outside any step: not counted
    expect(reads.undeclared()).toEqual({ sloppy: ['arch', 'fsType'], beside: ['arch'] })
  })
})
