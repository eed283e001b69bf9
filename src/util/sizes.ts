// Size strings as virt-dib's --size takes them: digits (a fraction allowed) and a mandatory
// unit: b (bytes), K, M, G (powers of 1024). Imports nothing from src/.

const SIZE = /^([0-9]*\.?[0-9]+|[0-9]+\.)([bKMG])$/
const UNIT: Record<string, number> = { b: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }

/** Bytes for a size string, or undefined if it does not parse. */
export function parseSize(text: string): number | undefined {
  const m = SIZE.exec(text)
  if (!m) return undefined
  return Math.trunc(Number(m[1]) * (UNIT[m[2]!] ?? 1))
}

/** Human size for messages: 5G, 512M, 1.5G. */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['K', 1024],
  ] as const) {
    if (bytes >= factor) {
      const v = bytes / factor
      return `${Number.isInteger(v) ? v : v.toFixed(1)}${unit}`
    }
  }
  return `${bytes}b`
}
