// Finding host programs on PATH.
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

/** Absolute path of an executable: `name` with a '/' is checked as is, else searched on PATH. */
export function findExecutable(name: string, path: string = process.env['PATH'] ?? ''): string | undefined {
  const candidates = name.includes('/')
    ? [name]
    : path
        .split(delimiter)
        .filter(Boolean)
        .map((d) => join(d, name))
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK)
      return c
    } catch {
      // next
    }
  }
  return undefined
}
