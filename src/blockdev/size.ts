// Size specifications of diskimage-builder's block-device YAML: a number and an optional unit
// (KiB…TiB powers of 1024, K/KB…T/TB powers of 1000, B or nothing for bytes), or "N%" of what
// is left. Deliberately not --size's syntax, which has its own rules.
import { BlockDeviceConfigError } from '../errors.js'

const UNITS: Record<string, number> = {
  TiB: 1024 ** 4,
  GiB: 1024 ** 3,
  MiB: 1024 ** 2,
  KiB: 1024,
  TB: 1000 ** 4,
  GB: 1000 ** 3,
  MB: 1000 ** 2,
  KB: 1000,
  T: 1000 ** 4,
  G: 1000 ** 3,
  M: 1000 ** 2,
  K: 1000,
  B: 1,
  '': 1,
}
const SPEC = /^(\d+(?:\.\d*)?|\.\d+)? ?([A-Za-z]*)$/

/** Bytes of an absolute size ("512MiB", "1G", "4096", "1.5GiB"). */
export function parseAbsSize(spec: string | number, what: string): number {
  const text = String(spec).trim()
  const m = SPEC.exec(text)
  const factor = m ? UNITS[m[2]!] : undefined
  if (!m || factor === undefined || (m[1] === undefined && m[2] === '')) {
    throw new BlockDeviceConfigError(`invalid size ‘${text}’ for ${what}`)
  }
  return Math.trunc(factor * (m[1] === undefined ? 1 : Number(m[1])))
}

/** Bytes of a size that may be relative ("100%", "50%") to `available`. */
export function parseRelSize(spec: string | number, available: number, what: string): number {
  const text = String(spec).trim()
  if (text.endsWith('%')) {
    const pct = Number(text.slice(0, -1))
    if (!/^\d+(\.\d*)?%$/.test(text) || pct <= 0 || pct > 100) {
      throw new BlockDeviceConfigError(`invalid size ‘${text}’ for ${what}: a percentage must be in (0, 100]`)
    }
    return Math.trunc((available * pct) / 100)
  }
  return parseAbsSize(text, what)
}
