// The table of phase variables: every variable the environment model gives any phase, for a few
// representative plans and every state of the build, is classified; the table names no variable
// the model never gives; and the classes mean what the cache needs (name and paths out, secrets hashed).
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import type { BuildOptions } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import { DEFAULT_CONFIG } from '../../../src/blockdev/config.js'
import { ENV_TABLE, classifyVar, envKeyInputs, sha256 } from '../../../src/cache/env-keys.js'
import { phaseEnvironment, type EnvInputs, type EnvVar, type Where } from '../../../src/elements/environment.js'
import { extraPackages } from '../../../src/phases/extra-packages.js'
import { PHASES } from '../../../src/phases/registry.js'
import { demoOptions } from '../../helpers/demo-options.js'
import { tempDir } from '../../helpers/temp.js'

const tmp = tempDir('vdib-env-keys.')
const WHERES: Where[] = ['host', 'appliance', 'chroot']

function planned(o: Partial<BuildOptions>): EnvInputs {
  return planBuild(demoOptions(tmp, { imageCache: join(tmp, 'cache'), ...o })).envInputs
}

/** The plans: plain, every option that reaches the model, --envvar, and a layout with a boot label. */
function representative(): EnvInputs[] {
  const plain = planned({})
  return [
    plain,
    planned({ elements: ['demo-os', 'demo-app'], extraPackages: ['vim'], installType: 'package' }),
    planned({
      network: false,
      debug: 2,
      checksum: true,
      fsType: 'xfs',
      rootLabel: 'r',
      envvars: [
        { name: 'DIB_RELEASE', value: 'x' },
        { name: 'DIB_BLOCK_DEVICE_CONFIG', value: DEFAULT_CONFIG },
      ],
      env: { PATH: '/usr/bin:/bin', HOME: tmp, DIB_FROM_CALLER: 'y' },
    }),
    { ...plain, layout: { ...plain.layout, bootLabel: 'boot' } },
  ]
}

/** Every state the build gives the model: as planned, with the devices, on the FUSE view, without a size. */
function states(i: EnvInputs): EnvInputs[] {
  const { size: _size, ...noSize } = i
  return [
    i,
    noSize,
    { ...i, blockDevice: { device: '/dev/sda' } },
    { ...i, blockDevice: { device: '/dev/loop0p1', devices: ' [image0]=/dev/loop0 ' } },
    { ...i, hostMount: '/tmp/ws/extra-data.d', hostFakeBin: '/tmp/ws/host-bin' },
  ]
}

/** Every variable of every phase (at every place, with every flag), for every plan and state. */
function everyVariable(): { v: EnvVar; where: Where; phase: string }[] {
  const out: { v: EnvVar; where: Where; phase: string }[] = []
  const phases = [...PHASES, extraPackages]
  for (const plan of representative()) {
    for (const inputs of states(plan)) {
      for (const p of phases) {
        for (const where of WHERES) {
          for (const facts of [
            { ...p, where },
            { ...p, where, seesTargetRoot: true, afterBlockDevice: true, seesImageSize: true },
          ]) {
            for (const v of phaseEnvironment(inputs, facts).vars) out.push({ v, where, phase: p.hook })
          }
        }
      }
    }
  }
  return out
}

describe('the table of phase variables', () => {
  const all = everyVariable()

  it('classifies every variable a phase can get', () => {
    const missing = new Set(all.filter(({ v, where }) => classifyVar(v, where) === undefined).map(({ v }) => v.name))
    expect([...missing], 'add these to ENV_TABLE in src/cache/env-keys.ts').toEqual([])
  })

  it('names no variable the model never gives (but the --envvar ones only disk planning reads)', () => {
    const given = new Set(all.filter(({ v }) => v.source !== 'envvar').map(({ v }) => v.name))
    const stale = Object.keys(ENV_TABLE).filter((n) => !given.has(n) && n !== 'DIB_BLOCK_DEVICE_CONFIG')
    expect(stale).toEqual([])
  })

  it('a variable the table lacks is reported by name, not keyed in silence', () => {
    const r = envKeyInputs([{ name: 'NEW_THING', value: '1', source: 'virt-dib' }], 'chroot', false, {})
    expect(r.unclassified).toEqual(['NEW_THING'])
    expect(r.inputs).toEqual({})
  })

  it('leaves out what derives from the output name and host paths; keeps user variables by hash', () => {
    const cls = (name: string, where: Where, source: EnvVar['source'] = 'virt-dib') =>
      classifyVar({ name, source }, where)?.class
    for (const n of ['IMAGE_NAME', 'DIB_ARGS', 'DIB_MANIFEST_SAVE_DIR', 'IMAGE_ELEMENT_YAML', 'ELEMENTS_PATH']) {
      expect(cls(n, 'chroot')).toBe('excluded')
    }
    for (const n of ['TMP_MOUNT_PATH', 'TMP_HOOKS_PATH', '_LIB', 'PATH', 'DIB_IMAGE_CACHE']) {
      expect(cls(n, 'host')).toBe('excluded')
      expect(cls(n, 'appliance')).toBe('keyed')
    }
    expect(cls('DIB_IMAGE_SIZE', 'chroot')).toBe('block-device')
    expect(cls('DIB_BLOCK_DEVICE_CONFIG', 'chroot', 'envvar')).toBe('block-device')
    // A user's value for a name virt-dib leaves unset in this phase is the user's: keyed.
    expect(cls('IMAGE_BLOCK_DEVICE', 'chroot', 'envvar')).toBe('keyed')
    expect(cls('ARCH', 'chroot')).toBe('keyed')

    const vars: EnvVar[] = [
      { name: 'DIB_TOKEN', value: 'secret-value', source: 'envvar' },
      { name: 'IMAGE_NAME', value: 'img', source: 'virt-dib' },
      { name: 'DIB_IMAGE_SIZE', value: '1024', source: 'virt-dib' },
    ]
    expect(envKeyInputs(vars, 'chroot', false, {}).inputs).toEqual({ 'env:DIB_TOKEN': sha256('secret-value') })
    expect(Object.keys(envKeyInputs(vars, 'chroot', true, {}).inputs).sort()).toEqual([
      'env:DIB_IMAGE_SIZE',
      'env:DIB_TOKEN',
    ])
  })

  it('hashes DIB_ENV without the caller variables that do not count before the disk steps', () => {
    const dibEnv: EnvVar = { name: 'DIB_ENV', value: '(the value is recomputed)', source: 'virt-dib' }
    const key = (host: NodeJS.ProcessEnv, disk: boolean) =>
      envKeyInputs([dibEnv], 'chroot', disk, host).inputs['env:DIB_ENV']
    const a = { DIB_RELEASE: 'bookworm', DIB_BLOCK_DEVICE_CONFIG: 'one' }
    const b = { DIB_RELEASE: 'bookworm', DIB_BLOCK_DEVICE_CONFIG: 'two' }
    expect(key(a, false)).toBe(key(b, false))
    expect(key(a, true)).not.toBe(key(b, true))
    expect(key(a, false)).not.toBe(key({ ...a, DIB_RELEASE: 'trixie' }, false))
  })

  it('extra-data.d inherits the caller environment: its DIB_* count, the rest does not', () => {
    const host = { DIB_MIRROR: 'm', SSH_AUTH_SOCK: '/tmp/x', PATH: '/usr/bin' }
    const r = envKeyInputs([], 'host', false, host)
    expect(r.inputs).toEqual({ 'env:DIB_MIRROR': sha256('m') })
    expect(envKeyInputs([], 'chroot', false, host).inputs).toEqual({})
  })
})
