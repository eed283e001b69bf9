// SOURCE_DATE_EPOCH: where a build takes it from, how a bad value is refused before anything runs,
// and that every phase sees it.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import { phaseEnvironment } from '../../../src/elements/environment.js'
import { UsageError } from '../../../src/errors.js'
import { phase } from '../../../src/phases/registry.js'
import { reproducibleTarArgs, resolveSourceDateEpoch } from '../../../src/repro/epoch.js'
import { demoOptions } from '../../helpers/demo-options.js'

const tmp = mkdtempSync(join(tmpdir(), 'vdib-epoch.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))
const options = (o: Partial<BuildOptions> = {}): BuildOptions => demoOptions(tmp, o)

describe('resolveSourceDateEpoch', () => {
  it('takes the API’s value, then --envvar’s, then the host’s; an empty one is unset', () => {
    expect(resolveSourceDateEpoch(5, '6', '7')).toBe(5)
    expect(resolveSourceDateEpoch(undefined, '6', '7')).toBe(6)
    expect(resolveSourceDateEpoch(undefined, undefined, '7')).toBe(7)
    expect(resolveSourceDateEpoch(undefined, '', '7')).toBe(7)
    expect(resolveSourceDateEpoch(undefined, undefined, '')).toBeUndefined()
    expect(resolveSourceDateEpoch(undefined, undefined, undefined)).toBeUndefined()
    expect(resolveSourceDateEpoch(0, undefined, undefined)).toBe(0)
  })

  it('refuses what is not whole seconds since 1970, naming where it came from', () => {
    for (const [api, envvar, host, msg] of [
      [undefined, undefined, 'yesterday', 'SOURCE_DATE_EPOCH ‘yesterday’ is not a time'],
      [undefined, '-1', undefined, '--envvar SOURCE_DATE_EPOCH ‘-1’ is not a time'],
      [undefined, undefined, '1.5', 'SOURCE_DATE_EPOCH ‘1.5’'],
      [undefined, undefined, ' 12', 'SOURCE_DATE_EPOCH ‘ 12’'],
      [undefined, undefined, '99999999999999', 'SOURCE_DATE_EPOCH ‘99999999999999’'],
      [1.5, undefined, undefined, 'sourceDateEpoch ‘1.5’'],
      [-3, undefined, undefined, 'sourceDateEpoch ‘-3’'],
    ] as const) {
      const f = () => resolveSourceDateEpoch(api, envvar, host)
      expect(f).toThrow(UsageError)
      expect(f).toThrow(msg)
    }
  })

  it('gives tar sorted entries, clamped times and pax headers free of pids, atimes and ctimes', () => {
    const args = reproducibleTarArgs(1700000000)
    expect(args).toEqual(expect.arrayContaining(['--sort=name', '--mtime=@1700000000', '--clamp-mtime']))
    expect(args.join(' ')).toContain('exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime')
    expect(args).toContain('--sparse-version=0.0')
  })
})

describe('a plan with SOURCE_DATE_EPOCH', () => {
  it('has none by default', () => {
    expect(planBuild(options({ env: {} })).sourceDateEpoch).toBeUndefined()
  })

  it('takes it from the host environment, --envvar or the API option, in that rising order', () => {
    expect(planBuild(options({ env: { SOURCE_DATE_EPOCH: '100' } })).sourceDateEpoch).toBe(100)
    const envvars = [{ name: 'SOURCE_DATE_EPOCH', value: '200' }]
    expect(planBuild(options({ env: { SOURCE_DATE_EPOCH: '100' }, envvars })).sourceDateEpoch).toBe(200)
    expect(planBuild(options({ env: {}, envvars, sourceDateEpoch: 300 })).sourceDateEpoch).toBe(300)
  })

  it('refuses a bad value before anything runs', () => {
    expect(() => planBuild(options({ env: { SOURCE_DATE_EPOCH: 'now' } }))).toThrow(
      'SOURCE_DATE_EPOCH ‘now’ is not a time in whole seconds since 1970',
    )
  })

  it('exports it to every phase, wherever it runs', () => {
    const plan = planBuild(options({ env: {}, sourceDateEpoch: 1700000000 }))
    for (const hook of ['root.d', 'extra-data.d', 'install.d', 'block-device.d', 'cleanup.d'] as const) {
      const p = phase(hook)
      const { vars } = phaseEnvironment(plan.envInputs, { ...p, where: p.where })
      expect(vars.find((v) => v.name === 'SOURCE_DATE_EPOCH')?.value, hook).toBe('1700000000')
    }
    const none = planBuild(options({ env: {} }))
    const p = phase('install.d')
    expect(
      phaseEnvironment(none.envInputs, { ...p, where: p.where }).vars.some((v) => v.name === 'SOURCE_DATE_EPOCH'),
    ).toBe(false)
  })
})
