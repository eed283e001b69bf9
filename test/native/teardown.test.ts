// Environment teardown with work in flight (compare classic-level's env-cleanup-hook-test): one
// child process per stage. Each must exit with its own status, print nothing, leave no qemu and
// close the fds of the transfers it dropped. A launch "in flight" uses a fake hypervisor that
// blocks in a sleeping process named qemu-system-x86_64: no appliance is booted.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { loadAddon } from '../../src/guestfs/native.js'
import { tempDir } from '../helpers/temp.js'

const require = createRequire(import.meta.url)
const fq = require('../fixtures/scripts/fake-qemu.cjs') as {
  fakeHypervisorMissing(): string | undefined
  alive(pid: number): boolean
}
const missing = fq.fakeHypervisorMissing()
const script = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'native-hazards.cjs')
const runChild = (stage: string, ...args: string[]) =>
  spawnSync(process.execPath, [script, stage, ...args], {
    env: { ...process.env, VIRT_DIB_ADDON_PATH: loadAddon().path },
    encoding: 'utf8',
    timeout: 90_000,
  })
const last = (out: string) => JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>

describe('environment teardown', () => {
  it('process.exit() with thousands of calls queued exits with its status, silently', () => {
    const r = runChild('exit-queued')
    expect(r.error).toBeUndefined()
    expect(r.signal).toBeNull()
    expect(r.status).toBe(3)
    expect(r.stderr).toBe('')
  })

  it.skipIf(missing)(
    `process.exit() during a launch, calls queued behind it, leaves no qemu${missing ? ` (skipped: ${missing})` : ''}`,
    () => {
      const r = runChild('exit-launching', tempDir('vdib-teardown.'))
      expect(r.error).toBeUndefined()
      expect(r.signal).toBeNull()
      expect(r.status).toBe(4)
      expect(r.stderr).toBe('')
      const { qemu } = last(r.stdout) as { qemu: number }
      // Killed before the process ended (an exit handler: process.exit skips the env cleanup
      // hooks), not left to libguestfs's recovery process, which polls every 2 s.
      // (A short grace for the SIGKILL to land on a busy machine; far below those 2 s.)
      const end = Date.now() + 200
      while (fq.alive(qemu) && Date.now() < end) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
      expect(fq.alive(qemu)).toBe(false)
    },
  )

  it.skipIf(missing)(
    `worker.terminate() during a launch kills the worker's qemu and closes its queued transfer's fd${missing ? ` (skipped: ${missing})` : ''}`,
    () => {
      const r = runChild('worker-terminate', tempDir('vdib-teardown.'))
      expect(r.error).toBeUndefined()
      expect(r.status).toBe(0)
      expect(r.stderr).toBe('')
      const out = last(r.stdout) as { qemu: number; transferFdClosed: boolean; memsize: number }
      expect(out.transferFdClosed).toBe(true)
      expect(out.memsize).toBeGreaterThan(0) // the main thread's handles still work
      expect(fq.alive(out.qemu)).toBe(false)
    },
  )
})
