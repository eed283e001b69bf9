// The step table of real plans (the demo elements, no appliance): a valid table for every format
// set and mode, the order the steps run in, the conditional rows, the dry run listing exactly
// those steps; and the plan itself: frozen, no raw options, equal for the same request and seed.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { describePlan } from '../../../src/api/dry-run.js'
import type { BuildOptions, OutputFormatName } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import { checkTable } from '../../../src/engine/pipeline.js'
import { rootFsUuidFrom } from '../../../src/engine/plan.js'
import { planSteps } from '../../../src/engine/steps.js'
import { demoOptions } from '../../helpers/demo-options.js'

const tmp = mkdtempSync(join(tmpdir(), 'vdib-steps.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const options = (o: Partial<BuildOptions> = {}): BuildOptions =>
  demoOptions(tmp, { imageCache: join(tmp, 'cache'), ...o })

const names = (o: Partial<BuildOptions>) => planSteps(planBuild(options(o))).map((s) => s.name)

const BEFORE_OUTPUTS = [
  'prepare-aux',
  'appliance',
  'aux-image',
  'launch',
  'build-root',
  'root.d',
  'install-type',
  'extra-data.d',
  'pre-install.d',
  'install.d',
  'post-install.d',
  'post-root.d',
  'block-device.d',
  'block-device',
  'pre-finalise.d',
  'finalise.d',
  'cleanup.d',
  'extract-data',
  'finalize-image',
]

describe('planSteps', () => {
  it('qcow2 alone: the phases in diskimage-builder order, then shutdown and the conversion', () => {
    expect(names({ formats: ['qcow2'] })).toEqual([...BEFORE_OUTPUTS, 'shutdown', 'qcow2'])
  })

  it('tree and disk outputs: the tree is frozen and archived while the disk converts; the rest from the archive', () => {
    const steps = planSteps(planBuild(options({ formats: ['qcow2', 'squashfs', 'tar', 'tgz', 'vhd'] })))
    expect(steps.map((s) => s.name).slice(BEFORE_OUTPUTS.length)).toEqual([
      'freeze-image',
      'tree-archive',
      'shutdown',
      'squashfs',
      'tar',
      'tgz',
      'qcow2',
      'vhd',
    ])
    expect(steps.filter((s) => s.startsAfter !== undefined).map((s) => [s.name, s.startsAfter])).toEqual([
      ['squashfs', 'tree-archive'],
      ['tgz', 'tree-archive'],
      ['qcow2', 'freeze-image'],
      ['vhd', 'freeze-image'],
    ])
  })

  it('several conversions without a tree output start together after the shutdown, in name order', () => {
    const steps = planSteps(planBuild(options({ formats: ['raw', 'qcow2', 'vhd'] })))
    expect(steps.map((s) => [s.name, s.startsAfter]).slice(BEFORE_OUTPUTS.length)).toEqual([
      ['shutdown', undefined],
      ['qcow2', 'shutdown'],
      ['vhd', 'shutdown'],
    ])
  })

  it('raw alone converts nothing; checksums only when asked; extra-packages only with packages', () => {
    expect(names({ formats: ['raw'] }).slice(BEFORE_OUTPUTS.length)).toEqual(['shutdown'])
    expect(names({ formats: ['tar'], checksum: true }).slice(-4)).toEqual([
      'tree-archive',
      'shutdown',
      'tar',
      'checksums',
    ])
    const withPackages = names({ extraPackages: ['vim'] })
    expect(withPackages.slice(withPackages.indexOf('pre-install.d'), withPackages.indexOf('install.d') + 1)).toEqual([
      'pre-install.d',
      'extra-packages',
      'install.d',
    ])
    expect(names({})).not.toContain('extra-packages')
  })

  it('every table it makes is valid: unique names, needs given before, starts at earlier steps', () => {
    const sets: OutputFormatName[][] = [
      ['qcow2'],
      ['raw'],
      ['tar'],
      ['squashfs'],
      ['tgz', 'vhd'],
      ['raw', 'qcow2', 'vhd', 'tar', 'tgz', 'squashfs'],
    ]
    for (const formats of sets) {
      for (const checksum of [false, true]) {
        expect(() => checkTable(planSteps(planBuild(options({ formats, checksum }))))).not.toThrow()
      }
    }
  })

  it('the dry run lists exactly the steps the build runs, in order', () => {
    const plan = planBuild(options({ formats: ['qcow2', 'tar'], checksum: true }))
    const report = describePlan(plan)
    expect(report.steps.map((s) => s.name)).toEqual(planSteps(plan).map((s) => s.name))
    expect(report.steps.find((s) => s.name === 'qcow2')).toMatchObject({
      part: { kind: 'output', format: 'qcow2' },
      startsAfter: 'freeze-image',
    })
    expect(report.steps.find((s) => s.name === 'root.d')?.part).toEqual({ kind: 'phase', hook: 'root.d' })
  })
})

describe('the plan', () => {
  it('is frozen all the way down and keeps no raw options', () => {
    const plan = planBuild(options())
    expect(Object.isFrozen(plan)).toBe(true)
    expect(Object.isFrozen(plan.appliance)).toBe(true)
    expect(Object.isFrozen(plan.envInputs)).toBe(true)
    expect(Object.isFrozen(plan.env)).toBe(true)
    expect(Object.isFrozen(plan.layout)).toBe(true)
    expect('options' in plan).toBe(false)
  })

  it('two plans of the same request with the same seed are equal; without a seed the root UUID differs', () => {
    const o = options({ formats: ['qcow2', 'tar'] })
    expect(planBuild(o, { seed: 's1' })).toEqual(planBuild(o, { seed: 's1' }))
    expect(planBuild(o, { seed: 's1' }).rootFsUuid).not.toBe(planBuild(o, { seed: 's2' }).rootFsUuid)
    expect(planBuild(o).rootFsUuid).not.toBe(planBuild(o).rootFsUuid)
  })

  it('the seeded root file system UUID is a well-formed version 4 UUID, the same in the environment', () => {
    const uuid = rootFsUuidFrom('seed')
    expect(uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    const plan = planBuild(options(), { seed: 'seed' })
    expect(plan.rootFsUuid).toBe(uuid)
    expect(plan.envInputs.rootFsUuid).toBe(uuid)
  })

  it('does not change when the caller’s environment object does', () => {
    const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: tmp }
    const plan = planBuild(options({ env }))
    env['DIB_LATE'] = '1'
    expect(plan.env['DIB_LATE']).toBeUndefined()
  })
})
