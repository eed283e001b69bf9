// Ctrl-C during a first-time preparation of the build appliance: a real `supermin --prepare`
// into an empty cache folder, aborted mid-way. No appliance is launched, but supermin is CPU
// heavy, hence this tier (run under the appliance lock).
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { BuildAbortedError } from '../../src/errors.js'
import { Guestfs } from '../../src/guestfs/index.js'
import { prepareAppliance } from '../../src/host/appliance.js'
import { DIB_LIB, root } from '../helpers/cli.js'
import { expectNothingLeft, snapshot } from '../helpers/invariants.js'
import { waitFor } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

/** supermin processes (and their helpers) working in `dir`. */
function superminIn(dir: string): number[] {
  const out: number[] = []
  for (const d of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8')
      if (st.slice(st.lastIndexOf(')') + 2)[0] === 'Z') continue
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(dir)) out.push(Number(d))
    } catch {
      // gone
    }
  }
  return out
}

describe('preparing the build appliance', () => {
  it('stops supermin at once on abort, removes its private folder, and rejects with the abort', async () => {
    const g = await Guestfs.create()
    const stockPath = await g.getPath()
    await g.close()
    const cacheRoot = tempDir('vdib-prep.')
    const controller = new AbortController()
    const preparing = prepareAppliance({ stockPath, cacheRoot, signal: controller.signal })
    preparing.catch(() => undefined)
    // Mid-way: supermin has started and has been working for a second.
    expect(await waitFor(() => superminIn(cacheRoot).length > 0, 30_000, 20)).toBe(true)
    await new Promise((r) => setTimeout(r, 1000))
    expect(superminIn(cacheRoot).length).toBeGreaterThan(0)
    const t0 = Date.now()
    controller.abort(new BuildAbortedError('exiting on signal SIGINT', { signal: 'SIGINT' }))
    const e = await preparing.catch((x: unknown) => x)
    const seconds = (Date.now() - t0) / 1000
    expect(e).toBeInstanceOf(BuildAbortedError)
    expect((e as BuildAbortedError).exitCode).toBe(130)
    expect(seconds).toBeLessThan(5)
    expect(superminIn(cacheRoot)).toEqual([])
    expect(readdirSync(cacheRoot)).toEqual([])
  })
  it('Ctrl-C in the CLI during a first-time prepare: exit 130, one line, supermin stopped, nothing left', async () => {
    const cache = tempDir('vdib-prepcache.')
    const tmp = tempDir('vdib-preptmp.')
    const out = tempDir('vdib-prepout.')
    const before = snapshot(out, tmp)
    // prettier-ignore
    const child = spawn(process.execPath, [join(root, 'bin', 'virt-dib'), '-B', DIB_LIB,
      '-p', join(root, 'examples', 'elements'), '--skip-base', '--size', '256M', '--formats', 'raw',
      '--name', join(out, 'img'), 'demo-os'], {
      env: { ...process.env, TMPDIR: tmp, XDG_CACHE_HOME: cache },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
    child.stdout.resume()
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
    expect(await waitFor(() => superminIn(cache).length > 0, 60_000, 20)).toBe(true)
    await new Promise((r) => setTimeout(r, 1000))
    const t0 = Date.now()
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    expect((Date.now() - t0) / 1000).toBeLessThan(10)
    expect(stderr).toBe('virt-dib: exiting on signal SIGINT\n')
    expect(superminIn(cache)).toEqual([])
    expect(readdirSync(join(cache, 'virt-dib'))).toEqual([])
    await expectNothingLeft(before)
  })
})
