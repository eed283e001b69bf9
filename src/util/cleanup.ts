// A stack of things to undo, run last-in first-out (Node 20 has no AsyncDisposableStack).
// Register an undo the moment the thing exists; run() never throws, it returns the errors.

export type Undo = () => void | Promise<void>

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

  /** Runs every undo, newest first; collects failures instead of stopping at the first. */
  async run(): Promise<{ label: string; error: unknown }[]> {
    const failures: { label: string; error: unknown }[] = []
    while (this.#items.length > 0) {
      const { label, undo } = this.#items.pop()!
      try {
        await undo()
      } catch (error) {
        failures.push({ label, error })
      }
    }
    return failures
  }
}
