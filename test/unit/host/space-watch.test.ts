import { tmpdir } from 'node:os'

import { describe, expect, it } from 'vitest'

import { watchHostSpace } from '../../../src/host/space-watch.js'

describe('host space watch', () => {
  it('reports a full file system once, and nothing when there is room', async () => {
    const full: string[] = []
    const w = watchHostSpace(['/nonexistent', tmpdir()], (d) => full.push(d), { intervalMs: 10, lowBytes: Infinity })
    const room: string[] = []
    const w2 = watchHostSpace([tmpdir()], (d) => room.push(d), { intervalMs: 10, lowBytes: 0 })
    await new Promise((r) => setTimeout(r, 100))
    w.stop()
    w2.stop()
    expect(full).toEqual([tmpdir()])
    expect(room).toEqual([])
  })
})
