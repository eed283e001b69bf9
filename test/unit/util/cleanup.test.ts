// CleanupStack: newest first, failures collected, and a hurry (second Ctrl-C) that bounds a stuck
// undo without skipping the older ones (the workspace is the oldest and must still go).
import { afterEach, describe, expect, it } from 'vitest'

import {
  AbandonedUndoError,
  CleanupStack,
  hurryCleanups,
  LATE_GRACE_MS,
  resetCleanupHurry,
} from '../../../src/util/cleanup.js'

afterEach(() => resetCleanupHurry())

describe('CleanupStack', () => {
  it('runs newest first and collects failures, sync throws included', async () => {
    const order: string[] = []
    const s = new CleanupStack()
    s.defer('a', () => void order.push('a'))
    s.defer('b', () => {
      order.push('b')
      throw new Error('b broke')
    })
    s.defer('c', async () => {
      order.push('c')
      await Promise.reject(new Error('c broke'))
    })
    const failures = await s.run()
    expect(order).toEqual(['c', 'b', 'a'])
    expect(failures.map((f) => [f.label, (f.error as Error).message])).toEqual([
      ['c', 'c broke'],
      ['b', 'b broke'],
    ])
    expect(s.size).toBe(0)
  })

  it('waits for a slow undo as long as it takes while nobody hurries', async () => {
    const s = new CleanupStack()
    let done = false
    s.defer('slow', () => new Promise<void>((r) => setTimeout(() => ((done = true), r()), 300)))
    expect(await s.run()).toEqual([])
    expect(done).toBe(true)
  })

  it('hurried while an undo hangs: abandons it at the deadline and still runs the older ones', async () => {
    const s = new CleanupStack()
    const ran: string[] = []
    s.defer('workspace', () => void ran.push('workspace'))
    s.defer('also old', async () => {
      await new Promise((r) => setTimeout(r, 50))
      ran.push('also old')
    })
    s.defer('stuck unmount', () => new Promise<void>(() => undefined))
    const t = Date.now()
    const running = s.run()
    setTimeout(() => hurryCleanups(200), 100)
    const failures = await running
    const took = Date.now() - t
    expect(ran).toContain('workspace')
    expect(ran).toContain('also old')
    expect(failures.map((f) => f.label)).toEqual(['stuck unmount'])
    expect(failures[0]!.error).toBeInstanceOf(AbandonedUndoError)
    expect(took).toBeGreaterThanOrEqual(280)
    expect(took).toBeLessThan(1000)
  })

  it('after the deadline, the rest start together and are bounded by LATE_GRACE_MS', async () => {
    const s = new CleanupStack()
    hurryCleanups(0)
    let workspace = false
    s.defer('workspace', () => void (workspace = true))
    s.defer('stuck 1', () => new Promise<void>(() => undefined))
    s.defer('stuck 2', () => new Promise<void>(() => undefined))
    const t = Date.now()
    const failures = await s.run()
    expect(Date.now() - t).toBeLessThan(LATE_GRACE_MS + 500)
    expect(workspace).toBe(true)
    expect(failures.map((f) => f.label).sort()).toEqual(['stuck 1', 'stuck 2'])
  })

  it('a hurry covers the stacks that exist then, not those made later (the next build)', async () => {
    const before = new CleanupStack()
    before.defer('stuck', () => new Promise<void>(() => undefined))
    hurryCleanups(10)
    await new Promise((r) => setTimeout(r, 50))
    const after = new CleanupStack()
    let done = false
    after.defer('slow but fine', () => new Promise<void>((r) => setTimeout(() => ((done = true), r()), 1300)))
    const [late, next] = await Promise.all([before.run(), after.run()])
    expect(late.map((f) => f.error)).toEqual([expect.any(AbandonedUndoError)])
    expect(next).toEqual([])
    expect(done).toBe(true)
  })
})
