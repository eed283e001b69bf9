// A stack of things to undo, run last-in first-out (Node 20 has no AsyncDisposableStack).
// Register an undo the moment the thing exists; run() never throws, it returns the errors.
//
// Process-wide, cleanups can be hurried (a second Ctrl-C): from then on every run() of a stack
// that existed at that moment still starts every undo, newest first, but stops waiting for one
// that outlives the deadline, so a stuck undo (a hung unmount, a child that ignores its signal)
// cannot keep the older ones, such as removing the workspace, from running, nor keep the process
// from exiting. Stacks made later (the next build of a long-running service) are not hurried.

export type Undo = () => void | Promise<void>

/** After the deadline, the undos not yet started are all started and get this long together. */
export const LATE_GRACE_MS = 1000

/** Stacks are numbered as they are made; a hurry covers the stacks made before it. */
let stacksMade = 0
const hurries: { upTo: number; at: number }[] = []
const hurryListeners = new Set<() => void>()

/**
 * Bounds every cleanup of the stacks that exist now, running or still to come, to `ms` from now
 * (the earliest deadline wins). Used by the CLI on a second signal.
 */
export function hurryCleanups(ms: number): void {
  hurries.push({ upTo: stacksMade, at: Date.now() + Math.max(0, ms) })
  for (const l of [...hurryListeners]) l()
}

/** The hurry deadline of stack number `id`, if any (ms since the epoch). */
function deadlineOf(id: number): number | undefined {
  let at: number | undefined
  for (const h of hurries) if (id <= h.upTo) at = at === undefined ? h.at : Math.min(at, h.at)
  return at
}

/** For tests: forget every hurry. */
export function resetCleanupHurry(): void {
  hurries.length = 0
}

export class AbandonedUndoError extends Error {
  override name = 'AbandonedUndoError'
}

/**
 * Resolves when `p` settles (with its error, if any) or when the hurry deadline passes plus
 * `extraMs` (with an AbandonedUndoError); waits for `p` alone while nobody hurries.
 */
function untilDeadline(id: number, p: Promise<void>, extraMs = 0): Promise<unknown> {
  const settled = p.then(
    () => undefined,
    (e: unknown) => e ?? new Error('undo failed'),
  )
  return new Promise<unknown>((resolve) => {
    let timer: NodeJS.Timeout | undefined
    const arm = () => {
      const deadline = deadlineOf(id)
      if (deadline === undefined) return
      clearTimeout(timer)
      const ms = deadline + extraMs - Date.now()
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
  readonly #id = ++stacksMade

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
      const deadline = deadlineOf(this.#id)
      if (deadline !== undefined && Date.now() >= deadline) {
        const late = this.#items.splice(0).reverse()
        const errors = await Promise.all(late.map((i) => untilDeadline(this.#id, start(i.undo), LATE_GRACE_MS)))
        late.forEach((i, n) => {
          if (errors[n] !== undefined) failures.push({ label: i.label, error: errors[n] })
        })
        break
      }
      const { label, undo } = this.#items.pop()!
      const error = await untilDeadline(this.#id, start(undo))
      if (error !== undefined) failures.push({ label, error })
    }
    return failures
  }
}
