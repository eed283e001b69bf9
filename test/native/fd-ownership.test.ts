// A transfer that is given a host fd owns it from the moment it is called: on a bad argument,
// a closed handle or a cancel before start, the fd is closed, never leaked (the reader of the
// pipe would otherwise wait for EOF forever).
import { closeSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { Guestfs } from '../../src/guestfs/index.js'
import { loadAddon, type NativeHandle } from '../../src/guestfs/native.js'
import { tempDir } from '../helpers/temp.js'

const { addon } = loadAddon()
type Call = (...a: unknown[]) => Promise<unknown>
const raw = () =>
  new addon.GuestfsHandle(() => undefined, { environment: false }) as NativeHandle & Record<string, Call>

/** Is `fd` closed? (`other` is the other end of its pipe, still open: reuse of the number by an unrelated file shows as closed.) */
function isClosed(fd: number, other: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) !== readlinkSync(`/proc/self/fd/${other}`)
  } catch {
    return true
  }
}

// [name, which pipe end the call takes, the call]
const badCalls: [string, 'read' | 'write', (h: Record<string, Call>, fd: number) => unknown][] = [
  ['tar_out with a bad directory', 'write', (h, fd) => h['tar_out']!(42, fd)],
  ['tar_out with an unknown option', 'write', (h, fd) => h['tar_out']!('/', fd, { bogus: 1 })],
  ['tar_out with a bad exclude list', 'write', (h, fd) => h['tar_out']!('/', fd, { excludes: 'x' })],
  ['tar_in with a bad directory', 'read', (h, fd) => h['tar_in']!(fd, 42)],
  ['tar_in with an unknown option', 'read', (h, fd) => h['tar_in']!(fd, '/', { bogus: 1 })],
  ['download with a bad remote name', 'write', (h, fd) => h['download']!(42, fd)],
  ['upload with a bad remote name', 'read', (h, fd) => h['upload']!(fd, 42)],
  ['mksquashfs with a bad path', 'write', (h, fd) => h['mksquashfs']!(42, fd)],
  ['mksquashfs with an unknown option', 'write', (h, fd) => h['mksquashfs']!('/', fd, { bogus: 1 })],
]

describe('fd ownership of transfers', () => {
  for (const [name, end, call] of badCalls) {
    it(`closes the fd of ${name} (TypeError before anything is queued)`, async () => {
      const h = raw()
      const [r, w] = addon.pipe()
      const [fd, other] = end === 'write' ? [w, r] : [r, w]
      expect(() => call(h, fd)).toThrow(TypeError)
      expect(isClosed(fd, other)).toBe(true)
      closeSync(other)
      await h.close()
    })
  }

  it('closes the fd of a transfer refused by a closed handle', async () => {
    const h = raw()
    await h.close()
    const [r, w] = addon.pipe()
    await expect(h.tar_out('/', w)).rejects.toMatchObject({ code: 'ERR_GUESTFS_CLOSED' })
    expect(isClosed(w, r)).toBe(true)
    closeSync(r)
  })

  it('closes the fd of a transfer cancelled before it started', async () => {
    const h = raw()
    // qemu-img (tens of ms) keeps the worker busy, so the transfer is still queued at cancel.
    const blocker = h.disk_create(join(tempDir('vdib-fd.'), 'x.qcow2'), 'qcow2', 1024 * 1024)
    const before = Array.from({ length: 300 }, (_, i) => h.set_identifier(`id${i}`))
    const [r, w] = addon.pipe()
    const victim = h.tar_out('/', w)
    expect(h.cancel(h.lastJobId)).toBe(1)
    await expect(victim).rejects.toMatchObject({ code: 'ABORT_ERR' })
    expect(isClosed(w, r)).toBe(true)
    await blocker
    await Promise.all(before)
    closeSync(r)
    await h.close()
  })

  it('closes the fd when Guestfs.tarOut is called with a bad directory', async () => {
    await using g = await Guestfs.create({ environment: false })
    const [r, w] = addon.pipe()
    await expect(g.tarOut(42 as unknown as string, w)).rejects.toThrow(TypeError)
    expect(isClosed(w, r)).toBe(true)
    closeSync(r)
  })
})
