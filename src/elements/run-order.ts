// The order diskimage-builder runs things in: `LANG=C sort -n` on script names (dib-run-parts),
// and which directory entries count as scripts or environment files. Pure functions.

/** Names dib-run-parts runs: no dots, so `10-foo.sh` is data, not a script. */
export const SCRIPT_NAME = /^[0-9A-Za-z_-]+$/
/** Names sourced from environment.d (dots allowed: `10-foo.bash`). */
export const ENV_FILE_NAME = /^[0-9A-Za-z_.-]+$/

/**
 * The numeric key GNU `sort -n` reads under LANG=C: leading blanks, an optional '-', digits,
 * an optional '.' and fraction. No digits at all means 0. Returned as sign, integer digits
 * without leading zeros, and fraction digits without trailing zeros, so any length compares.
 */
function numericKey(s: string): { neg: boolean; int: string; frac: string } {
  let i = 0
  while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++
  let neg = false
  if (s[i] === '-') {
    neg = true
    i++
  }
  const intStart = i
  while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++
  const int = s.slice(intStart, i).replace(/^0+/, '')
  let frac = ''
  if (s[i] === '.') {
    const fracStart = ++i
    while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++
    frac = s.slice(fracStart, i).replace(/0+$/, '')
  }
  if (int === '' && frac === '') neg = false // -0 and "-" equal 0
  return { neg, int, frac }
}

function compareMagnitude(a: { int: string; frac: string }, b: { int: string; frac: string }): number {
  if (a.int.length !== b.int.length) return a.int.length < b.int.length ? -1 : 1
  if (a.int !== b.int) return a.int < b.int ? -1 : 1
  if (a.frac !== b.frac) return a.frac < b.frac ? -1 : 1 // both trimmed: plain string order works
  return 0
}

function compareBytes(a: string, b: string): number {
  const ba = Buffer.from(a, 'utf8')
  const bb = Buffer.from(b, 'utf8')
  return Buffer.compare(ba, bb)
}

/**
 * Comparator equal to `LANG=C sort -n`: numeric key first, then (sort's last resort) the
 * whole strings byte by byte. So `zz-x` (key 0) < `5-a` < `10-b`, and `05-b` < `5-a`
 * because their numbers tie and '0' < '5'.
 */
export function compareRunParts(a: string, b: string): number {
  const ka = numericKey(a)
  const kb = numericKey(b)
  let c: number
  if (ka.neg !== kb.neg) c = ka.neg ? -1 : 1
  else c = ka.neg ? -compareMagnitude(ka, kb) : compareMagnitude(ka, kb)
  return c !== 0 ? c : compareBytes(a, b)
}

/** Sorted copy, in the order dib-run-parts runs scripts. */
export function sortRunParts<T>(items: readonly T[], name: (t: T) => string): T[] {
  return [...items].sort((x, y) => compareRunParts(name(x), name(y)))
}

/**
 * environment.d files are sorted by `sort -n` on full paths that all start with '/', so the
 * numeric key is 0 for all of them and the order is plain byte order: `10-b` before `5-a`.
 */
export function sortEnvFiles<T>(items: readonly T[], name: (t: T) => string): T[] {
  return [...items].sort((x, y) => compareBytes(name(x), name(y)))
}
