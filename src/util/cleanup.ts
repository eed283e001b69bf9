// A stack of things to undo, run last-in first-out (Node 20 has no AsyncDisposableStack).
// Register an undo the moment the thing exists; run() never throws, it returns the errors.
//
// Process-wide, cleanups can be hurried (a second Ctrl-C): from then on every run() still starts
// every undo, newest first, but stops waiting for one that outlives the deadline, so a stuck
// undo (a hung unmount, a child that ignores its signal) cannot keep the older ones, such as
// removing the workspace, from running, nor keep the process from exiting.

export type Undo = () => void | Promise<void>

/** After the deadline, the undos not yet started are all started and get this long together. */
export const LATE_GRACE_MS = 1000

let hurryDeadline: number | undefined
const hurryListeners = new Set<() => void>()

/**
 * Bounds every cleanup of this process, running or still to come, to `ms` from now (the earliest
 * deadline wins). Used by the CLI on a second signal; there is no way back.
 */
export function hurryCleanups(ms: number): void {
  const at = Date.now() + Math.max(0, ms)
  hurryDeadline = hurryDeadline === undefined ? at : Math.min(hurryDeadline, at)
  for (const l of [...hurryListeners]) l()
}

/** The hurry deadline, if any (ms since the epoch). */
export function cleanupDeadline(): number | undefined {
  return hurryDeadline
}

/** For tests: forget a hurry. */
export function resetCleanupHurry(): void {
  hurryDeadline = undefined
}

export class AbandonedUndoError extends Error {
  override name = 'AbandonedUndoError'
}

/**
 * Resolves when `p` settles (with its error, if any) or when the hurry deadline passes plus
 * `extraMs` (with an AbandonedUndoError); waits for `p` alone while nobody hurries.
 */
function untilDeadline(p: Promise<void>, extraMs = 0): Promise<unknown> {
  const settled = p.then(
    () => undefined,
    (e: unknown) => e ?? new Error('undo failed'),
  )
  return new Promise<unknown>((resolve) => {
    let timer: NodeJS.Timeout | undefined
    const arm = () => {
      if (hurryDeadline === undefined) return
      clearTimeout(timer)
      const ms = hurryDeadline + extraMs - Date.now()
      timer = setTimeout(() => finish(new AbandonedUndoError('did not finish in time; abandoned')), Math.max(0, ms))
    }
    const finish = (v: unknown) => {
      clearTimeout(timer)
      hurryListeners.delete(arm)
      resolve(v)
    }
    hurryListeners.add(arm)
    arm()
    void settled.then(finish)
  })
}

function start(undo: Undo): Promise<void> {
  try {
    return Promise.resolve(undo())
  } catch (e) {
    return Promise.reject(e)
  }
}

export class CleanupStack {
  readonly #items: { label: string; undo: Undo }[] = []

  /** Registers an undo; returns a function that removes it again (e.g. once a file is kept). */
  defer(label: string, undo: Undo): () => void {
    const item = { label, undo }
    this.#items.push(item)
    return () => {
      const i = this.#items.indexOf(item)
      if (i !== -1) this.#items.splice(i, 1)
    }
  }

  get size(): number {
    return this.#items.length
  }

  /**
   * Runs every undo, newest first; collects failures instead of stopping at the first. Once
   * cleanups are hurried, an undo still running at the deadline is abandoned (reported as an
   * AbandonedUndoError) and the rest are started together, bounded by LATE_GRACE_MS.
   */
  async run(): Promise<{ label: string; error: unknown }[]> {
    const failures: { label: string; error: unknown }[] = []
    while (this.#items.length > 0) {
      if (hurryDeadline !== undefined && Date.now() >= hurryDeadline) {
        const late = this.#items.splice(0).reverse()
        const errors = await Promise.all(late.map((i) => untilDeadline(start(i.undo), LATE_GRACE_MS)))
        late.forEach((i, n) => {
          if (errors[n] !== undefined) failures.push({ label: i.label, error: errors[n] })
        })
        break
      }
      const { label, undo } = this.#items.pop()!
      const error = await untilDeadline(start(undo))
      if (error !== undefined) failures.push({ label, error })
    }
    return failures
  }
}
