// extra-data.d runs on the host against a FUSE view of the image: processes its scripts leave
// behind must not hang the build at the unmount, and Ctrl-C must stop the scripts' whole process
// group. Three CLI builds: one that succeeds despite leftovers, one whose leftover escaped the
// process group and holds the view for good, one interrupted inside the phase.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { DIB_LIB, root, startCli as start } from '../helpers/cli.js'
import { expectNothingLeft, snapshot } from '../helpers/invariants.js'
import { allProcesses, waitFor } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

const elements = ['-p', join(root, 'examples', 'elements'), '-p', join(root, 'test', 'fixtures', 'elements')]
const common = ['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M', '--formats', 'raw']

/** The fixture's sleeps, told apart by their durations. */
const sleeps = (...durations: string[]) =>
  allProcesses().filter((p) => durations.some((d) => p.cmdline.trim() === `sleep ${d}`))

interface PhaseEnd {
  kind: string
  hook?: string
  seconds?: number
  text?: string
}

describe('extra-data.d: leftover processes and Ctrl-C', () => {
  const out = tempDir('vdib-xd.')
  const tmp = tempDir('vdib-xdtmp.')
  const env = { ...process.env, TMPDIR: tmp }

  it(
    'a script that leaves a process inside the view: the build ends, with a warning naming it, and nothing is left running',
    async () => {
      const before = snapshot(out, tmp)
      const mr = join(out, 'events.jsonl')
      // prettier-ignore
      const run = start([...common, '--envvar', 'LINGER=background', `--machine-readable=file:${mr}`,
        '--name', join(out, 'img'), 'demo-os', 'host-linger'], { ...env, LINGER: 'background' })
      expect(await run.exited, run.err()).toBe(0)
      expect(run.out()).toMatch(/host-linger: left sleep \d+ in .*\/extra-data\.d\/tmp/)
      const pid = /host-linger: left sleep (\d+)/.exec(run.out())![1]
      // (named bash if it were caught between fork and exec)
      const warning = `extra-data.d: a process was left running by its scripts and stopped: sleep (pid ${pid})`
      expect(run.out().replace(/: bash \(pid/, ': sleep (pid')).toContain(`virt-dib: warning: ${warning}`)
      expect(sleeps('6061')).toEqual([])
      const events = readFileSync(mr, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as PhaseEnd)
      const phase = events.find((e) => e.kind === 'phase-end' && e.hook === 'extra-data.d')
      expect(phase?.seconds).toBeLessThan(60)
      // The process that left the group kept the view busy for 2 s: the unmount retries waited it out.
      expect(events.some((e) => e.kind === 'debug' && /FUSE view of the image is busy, retrying/.test(e.text!))).toBe(
        true,
      )
      const unmount = events.find((e) => e.kind === 'step' && (e as { name?: string }).name === 'extra-data-unmount')
      expect(unmount?.seconds).toBeGreaterThan(0.5)
      expect(unmount?.seconds).toBeLessThan(10)
      const warnings = events.filter((e) => e.kind === 'warning' && e.text?.startsWith('extra-data.d'))
      expect(warnings.map((e) => e.text?.replace(/: bash \(pid/, ': sleep (pid'))).toEqual([warning])
      await expectNothingLeft(before, (f) => f === 'img.raw' || f === 'events.jsonl')
    },
    15 * 60_000,
  )

  it(
    'a process that left the process group keeps the view busy: one error line naming it after a bounded wait, killed, nothing left',
    async () => {
      writeFileSync(join(out, 'img3.raw'), 'a previous build')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start([...common, '--envvar', 'LINGER=escape', '--name', join(out, 'img3'), 'demo-os', 'host-linger'],
        { ...env, LINGER: 'escape' })
      expect(await run.exited).toBe(1)
      expect(run.out()).toContain('host-linger: escaped')
      const errors = run
        .err()
        .split('\n')
        .filter((l) => l.startsWith('virt-dib: error:'))
      expect(errors).toEqual([
        expect.stringMatching(
          /^virt-dib: error: extra-data\.d: the FUSE view of the image was still in use by sleep \(pid \d+\) 10 s after its scripts ended: killed it$/,
        ),
      ])
      expect(run.err()).not.toMatch(/at .*\.js:\d+|internal error/)
      expect(sleeps('8081')).toEqual([])
      await expectNothingLeft(before)
    },
    15 * 60_000,
  )

  it(
    'SIGINT while an extra-data.d script sleeps: exit 130, the script and its background process stopped, nothing left',
    async () => {
      writeFileSync(join(out, 'img2.raw'), 'a previous build')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start([...common, '--envvar', 'LINGER=wait', '--name', join(out, 'img2'), 'demo-os', 'host-linger'],
        { ...env, LINGER: 'wait' })
      expect(await waitFor(() => run.out().includes('host-linger: waiting'), 10 * 60_000, 100), run.err()).toBe(true)
      expect(await waitFor(() => sleeps('7071', '7072').length === 2, 10_000, 50)).toBe(true)
      const t0 = Date.now()
      run.child.kill('SIGINT')
      expect(await run.exited).toBe(130)
      expect((Date.now() - t0) / 1000).toBeLessThan(60)
      expect(run.err()).toMatch(/virt-dib: exiting on signal SIGINT\n/)
      expect(run.err()).not.toMatch(/error|at .*\.js:\d+/)
      expect(sleeps('7071', '7072')).toEqual([])
      expect(allProcesses().filter((p) => p.cmdline.includes('50-host-linger'))).toEqual([])
      await expectNothingLeft(before)
      expect(readdirSync(out).filter((f) => f.startsWith('img2'))).toEqual(['img2.raw'])
    },
    15 * 60_000,
  )
})
