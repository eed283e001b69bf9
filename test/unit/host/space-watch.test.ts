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

describe('host space watch, with a fake statfs', () => {
  it('names the first directory that runs low, whatever it is (the output directory included)', async () => {
    const free: Record<string, number> = { '/work': 1e9, '/out': 1e9, '/scratch': 1e9 }
    const statfs = async (d: string) => ({ bavail: free[d]!, bsize: 1 })
    const full: string[] = []
    const w = watchHostSpace(['/work', '/out', '/scratch'], (d) => full.push(d), { intervalMs: 5, statfs })
    await new Promise((r) => setTimeout(r, 30))
    expect(full).toEqual([])
    free['/out'] = 1024 // a tarball staged there filled it
    await new Promise((r) => setTimeout(r, 50))
    w.stop()
    expect(full).toEqual(['/out'])
  })
})
