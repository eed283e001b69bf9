// Cross-process locks for the step store without flock: a lock is a file created whole and
// exclusively (written under a private name, then hard-linked to its name: link fails if the name
// exists), naming its owner. An owner on this host whose process is gone (or whose pid now belongs
// to a later process) is dead, and its lock may be taken over.
import { randomBytes } from 'node:crypto'
import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { dirname, join } from 'node:path'

import { readStat } from '../host/proc.js'

/** Who holds a lock (or a mark): what a lock file holds, as JSON. */
export interface LockOwner {
  pid: number
  hostname: string
  /** When the lock was taken (ms since the epoch). */
  startedAt: number
  /** The owner's start time (clock ticks since boot): with the pid, names this process and not a later one. */
  procStart?: number
  /** Tells this lock from any other, even of the same process. */
  nonce: string
}

let selfStart: number | undefined
/** This process's start time (clock ticks since boot), if /proc tells. */
export function ownProcessStart(): number | undefined {
  selfStart ??= readStat(process.pid)?.startTime
  return selfStart
}

/** A fresh owner record for this process. */
export function ownerRecord(): LockOwner {
  const start = ownProcessStart()
  return {
    pid: process.pid,
    hostname: hostname(),
    startedAt: Date.now(),
    ...(start === undefined ? {} : { procStart: start }),
    nonce: randomBytes(8).toString('hex'),
  }
}

/**
 * Whether the owner may still be running. An owner on another host cannot be checked and counts as
 * live; on this host it is live while its pid exists, is not a zombie and started when it said.
 */
export function isAlive(owner: LockOwner): boolean {
  if (owner.hostname !== hostname()) return true
  if (owner.pid === process.pid) return owner.procStart === undefined || owner.procStart === ownProcessStart()
  try {
    process.kill(owner.pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  const st = readStat(owner.pid)
  if (!st) return true // no /proc to look at: kill(0) said it exists
  if (st.state === 'Z' || st.state === 'X') return false
  return owner.procStart === undefined || st.startTime === owner.procStart
}

function isOwner(v: unknown): v is LockOwner {
  const o = v as Partial<LockOwner> | null
  return (
    typeof o === 'object' &&
    o !== null &&
    Number.isInteger(o.pid) &&
    typeof o.hostname === 'string' &&
    typeof o.startedAt === 'number' &&
    typeof o.nonce === 'string'
  )
}

/** The owner named by a lock file; undefined if it is gone; null if it is unreadable (a torn write cannot happen, but a hand edit can). */
export async function readOwner(path: string): Promise<LockOwner | undefined | null> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
  try {
    const v: unknown = JSON.parse(text)
    return isOwner(v) ? v : null
  } catch {
    return null
  }
}

/** Writes `data` to `path` whole: under a private name, then renamed over it. */
export async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`)
  await writeFile(tmp, data, { flush: true })
  try {
    await rename(tmp, path)
  } catch (e) {
    await unlink(tmp).catch(() => undefined)
    throw e
  }
}

/** A lock this process holds. */
export interface HeldLock {
  readonly path: string
  readonly owner: LockOwner
  /** Removes the lock if it is still ours. */
  release(): Promise<void>
}

export type TryLockResult = { held: HeldLock } | { owner: LockOwner }

/**
 * Tries once to take the lock at `path`: it is ours, or here is its live owner. A lock of a dead
 * owner (or an unreadable one) is taken over: moved aside, checked to be the one we judged dead
 * (another taker may have replaced it meanwhile; then it is put back), removed, and taken afresh.
 */
export async function tryLock(path: string): Promise<TryLockResult> {
  const owner = ownerRecord()
  const mine = join(dirname(path), `.${owner.nonce}.new`)
  await writeFile(mine, JSON.stringify(owner), { flush: true })
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(mine, path)
        return { held: heldLock(path, owner) }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
      }
      const current = await readOwner(path)
      if (current === undefined) continue // released meanwhile
      if (current !== null && isAlive(current)) return { owner: current }
      if (attempt > 20) return { owner: current ?? owner } // a livelock of takers: let the caller poll
      const aside = join(dirname(path), `.${owner.nonce}.dead`)
      try {
        await rename(path, aside)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue
        throw e
      }
      const moved = await readOwner(aside)
      if (current !== null && moved?.nonce !== current.nonce && moved && isAlive(moved)) {
        // We moved a lock a faster taker had just made: give it back (if nobody took the name meanwhile).
        await link(aside, path).catch(() => undefined)
      }
      await unlink(aside).catch(() => undefined)
    }
  } finally {
    await unlink(mine).catch(() => undefined)
  }
}

function heldLock(path: string, owner: LockOwner): HeldLock {
  let released = false
  return {
    path,
    owner,
    async release() {
      if (released) return
      released = true
      const current = await readOwner(path)
      if (current?.nonce === owner.nonce) await unlink(path).catch(() => undefined)
    },
  }
}
