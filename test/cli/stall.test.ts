// Builds that stop making progress (injected by a preloaded module, no appliance): a cleanup step
// that never ends must not keep a second Ctrl-C from exiting within the hard deadline, and a
// promise that can never settle must not end the run with a silent status 0.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { HURRY_CLEANUP_MS } from '../../src/api/interrupt.js'
import { HARD_EXIT_MS } from '../../src/cli/main.js'
import { DIB_LIB, root, runCliAsync } from '../helpers/cli.js'
import { waitFor } from '../helpers/processes.js'
import { cliSandbox } from '../helpers/sandbox.js'

const sandbox = cliSandbox('vdib-stall.')
const preload = join(root, 'test', 'fixtures', 'scripts', 'inject-stall.mjs')

function place(name: string, stall: string) {
  const p = sandbox.place(name)
  const { out, tmp, marker } = p
  // prettier-ignore
  const args = [join(root, 'bin', 'virt-dib'), '-B', DIB_LIB, '-p', join(root, 'examples', 'elements'), '--skip-base',
    '--python', '/usr/bin/python3', '--name', join(out, 'img'), 'demo-os']
  const env = { ...p.env, NODE_OPTIONS: `--import=${preload}`, VDIB_STALL: stall }
  return { out, tmp, marker, args, env }
}

describe.concurrent('a build that stalls', () => {
  it('second SIGINT while a cleanup step hangs: exit 130 by the deadline, one line', async () => {
    const p = place('stuck', 'cleanup')
    const child = spawn(process.execPath, p.args, { cwd: p.out, env: p.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()))
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
    expect(await waitFor(() => stdout.includes('Carried environment variables'), 30_000, 10)).toBe(true)
    child.kill('SIGINT')
    expect(await waitFor(() => stdout.includes('virt-dib: SIGINT: stopping the build'), 30_000, 10)).toBe(true)
    // The first signal's cleanup is stuck (removing the workspace never ends): no exit by itself.
    await new Promise((r) => setTimeout(r, 1000))
    expect(child.exitCode).toBe(null)
    const t = Date.now()
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    const took = Date.now() - t
    expect(took, 'waited for the hurried cleanup').toBeGreaterThanOrEqual(HURRY_CLEANUP_MS - 200)
    expect(took, 'within the hard deadline').toBeLessThan(HARD_EXIT_MS + 1500)
    expect(stderr).toBe('virt-dib: exiting on signal SIGINT\n')
    expect(existsSync(p.marker), 'an appliance launch was attempted').toBe(false)
    expect(readdirSync(p.out)).toEqual(['img.qcow2'])
    // The injected fault is that the workspace cannot be removed: it is the one thing left.
    expect(readdirSync(p.tmp)).toEqual([expect.stringMatching(/^dib\./)])
  })

  it('a promise that can never settle: one internal-error line and exit 1, not a silent 0', async () => {
    const p = place('deadlock', 'deadlock')
    const r = await runCliAsync(p.args.slice(1), { cwd: p.out, env: p.env })
    expect(r.stderr).toBe(
      'virt-dib: error: internal error: the build stopped making progress (nothing left to wait for)\n',
    )
    expect(r.status).toBe(1)
    expect(existsSync(p.marker)).toBe(false)
    expect(readdirSync(p.tmp)).toEqual([])
    expect(readdirSync(p.out)).toEqual(['img.qcow2'])
  })
})
