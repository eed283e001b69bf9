// The step cache's options: --cache, --cache-dir, --no-cache, --rebuild-from, --cache-max-* from
// argv to BuildOptions (the CLI's rules) and from BuildOptions to the plan (the API's rules).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DEFAULT_CACHE_MAX_SIZE, defaultCacheDir, type BuildOptions } from '../../../src/api/options.js'
import { planBuild } from '../../../src/api/plan.js'
import { toBuildOptions } from '../../../src/cli/options.js'
import { parseArgv } from '../../../src/cli/parse.js'
import { UsageError } from '../../../src/errors.js'
import { demoOptions } from '../../helpers/demo-options.js'

const tmp = mkdtempSync(join(tmpdir(), 'vdib-cache-opts.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const cli = (...args: string[]): BuildOptions => {
  const { flags, elements } = parseArgv([...args, 'x'])
  return toBuildOptions(elements, flags, args)
}
const plan = (o: Partial<BuildOptions>) => planBuild(demoOptions(tmp, { env: { HOME: tmp }, ...o }))

describe('the step cache on the command line', () => {
  it('is off unless asked; --cache turns it on with the defaults', () => {
    expect(cli()).not.toHaveProperty('cache')
    expect(cli('--cache').cache).toEqual({})
  })

  it('--cache-dir implies --cache; the sizes and ages are parsed', () => {
    expect(cli('--cache-dir', 'd').cache).toEqual({ dir: 'd' })
    expect(cli('--cache', '--cache-max-size', '1.5G', '--cache-max-age', '2h').cache).toEqual({
      maxSize: 1.5 * 1024 ** 3,
      maxAge: 2 * 3600_000,
    })
    expect(cli('--cache-dir=d', '--cache-max-age=1w').cache).toEqual({ dir: 'd', maxAge: 7 * 86_400_000 })
  })

  it('--no-cache wins whatever the order, and moots --rebuild-from', () => {
    for (const args of [
      ['--no-cache', '--cache'],
      ['--cache', '--no-cache'],
      ['--cache-dir', 'd', '--no-cache', '--cache-max-size', '1G'],
    ]) {
      expect(cli(...args).cache, args.join(' ')).toBe(false)
    }
    const o = cli('--no-cache', '--rebuild-from', 'install')
    expect(o).toMatchObject({ cache: false, rebuildFrom: 'install' })
    expect(plan({ cache: o.cache, rebuildFrom: o.rebuildFrom })).toMatchObject({
      cache: undefined,
      rebuildFrom: undefined,
    })
  })

  it('--cache-max-* without the cache on is an error, not a silent no-op', () => {
    expect(() => cli('--cache-max-size', '1G')).toThrow(
      new UsageError('--cache-max-size needs the step cache (--cache)'),
    )
    expect(() => cli('--cache-max-age', '1d')).toThrow(new UsageError('--cache-max-age needs the step cache (--cache)'))
  })

  it('a bad size or duration names the option and the value, even with --no-cache', () => {
    expect(() => cli('--cache', '--cache-max-size', '20')).toThrow(
      '--cache-max-size ‘20’ is not a size (a number and b, K, M or G: 20G)',
    )
    expect(() => cli('--no-cache', '--cache-max-age', '2 days')).toThrow(
      '--cache-max-age ‘2 days’ is not a duration (a number and s, m, h, d or w: 30m, 2h, 7d, 1w)',
    )
  })

  it('keeps the old prefixes and takes new ones', () => {
    expect(cli('--cache-d', 'd').cache).toEqual({ dir: 'd' })
    expect(cli('--reb', 'root').rebuildFrom).toBe('root')
    expect(cli('-cache').cache).toEqual({}) // getopt_long_only: one dash
    expect(parseArgv(['--ch', 'x']).flags.checksum).toBe(true)
    expect(() => parseArgv(['--ca', 'x'])).toThrow("unrecognized option '--ca'") // ambiguous now
  })
})

describe('the step cache in the plan', () => {
  it('is off by default and with cache: false', () => {
    expect(plan({})).toMatchObject({ cache: undefined, rebuildFrom: undefined })
    expect(plan({ cache: false })).toMatchObject({ cache: undefined, rebuildFrom: undefined })
  })

  it('defaults to $XDG_CACHE_HOME/virt-dib/steps, else ~/.cache/virt-dib/steps, with a 20G cap', () => {
    expect(DEFAULT_CACHE_MAX_SIZE).toBe(20 * 1024 ** 3)
    expect(plan({ cache: {} }).cache).toEqual({
      dir: join(tmp, '.cache/virt-dib/steps'),
      maxSize: DEFAULT_CACHE_MAX_SIZE,
      maxAgeMs: undefined,
    })
    const xdg = join(tmp, 'xdg')
    expect(plan({ cache: {}, env: { HOME: tmp, XDG_CACHE_HOME: xdg } }).cache?.dir).toBe(join(xdg, 'virt-dib/steps'))
    // The XDG spec: a relative path is invalid and ignored.
    expect(defaultCacheDir({ HOME: '/h', XDG_CACHE_HOME: 'rel' })).toBe('/h/.cache/virt-dib/steps')
  })

  it('makes the folder absolute and keeps the cap and the age', () => {
    const p = plan({ cache: { dir: 'rel/steps', maxSize: 1024 ** 3, maxAge: 60_000 } })
    expect(p.cache).toEqual({ dir: join(process.cwd(), 'rel/steps'), maxSize: 1024 ** 3, maxAgeMs: 60_000 })
  })

  it('refuses a folder that is a file, an empty one, and caps or ages that are not positive integers', () => {
    const file = join(tmp, 'file')
    writeFileSync(file, '')
    expect(() => plan({ cache: { dir: file } })).toThrow(`cache directory ‘${file}’ is not a directory`)
    expect(() => plan({ cache: { dir: '' } })).toThrow('--cache-dir must not be empty')
    for (const maxSize of [0, -1, 1.5, NaN, Infinity]) {
      expect(() => plan({ cache: { maxSize } }), String(maxSize)).toThrow('--cache-max-size must be greater than zero')
    }
    for (const maxAge of [0, -5, 0.5]) {
      expect(() => plan({ cache: { maxAge } }), String(maxAge)).toThrow('--cache-max-age must be greater than zero')
    }
    mkdirSync(join(tmp, 'existing'))
    expect(plan({ cache: { dir: join(tmp, 'existing') } }).cache?.dir).toBe(join(tmp, 'existing'))
  })

  it('--rebuild-from takes a hook with or without .d and gives the step name', () => {
    for (const [given, step] of [
      ['install', 'install.d'],
      ['install.d', 'install.d'],
      ['pre-finalise', 'pre-finalise.d'],
      ['extra-packages', 'extra-packages'],
      ['block-device', 'block-device'],
      ['block-device.d', 'block-device.d'],
    ]) {
      expect(plan({ cache: {}, rebuildFrom: given }).rebuildFrom, given).toBe(step)
    }
  })

  it('--rebuild-from: a bad name is one line naming it and the valid ones; without the cache, an error', () => {
    expect(() => plan({ cache: {}, rebuildFrom: 'instal' })).toThrow(
      new UsageError(
        '--rebuild-from ‘instal’ is not a phase: one of root.d, extra-data.d, pre-install.d, extra-packages, ' +
          'install.d, post-install.d, post-root.d, block-device.d, block-device, pre-finalise.d, finalise.d, ' +
          'cleanup.d (.d may be left out)',
      ),
    )
    expect(() => plan({ rebuildFrom: 'install' })).toThrow(
      new UsageError('--rebuild-from needs the step cache (--cache)'),
    )
    // A bad name is refused even when the cache is forced off: a typo is a typo.
    expect(() => plan({ cache: false, rebuildFrom: 'x' })).toThrow('--rebuild-from ‘x’ is not a phase')
  })
})
