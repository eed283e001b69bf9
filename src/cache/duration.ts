// Durations as --cache-max-age and `cache prune --older-than` take them ("30m", "2h", "7d", "1w"),
// and ages in words for messages ("2 h old"). Sizes ("20G") are src/util/sizes.ts's.

const DURATION = /^([0-9]*\.?[0-9]+|[0-9]+\.)([smhdw])$/
const UNIT_MS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
}

/** Milliseconds for a duration string: a number (a fraction allowed) and a unit s, m, h, d or w; else undefined. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text)
  if (!m) return undefined
  return Math.round(Number(m[1]) * (UNIT_MS[m[2]!] ?? 1))
}

/** A duration in the largest unit that keeps it readable: 45 s, 12 min, 5 h, 3 d. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 90) return `${s} s`
  const min = Math.round(s / 60)
  if (min < 90) return `${min} min`
  const h = Math.round(min / 60)
  if (h < 48) return `${h} h`
  return `${Math.round(h / 24)} d`
}
