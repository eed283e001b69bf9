// The environment each phase sees, and where every value comes from.
import { describe, expect, it } from 'vitest'

import {
  formatDibArgs,
  parseEnvvar,
  phaseEnvironment,
  resolveEnvvars,
  shellQuote,
  type EnvInputs,
} from '../../../src/elements/environment.js'

const inputs = (extra: Partial<EnvInputs> = {}): EnvInputs => ({
  arch: 'amd64',
  imageName: 'img',
  elements: [
    { name: 'a', dir: '/e/a', elementPath: '/e', deps: [], provides: [], reason: { kind: 'requested' } },
    { name: 'b', dir: '/e/b', elementPath: '/e', deps: [], provides: [], reason: { kind: 'requested' } },
  ],
  argv: ['virt-dib', '-B', '/lib', "it's"],
  hostEnv: { PATH: '/usr/bin', HOME: '/home/u', DIB_RELEASE: 'bookworm', FOO: 'host-foo', SECRET: 's' },
  envvars: [],
  offline: false,
  debugTrace: 0,
  checksum: false,
  layout: { rootLabel: 'cloudimg-rootfs', rootFsType: 'ext4', mountPoints: '/' },
  rootFsUuid: '1234',
  fsType: 'ext4',
  elementPaths: ['/e'],
  libPath: '/lib',
  imageCache: '/home/u/.cache/image-create',
  python: '/usr/bin/python3',
  ...extra,
})
const asMap = (vars: { name: string; value: string }[]) => Object.fromEntries(vars.map((v) => [v.name, v.value]))

