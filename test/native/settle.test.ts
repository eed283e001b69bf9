// Settling hazards: whatever fails while a call's promise is settled, the promise is rejected
// (or, if nothing can settle it, the pin is released and the failure reported), no exception
// reaches Node, and the handle keeps working. Faults come from the native test hook
// `__test_fault`, since a real failure to build a JS value cannot be caused on demand.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

import { describe, expect, it } from 'vitest'

import { Guestfs, GuestfsError } from '../../src/guestfs/index.js'
import { loadAddon, type NativeHandle, type NativeHandleOptions } from '../../src/guestfs/native.js'

const { addon, path: addonPath } = loadAddon()
const script = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'native-hazards.cjs')
const runChild = (stage: string) =>
  spawnSync(process.execPath, [script, stage], {
    env: { ...process.env, VIRT_DIB_ADDON_PATH: addonPath },
    encoding: 'utf8',
    timeout: 30_000,
  })
const lines = (out: string) =>
  out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)

type TestHandle = NativeHandle & {
  __test_fault(kind: 'settle' | 'settle-error' | 'settle-all'): void
  get_memsize(): Promise<number>
  set_memsize(mb: number): Promise<void>
  internal_test_rinterr(): Promise<number>
}
/** The addon's test-only constructor option: 'start' makes creating the thread-safe function fail. */
type TestHandleOptions = NativeHandleOptions & { __testFault?: 'start' }
const faultyStart: TestHandleOptions = { environment: false, __testFault: 'start' }
// tsc checks this: the hook is not in the public options type.
// @ts-expect-error __testFault is test-only
const notPublic: NativeHandleOptions = { __testFault: 'start' }
void notPublic

const raw = () => new addon.GuestfsHandle(() => undefined, { environment: false }) as TestHandle

describe('settling a call', () => {
  it('rejects with ERR_GUESTFS_INTERNAL when the result cannot be turned into JS', async () => {
    const h = raw()
    h.__test_fault('settle')
    await expect(h.get_memsize()).rejects.toMatchObject({
      op: 'get_memsize',
      code: 'ERR_GUESTFS_INTERNAL',
      message: expect.stringMatching(/^get_memsize: internal error while settling the call: fault injected/),
    })
    expect(await h.get_memsize()).toBeGreaterThan(0) // one-shot; the handle is fine
    await h.close()
  })

  it('rejects when the error of a failed call cannot be built either', async () => {
    const h = raw()
    h.__test_fault('settle')
    await expect(h.internal_test_rinterr()).rejects.toMatchObject({ code: 'ERR_GUESTFS_INTERNAL' })
    await h.close()
  })

  it('falls back to a plain rejection when no error object can be made', async () => {
    const h = raw()
    h.__test_fault('settle-error')
    const e = await h.get_memsize().catch((x: unknown) => x)
    expect(e).toMatch(/^get_memsize: internal error while settling the call/)
    // The TS layer still turns it into a GuestfsError with the op.
    expect(GuestfsError.from(e, 'get_memsize')).toMatchObject({ op: 'get_memsize', name: 'GuestfsError' })
    await h.close()
  })

  it('settles close() even if its waiter cannot be resolved normally', async () => {
    const h = raw()
    h.__test_fault('settle')
    await expect(h.close()).rejects.toMatchObject({ code: 'ERR_GUESTFS_INTERNAL', op: 'close' })
    expect(h.state).toBe('closed')
  })

  it('releases the pin when nothing can settle the promise: no hang, one report, the handle works', () => {
    const r = runChild('settle-all')
    expect(r.error).toBeUndefined() // no timeout: the unsettled call does not keep Node alive
    expect(r.status).toBe(0)
    expect(lines(r.stdout)).toEqual([{ next: 512 }])
    expect(r.stderr.trim()).toBe(
      'virt-dib: internal error: get_memsize: the call could not be settled (fault injected by __test_fault)',
    )
  })

  it('surfaces a throwing event dispatcher as an uncaught exception, and calls still settle', () => {
    const r = runChild('dispatcher-throws')
    expect(r.status).toBe(0)
    const out = lines(r.stdout)
    expect(out.filter((o) => o['uncaught'] === 'listener bug').length).toBeGreaterThan(0)
    expect(out.at(-1)).toMatchObject({ memsize: expect.any(Number) })
    expect(r.stderr).not.toMatch(/N-API callback exception|FATAL/)
  })

  it('the Guestfs class does not expose the test hook', async () => {
    await using g = await Guestfs.create({ environment: false })
    expect('__test_fault' in g).toBe(false)
  })
})

describe('creating a handle', () => {
  it('throws a clear error and frees everything if the thread-safe function cannot be created', async () => {
    const before = addon.__test.liveSessions()
    for (let i = 0; i < 5; i++) {
      expect(() => new addon.GuestfsHandle(() => undefined, faultyStart)).toThrow(
        /^GuestfsHandle: cannot create the thread-safe function: /,
      )
    }
    // The holder used to leak with its session (and the guestfs_h) on this path.
    expect(addon.__test.liveSessions()).toBe(before)
    const h = raw()
    expect(await h.get_memsize()).toBeGreaterThan(0)
    await h.close()
  })
})
