// `virt-dib cache list|prune` over a real store in a temp folder, and the verbs as first arguments.
import { createHash } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { openStore } from '../../../src/cache/store.js'
import { runCacheVerb } from '../../../src/cli/cache-command.js'
import { GetoptError, parseArgv } from '../../../src/cli/parse.js'
import { isVerb, notAvailable, VERBS } from '../../../src/cli/verbs.js'
import { UsageError } from '../../../src/errors.js'
import { tempDir } from '../../helpers/temp.js'

const HOUR = 3600_000
const key = (name: string) => createHash('sha256').update(name).digest('hex')

/** A store with a chain root.d ← install.d made 3 h ago, and an unrelated root.d made 1 h ago. */
async function sample(): Promise<{ dir: string; clock: { t: number } }> {
  const dir = tempDir('vdib-cache-cmd.')
  const clock = { t: 1_700_000_000_000 }
  const store = await openStore(dir, { now: () => clock.t })
  const put = async (k: string, step: string, parent: string | null, bytes: number, elements: string[]) => {
    const got = await store.begin(k)
    if (!('commit' in got)) throw new Error(`busy: ${k}`)
    writeFileSync(got.path('tree.qcow2'), Buffer.alloc(bytes))
    await got.commit({ step, parent, elements, inputs: { x: k }, seconds: 1 })
  }
  await put(key('a'), 'root.d', null, 2048, ['demo-os'])
  await put(key('b'), 'install.d', key('a'), 3 * 1024 ** 2, ['demo-os', 'demo-app'])
  clock.t += 2 * HOUR
  await put(key('c'), 'root.d', null, 1024, ['other'])
  clock.t += HOUR
  return { dir, clock }
}

function io(clock: { t: number }) {
  let out = ''
  const warnings: string[] = []
  return {
    io: {
      out: { write: (t: string) => ((out += t), true) } as unknown as NodeJS.WritableStream,
      env: { HOME: '/nonexistent' },
      warn: (t: string) => void warnings.push(t),
      now: () => clock.t,
    },
    out: () => out,
    warnings,
  }
}

describe('virt-dib cache list', () => {
  it('a table oldest first: 12-hex key, step, size, age, last use, elements; the total at the end', async () => {
    const { dir, clock } = await sample()
    const t = io(clock)
    expect(await runCacheVerb(['list', '--cache-dir', dir], t.io)).toBe(0)
    expect(t.out()).toBe(
      [
        'KEY           STEP       SIZE     AGE    LAST USE  ELEMENTS',
        `${key('a').slice(0, 12)}  root.d       2K     3 h     3 h ago  demo-os`,
        `${key('b').slice(0, 12)}  install.d    3M     3 h     3 h ago  demo-os demo-app`,
        `${key('c').slice(0, 12)}  root.d       1K  60 min  60 min ago  other`,
        `Total: 3 entries, 3.0M in ${dir}`,
        '',
      ].join('\n'),
    )
  })

  it('--machine-readable: one JSON object per entry, full keys and ISO times', async () => {
    const { dir, clock } = await sample()
    const t = io(clock)
    expect(await runCacheVerb(['list', '--machine-readable', `--cache-dir=${dir}`], t.io)).toBe(0)
    const rows = t
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(rows.map((r) => r['key'])).toEqual([key('a'), key('b'), key('c')])
    expect(rows[1]).toEqual({
      key: key('b'),
      parent: key('a'),
      step: 'install.d',
      elements: ['demo-os', 'demo-app'],
      bytes: 3 * 1024 ** 2,
      created: new Date(clock.t - 3 * HOUR).toISOString(),
      lastUsed: new Date(clock.t - 3 * HOUR).toISOString(),
    })
  })

  it('a folder that does not exist is an empty cache, and is not created', async () => {
    const dir = join(tempDir('vdib-cache-cmd.'), 'none')
    const t = io({ t: 0 })
    expect(await runCacheVerb(['list', '--cache-dir', dir], t.io)).toBe(0)
    expect(t.out()).toBe(`The step cache in ${dir} is empty.\n`)
    expect(existsSync(dir)).toBe(false)
  })

  it('defaults to $XDG_CACHE_HOME/virt-dib/steps', async () => {
    const xdg = tempDir('vdib-cache-xdg.')
    const t = io({ t: 0 })
    t.io.env = { HOME: '/nonexistent', XDG_CACHE_HOME: xdg } as never
    await runCacheVerb(['list'], t.io)
    expect(t.out()).toBe(`The step cache in ${join(xdg, 'virt-dib', 'steps')} is empty.\n`)
  })
})

