// The step cache's table (the demo elements, no appliance): where snapshots go, which drives
// they hold, what a resumed build leaves out and what it still runs; every table valid.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import type { StepKeyOptions } from '../../../src/cache/keys.js'
import { hooksAfter, planBoundaries, type Boundary } from '../../../src/engine/cache-boundaries.js'
import { checkTable } from '../../../src/engine/pipeline.js'
import { frozenMounts } from '../../../src/engine/snapshot-guest.js'
import { planSteps } from '../../../src/engine/steps.js'
import { PHASE_BY_HOOK } from '../../../src/phases/registry.js'
import { extraPackages } from '../../../src/phases/extra-packages.js'
import { demoOptions } from '../../helpers/demo-options.js'

const tmp = mkdtempSync(join(tmpdir(), 'vdib-cachesteps.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const keyOptions: StepKeyOptions = {
  applianceKey: 'appliance',
  libHash: 'lib',
  guestFilesHash: 'guest',
  phaseFacts: (h) => PHASE_BY_HOOK.get(h) ?? (h === extraPackages.hook ? extraPackages : undefined),
}

const options = (o: Partial<BuildOptions> = {}): BuildOptions =>
  demoOptions(tmp, {
    elements: ['demo-os', 'demo-app'],
    imageCache: join(tmp, 'image-cache'),
    cache: { dir: join(tmp, 'steps') },
    formats: ['tar', 'qcow2'],
    ...o,
  })

function cachedTable(o: Partial<BuildOptions> = {}, resumeAfter?: string) {
  const plan = planBuild(options(o))
  const boundaries = planBoundaries(plan, planSteps(plan), keyOptions)
  const resume = resumeAfter === undefined ? undefined : boundaries.find((b) => b.phase === resumeAfter)
  if (resumeAfter !== undefined && !resume) throw new Error(`no boundary ${resumeAfter}`)
  const steps = planSteps(plan, { boundaries, resume })
  checkTable(steps)
  return { plan, boundaries, steps, names: steps.map((s) => s.name) }
}

const phases = (bs: readonly Boundary[]) => bs.map((b) => b.phase)

describe('the step cache in the step table', () => {
  it('the tree is never built in place with the cache on; the root UUID is the same for the same request, of any size', () => {
    const a = planBuild(options())
    expect(a.buildInPlace).toBe(false)
    expect(planBuild(options({ cache: undefined })).buildInPlace).toBe(true)
    expect(planBuild(options({ name: join(tmp, 'other') })).rootFsUuid).toBe(a.rootFsUuid)
    expect(planBuild(options({ size: 3 * 1024 ** 3 })).rootFsUuid).toBe(a.rootFsUuid)
    expect(planBuild(options({ fsType: 'xfs' })).rootFsUuid).not.toBe(a.rootFsUuid)
  })

  it('snapshots after every phase with scripts and after the block-device step: the tree until then, the disk after', () => {
    const { boundaries, names } = cachedTable()
    expect(phases(boundaries)).toEqual([
      'root.d',
      'extra-data.d',
      'pre-install.d',
      'install.d',
      'post-install.d',
      'block-device',
      'finalise.d',
      'cleanup.d',
    ])
    for (const b of boundaries) {
      expect(names[names.indexOf(b.after) + 1]).toBe(`snapshot ${b.phase}`)
      expect(b.drives).toEqual(phases(boundaries).indexOf(b.phase) < 5 ? ['tree', 'aux'] : ['disk', 'aux'])
    }
    // extra-data.d's snapshot waits for its FUSE view to be released.
    expect(boundaries.find((b) => b.phase === 'extra-data.d')!.after).toBe('extra-data-unmount')
    expect(new Set(boundaries.map((b) => b.key)).size).toBe(boundaries.length)
  })

  it('another --name keeps every key; another --size keeps the tree phases and changes the rest', () => {
    const a = cachedTable().boundaries
    expect(cachedTable({ name: join(tmp, 'other') }).boundaries.map((b) => b.key)).toEqual(a.map((b) => b.key))
    const sized = cachedTable({ size: 3 * 1024 ** 3 }).boundaries
    expect(sized.slice(0, 5).map((b) => b.key)).toEqual(a.slice(0, 5).map((b) => b.key))
    for (let i = 5; i < a.length; i++) expect(sized[i]!.key).not.toBe(a[i]!.key)
  })

  it('resumed after a tree phase: the appliance is made and started, the tree mounted, the rest runs', () => {
    const { names } = cachedTable({}, 'post-install.d')
    expect(names.slice(0, 8)).toEqual([
      'prepare-aux',
      'appliance',
      'aux-image',
      'launch',
      'resume',
      'post-root.d',
      'block-device.d',
      'block-device',
    ])
    expect(names).not.toContain('snapshot post-install.d')
    expect(names).toContain('snapshot block-device')
  })

  it('resumed after the block-device step: the layout is mounted (the resume gives it), no copy again', () => {
    const { steps, names } = cachedTable({}, 'block-device')
    expect(names.slice(4, 8)).toEqual(['resume', 'pre-finalise.d', 'finalise.d', 'snapshot finalise.d'])
    expect(steps.find((s) => s.name === 'resume')!.gives).toEqual(['outDevice', 'layout', 'namedDevice'])
  })

  it('resumed after cleanup.d: nothing runs but the appliance and the outputs', () => {
    const { names } = cachedTable({}, 'cleanup.d')
    expect(names).toEqual([
      'prepare-aux',
      'appliance',
      'aux-image',
      'launch',
      'resume',
      'extract-data',
      'finalize-image',
      'freeze-image',
      'tree-archive',
      'shutdown',
      'tar',
      'qcow2',
    ])
  })

  it('a resumed build replaces the scripts of the phases after the restored one', () => {
    expect(hooksAfter('post-install.d')).toEqual([
      'post-root.d',
      'block-device.d',
      'pre-finalise.d',
      'finalise.d',
      'cleanup.d',
    ])
    expect(hooksAfter('block-device')).toEqual(['pre-finalise.d', 'finalise.d', 'cleanup.d'])
    expect(hooksAfter('cleanup.d')).toEqual([])
  })

  it("reads the guest's freeze report by its marks, whatever else sh printed (its stderr is merged)", () => {
    const out = [
      '/sysroot/tmp/in_target.aux',
      'fsfreeze: /sysroot/boot/efi: freeze failed: Operation not supported',
      '~/sysroot/boot/efi',
      '!/sysroot/x',
      '/sysroot',
      '',
    ].join('\n')
    expect(frozenMounts(out)).toEqual({
      frozen: ['/sysroot/tmp/in_target.aux', '/sysroot'],
      synced: ['/sysroot/boot/efi'],
      failed: ['/sysroot/x'],
    })
  })
})
