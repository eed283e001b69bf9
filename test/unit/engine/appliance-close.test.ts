// Closing the appliance at the end of a build never waits behind a call that is still running:
// close() is queued after it, so a busy handle has its qemu killed first (also after an ordinary
// failure, not only after an abort), and a close that takes too long is ended the same way.
import { describe, expect, it } from 'vitest'

import { closeAppliance, type ClosableAppliance } from '../../../src/engine/appliance.js'

/** A handle whose close settles only once the appliance is killed when `busy` (or `stuck`). */
function fakeHandle(o: { busy: boolean; stuck?: boolean }): ClosableAppliance & { kills: number } {
  let killed!: () => void
  const dead = new Promise<void>((r) => (killed = r))
  const h = {
    kills: 0,
    get busy() {
      return o.busy
    },
    killAppliance() {
      h.kills++
      killed()
      return true
    },
    async close() {
      if (o.busy || o.stuck) await dead // queued behind the running call / a guest that hangs
    },
  }
  return h
}

const within = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p.then(() => 'settled'), new Promise((r) => setTimeout(() => r('still waiting'), ms))])

describe('closing the appliance', () => {
  it('a transfer still running after an ordinary failure: killed first, then closed', async () => {
    const g = fakeHandle({ busy: true })
    // Was: killed only when aborted, so close() waited behind the transfer forever.
    expect(await within(closeAppliance(g, false), 2000)).toBe('settled')
    expect(g.kills).toBe(1)
  })

  it('after an abort: killed first', async () => {
    const g = fakeHandle({ busy: false })
    await closeAppliance(g, true)
    expect(g.kills).toBeGreaterThanOrEqual(1)
  })

  it('an idle handle after a successful build is closed, not killed', async () => {
    const g = fakeHandle({ busy: false })
    await closeAppliance(g, false)
    expect(g.kills).toBe(0)
  })

  it('a close that takes longer than the bound kills the appliance', async () => {
    const g = fakeHandle({ busy: false, stuck: true })
    const t0 = Date.now()
    expect(await within(closeAppliance(g, false, 200), 3000)).toBe('settled')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190)
    expect(g.kills).toBe(1)
  })
})
