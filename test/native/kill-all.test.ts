// killAllAppliances(): the synchronous "stop everything" behind the CLI's second Ctrl-C. Every
// open Guestfs of the process is tracked from create to close; one call SIGKILLs every qemu,
// a launch in progress included (the fake hypervisor: a launch that never finishes by itself).
import { describe, expect, it } from 'vitest'

import { Guestfs, killAllAppliances, liveHandleCount } from '../../src/guestfs/index.js'
import { fakeQemu } from '../helpers/fake-qemu.js'
import { tempDir } from '../helpers/temp.js'

const fq = fakeQemu
const missing = fq.fakeHypervisorMissing()

describe('live handles', () => {
  it('a handle counts from create until closed', async () => {
    const n = liveHandleCount()
    const g = await Guestfs.create({ environment: false })
    expect(liveHandleCount()).toBe(n + 1)
    expect(killAllAppliances()).toBe(0) // nothing launched: nothing to kill
    await g.close()
    expect(liveHandleCount()).toBe(n)
  })
})

describe.skipIf(missing)(`killAllAppliances during launches${missing ? ` (skipped: ${missing})` : ''}`, () => {
  it('kills the qemu of every handle at once; their launches fail; nothing is left', async () => {
    const fake = fq.makeFakeHypervisor(tempDir('vdib-killall.'))
    const open = async () => {
      const g = await Guestfs.create({
        environment: false,
        hv: fake.hv,
        path: fake.path,
        cachedir: fake.cachedir,
        memsize: 256,
      })
      await g.addDriveScratch(1024 * 1024)
      return g
    }
    const [a, b] = await Promise.all([open(), open()])
    const launches = [a, b].map((g) =>
      g.launch().then(
        () => 'launched',
        (e: unknown) => e,
      ),
    )
    const qemus = await fq.until(
      () => (fq.fakeQemuChildren(fake.qemu).length === 2 ? fq.fakeQemuChildren(fake.qemu) : undefined),
      60_000,
      'both qemus',
    )
    expect(killAllAppliances()).toBe(2)
    for (const l of launches) expect(await l).toMatchObject({ name: 'GuestfsError', op: 'launch' })
    await Promise.all([a.close(), b.close()])
    expect(fq.fakeQemuChildren(fake.qemu)).toEqual([])
    for (const q of qemus) expect(fq.alive(q.pid)).toBe(false)
    expect(killAllAppliances()).toBe(0)
  })
})
