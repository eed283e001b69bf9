// The shape of errors: GuestfsError with op/errno/code, a stack that points at the caller,
// no guestfish hints, and a fast, explained launch failure.
import { afterEach, describe, expect, it } from 'vitest'

import { Guestfs, GuestfsError } from '../../src/guestfs/index.js'

describe('GuestfsError', () => {
  const open: Guestfs[] = []
  const create = async (o: Parameters<typeof Guestfs.create>[0] = { environment: false }) => {
    const g = await Guestfs.create(o)
    open.push(g)
    return g
  }
  afterEach(async () => {
    await Promise.all(open.splice(0).map((g) => g.close()))
  })

  it('maps errno to a code name (ENOENT for a missing drive)', async () => {
    const g = await create()
    const e = await g.addDrive('/nonexistent/disk.img').catch((x: unknown) => x)
    expect(e).toBeInstanceOf(GuestfsError)
    expect(e).toMatchObject({ name: 'GuestfsError', op: 'add_drive', errno: 2, code: 'ENOENT', applianceDied: false })
    expect((e as Error).message).toBe('/nonexistent/disk.img: No such file or directory')
  })

  it('uses ERR_GUESTFS when libguestfs gives no errno', async () => {
    const g = await create()
    const e = await g.setMemsize(10).catch((x: unknown) => x)
    expect(e).toMatchObject({ op: 'set_memsize', errno: 0, code: 'ERR_GUESTFS' })
    expect((e as Error).message).toMatch(/too small value for memsize/)
  })

  it('drops the guestfish hint from "call launch before" errors', async () => {
    const g = await create()
    const e = (await g.mount('/dev/sda', '/').catch((x: unknown) => x)) as GuestfsError
    expect(e.message).toMatch(/call launch before using this function/)
    expect(e.message).not.toMatch(/guestfish/)
  })

  it('has a stack that names the calling test, not only native frames', async () => {
    const g = await create()
    const e = (await g.setMemsize(10).catch((x: unknown) => x)) as Error
    expect(e.stack).toMatch(/errors\.test\.ts/)
  })

  it('fails a launch with a hypervisor that does not exist quickly and explains it', async () => {
    const g = await create({ environment: false, hv: '/bin/false' })
    await g.addDriveScratch(16 * 1024 * 1024)
    const t0 = Date.now()
    const e = (await g.launch().catch((x: unknown) => x)) as GuestfsError
    expect(Date.now() - t0).toBeLessThan(15_000)
    expect(e).toBeInstanceOf(GuestfsError)
    expect(e.op).toBe('launch')
    expect(e.message).toMatch(/\/bin\/false|qemu|launch/)
    // The handle is back in the config state and can still be closed normally.
    expect(await g.getState()).toBe(0)
  })

  it('rejects calls after close with ERR_GUESTFS_CLOSED', async () => {
    const g = await Guestfs.create({ environment: false })
    await g.close()
    expect(g.state).toBe('closed')
    const e = await g.getMemsize().catch((x: unknown) => x)
    expect(e).toMatchObject({ code: 'ERR_GUESTFS_CLOSED', op: 'get_memsize' })
    await g.close() // idempotent
  })

  it('parses LIBGUESTFS_* from an explicit environment map', async () => {
    const g = await create({ environment: { LIBGUESTFS_MEMSIZE: '640', LIBGUESTFS_HV: '/bin/true' } })
    expect(await g.getMemsize()).toBe(640)
    expect(await g.getHv()).toBe('/bin/true')
  })
})
