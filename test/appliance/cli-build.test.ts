// The CLI during real builds: Ctrl-C (SIGINT) mid-build, SIGTERM during launch, a second SIGINT
// while the first one's cleanup runs, qemu killed from outside, and a failing host-side script
// whose status becomes the exit code. Each leaves no
// qemu, no temp dir and no output behind, and the files that were there before untouched.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, startCli as start } from '../helpers/cli.js'
import { tempDir } from '../helpers/temp.js'
import { expectNothingLeft, snapshot } from '../helpers/invariants.js'
import { qemuDescendants, waitFor } from '../helpers/processes.js'
import { HARD_EXIT_MS } from '../../src/cli/main.js'

const elements = ['-p', join(root, 'examples', 'elements'), '-p', join(root, 'test', 'fixtures', 'elements')]

describe('CLI builds: interruption and host-side failure', () => {
  const out = tempDir('vdib-clib.')
  const tmp = tempDir('vdib-tmp.')
  const env = { ...process.env, TMPDIR: tmp }
  afterAll(() => {
    rmSync(out, { recursive: true, force: true })
    rmSync(tmp, { recursive: true, force: true })
  })

  it(
    'SIGINT during root.d: exit 130, a one-line message, appliance stopped, nothing left',
    async () => {
      const mr = join(out, 'events.jsonl')
      writeFileSync(join(out, 'img.qcow2'), 'a previous build')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start(['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M', '--formats', 'qcow2,raw',
      '--name', join(out, 'img'), `--machine-readable=file:${mr}`, 'demo-os', 'demo-app'], env)
      expect(await waitFor(() => run.out().includes('Running: root.d/10-demo-root'), 5 * 60_000, 100)).toBe(true)
      run.child.kill('SIGINT')
      expect(await run.exited).toBe(130)
      expect(run.err()).toMatch(/virt-dib: exiting on signal SIGINT\n/)
      await expectNothingLeft(before, (f) => f === 'events.jsonl')
      // The machine-readable stream has the same events as build(), one JSON object per line.
      const events = readFileSync(mr, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { kind: string; hook?: string })
      expect(events[0]).toMatchObject({ kind: 'info' })
      expect(events.some((e) => e.kind === 'script-start' && e.hook === 'root.d')).toBe(true)
    },
    10 * 60_000,
  )

  it(
    'SIGTERM while the appliance boots: exit 143, qemu stopped, nothing left',
    async () => {
      const mr = join(tmp, 'boot-events.jsonl')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start(['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M', '--formats', 'qcow2',
      '--name', join(out, 'img3'), `--machine-readable=file:${mr}`, 'demo-os'], env)
      // Deterministic: the appliance's qemu (the one given a kernel, not a feature probe) exists,
      // so the build is inside launch; it has not finished (the guest takes seconds to boot).
      const booting = () => qemuDescendants(run.child.pid).some((q) => / -kernel /.test(q.cmdline))
      expect(await waitFor(booting, 5 * 60_000, 20)).toBe(true)
      run.child.kill('SIGTERM')
      expect(await run.exited).toBe(143)
      expect(run.err()).toBe('virt-dib: exiting on signal SIGTERM\n')
      const events = readFileSync(mr, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { kind: string; name?: string })
      rmSync(mr)
      expect(events.some((e) => e.kind === 'step' && e.name === 'aux-image')).toBe(true)
      expect(
        events.some((e) => e.kind === 'step' && e.name === 'launch'),
        'the signal came after launch',
      ).toBe(false)
      expect(run.out()).not.toContain('Preparing auxiliary data')
      await expectNothingLeft(before)
    },
    10 * 60_000,
  )

  it(
    'two SIGINTs: the second stops at once (qemu killed, cleanup bounded): exit 130, one line, nothing left',
    async () => {
      writeFileSync(join(out, 'img5.qcow2'), 'a previous build')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start(['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M', '--formats', 'qcow2',
      '--envvar', 'SLEEP_AT=install.d', '--name', join(out, 'img5'), 'demo-os', 'fail-at'], env)
      expect(await waitFor(() => run.out().includes('fail-at: sleeping in install.d'), 5 * 60_000, 100)).toBe(true)
      run.child.kill('SIGINT')
      // The first signal is taken (the CLI says so) before the second is sent: never merged.
      expect(await waitFor(() => run.out().includes('virt-dib: SIGINT: stopping the build'), 30_000, 10)).toBe(true)
      const t = Date.now()
      run.child.kill('SIGINT')
      expect(await run.exited).toBe(130)
      expect(Date.now() - t, 'the second signal is obeyed within the hard deadline').toBeLessThan(HARD_EXIT_MS + 3000)
      expect(run.err()).toBe('virt-dib: exiting on signal SIGINT\n')
      await expectNothingLeft(before)
    },
    10 * 60_000,
  )

  it(
    'a failing extra-data.d script: its status is the exit code, its output is shown; with --no-delete-on-failure the partial disk is kept and named',
    async () => {
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start(['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M', '--formats', 'raw',
      '--no-delete-on-failure', '--name', join(out, 'img2'), 'demo-os', 'failing-host'], env)
      expect(await run.exited).toBe(42)
      expect(run.out()).toContain('host side failing')
      expect(run.err()).toMatch(/virt-dib: error: extra-data\.d\/10-fail failed with exit status 42/)
      await expectNothingLeft(before, (f) => f.startsWith('.img2.raw.vdib-'))
      const kept = readdirSync(out).filter((f) => f.startsWith('.img2.raw.vdib-'))
      expect(kept.length).toBe(1)
      expect(run.out()).toContain(`partial outputs kept: ${join(out, kept[0]!)}`)
      expect(readdirSync(out).filter((f) => f.startsWith('img2'))).toEqual([])
    },
    10 * 60_000,
  )

  it(
    'qemu killed from outside mid-build: exit 1, one line saying the appliance died, nothing left',
    async () => {
      writeFileSync(join(out, 'img4.qcow2'), 'a previous build')
      const before = snapshot(out, tmp)
      // prettier-ignore
      const run = start(['-B', DIB_LIB, ...elements, '--skip-base', '--size', '256M', '--formats', 'qcow2,tar',
      '--envvar', 'SLEEP_AT=install.d', '--name', join(out, 'img4'), 'demo-os', 'fail-at'], env)
      expect(await waitFor(() => run.out().includes('fail-at: sleeping in install.d'), 5 * 60_000, 100)).toBe(true)
      const victims = qemuDescendants(run.child.pid)
      expect(victims.length).toBe(1)
      process.kill(victims[0]!.pid, 'SIGKILL')
      expect(await run.exited).toBe(1)
      const errors = run
        .err()
        .split('\n')
        .filter((l) => l.startsWith('virt-dib: error:'))
      expect(errors).toEqual([
        expect.stringMatching(
          /^virt-dib: error: the appliance died: (.*closed the connection|.*qemu.* killed by signal 9)/,
        ),
      ])
      expect(run.err()).not.toMatch(/LIBGUESTFS_DEBUG|guestfs-faq/)
      await expectNothingLeft(before)
    },
    10 * 60_000,
  )
})
