import { describe, expect, it } from 'vitest'

import { toBuildOptions } from '../../../src/cli/options.js'
import { UsageError } from '../../../src/errors.js'
import { GetoptError, normalizeArgv, parseArgv } from '../../../src/cli/parse.js'

describe('argument parsing', () => {
  it('accepts options anywhere, repeats, -long spellings and unique prefixes', () => {
    const { flags, elements } = parseArgv([
      'a',
      '-p',
      'x',
      'b',
      '--element-path=y',
      '-name',
      'n',
      '--form',
      'tar,raw',
      '--envvar',
      'A=1',
      '--envvar',
      'B',
    ])
    expect(elements).toEqual(['a', 'b'])
    expect(flags.elementPaths).toEqual(['x', 'y'])
    expect(flags.name).toBe('n')
    expect(flags.formats).toBe('tar,raw')
    expect(flags.envvars).toEqual(['A=1', 'B'])
  })
  it('takes optional values only with =', () => {
    expect(normalizeArgv(['--dry-run', 'elem'])).toEqual(['--dry-run=', 'elem'])
    expect(parseArgv(['--dry-run', 'elem'])).toMatchObject({ flags: { dryRun: 'text' }, elements: ['elem'] })
    expect(parseArgv(['--dry-run=json'])).toMatchObject({ flags: { dryRun: 'json' } })
    expect(parseArgv(['--machine-readable=stream:stderr'])).toMatchObject({
      flags: { machineReadable: 'stream:stderr' },
    })
  })
  it('refuses a --dry-run value other than json (it silently meant text)', () => {
    for (const v of ['bogus', 'text', 'JSON', ' json']) {
      expect(() => parseArgv([`--dry-run=${v}`, 'elem'])).toThrow(UsageError)
      expect(() => parseArgv([`--dry-run=${v}`, 'elem'])).toThrow(`--dry-run takes no value or ‘json’, not ‘${v}’`)
      expect(() => parseArgv([`--dry-run=${v}`, 'elem'])).not.toThrow(GetoptError)
    }
  })
  it('switches that share a name with their --no- form: the last one given wins', () => {
    // Both registered under commander's attribute name `network`, --network used to turn it off.
    expect(parseArgv(['--network', 'x']).flags.network).toBe(true)
    expect(parseArgv(['--no-network', 'x']).flags.network).toBe(false)
    expect(parseArgv(['--no-network', '--network', 'x']).flags.network).toBe(true)
    expect(parseArgv(['--network', '--no-network', 'x']).flags.network).toBe(false)
    expect(parseArgv(['--cache', 'x']).flags).toMatchObject({ cache: true, noCache: false })
  })
  it('stops at --', () => {
    expect(parseArgv(['--', '--name'])).toMatchObject({ elements: ['--name'] })
  })
  it('rejects unknown and ambiguous options getopt-style', () => {
    expect(() => parseArgv(['--nope'])).toThrow(GetoptError)
    expect(() => parseArgv(['--n'])).toThrow("unrecognized option '--n'") // --name, --network, --no-…
  })
  it('translates flags into typed build options', () => {
    const { flags, elements } = parseArgv([
      '-B',
      'lib',
      '--size',
      '1.5G',
      '--formats',
      'tar,tar,qcow2',
      '-m',
      '2048',
      '-u',
      '--no-network',
      '--extra-packages',
      'a,b',
      '--extra-packages',
      'c',
      'x',
    ])
    const o = toBuildOptions(elements, flags, ['x'])
    expect(o).toMatchObject({
      libPath: 'lib',
      size: 1.5 * 1024 ** 3,
      formats: ['tar', 'qcow2'],
      memsize: 2048,
      compress: false,
      network: false,
      extraPackages: ['a', 'b', 'c'],
    })
  })
})
