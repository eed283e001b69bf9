// Splits text that arrives in arbitrary chunks into whole lines.

export class LineSplitter {
  #rest = ''

  /** Feeds a chunk; returns the complete lines it finished (without line ends). */
  push(chunk: string): string[] {
    const text = this.#rest + chunk
    const parts = text.split(/\r?\n/)
    this.#rest = parts.pop() ?? ''
    return parts
  }

  /** The unterminated last line, if any, and resets. */
  flush(): string[] {
    const rest = this.#rest
    this.#rest = ''
    return rest === '' ? [] : [rest]
  }
}

/** Keeps the last `max` items pushed. */
export class Tail<T> {
  readonly #items: T[] = []
  constructor(readonly max: number) {}
  push(item: T): void {
    this.#items.push(item)
    if (this.#items.length > this.max) this.#items.shift()
  }
  get items(): readonly T[] {
    return this.#items
  }
}
