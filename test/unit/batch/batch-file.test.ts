// The batch file: builds merged over defaults, paths relative to the file, every problem reported
// at once with where it is, and the planning checks (outputs, bases) before anything starts.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { BatchFileError, loadBatchFile, parseBatch } from '../../../src/batch/batch-file.js'
import { closest, editDistance } from '../../../src/batch/did-you-mean.js'
import { VirtDibError } from '../../../src/errors.js'
import { tempDir } from '../../helpers/temp.js'

const DIR = '/srv/batch'
const SOURCE = 'ci.yaml'
/** The minimum every build needs, as defaults. */
const DEFAULTS = `
defaults:
  libPath: dib/lib
  elementPaths: [elements]
  elements: [debian]
`

const parse = (text: string) => parseBatch(text, DIR, SOURCE)

/** The problems a text is refused with (fails when it is accepted). */
function problemsOf(text: string): readonly string[] {
  try {
    parse(text)
  } catch (e) {
    if (e instanceof BatchFileError) return e.problems
    throw e
  }
  throw new Error('the batch was accepted')
}

describe('a batch file’s builds', () => {
  it('are merged over the defaults, a list in a build replacing the default’s', () => {
    const spec = parse(`
defaults:
  libPath: /dib/lib
  elementPaths: [/elements]
  elements: [debian, vm]
  formats: [qcow2, raw]
  network: false
builds:
  - name: a
  - name: b
    elements: [ubuntu]
    formats: [tgz]
    network: true
`)
    expect(spec.source).toBe(SOURCE)
    expect(spec.builds.map((b) => [b.index, b.name, b.base])).toEqual([
      [0, 'a', undefined],
      [1, 'b', undefined],
    ])
    expect(spec.builds[0]!.options).toEqual({
      name: `${DIR}/a`,
      libPath: '/dib/lib',
      elementPaths: ['/elements'],
      elements: ['debian', 'vm'],
      formats: ['qcow2', 'raw'],
      network: false,
    })
    expect(spec.builds[1]!.options).toMatchObject({ elements: ['ubuntu'], formats: ['tgz'], network: true })
  })

  it('have their relative paths resolved against the file’s folder, absolute ones kept', () => {
    const [b] = parse(`
builds:
  - name: out/cloud
    libPath: ../dib/lib
    elementPaths: [elements, /opt/elements, ./more/]
    elements: [debian]
    imageCache: cache
    drive: /var/tmp/aux.img
`).builds
    expect(b!.name).toBe('out/cloud')
    expect(b!.options).toMatchObject({
      name: '/srv/batch/out/cloud',
      libPath: '/srv/dib/lib',
      elementPaths: ['/srv/batch/elements', '/opt/elements', '/srv/batch/more'],
      imageCache: '/srv/batch/cache',
      drive: '/var/tmp/aux.img',
    })
  })

  it('take sizes in bytes or as size strings', () => {
    const sizes = parse(`${DEFAULTS}
builds:
  - { name: a, size: 2G }
  - { name: b, size: 1.5G }
  - { name: c, size: 512M }
  - { name: d, size: 1073741824 }
`).builds.map((b) => b.options.size)
    expect(sizes).toEqual([2 * 1024 ** 3, 1.5 * 1024 ** 3, 512 * 1024 ** 2, 1024 ** 3])
  })

  it('take envvars in --envvar form: NAME carries the host value, NAME=value sets it', () => {
    const [b] = parse(`${DEFAULTS}
builds:
  - name: a
    envvars: [http_proxy, DIB_RELEASE=bookworm, EMPTY=, 'X=a=b']
`).builds
    expect(b!.options.envvars).toEqual([
      { name: 'http_proxy' },
      { name: 'DIB_RELEASE', value: 'bookworm' },
      { name: 'EMPTY', value: '' },
      { name: 'X', value: 'a=b' },
    ])
  })

  it('take every kind of field, output formats’ own included', () => {
    const [b] = parse(`${DEFAULTS}
builds:
  - name: a
    skipBase: true
    checksum: true
    memsize: 2048
    smp: 2
    debug: 0
    driveFormat: qcow2
    formats: [qcow2, docker, qcow2]
    compress: false
    qemuImgOptions: compat=1.1
    dockerTarget: ci/a:latest
    rebuildFrom: install.d
    excludeScripts: [10-foo]
    extraPackages: [vim]
`).builds
    expect(b!.options).toMatchObject({
      skipBase: true,
      checksum: true,
      memsize: 2048,
      smp: 2,
      debug: 0,
      driveFormat: 'qcow2',
      formats: ['qcow2', 'docker'],
      compress: false,
      qemuImgOptions: 'compat=1.1',
      dockerTarget: 'ci/a:latest',
      rebuildFrom: 'install.d',
      excludeScripts: ['10-foo'],
      extraPackages: ['vim'],
    })
  })

  it('need no defaults: an empty one is none', () => {
    expect(parse('defaults:\nbuilds: [{ name: a, libPath: l, elementPaths: [], elements: [d] }]').builds).toHaveLength(
      1,
    )
  })

  it('load from a JSON file, relative to the file’s folder wherever the process is', () => {
    const dir = tempDir('vdib-batch-')
    const path = join(dir, 'ci.json')
    writeFileSync(
      path,
      JSON.stringify({
        defaults: { libPath: 'lib', elementPaths: ['elements'], elements: ['debian'], size: '3G' },
        builds: [{ name: 'base' }, { name: 'web', base: 'base', elements: ['nginx'] }],
      }),
    )
    const spec = loadBatchFile(path)
    expect(spec.source).toBe(path)
    expect(spec.builds.map((b) => [b.name, b.base, b.options.name, b.options.libPath, b.options.size])).toEqual([
      ['base', undefined, join(dir, 'base'), join(dir, 'lib'), 3 * 1024 ** 3],
      ['web', 'base', join(dir, 'web'), join(dir, 'lib'), 3 * 1024 ** 3],
    ])
  })

  it('a layer has its base’s options under its own keys, and the base’s elements before its own', () => {
    const spec = parse(`
defaults:
  libPath: /lib
  elementPaths: [/elements]
  formats: [qcow2]
builds:
  - { name: web, base: debian, elements: [nginx, vm], formats: [tar] }
  - { name: debian, elements: [debian, vm], size: 3G, envvars: [DIB_RELEASE=bookworm] }
  - { name: web-big, base: web, size: 8G }
`)
    const by = new Map(spec.builds.map((b) => [b.name, b.options]))
    expect(by.get('web')).toMatchObject({
      elements: ['debian', 'vm', 'nginx'],
      size: 3 * 1024 ** 3,
      formats: ['tar'],
      envvars: [{ name: 'DIB_RELEASE', value: 'bookworm' }],
      name: join(DIR, 'web'),
    })
    expect(by.get('web-big')).toMatchObject({
      elements: ['debian', 'vm', 'nginx'],
      size: 8 * 1024 ** 3,
      formats: ['tar'],
    })
    expect(by.get('debian')!.formats).toEqual(['qcow2'])
  })

  it('load from a YAML file, and a file that cannot be read is a BatchFileError', () => {
    const dir = tempDir('vdib-batch-')
    const path = join(dir, 'ci.yaml')
    writeFileSync(path, `${DEFAULTS}\nbuilds:\n  - name: x\n`)
    expect(loadBatchFile(path).builds[0]!.options.name).toBe(join(dir, 'x'))
    const missing = join(dir, 'nope.yaml')
    expect(() => loadBatchFile(missing)).toThrow(new BatchFileError(missing, ['cannot read the batch file: ENOENT']))
    expect(() => loadBatchFile(missing)).toThrow(`${missing}: cannot read the batch file: ENOENT`)
  })
})

