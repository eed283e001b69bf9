// Finds elements on the element paths (host only; never touches the appliance).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'

import { ElementError } from '../errors.js'
import type { Element, ElementIndex, ElementOverride } from './types.js'

/** Reads a newline-separated name list; lines are stripped and blank lines dropped (as DIB). */
export function parseNameList(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
}

function readNameList(file: string): string[] {
  if (!existsSync(file)) return []
  try {
    return parseNameList(readFileSync(file, 'utf8'))
  } catch (e) {
    throw new ElementError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory() // follows symlinks
  } catch {
    return false
  }
}

/**
 * Loads every element of every path, first path wins. A path that does not exist or is not
 * a directory is an error (diskimage-builder refuses it too; the original virt-dib dropped it).
 */
export function loadElementIndex(paths: readonly string[]): ElementIndex {
  const elements = new Map<string, Element>()
  const overrides: ElementOverride[] = []
  for (const path of paths) {
    if (!existsSync(path)) throw new ElementError(`element path ‘${path}’ does not exist`)
    if (!isDirectory(path)) throw new ElementError(`element path ‘${path}’ is not a directory`)
    let names: string[]
    try {
      names = readdirSync(path).sort()
    } catch (e) {
      throw new ElementError(`element path ‘${path}’ cannot be read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
    }
    for (const name of names) {
      const dir = resolve(path, name)
      if (!isDirectory(dir)) continue
      const existing = elements.get(name)
      if (existing) {
        overrides.push({ name, used: existing.dir, ignored: dir })
        continue
      }
      elements.set(name, {
        name,
        dir,
        elementPath: path,
        deps: readNameList(join(dir, 'element-deps')),
        provides: readNameList(join(dir, 'element-provides')),
      })
    }
  }
  return { paths: [...paths], elements, overrides }
}
