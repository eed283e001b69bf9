// The output format registry: the names come from one list (sorted, checked), every format's
// flags are rows of the CLI table, and a chosen format's options become its settings with its
// defaults applied and its usage check run.
import { describe, expect, it } from 'vitest'

import { FLAGS } from '../../../src/cli/flags.js'
import { helpText } from '../../../src/cli/help.js'
import { parseArgv } from '../../../src/cli/parse.js'
import { toBuildOptions } from '../../../src/cli/options.js'
import { UsageError } from '../../../src/errors.js'
import {
  checkFormatName,
  isFormatName,
  OUTPUT_FLAGS,
  OUTPUT_FORMAT_NAMES,
  OUTPUT_FORMATS,
  resolveFormats,
  resolveOutputSettings,
  type OutputFormatName,
} from '../../../src/outputs/registry.js'

describe('the format names', () => {
  it('are derived from the one list, sorted, unique and well-named', () => {
    // The union type is derived too: this assignment fails to compile if a name goes missing.
    const all: Record<OutputFormatName, true> = {
      docker: true,
      qcow2: true,
      raw: true,
      squashfs: true,
      tar: true,
      tgz: true,
      vhd: true,
    }
    expect(OUTPUT_FORMAT_NAMES).toEqual(Object.keys(all))
    expect([...OUTPUT_FORMAT_NAMES]).toEqual([...OUTPUT_FORMAT_NAMES].sort())
    expect(new Set(OUTPUT_FORMAT_NAMES).size).toBe(OUTPUT_FORMAT_NAMES.length)
    for (const [name, f] of OUTPUT_FORMATS) {
      expect(f.name).toBe(name)
      expect(name).toMatch(/^[a-z][a-z0-9]*$/)
      expect(isFormatName(name)).toBe(true)
    }
    expect(isFormatName('qcow3')).toBe(false)
  })

  it('one --formats check: unknown names and the empty list are refused with the original messages', () => {
    expect(() => checkFormatName('zip')).toThrow(UsageError)
    expect(() => checkFormatName('zip')).toThrow('invalid format ‘zip’ in --formats')
    expect(() => resolveFormats([])).toThrow('the list of output formats cannot be empty')
    expect(() => resolveFormats(['tar', ''])).toThrow('invalid format ‘’ in --formats')
    expect(resolveFormats(['tgz', 'docker', 'tgz', 'qcow2']).map((f) => f.name)).toEqual(['docker', 'qcow2', 'tgz'])
  })
})

describe('the formats’ flags', () => {
  it('every format flag is a row of the CLI table, with its spelling, placeholder and help', () => {
    expect(OUTPUT_FLAGS.map((f) => f.keys.join(', ')).sort()).toEqual(['--docker-target', '--qemu-img-options', '-u'])
    for (const flag of OUTPUT_FLAGS) {
      const row = FLAGS.find((r) => r.keys.join() === flag.keys.join())
      expect(row, flag.keys.join()).toBeDefined()
      expect(row!.arg).toBe(flag.arg)
      expect(row!.help).toBe(flag.help)
    }
    // each spelling exactly once in the whole table
    const keys = FLAGS.flatMap((r) => r.keys)
    expect(new Set(keys).size).toBe(keys.length)
    expect(helpText()).toContain('  --docker-target <target>            Repo and tag for docker\n')
    expect(helpText()).toContain('  --qemu-img-options <option>         Add qemu-img options\n')
    expect(helpText()).toContain('  -u                                  Do not compress the qcow2 image\n')
  })

  it('set the formats’ fields of BuildOptions', () => {
    const parsed = parseArgv([
      '-B',
      'lib',
      '-u',
      '--qemu-img-options',
      'cluster_size=2M',
      '--docker-target',
      'a/b:c',
      'x',
    ])
    const o = toBuildOptions(parsed.elements, parsed.flags, [])
    expect(o).toMatchObject({ compress: false, qemuImgOptions: 'cluster_size=2M', dockerTarget: 'a/b:c' })
    const none = parseArgv(['-B', 'lib', 'x'])
    expect(toBuildOptions(none.elements, none.flags, [])).not.toHaveProperty('dockerTarget')
  })
})

describe('resolveOutputSettings', () => {
  it('normalises a format’s options with its defaults, frozen, only for the formats chosen', () => {
    const s = resolveOutputSettings(['qcow2', 'tar'], {})
    expect(s).toEqual({ qcow2: { compress: true, qemuImgOptions: undefined }, tar: {} })
    expect(Object.isFrozen(s)).toBe(true)
    expect(Object.isFrozen(s.qcow2)).toBe(true)
    expect(resolveOutputSettings(['qcow2'], { compress: false, qemuImgOptions: 'compat=0.10' })).toEqual({
      qcow2: { compress: false, qemuImgOptions: 'compat=0.10' },
    })
    // an empty -o is no -o, as before
    expect(resolveOutputSettings(['qcow2'], { qemuImgOptions: '' }).qcow2).toEqual({
      compress: true,
      qemuImgOptions: undefined,
    })
  })

  it('runs the chosen formats’ usage checks (docker needs a target) and no others', () => {
    expect(() => resolveOutputSettings(['docker', 'tar'], {})).toThrow(UsageError)
    expect(() => resolveOutputSettings(['docker'], { dockerTarget: '' })).toThrow(
      'docker: a target was not specified, use ‘--docker-target’',
    )
    expect(resolveOutputSettings(['tar'], {})).toEqual({ tar: {} })
    expect(resolveOutputSettings(['docker'], { dockerTarget: 'a/b:c' })).toEqual({ docker: { target: 'a/b:c' } })
  })

  it('gives each format’s steps its own settings: progress and the dry run’s target', () => {
    const s = resolveOutputSettings(['docker', 'qcow2'], { dockerTarget: 'vdib/x:y' })
    const docker = OUTPUT_FORMATS.get('docker')!
    const qcow2 = OUTPUT_FORMATS.get('qcow2')!
    expect(docker.progress(s)).toBe('Importing the image to docker as ‘vdib/x:y’')
    expect(docker.describeTarget('/o/img', s)).toBe('docker:vdib/x:y')
    expect(qcow2.progress(s)).toBe('Converting to qcow2')
    expect(qcow2.describeTarget('/o/img', s)).toBe('/o/img.qcow2')
    // a format that was not chosen has no settings: using it is a bug, said as one
    expect(() => OUTPUT_FORMATS.get('tar')!.progress(s)).toThrow('output format tar: settings not resolved')
  })
})