describe('virt-dib cache prune', () => {
  it('--older-than removes entries last used longer ago, leaves first, and says what is left', async () => {
    const { dir, clock } = await sample()
    const t = io(clock)
    expect(await runCacheVerb(['prune', '--cache-dir', dir, '--older-than', '2h'], t.io)).toBe(0)
    expect(t.out()).toBe(`Removed 2 entries (3.0M).\nTotal: 1 entry, 1K in ${dir}\n`)
  })

  it('--max-size evicts least recently used leaves down to the size', async () => {
    const { dir, clock } = await sample()
    const t = io(clock)
    expect(await runCacheVerb(['prune', '--cache-dir', dir, '--max-size', '1M'], t.io)).toBe(0)
    // install.d (3M) is the least recently used leaf; then 3K is under 1M.
    expect(t.out()).toBe(`Removed 1 entry (3M).\nTotal: 2 entries, 3K in ${dir}\n`)
  })

  it('--all empties it; nothing to do is said so', async () => {
    const { dir, clock } = await sample()
    const t = io(clock)
    expect(await runCacheVerb(['prune', '--all', '--cache-dir', dir], t.io)).toBe(0)
    expect(t.out()).toBe(`Removed 3 entries (3.0M).\nTotal: 0 entries, 0b in ${dir}\n`)
    const again = io(clock)
    expect(await runCacheVerb(['prune', '--cache-dir', dir], again.io)).toBe(0)
    expect(again.out()).toBe(`Nothing to remove.\nTotal: 0 entries, 0b in ${dir}\n`)
  })

  it('refuses bad values and --all with a criterion, in one line', async () => {
    const t = io({ t: 0 })
    const dir = tempDir('vdib-cache-cmd.')
    await expect(runCacheVerb(['prune', '--cache-dir', dir, '--older-than', '2 days'], t.io)).rejects.toThrow(
      '--older-than ‘2 days’ is not a duration (a number and s, m, h, d or w: 30m, 2h, 7d, 1w)',
    )
    await expect(runCacheVerb(['prune', '--cache-dir', dir, '--max-size', '5'], t.io)).rejects.toThrow(
      '--max-size ‘5’ is not a size (a number and b, K, M or G: 20G)',
    )
    await expect(runCacheVerb(['prune', '--all', '--max-size', '1G'], t.io)).rejects.toThrow(UsageError)
    const bogus = runCacheVerb(['prune', '--bogus'], t.io)
    await expect(bogus).rejects.toThrow(GetoptError)
    await expect(bogus).rejects.toMatchObject({
      message: "cache prune: unrecognized option '--bogus'",
      tryHelp: 'virt-dib cache --help',
    })
    await expect(runCacheVerb(['list', '--max-size', '1G'], t.io)).rejects.toThrow(
      "cache list: unrecognized option '--max-size'",
    )
    await expect(runCacheVerb(['list', 'extra'], t.io)).rejects.toThrow('cache list: takes no arguments')
    await expect(runCacheVerb(['prune', '--older-than'], t.io)).rejects.toThrow(
      "cache prune: option '--older-than' requires an argument",
    )
    await expect(runCacheVerb(['list', '--machine-readable=json'], t.io)).rejects.toThrow(
      "cache list: option '--machine-readable' doesn't allow an argument",
    )
    await expect(runCacheVerb(['lsit'], t.io)).rejects.toThrow('cache: unknown command ‘lsit’ (list or prune)')
  })

  it('cache alone is a usage error; --help prints the usage', async () => {
    const t = io({ t: 0 })
    await expect(runCacheVerb([], t.io)).rejects.toThrow(GetoptError)
    await expect(runCacheVerb([], t.io)).rejects.toThrow('cache needs a command: list or prune')
    expect(await runCacheVerb(['--help'], t.io)).toBe(0)
    expect(t.out()).toContain('virt-dib cache list [--cache-dir DIR] [--machine-readable]')
    expect(await runCacheVerb(['prune', '--help'], io({ t: 0 }).io)).toBe(0)
  })
})

describe('verbs', () => {
  it('are words reserved as the first argument only; the rest say what they will be', () => {
    expect(VERBS).toEqual(['cache', 'batch', 'worker', 'submit', 'boot'])
    expect(isVerb('cache')).toBe(true)
    expect(isVerb('demo-os')).toBe(false)
    expect(isVerb(undefined)).toBe(false)
    expect(notAvailable('cache')).toBeUndefined()
    expect(notAvailable('batch')).toBeUndefined()
    expect(notAvailable('worker')).toBeUndefined()
    expect(notAvailable('boot')?.message).toBe('‘boot’ (booting an image just built) is not available in this version')
    // Anywhere but first, a verb is an element name.
    expect(parseArgv(['-B', 'lib', 'cache', 'boot']).elements).toEqual(['cache', 'boot'])
    expect(parseArgv(['--', 'cache']).elements).toEqual(['cache'])
  })
})
