// Which folders a worker lets a job use. Write access to the queue means running scripts on every
// worker, so a job's elements, -B lib and output must lie inside the folders the worker was given
// (--allow-elements, --allow-output). Paths are compared as the kernel resolves them: the real path
// of the longest prefix that exists, so neither a symlink nor `..` leads out of an allowed folder.
import { realpath } from 'node:fs/promises'
import { isAbsolute, resolve, sep } from 'node:path'

import type { BuildOptions } from '../api/options.js'

export interface AllowedFolders {
  /** Where element paths and the -B lib may be. */
  elements: readonly string[]
  /** Where outputs (the build's name) and the image cache may be. */
  output: readonly string[]
}

/**
 * The real path `path` leads to: the real path of its longest existing prefix, the rest appended
 * (what does not exist yet cannot be a symlink). `path` must be absolute.
 */
export async function realPathOf(path: string): Promise<string> {
  const parts = path.split(sep)
  for (let i = parts.length; i > 0; i--) {
    const prefix = parts.slice(0, i).join(sep) || sep
    try {
      return resolve(await realpath(prefix), ...parts.slice(i))
    } catch {
      // does not exist (or is not a folder): a shorter prefix
    }
  }
  return resolve(path)
}

const inside = (path: string, root: string) => path === root || path.startsWith(root.endsWith(sep) ? root : root + sep)

/** The allowed folders as real paths, once per worker. */
export async function resolveAllowed(a: AllowedFolders): Promise<AllowedFolders> {
  const real = (dirs: readonly string[]) => Promise.all(dirs.map((d) => realPathOf(resolve(d))))
  return { elements: await real(a.elements), output: await real(a.output) }
}

type Area = 'elements' | 'output'

const AREA_WORDS: Record<Area, string> = {
  elements: 'element folders',
  output: 'output folders',
}

/**
 * Why a build may not run on this worker (its first path outside the allowed folders), or
 * undefined when every path is inside. `allowed` as {@link resolveAllowed} gives it. Without
 * `output`, the build's name is not checked (a layer's base: the worker writes it elsewhere).
 */
export async function refusedPath(
  options: BuildOptions,
  allowed: AllowedFolders,
  o: { output?: boolean } = {},
): Promise<string | undefined> {
  const checks: { field: string; path: string | undefined; area: Area }[] = [
    { field: 'libPath', path: options.libPath, area: 'elements' },
    ...options.elementPaths.map((p) => ({ field: 'elementPaths', path: p, area: 'elements' as const })),
    ...(o.output === false ? [] : [{ field: 'name', path: options.name, area: 'output' as const }]),
    { field: 'imageCache', path: options.imageCache, area: 'output' },
    // Mounted read-write: an output of sorts, never inside the element folders.
    { field: 'drive', path: options.drive, area: 'output' },
  ]
  for (const c of checks) {
    if (c.path === undefined) {
      if (c.field === 'name') return 'name: a job must name its output path'
      continue
    }
    if (!isAbsolute(c.path)) return `${c.field}: ${c.path} is not an absolute path`
    const real = await realPathOf(c.path)
    const roots = c.area === 'elements' ? allowed.elements : allowed.output
    if (roots.some((r) => inside(real, r))) continue
    const via = real === resolve(c.path) ? '' : ` (it leads to ${real})`
    return `${c.field}: ${c.path}${via} is outside the allowed ${AREA_WORDS[c.area]} (${roots.join(', ') || 'none'})`
  }
  return undefined
}