describe('a batch file’s problems', () => {
  it('each say which build and which key, in the file’s order', () => {
    expect(problemsOf(`${DEFAULTS}\nbuilds:\n  - { name: a, fromats: [raw] }`)).toEqual([
      'builds[0].fromats: unknown key (did you mean formats?)',
    ])
    expect(problemsOf(`${DEFAULTS}\nbuilds:\n  - { name: a, size: 2Q }`)).toEqual(['builds[0].size: not a size: 2Q'])
    expect(problemsOf(`${DEFAULTS}\nbuilds:\n  - { name: a, size: -5 }`)).toEqual(['builds[0].size: not a size: -5'])
    expect(problemsOf(`${DEFAULTS}\nbuilds:\n  - { name: a, elements: debian }`)).toEqual([
      'builds[0].elements: expected a list of strings',
    ])
    expect(problemsOf(`${DEFAULTS}\nbuilds:\n  - { name: a, formats: [qcow2, qcw2, zzz] }`)).toEqual([
      'builds[0].formats[1]: unknown output format ‘qcw2’ (did you mean qcow2?)',
      'builds[0].formats[2]: unknown output format ‘zzz’ (one of docker, qcow2, raw, squashfs, tar, tgz, vhd)',
    ])
    expect(problemsOf(`${DEFAULTS}\nbuilds:\n  - { elements: [x] }`)).toEqual(['builds[0]: no name'])
  })

  it('cover every kind of value', () => {
    expect(
      problemsOf(`${DEFAULTS}
builds:
  - name: a
    skipBase: yes
    memsize: 0
    smp: 1.5
    debug: -1
    driveFormat: vmdk
    formats: []
    envvars: [GOOD, 1BAD=x, 3]
    elementPaths: ['']
    libPath: 7
    rootLabel: [x]
    wat: 1
  - name: out/
  - 12
`),
    ).toEqual([
      'builds[0].skipBase: expected true or false',
      'builds[0].memsize: expected a whole number greater than zero',
      'builds[0].smp: expected a whole number greater than zero',
      'builds[0].debug: expected a whole number, 0 or more',
      'builds[0].driveFormat: expected raw or qcow2',
      'builds[0].formats: the list of output formats cannot be empty',
      'builds[0].envvars[1]: invalid variable name ‘1BAD’',
      'builds[0].envvars[2]: expected NAME or NAME=value',
      'builds[0].elementPaths: expected a list of paths',
      'builds[0].libPath: expected a path',
      'builds[0].rootLabel: expected a string',
      'builds[0].wat: unknown key',
      'builds[1].name: not a file name: out/',
      'builds[2]: expected a map',
    ])
  })

  it('in defaults are reported once, under defaults', () => {
    expect(
      problemsOf(`
defaults:
  libPath: /lib
  elementPaths: [/e]
  elements: [debian]
  formats: [qcw2]
  name: x
  base: y
builds:
  - name: a
  - name: b
`),
    ).toEqual([
      'defaults.formats[0]: unknown output format ‘qcw2’ (did you mean qcow2?)',
      'defaults.name: only a build can have a name',
      'defaults.base: only a build can have a base',
    ])
  })

  it('include a required key found neither in the build nor in defaults (but not a bad one twice)', () => {
    expect(
      problemsOf(`
defaults:
  elementPaths: [/e]
  elements: debian
builds:
  - name: a
  - { name: b, libPath: /lib, elements: [x] }
  - { name: c, libPath: /lib, elements: [x], base: a }
`),
    ).toEqual([
      'defaults.elements: expected a list of strings',
      'builds[0].libPath: missing (neither in the build nor in defaults)',
    ])
  })

  it('of the file as a whole', () => {
    expect(problemsOf('builds: [')[0]).toMatch(/^not valid YAML: .*line 1, column 10$/)
    expect(problemsOf('a: 1\na: 2\nbuilds: []')[0]).toMatch(/^not valid YAML: Map keys must be unique/)
    expect(problemsOf('- 1')).toEqual(['expected a map with defaults: and builds:'])
    expect(problemsOf('')).toEqual(['expected a map with defaults: and builds:'])
    expect(problemsOf('defaults: {}')).toEqual(['builds: missing'])
    expect(problemsOf('defaults: []\nbuilds: []\nbuild: x')).toEqual([
      'build: unknown key (did you mean builds?)',
      'defaults: expected a map',
      'builds: expected a non-empty list',
    ])
  })

  it('are all reported at once, one line each, prefixed with the file, in a VirtDibError', () => {
    let error: unknown
    try {
      parse(`${DEFAULTS}
builds:
  - { name: a, Formats: [raw] }
  - { name: b, size: 2Q }
  - { name: c, elements: 3 }
  - { size: 1G }
  - { name: a }
`)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(BatchFileError)
    expect(error).toBeInstanceOf(VirtDibError)
    const e = error as BatchFileError
    expect(e.exitCode).toBe(1)
    expect(e.problems).toEqual([
      'builds[0].Formats: unknown key (did you mean formats?)',
      'builds[1].size: not a size: 2Q',
      'builds[2].elements: expected a list of strings',
      'builds[3]: no name',
      `builds[0] ‘a’ and builds[4] ‘a’ both write ${DIR}/a`,
    ])
    expect(e.message.split('\n')).toEqual(e.problems.map((p) => `${SOURCE}: ${p}`))
  })
})

describe('planning a batch', () => {
  it('orders every base before its layers, otherwise keeping the file’s order', () => {
    const spec = parse(`${DEFAULTS}
builds:
  - { name: web, base: app }
  - { name: other }
  - { name: app, base: debian }
  - { name: db, base: ./debian }
  - { name: debian }
  - { name: last }
`)
    expect(spec.builds.map((b) => [b.index, b.name, b.base])).toEqual([
      [1, 'other', undefined],
      [4, 'debian', undefined],
      [2, 'app', 'debian'],
      [0, 'web', 'app'],
      [3, 'db', 'debian'],
      [5, 'last', undefined],
    ])
  })

  it('refuses a base that names no build, and a build on itself', () => {
    expect(
      problemsOf(`${DEFAULTS}
builds:
  - { name: debian }
  - { name: web, base: debain }
  - { name: db, base: db }
  - { name: x, base: nothing-like-it }
`),
    ).toEqual([
      'builds[1].base: no build is named ‘debain’ (did you mean debian?)',
      'builds[2].base: ‘db’ is this build itself',
      'builds[3].base: no build is named ‘nothing-like-it’',
    ])
  })

  it('refuses cycles of bases, naming the builds, once per cycle', () => {
    expect(
      problemsOf(`${DEFAULTS}
builds:
  - { name: ok }
  - { name: b, base: c }
  - { name: a, base: b }
  - { name: c, base: a }
  - { name: on-the-cycle, base: a }
  - { name: x, base: y }
  - { name: y, base: x }
`),
    ).toEqual([
      'builds[1], builds[2], builds[3]: a cycle of bases (b on c, c on a, a on b)',
      'builds[5], builds[6]: a cycle of bases (x on y, y on x)',
    ])
  })

  it('refuses two builds writing the same output', () => {
    expect(
      problemsOf(`${DEFAULTS}
builds:
  - { name: out/a }
  - { name: ./out/a, formats: [raw] }
  - { name: /srv/batch/out/a }
  - { name: d1, formats: [docker], dockerTarget: ci/x }
  - { name: d2, formats: [docker], dockerTarget: ci/x }
  - { name: d3, formats: [docker] }
  - { name: d4, formats: [docker] }
`),
    ).toEqual([
      `builds[0] ‘out/a’ and builds[1] ‘./out/a’ both write ${DIR}/out/a`,
      `builds[0] ‘out/a’ and builds[2] ‘/srv/batch/out/a’ both write ${DIR}/out/a`,
      'builds[3] ‘d1’ and builds[4] ‘d2’ both write docker:ci/x',
    ])
  })
})

describe('did you mean', () => {
  it('counts a swap of neighbours as one edit', () => {
    expect(editDistance('fromats', 'formats')).toBe(1)
    expect(editDistance('qcw2', 'qcow2')).toBe(1)
    expect(editDistance('', 'abc')).toBe(3)
    expect(editDistance('kitten', 'sitting')).toBe(3)
  })

  it('suggests only what is close, ignoring case, the first of equals', () => {
    expect(closest('libpath', ['elements', 'libPath'])).toBe('libPath')
    expect(closest('elementPath', ['elements', 'elementPaths'])).toBe('elementPaths')
    expect(closest('tgx', ['tar', 'tgz', 'tga'])).toBe('tgz')
    expect(closest('zzz', ['qcow2', 'raw'])).toBeUndefined()
  })
})
