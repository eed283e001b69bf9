// planBatch over real plans of the demo elements: every build's problem listed at once, the step
// cache forced on, layers planned over their base, the API's own checks of names and bases.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { BatchPlanError, planBatch } from '../../../src/batch/plan-batch.js'
import { forecastBatch, formatBatchForecast } from '../../../src/batch/forecast.js'
import type { ManyBuild } from '../../../src/batch/types.js'
import { root } from '../../helpers/cli.js'
import { demoOptions } from '../../helpers/demo-options.js'
import { tempDir } from '../../helpers/temp.js'

const tmp = tempDir('vdib-plan-batch.')
const extra = join(tmp, 'elements')
mkdirSync(join(tmp, 'out'))
const fin = join(extra, 'batch-fin', 'finalise.d', '50-fin')
mkdirSync(join(fin, '..'), { recursive: true })
writeFileSync(fin, '#!/bin/sh\ntouch /fin\n')
chmodSync(fin, 0o755)

function options(name: string, elements: string[], o: Partial<BuildOptions> = {}): BuildOptions {
  return demoOptions(tmp, {
    name: join(tmp, 'out', name),
    elements,
    elementPaths: [join(root, 'examples', 'elements'), extra],
    imageCache: join(tmp, 'image-cache'),
    ...o,
  })
}

const b = (name: string, elements: string[], o: Partial<BuildOptions> & { base?: string } = {}): ManyBuild => {
  const { base, ...rest } = o
  return { name, ...(base !== undefined ? { base } : {}), options: options(name, elements, rest) }
}

const cache = { dir: join(tmp, 'cache') }

async function planError(builds: ManyBuild[]): Promise<BatchPlanError> {
  const e: unknown = await planBatch(builds, { cache }).catch((x: unknown) => x)
  expect(e).toBeInstanceOf(BatchPlanError)
  return e as BatchPlanError
}

describe('planBatch', () => {
  it('plans every build with the step cache on, layers over their base’s plan', async () => {
    const planned = await planBatch(
      [
        b('small', ['demo-os', 'demo-app'], { size: 1024 ** 3, cache: false }),
        b('big', ['demo-os', 'demo-app'], { size: 2 * 1024 ** 3 }),
        b('fin', ['demo-os', 'demo-app', 'batch-fin'], { base: 'small', size: 1024 ** 3 }),
      ],
      { cache },
    )
    expect(planned.map((p) => p.name)).toEqual(['small', 'big', 'fin'])
    for (const p of planned) expect(p.plan.cache?.dir).toBe(cache.dir)
    const layer = planned[2]!
    expect(layer.base).toBe('small')
    expect(layer.plan.layer).toMatchObject({ baseName: 'small', from: 'finalise.d' })
    expect(layer.plan.layer?.base).toBe(planned[0]!.plan)
  })

  it('lists every build that cannot be planned, one line each, a layer’s inherited error once', async () => {
    const e = await planError([
      b('ok', ['demo-os']),
      b('typo', ['demo-os', 'demo-ap']),
      b('small', ['demo-os'], { size: 1000 }),
      b('layer', ['demo-os', 'demo-ap', 'batch-fin'], { base: 'typo' }),
      // Its own mistake, planned flat since its base cannot be planned.
      b('layer2', ['demo-os', 'nope'], { base: 'typo' }),
    ])
    const lines = e.message.split('\n')
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/^build ‘typo’: element ‘demo-ap’ not found/)
    expect(lines[1]).toBe('build ‘small’: --size 1000 is too small for an image (16M at least)')
    expect(lines[2]).toMatch(/^build ‘layer2’: element ‘nope’ not found/)
    expect(e.problems.map((p) => p.build)).toEqual(['typo', 'small', 'layer2'])
  })

  it('checks names and bases itself (for callers of the API)', async () => {
    const e = await planError([
      b('a', ['demo-os']),
      b('a', ['demo-os'], { name: join(tmp, 'out', 'a2') }),
      b('l', ['demo-os'], { base: 'later' }),
      b('later', ['demo-os']),
      b('m', ['demo-os'], { base: 'ghost' }),
      b('self', ['demo-os'], { base: 'self' }),
    ])
    expect(e.message.split('\n')).toEqual([
      'build ‘a’: another build has the same name',
      'build ‘l’: its base ‘later’ must come before it',
      'build ‘m’: its base ‘ghost’ is not a build of the batch',
      'build ‘self’: it cannot be a layer over itself',
    ])
  })

  it('refuses two builds writing the same output', async () => {
    const e = await planError([b('a', ['demo-os']), b('b', ['demo-os'], { name: join(tmp, 'out', 'a') })])
    expect(e.message).toBe(`build ‘b’: ‘a’ writes ${join(tmp, 'out', 'a')} too`)
  })
})

describe('forecastBatch', () => {
  it('says which phases a build shares with an earlier one, takes from its base, or builds', async () => {
    const planned = await planBatch(
      [
        b('small', ['demo-os', 'demo-app'], { size: 1024 ** 3 }),
        b('big', ['demo-os', 'demo-app'], { size: 2 * 1024 ** 3 }),
        b('fin', ['demo-os', 'demo-app', 'batch-fin'], { base: 'small', size: 1024 ** 3 }),
      ],
      { cache: { dir: join(tmp, 'empty-cache') } },
    )
    const f = await forecastBatch(planned)
    const [small, big, fin] = f.builds
    expect(small!.phases.length).toBeGreaterThan(0)
    expect(small!.phases.every((p) => p.fate.kind === 'built')).toBe(true)
    // The tree phases are the same; the disk steps depend on --size.
    const tree = big!.phases.filter((p) => p.fate.kind === 'shared')
    expect(tree.length).toBeGreaterThan(0)
    expect(tree.every((p) => p.fate.kind === 'shared' && p.fate.build === 'small')).toBe(true)
    expect(big!.phases.at(-1)!.fate.kind).toBe('built')
    expect(fin!.layerFrom).toBe('finalise.d')
    expect(fin!.phases.some((p) => p.fate.kind === 'base' && p.fate.build === 'small')).toBe(true)
    expect(fin!.phases.find((p) => p.phase === 'finalise.d')?.fate.kind).toBe('built')
    const text = formatBatchForecast(f)
    expect(text).toContain('Batch of 3 builds')
    expect(text).toContain('shared with ‘small’')
    expect(text).toContain('from base ‘small’')
    expect(text).toContain(`fin  (layer over ‘small’ from finalise.d on)`)
    expect(text).toMatch(new RegExp(`Phases: ${f.phases.built} of ${f.phases.total} run`))
  })

  it('says cached for what the store holds (fake store)', async () => {
    const planned = await planBatch([b('one', ['demo-os', 'demo-app'])], { cache })
    const f = await forecastBatch(planned, {
      cached: async (_plan, boundaries) => ({
        cached: boundaries.map((_, i) => i === 0),
        miss: { step: boundaries[1]!.phase, reason: 'the option x changed' },
      }),
    })
    const phases = f.builds[0]!.phases
    expect(phases[0]!.fate).toEqual({ kind: 'cached' })
    expect(phases.slice(1).every((p) => p.fate.kind === 'built')).toBe(true)
    expect(formatBatchForecast(f)).toContain(`not in the cache: ${phases[1]!.phase} (the option x changed)`)
  })
})
