// Lifetime hazards: a forgotten handle must not keep Node alive or leak its thread; GC closes
// idle handles in the background; close waits for queued calls; fds and threads come back.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { Guestfs } from '../../src/guestfs/index.js'
import { loadAddon } from '../../src/guestfs/native.js'
import { fdCount, threadCount, waitFor } from '../helpers/processes.js'

const script = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'forgotten-handle.cjs')
const runChild = (mode: string, extra: string[] = []) =>
  spawnSync(process.execPath, [...extra, script, mode], {
    env: { ...process.env, VIRT_DIB_ADDON_PATH: loadAddon().path },
    encoding: 'utf8',
    timeout: 30_000,
  })

describe('handle lifetime', () => {
  it('lets Node exit with an idle, unclosed handle', () => {
    const r = runChild('idle')
    expect(r.error).toBeUndefined()
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/memsize \d+/)
  })

  it('lets Node exit with calls still queued (the env cleanup hook closes the handle)', () => {
    const r = runChild('queued')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/memsize 599/)
  })

  it('closes handles lost to GC and ends their threads', () => {
    const r = runChild('gc', ['--expose-gc'])
    expect(r.status).toBe(0)
    const { before, during, after } = JSON.parse(r.stdout) as { before: number; during: number; after: number }
    expect(during).toBeGreaterThanOrEqual(before + 20)
    expect(after).toBeLessThanOrEqual(before)
  })

  it('runs queued calls before close, then rejects new ones', async () => {
    const g = await Guestfs.create({ environment: false })
    const calls = [g.setMemsize(600), g.getMemsize()]
    const closed = g.close()
    expect(g.state).toBe('closing')
    await expect(g.getMemsize()).rejects.toMatchObject({ code: 'ERR_GUESTFS_CLOSED' })
    expect(await Promise.all(calls)).toEqual([undefined, 600])
    await closed
    expect(g.state).toBe('closed')
  })

  it('drops a queued call on abort and runs the rest', async () => {
    await using g = await Guestfs.create({ environment: false })
    const ac = new AbortController()
    const many = Array.from({ length: 200 }, (_, i) => g.setIdentifier(`id${i}`))
    const victim = g.sh('true', { signal: ac.signal })
    ac.abort()
    await expect(victim).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' })
    await Promise.all(many)
    expect(await g.getIdentifier()).toBe('id199')
  })

  it('rejects at once when the signal is already aborted', async () => {
    await using g = await Guestfs.create({ environment: false })
    await expect(g.sh('true', { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' })
  })

  it('gives back threads and file descriptors after close', async () => {
    const threads0 = threadCount()
    const fds0 = fdCount()
    for (let i = 0; i < 10; i++) {
      const g = await Guestfs.create({ environment: false })
      await g.getMemsize()
      await g.close()
    }
    expect(await waitFor(() => threadCount() <= threads0, 5000)).toBe(true)
    expect(fdCount()).toBeLessThanOrEqual(fds0)
  })

  it('supports await using', async () => {
    let ref: Guestfs | undefined
    {
      await using g = await Guestfs.create({ environment: false })
      ref = g
      expect(g.state).toBe('open')
    }
    expect(ref.state).toBe('closed')
  })
})