describe('environment model', () => {
  it('parses --envvar and refuses names a shell cannot export', () => {
    expect(parseEnvvar('A=1=2')).toEqual({ name: 'A', value: '1=2' })
    expect(parseEnvvar('A')).toEqual({ name: 'A' })
    expect(parseEnvvar('A=')).toEqual({ name: 'A', value: '' })
    expect(() => parseEnvvar('1A=x')).toThrow('invalid variable name ‘1A’ in --envvar')
    expect(() => parseEnvvar('A-B=x')).toThrow(/invalid variable name/)
  })

  it('--envvar: the last one wins; carried names missing on the host are dropped', () => {
    const r = resolveEnvvars(
      [{ name: 'A', value: '1' }, { name: 'FOO' }, { name: 'A', value: '2' }, { name: 'NOPE' }],
      { FOO: 'f' },
    )
    expect(r.map((v) => `${v.name}=${v.value}`)).toEqual(['FOO=f', 'A=2'])
  })

  it('keeps the host environment out of appliance phases except --envvar', () => {
    const { vars } = phaseEnvironment(
      inputs({ envvars: [{ name: 'FOO' }, { name: 'BAR', value: 'b' }] }),
      'install.d',
      'chroot',
    )
    const env = asMap(vars)
    expect(env['FOO']).toBe('host-foo')
    expect(env['BAR']).toBe('b')
    expect(env['SECRET']).toBeUndefined()
    expect(env['DIB_RELEASE']).toBeUndefined()
    expect(env['HOME']).toBe('/root')
    expect(env['TMP_HOOKS_PATH']).toBe('/tmp/in_target.aux/hooks')
    expect(env['DIB_ENV']).toBe('declare -x DIB_RELEASE="bookworm"')
    expect(vars.find((v) => v.name === 'FOO')?.source).toBe('envvar')
  })

  it('lets variables virt-dib sets win over --envvar, with a warning', () => {
    const { vars, warnings } = phaseEnvironment(
      inputs({ envvars: [{ name: 'ARCH', value: 'x' }] }),
      'root.d',
      'appliance',
    )
    expect(asMap(vars)['ARCH']).toBe('amd64')
    expect(warnings).toEqual(['--envvar ARCH is ignored: virt-dib sets ARCH itself'])
  })

  it('sets TARGET_ROOT for root.d and cleanup.d only', () => {
    const has = (hook: Parameters<typeof phaseEnvironment>[1], where: Parameters<typeof phaseEnvironment>[2]) =>
      asMap(phaseEnvironment(inputs(), hook, where).vars)['TARGET_ROOT']
    expect(has('root.d', 'appliance')).toBe('/sysroot')
    expect(has('cleanup.d', 'appliance')).toBe('/sysroot')
    expect(has('post-root.d', 'appliance')).toBeUndefined()
    expect(has('install.d', 'chroot')).toBeUndefined()
  })

  it('gives extra-data.d the host view through the FUSE mount', () => {
    const env = asMap(phaseEnvironment(inputs({ hostMount: '/tmp/m' }), 'extra-data.d', 'host').vars)
    expect(env['TMP_MOUNT_PATH']).toBe('/tmp/m')
    expect(env['TMP_HOOKS_PATH']).toBe('/tmp/m/tmp/in_target.aux/hooks')
    expect(env['_LIB']).toBe('/lib')
    expect(env['DIB_PYTHON_EXEC']).toBe('/usr/bin/python3')
    expect(env['IMAGE_ELEMENT_YAML']).toBe('a: /e/a\nb: /e/b\n')
  })

  it('exposes IMAGE_BLOCK_DEVICE from pre-finalise.d on', () => {
    const i = inputs({ blockDevice: { device: '/dev/loop0p1' } })
    expect(asMap(phaseEnvironment(i, 'post-install.d', 'chroot').vars)['IMAGE_BLOCK_DEVICE']).toBeUndefined()
    const env = asMap(phaseEnvironment(i, 'finalise.d', 'chroot').vars)
    expect(env['IMAGE_BLOCK_DEVICE']).toBe('/dev/loop0p1')
    expect(env['IMAGE_BLOCK_DEVICE_WITHOUT_PART']).toBe('/dev/loop0')
    // diskimage-builder's shape, which bootloader evals into an associative array
    expect(env['IMAGE_BLOCK_DEVICES']).toBe(' [image0]=/dev/loop0p1 ')
  })

  it('takes the root label, root type, mount points and boot label from the layout', () => {
    const i = inputs({ layout: { rootLabel: 'root', rootFsType: 'xfs', mountPoints: '/boot|/', bootLabel: 'boot' } })
    for (const where of ['chroot', 'appliance'] as const) {
      const env = asMap(phaseEnvironment(i, 'root.d', where).vars)
      expect(env['DIB_ROOT_LABEL']).toBe('root')
      expect(env['DIB_ROOT_FSTYPE']).toBe('xfs')
      expect(env['FS_TYPE']).toBe('ext4')
      expect(env['DIB_MOUNTPOINTS']).toBe('/boot|/')
      expect(env['DIB_BOOT_LABEL']).toBe('boot')
    }
    expect(asMap(phaseEnvironment(i, 'root.d', 'appliance').vars)['DIB_BLOCK_DEVICE_PARAMS_YAML']).toBe(
      '/sysroot/tmp/in_target.aux/blockdev/params.yaml',
    )
  })

  it('sets DIB_OFFLINE=1 without network, and the trace level', () => {
    const env = asMap(phaseEnvironment(inputs({ offline: true, debugTrace: 2 }), 'install.d', 'chroot').vars)
    expect(env['DIB_OFFLINE']).toBe('1')
    expect(env['DIB_DEBUG_TRACE']).toBe('2')
    expect(env['TMPDIR']).toBeUndefined() // unset in the chroot, as diskimage-builder does
    expect(env['DIB_ROOT_FSTYPE']).toBe('ext4')
  })

  it('quotes values so that the shell sees them literally', () => {
    expect(shellQuote(`a'b $(x) \`y\` "z"\nw`)).toBe(`'a'\\''b $(x) \`y\` "z"\nw'`)
    expect(formatDibArgs(['virt-dib', '--name', "it's"])).toBe(`virt-dib '--name' 'it'\\''s'`)
  })
})
