// Events arrive in order and before the promise of the call that raised them settles.
import { describe, expect, it } from 'vitest'

import { Guestfs } from '../../src/guestfs/index.js'

describe('events', () => {
  it('delivers trace events before the call resolves, in order', async () => {
    await using g = await Guestfs.create({ environment: false })
    const seen: string[] = []
    g.on('trace', (text) => seen.push(text))
    await g.setTrace(true)
    seen.length = 0
    const n = await g.getMemsize()
    expect(seen).toEqual(['get_memsize', `get_memsize = ${n}`])
  })

  it('delivers the close event before close() resolves', async () => {
    const g = await Guestfs.create({ environment: false })
    const order: string[] = []
    g.on('close', () => order.push('event'))
    await g.close().then(() => order.push('resolved'))
    expect(order).toEqual(['event', 'resolved'])
  })

  it('emits library messages in verbose mode only when someone listens', async () => {
    await using g = await Guestfs.create({ environment: false, verbose: true, hv: '/bin/false' })
    const lines: string[] = []
    await g.addDriveScratch(1024 * 1024)
    g.on('library', (t) => lines.push(t))
    await g.launch().catch(() => undefined) // fails at once, after verbose library output
    expect(lines.join('\n')).toMatch(/launch/)
  })
})
