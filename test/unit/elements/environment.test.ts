// The environment each phase sees, and where every value comes from.
import { spawnSync } from 'node:child_process'

import { describe, expect, it } from 'vitest'

import {
  bashExportQuote,
  formatDibArgs,
  formatDibEnv,
  parseEnvvar,
  phaseEnvironment,
  resolveEnvvars,
  shellQuote,
  type EnvInputs,
  type HookName,
  type Where,
} from '../../../src/elements/environment.js'
import { phase } from '../../../src/phases/registry.js'

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
// A phase's own facts, run at `where` (some cases try a phase where it does not run).
const facts = (hook: HookName, where: Where = phase(hook).where) => ({ ...phase(hook), where })
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
      facts('install.d', 'chroot'),
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
      facts('root.d', 'appliance'),
    )
    expect(asMap(vars)['ARCH']).toBe('amd64')
    expect(warnings).toEqual(['--envvar ARCH is ignored: virt-dib sets ARCH itself'])
  })

  it('sets TARGET_ROOT for root.d and cleanup.d only', () => {
    const has = (hook: HookName, where: Where) =>
      asMap(phaseEnvironment(inputs(), facts(hook, where)).vars)['TARGET_ROOT']
    expect(has('root.d', 'appliance')).toBe('/sysroot')
    expect(has('cleanup.d', 'appliance')).toBe('/sysroot')
    expect(has('post-root.d', 'appliance')).toBeUndefined()
    expect(has('install.d', 'chroot')).toBeUndefined()
  })

  it('gives extra-data.d the host view through the FUSE mount', () => {
    const env = asMap(phaseEnvironment(inputs({ hostMount: '/tmp/m' }), facts('extra-data.d', 'host')).vars)
    expect(env['TMP_MOUNT_PATH']).toBe('/tmp/m')
    expect(env['TMP_HOOKS_PATH']).toBe('/tmp/m/tmp/in_target.aux/hooks')
    expect(env['_LIB']).toBe('/lib')
    expect(env['DIB_PYTHON_EXEC']).toBe('/usr/bin/python3')
    expect(env['IMAGE_ELEMENT_YAML']).toBe('a: /e/a\nb: /e/b\n')
  })

  it('exposes IMAGE_BLOCK_DEVICE from pre-finalise.d on', () => {
    const i = inputs({ blockDevice: { device: '/dev/loop0p1' } })
    expect(asMap(phaseEnvironment(i, facts('post-install.d', 'chroot')).vars)['IMAGE_BLOCK_DEVICE']).toBeUndefined()
    const env = asMap(phaseEnvironment(i, facts('finalise.d', 'chroot')).vars)
    expect(env['IMAGE_BLOCK_DEVICE']).toBe('/dev/loop0p1')
    expect(env['IMAGE_BLOCK_DEVICE_WITHOUT_PART']).toBe('/dev/loop0')
    // diskimage-builder's shape, which bootloader evals into an associative array
    expect(env['IMAGE_BLOCK_DEVICES']).toBe(' [image0]=/dev/loop0p1 ')
  })

  it('takes the root label, root type, mount points and boot label from the layout', () => {
    const i = inputs({ layout: { rootLabel: 'root', rootFsType: 'xfs', mountPoints: '/boot|/', bootLabel: 'boot' } })
    for (const where of ['chroot', 'appliance'] as const) {
      const env = asMap(phaseEnvironment(i, facts('root.d', where)).vars)
      expect(env['DIB_ROOT_LABEL']).toBe('root')
      expect(env['DIB_ROOT_FSTYPE']).toBe('xfs')
      expect(env['FS_TYPE']).toBe('ext4')
      expect(env['DIB_MOUNTPOINTS']).toBe('/boot|/')
      expect(env['DIB_BOOT_LABEL']).toBe('boot')
    }
    expect(asMap(phaseEnvironment(i, facts('root.d', 'appliance')).vars)['DIB_BLOCK_DEVICE_PARAMS_YAML']).toBe(
      '/sysroot/tmp/in_target.aux/blockdev/params.yaml',
    )
  })

  it('sets DIB_OFFLINE=1 without network, and the trace level', () => {
    const env = asMap(phaseEnvironment(inputs({ offline: true, debugTrace: 2 }), facts('install.d', 'chroot')).vars)
    expect(env['DIB_OFFLINE']).toBe('1')
    expect(env['DIB_DEBUG_TRACE']).toBe('2')
    expect(env['TMPDIR']).toBeUndefined() // unset in the chroot, as diskimage-builder does
    expect(env['DIB_ROOT_FSTYPE']).toBe('ext4')
  })

  it('quotes values so that the shell sees them literally', () => {
    expect(shellQuote(`a'b $(x) \`y\` "z"\nw`)).toBe(`'a'\\''b $(x) \`y\` "z"\nw'`)
    expect(formatDibArgs(['virt-dib', '--name', "it's"])).toBe(`virt-dib '--name' 'it'\\''s'`)
  })

  it('quoted values, non-ASCII and control characters included, come back byte for byte from bash', () => {
    const values = ['héllo ✓ 日本', `a'b $(x) \`y\` "z"\nw`, '\t\x01 trailing \\', '', "''"]
    for (const v of values) {
      const r = spawnSync('bash', ['-c', `X=${shellQuote(v)}; printf %s "$X"`], { encoding: 'utf8' })
      expect(r.stdout).toBe(v)
    }
  })
})

