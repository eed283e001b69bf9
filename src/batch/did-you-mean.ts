// "Did you mean …?" for batch-file typos: the closest known spelling, when one is close enough.

/**
 * The optimal string alignment distance: insertions, deletions, substitutions and swaps of two
 * neighbours each cost one (a swap is the commonest typo: `fromats`).
 */
export function editDistance(a: string, b: string): number {
  // Three rows: a swap looks two rows back.
  let before: number[] = []
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let d = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, before[j - 2]! + 1)
      row.push(d)
    }
    before = prev
    prev = row
  }
  return prev[b.length]!
}

/**
 * The candidate nearest to `word` (case aside), the first of equals; undefined when none is within
 * a third of the word's length (at least one edit): a far guess misleads more than none.
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const limit = Math.max(1, Math.floor(word.length / 3))
  let best: string | undefined
  let bestDistance = Infinity
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase())
    if (d <= limit && d < bestDistance) {
      best = c
      bestDistance = d
    }
  }
  return best
}

/** ` (did you mean X?)`, or nothing. */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  const c = closest(word, candidates)
  return c === undefined ? '' : ` (did you mean ${c}?)`
}
