// The step cache's command line, without an appliance: the options in --help, `virt-dib cache`,
// and elements named like a verb. (Refusals are rows of bad-input.test.ts.)
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, runCli } from '../helpers/cli.js'
import { TempTree } from '../helpers/element-tree.js'

const tree = new TempTree()
const els = tree.elements('els', {
  os: { provides: ['operating-system'] },
  cache: { deps: ['os'] },
  boot: { deps: ['os'] },
})
const tmp = mkdtempSync(join(tmpdir(), 'vdib-cache-cli.'))
afterAll(() => {
  tree.remove()
  rmSync(tmp, { recursive: true, force: true })
})

const dryRun = (...args: string[]) =>
  runCli(args, { cwd: tmp, env: { ...process.env, HOME: join(tmp, 'home'), XDG_CACHE_HOME: '' } })

describe('the step cache on the command line', () => {
  it('--help lists its options among the others, and the cache verb', () => {
    const r = runCli(['--help'])
    expect(r.status).toBe(0)
    for (const o of [
      '--cache ',
      '--cache-dir <directory>',
      '--cache-max-age <duration>',
      '--cache-max-size <size>',
      '--no-cache',
      '--rebuild-from <phase>',
    ]) {
      expect(r.stdout).toContain(`  ${o}`)
    }
    expect(r.stdout).toContain(' virt-dib cache list|prune')
    const at = (o: string) => r.stdout.indexOf(`\n  ${o}`)
    expect(at('--cache ')).toBeLessThan(at('--cache-dir'))
    expect(at('--cache-max-size')).toBeLessThan(at('--checksum'))
    expect(runCli(['--long-options']).stdout).toContain('\n--rebuild-from\n')
  })

  it('virt-dib cache list on a folder that does not exist: empty, exit 0, nothing created', () => {
    const dir = join(tmp, 'none')
    expect(runCli(['cache', 'list', '--cache-dir', dir])).toEqual({
      status: 0,
      stdout: `The step cache in ${dir} is empty.\n`,
      stderr: '',
    })
    expect(runCli(['cache', 'list', '--machine-readable', '--cache-dir', dir])).toEqual({
      status: 0,
      stdout: '',
      stderr: '',
    })
    expect(runCli(['cache', 'prune', '--cache-dir', dir])).toMatchObject({
      status: 0,
      stdout: `No step cache in ${dir}: nothing to remove.\n`,
    })
  })

  it('virt-dib cache --help', () => {
    const r = runCli(['cache', '--help'])
    expect(r.status).toBe(0)
    expect(r.stdout).toContain(
      'virt-dib cache prune [--max-size SIZE] [--older-than DURATION] [--all] [--cache-dir DIR]',
    )
  })

  it('an element named like a verb builds when it is not the first argument', () => {
    const name = join(tmp, 'img')
    for (const args of [
      ['-B', DIB_LIB, '-p', els, '--skip-base', '--name', name, '--dry-run=json', 'cache', 'boot'],
      ['-B', DIB_LIB, '-p', els, '--skip-base', '--name', name, '--dry-run=json', '--', 'cache'],
    ]) {
      const r = dryRun(...args)
      expect(r.status, r.stderr).toBe(0)
      const report = JSON.parse(r.stdout) as { elements: { name: string }[] }
      expect(report.elements.map((e) => e.name)).toContain('cache')
    }
  })

  it('--cache with its options plans (dry run); --no-cache wins over them', () => {
    const common = ['-B', DIB_LIB, '-p', els, '--skip-base', '--name', join(tmp, 'img'), '--dry-run=json']
    for (const more of [
      ['--cache', '--rebuild-from', 'install', '--cache-max-age', '7d', '--cache-max-size', '5G'],
      ['--cache-dir', join(tmp, 'steps'), '--rebuild-from=finalise.d'],
      ['--cache', '--no-cache', '--rebuild-from', 'root'],
    ]) {
      const r = dryRun(...common, ...more, 'os')
      expect(r.status, `${more.join(' ')}: ${r.stderr}`).toBe(0)
    }
  })
})
