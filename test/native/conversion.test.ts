// Argument and return conversion through the worker queue, without an appliance
// (libguestfs's internal_test_* calls echo typed values back).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { Guestfs } from '../../src/guestfs/index.js'
import { loadAddon } from '../../src/guestfs/native.js'

describe('native conversions', () => {
  let g: Guestfs
  const native = () => g as unknown as Record<string, unknown>
  const addon = loadAddon().addon
  const call = (name: string, ...args: unknown[]) => {
    const h = new addon.GuestfsHandle(() => undefined)
    const fn = (h as unknown as Record<string, unknown>)[name] as (...a: unknown[]) => Promise<unknown>
    return fn.apply(h, args).finally(() => h.close())
  }

  beforeAll(async () => {
    g = await Guestfs.create({ environment: false })
  })
  afterAll(async () => {
    await g.close()
  })

  it('exposes every call the later layers need', () => {
    for (const name of [
      'add_drive',
      'add_drive_scratch',
      'disk_create',
      'launch',
      'shutdown',
      'get_pid',
      'feature_available',
      'list_devices',
      'list_partitions',
      'part_init',
      'part_add',
      'part_disk',
      'part_set_bootable',
      'part_set_gpt_type',
      'pvcreate',
      'vgcreate',
      'lvcreate',
      'lvcreate_free',
      'vg_activate_all',
      'mkfs',
      'set_label',
      'set_uuid',
      'mount',
      'umount',
      'mkmountpoint',
      'mount_local',
      'mount_local_run',
      'umount_local',
      'sh',
      'sh_lines',
      'command',
      'command_lines',
      'debug',
      'tar_in',
      'tar_out',
      'upload',
      'download',
      'mksquashfs',
      'sync',
      'set_path',
      'set_cachedir',
      'set_hv',
      'set_pgroup',
      'set_backend',
    ]) {
      expect(addon.calls).toContain(name)
    }
    expect(native()).toBeDefined()
  })

  it('returns typed values: int, int64, bool, string, list, hashtable, buffer, optional string', async () => {
    expect(await call('internal_test_rint', '42')).toBe(42)
    expect(await call('internal_test_rint64', '8589934592')).toBe(8589934592)
    expect(await call('internal_test_rbool', 'true')).toBe(true)
    expect(await call('internal_test_rbool', 'false')).toBe(false)
    expect(await call('internal_test_rstring', 'héllo wörld')).toBe('héllo wörld')
    expect(await call('internal_test_rstringlist', '3')).toEqual(['0', '1', '2'])
    expect(await call('internal_test_rstringlist', '0')).toEqual([])
    expect(await call('internal_test_rhashtable', '2')).toEqual({ '0': '0', '1': '1' })
    const buf = (await call('internal_test_rbufferout', 'abc')) as Buffer
    expect(Buffer.isBuffer(buf)).toBe(true)
    expect(buf.toString()).toBe('abc')
    expect(() => call('internal_test_rbufferout', 'a\u0000b')).toThrow(/must not contain NUL/)
    expect(await call('internal_test_rconstoptstring', 'x')).toBe('static string')
  })

  it('rejects failing calls with op, errno and code', async () => {
    await expect(call('internal_test_rinterr')).rejects.toMatchObject({
      message: 'error',
      op: 'internal_test_rinterr',
      errno: 0,
    })
    await expect(call('internal_test_rstringerr')).rejects.toMatchObject({ op: 'internal_test_rstringerr' })
  })

  it('validates arguments on the JS thread, before anything is queued', async () => {
    await expect(g.setMemsize(1.5)).rejects.toThrow(/32-bit integer/)
    await expect(g.setMemsize(2 ** 40)).rejects.toThrow(RangeError)
    await expect(g.addDrive('a\u0000b')).rejects.toThrow(/NUL/)
    // @ts-expect-error unknown option on purpose
    await expect(g.addDrive('/dev/null', { redonly: true })).rejects.toThrow(/unknown option 'redonly'/)
    await expect(g.tarOut('/', -1)).rejects.toThrow(/file descriptor/)
    // The handle is still fine afterwards.
    expect(await g.getMemsize()).toBeGreaterThan(0)
  })

  it('passes booleans, integers, optional strings and string lists through config calls', async () => {
    await g.setMemsize(777)
    expect(await g.getMemsize()).toBe(777)
    await g.setSmp(2)
    expect(await g.getSmp()).toBe(2)
    await g.setNetwork(true)
    expect(await g.getNetwork()).toBe(true)
    await g.setAppend('console=ttyS0 quiet')
    expect(await g.getAppend()).toBe('console=ttyS0 quiet')
    await g.setAppend(null)
    expect(await g.getAppend()).toBeNull()
    await g.setBackendSettings(['force_tcg', 'gdb'])
    expect(await g.getBackendSettings()).toEqual(['force_tcg', 'gdb'])
    await g.setIdentifier('vdib-test')
    expect(await g.getIdentifier()).toBe('vdib-test')
    expect(await g.getPgroup()).toBe(true) // the binding's default
    const v = await g.version()
    expect(v.major).toBe(1)
    expect(v.minor).toBeGreaterThanOrEqual(38)
  })

  it('keeps the order of calls on one handle', async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => g.setMemsize(300 + i).then(() => g.getMemsize())),
    )
    // Each get runs after its own set but possibly after later sets: the last one wins.
    expect(results.at(-1)).toBe(349)
    expect(await g.getMemsize()).toBe(349)
  })
})
