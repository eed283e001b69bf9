// The step cache's events as the terminal shows them, and as --machine-readable carries them.
import { describe, expect, it } from 'vitest'

import { createRenderer, type RenderOptions } from '../../../src/cli/render.js'
import type { BuildEvent } from '../../../src/events.js'

const KEY = '3f2a9c01b4e7d5aa' + '0'.repeat(48)

function render(events: BuildEvent[], o: Partial<RenderOptions> = {}): { out: string } {
  let out = ''
  const r = createRenderer({
    color: false,
    quiet: false,
    debug: false,
    verbose: false,
    out: { write: (t: string) => ((out += t), true) } as unknown as NodeJS.WritableStream,
    ...o,
  })
  for (const e of events) r(e)
  return { out }
}

const hit: BuildEvent = {
  kind: 'cache-hit',
  elapsed: 20.1,
  steps: ['root.d', 'extra-data.d', 'pre-install.d', 'install.d', 'post-install.d'],
  key: KEY,
  ageSeconds: 7200,
}
const miss: BuildEvent = { kind: 'cache-miss', elapsed: 20.2, step: 'install.d', reason: 'its scripts changed' }
const store: BuildEvent = {
  kind: 'cache-store',
  elapsed: 95,
  step: 'install.d',
  key: KEY,
  bytes: 120 * 1024 ** 2,
  seconds: 0.41,
  writeSeconds: 3.21,
}

describe('cache events on the terminal', () => {
  it('a hit names the first and last step reused, the key as cache list shows it, and the age', () => {
    expect(render([hit]).out).toBe(
      '[  20.1] Reusing root.d … post-install.d from the cache (key 3f2a9c01b4e7, 2 h old)\n',
    )
    const one = { ...hit, steps: ['root.d'], ageSeconds: 42 }
    expect(render([one]).out).toBe('[  20.1] Reusing root.d from the cache (key 3f2a9c01b4e7, 42 s old)\n')
  })

  it('a miss says why, when it is known; without a reason only in verbose mode', () => {
    expect(render([miss]).out).toBe('[  20.2] Not in the cache: install.d (its scripts changed)\n')
    const bare = { ...miss, reason: '' }
    expect(render([bare]).out).toBe('')
    expect(render([bare], { verbose: true }).out).toBe('[  20.2] Not in the cache: install.d\n')
  })

  it('a store is a verbose or debug line', () => {
    expect(render([store]).out).toBe('')
    const line =
      '[  95.0] Stored install.d in the cache (key 3f2a9c01b4e7, 120M, 0.4 s, written in 3.2 s beside the build)\n'
    expect(render([store], { verbose: true }).out).toBe(line)
    expect(render([store], { debug: true }).out).toBe(line)
  })

  it('-q keeps them all quiet; colours paint hits and misses like progress lines', () => {
    expect(render([hit, miss, store], { quiet: true }).out).toBe('')
    const painted = render([hit], { color: true }).out
    expect(painted.startsWith('\x1b[0;32m[  20.1] Reusing ')).toBe(true)
    expect(painted.endsWith('\x1b[0m\n')).toBe(true)
  })

  it('--machine-readable: one JSON line each, with every field and a timestamp', () => {
    const lines: string[] = []
    const r = createRenderer({
      color: false,
      quiet: true,
      debug: false,
      verbose: false,
      out: { write: () => true } as unknown as NodeJS.WritableStream,
      machine: { write: (t: string) => lines.push(t) },
    })
    for (const e of [hit, miss, store]) r(e)
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual([
      { ...hit, timestamp: expect.any(String) },
      { ...miss, timestamp: expect.any(String) },
      { ...store, timestamp: expect.any(String) },
    ])
    expect(lines.every((l) => l.endsWith('}\n') && !l.slice(0, -1).includes('\n'))).toBe(true)
  })
})
