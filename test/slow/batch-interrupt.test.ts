// Ctrl-C in the middle of a batch (opt-in tier): two builds running at once (-j 2) and one
// waiting; SIGINT stops them all — exit 130, no qemu, no temp dir, no output or partial output,
// nothing half-written in the step cache, the waiting build never started.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, startCli } from '../helpers/cli.js'
import { expectNothingLeft, snapshot } from '../helpers/invariants.js'
import { qemuDescendants, waitFor } from '../helpers/processes.js'
import { tempDir } from '../helpers/temp.js'

describe('virt-dib batch: SIGINT mid-batch', () => {
  const out = tempDir('vdib-batchint.')
  const tmp = tempDir('vdib-batchint-tmp.')
  const cacheDir = tempDir('vdib-batchint-cache.')
  afterAll(() => {
    for (const d of [out, tmp, cacheDir]) rmSync(d, { recursive: true, force: true })
  })

  it(
    'stops every build, exits 130 and leaves nothing behind',
    async () => {
      const file = join(out, 'batch.yaml')
      writeFileSync(
        file,
        `defaults:
  libPath: ${DIB_LIB}
  elementPaths: [${join(root, 'examples', 'elements')}, ${join(root, 'test', 'fixtures', 'elements')}]
  skipBase: true
  formats: [tar, qcow2]
builds:
  - { name: one, elements: [demo-os, demo-app] }
  - { name: two, elements: [demo-os, phase-counter] }
  - { name: three, elements: [demo-os, layer-stamp] }
`,
      )
      const events = join(out, 'events.jsonl')
      const before = snapshot(out, tmp)
      const run = startCli(['batch', file, '-j', '2', '--cache-dir', cacheDir, `--machine-readable=file:${events}`], {
        ...process.env,
        TMPDIR: tmp,
      })
      // Both appliances up and running scripts (not just qemu's feature probes).
      const running = () => {
        if (!existsSync(events)) return 0
        const lines = readFileSync(events, 'utf8').split('\n').filter(Boolean)
        const scripts = lines.map((l) => JSON.parse(l) as { kind: string; build?: string })
        return new Set(scripts.filter((e) => e.kind === 'script-start').map((e) => e.build)).size
      }
      const both = await waitFor(() => running() >= 2 && qemuDescendants(run.child.pid).length >= 2, 5 * 60_000, 200)
      expect(both, run.out() + run.err()).toBe(true)
      run.child.kill('SIGINT')
      expect(await run.exited).toBe(130)
      expect(run.err()).toMatch(/exiting on signal SIGINT/)
      await expectNothingLeft(before, (f) => f === 'events.jsonl')
      // The store keeps committed snapshots only: nothing being written is left in its tmp folder.
      const pending = join(cacheDir, 'v1', 'tmp')
      expect(existsSync(pending) ? readdirSync(pending) : []).toEqual([])
      const started = readFileSync(events, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { kind: string; build?: string })
        .filter((e) => e.kind === 'build-start')
        .map((e) => e.build)
      expect(started.sort()).toEqual(['one', 'two'])
    },
    15 * 60_000,
  )
})
