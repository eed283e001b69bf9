// Batch layers over real plans of the demo elements: where a layer stops sharing its base's steps
// (its first script, a package list read in extra-data.d, a disk option), its keys (the base's
// before, its own chained on the base's after), its boundaries and its file systems' UUID.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import { planLayer } from '../../../src/api/plan-layer.js'
import { basePrefixLength, cacheBoundaries, effectiveKeys } from '../../../src/engine/layer.js'
import type { BuildPlan } from '../../../src/engine/plan.js'
import { root } from '../../helpers/cli.js'
import { demoOptions } from '../../helpers/demo-options.js'
import { tempDir } from '../../helpers/temp.js'

const tmp = tempDir('vdib-layer.')
const extra = join(tmp, 'elements')

/** An element in `extra` with `files` (path → content; scripts are made executable). */
function element(name: string, files: Record<string, string>): void {
  for (const [rel, content] of Object.entries(files)) {
    const path = join(extra, name, rel)
    mkdirSync(join(path, '..'), { recursive: true })
    writeFileSync(path, content)
    if (rel.includes('.d/')) chmodSync(path, 0o755)
  }
}

element('layer-fin', { 'finalise.d/50-layer': '#!/bin/sh\ntouch /layer\n' })
element('layer-pkgs', { 'package-installs.yaml': 'vim:\n' })
element('layer-inst', { 'install.d/50-layer': '#!/bin/sh\ntrue\n' })
element('layer-env', { 'environment.d/10-layer.bash': 'export LAYER=1\n' })

function options(elements: string[], o: Partial<BuildOptions> = {}): BuildOptions {
  return demoOptions(tmp, {
    elements,
    elementPaths: [join(root, 'examples', 'elements'), extra],
    imageCache: join(tmp, 'image-cache'),
    cache: { dir: join(tmp, 'cache') },
    ...o,
  })
}

const base = planBuild(options(['demo-os', 'demo-app'], { name: join(tmp, 'base') }))

function layer(own: string[], o: Partial<BuildOptions> = {}): Promise<BuildPlan> {
  return planLayer(options(['demo-os', 'demo-app', ...own], { name: join(tmp, own.join('+') || 'same'), ...o }), {
    base,
    baseName: 'base',
  })
}

describe('a batch layer', () => {
  it('starts at its first script: the steps before are its base’s, under the base’s keys', async () => {
    const l = await layer(['layer-fin'])
    expect(l.layer?.from).toBe('finalise.d')
    const mine = await effectiveKeys(l)
    const theirs = await effectiveKeys(base)
    const at = mine.findIndex((k) => k.step === 'finalise.d')
    expect(mine.slice(0, at)).toEqual(theirs.slice(0, at))
    expect(mine[at]!.parent).toBe(theirs[at - 1]!.key)
    expect(mine[at]!.key).not.toBe(theirs[at]!.key)
    // Not the keys of the same elements built flat: those share nothing with the base.
    const flat = await effectiveKeys(planBuild(options(['demo-os', 'demo-app', 'layer-fin'])))
    expect(flat[0]!.key).not.toBe(theirs[0]!.key)
    expect(mine.at(-1)!.key).not.toBe(flat.at(-1)!.key)
    // Restored after the block-device step: the base's file systems, so the base's UUID.
    expect(l.rootFsUuid).toBe(base.rootFsUuid)
  })

  it('has its base’s boundaries before its own, and says how many it restores', async () => {
    const l = await layer(['layer-fin'])
    const mine = await cacheBoundaries(l)
    const theirs = await cacheBoundaries(base)
    const n = basePrefixLength(mine)
    expect(mine.slice(0, n).map((b) => b.phase)).toEqual([
      'root.d',
      'extra-data.d',
      'pre-install.d',
      'install.d',
      'post-install.d',
      'block-device',
    ])
    expect(mine.slice(0, n)).toEqual(theirs.slice(0, n).map((b) => ({ ...b, base: 'base' })))
    expect(mine.slice(n).map((b) => b.phase)).toEqual(['finalise.d', 'cleanup.d'])
    expect(basePrefixLength(theirs)).toBe(0)
  })

  it('starts at extra-data.d when one of its elements has a package list, and makes its own file systems', async () => {
    const l = await layer(['layer-pkgs'])
    expect(l.layer?.from).toBe('extra-data.d')
    expect(l.rootFsUuid).not.toBe(base.rootFsUuid)
  })

  it('starts at its install.d script, and at the disk steps when its size differs', async () => {
    expect((await layer(['layer-inst'])).layer?.from).toBe('install.d')
    expect((await layer([], { size: 6 * 1024 ** 3 })).layer?.from).toBe('block-device.d')
  })

  it('over a layer chains on that layer’s keys', async () => {
    const fin = await layer(['layer-fin'])
    const top = await planLayer(
      options(['demo-os', 'demo-app', 'layer-fin'], { name: join(tmp, 'top'), size: 6 * 1024 ** 3 }),
      {
        base: fin,
        baseName: 'fin',
      },
    )
    expect(top.layer?.from).toBe('block-device.d')
    const mine = await effectiveKeys(top)
    const theirs = await effectiveKeys(fin)
    const at = mine.findIndex((k) => k.step === 'block-device.d')
    expect(mine.slice(0, at)).toEqual(theirs.slice(0, at))
    expect((await effectiveKeys(base)).slice(0, at)).toEqual(theirs.slice(0, at))
  })

  it('is flat when one of its elements has an environment.d: every phase sources it', async () => {
    expect((await layer(['layer-env'])).layer?.from).toBeUndefined()
  })

  it('is flat without the step cache, or over a base cached elsewhere', async () => {
    const off = await planLayer(options(['demo-os', 'demo-app', 'layer-fin'], { cache: false }), {
      base,
      baseName: 'base',
    })
    expect(off.layer?.from).toBeUndefined()
    const other = options(['demo-os', 'demo-app', 'layer-fin'], { cache: { dir: join(tmp, 'other') } })
    const elsewhere = await planLayer(other, { base, baseName: 'base' })
    expect(elsewhere.layer?.from).toBeUndefined()
    expect((await effectiveKeys(elsewhere)).map((k) => k.key)).toEqual(
      (await effectiveKeys(planBuild(other))).map((k) => k.key),
    )
  })
})