describe('DIB_ENV, exactly as bash prints it', () => {
  // What diskimage-builder runs (lib/disk-image-create): LC_ALL=C, then `export | grep ' DIB_.*='`.
  const bashDibEnv = (env: Record<string, string>): string => {
    const r = spawnSync('bash', ['-c', `export LC_ALL=C; export | grep ' DIB_.*='`], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env },
      encoding: 'utf8',
    })
    // $(…) drops the trailing newline, as DIB's assignment does
    return r.stdout.replace(/\n+$/, '')
  }
  const TRICKY: Record<string, string> = {
    DIB_DOLLAR: 'a$b${c}$(d)',
    DIB_BACKTICK: 'x`id`y',
    DIB_DQUOTE: 'say "hi"',
    DIB_BACKSLASH: 'C:\\dir\\n',
    DIB_SQUOTE: "it's",
    DIB_NEWLINE: 'line1\nline2',
    DIB_TAB_ESC: 'a\tb\u001bc\u0007\u007f',
    DIB_UTF8: 'héllo ✓ 日本',
    DIB_MIXED: 'é$`"\\\'\n',
    DIB_EMPTY: '',
    DIB_BANG: '!x ~ * ? [a]',
    DIB_SPACES: '  lead and trail  ',
  }

  it('matches real bash for $, `, ", \\, quotes, newlines, control and non-ASCII characters', () => {
    expect(formatDibEnv({ ...TRICKY, PATH: '/usr/bin' })).toBe(bashDibEnv(TRICKY))
  })

  it('matches real bash value by value', () => {
    for (const [k, v] of Object.entries(TRICKY)) {
      expect(`declare -x ${k}=${bashExportQuote(v)}`, k).toBe(bashDibEnv({ [k]: v }))
    }
  })

  it('leaves out what bash does not import as a variable, and sorts by name', () => {
    const env = { 'DIB_A-B': 'x', DIB_b: '1', DIB_B: '2', DIB_a: '3', NOT_DIB: 'n' }
    expect(formatDibEnv(env)).toBe(bashDibEnv(env))
    expect(
      formatDibEnv(env)
        .split('\n')
        .map((l) => l.split('=')[0]),
    ).toEqual(['declare -x DIB_B', 'declare -x DIB_a', 'declare -x DIB_b'])
  })

  it('the value round-trips through bash eval', () => {
    const out = spawnSync('bash', ['-c', 'eval "$1"; printf %s "$DIB_MIXED"', '_', formatDibEnv(TRICKY)], {
      encoding: 'utf8',
    })
    expect(out.stdout).toBe(TRICKY['DIB_MIXED'])
  })
})
