// Merges the hooks of the expanded elements into one tree, with diskimage-builder's rules:
// every subdirectory of an element is merged (except tests and caches); a file that already
// exists at the first level of a subdirectory is a duplicate and an error; deeper files and
// top-level files are overwritten silently by later elements (in name order). Symlinks are
// followed, so the appliance receives real files.
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readlinkSync, statSync, symlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'

import { ElementError } from '../errors.js'
import { ENV_FILE_NAME, SCRIPT_NAME, sortEnvFiles, sortRunParts } from './run-order.js'
import type { ResolvedElement } from './types.js'

/** Top-level directories never merged (DIB skips tests and __pycache__; virt-dib test-elements). */
const SKIPPED_DIRS = new Set(['tests', 'test-elements', '__pycache__'])
/** compat: the original virt-dib always excluded this script (a sahara leftover). */
export const BUILTIN_EXCLUDED_SCRIPTS = ['01-sahara-version']

export interface HookFile {
  /** Path relative to the hooks tree root, '/'-separated. */
  path: string
  /** Host file it is copied from (symlinks resolved when copying). */
  source: string
  element: string
  /** Copied as a symlink because its target does not exist. */
  dangling: boolean
}

export interface ExcludedScript {
  path: string
  element: string
}

export interface HooksPlan {
  files: HookFile[]
  dirs: string[]
  excluded: ExcludedScript[]
}

function statFollow(path: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(path)
  } catch {
    return undefined
  }
}

/** Reads the element directories and plans the merged tree (host reads only, no writes). */
export function planHooksTree(elements: readonly ResolvedElement[], excludeScripts: readonly string[] = []): HooksPlan {
  const files = new Map<string, HookFile>()
  const dirs = new Set<string>()
  const excluded: ExcludedScript[] = []
  const exclude = new Set([...excludeScripts, ...BUILTIN_EXCLUDED_SCRIPTS])

  const addTree = (element: string, src: string, rel: string) => {
    dirs.add(rel)
    for (const name of readdirSync(src).sort()) {
      const from = join(src, name)
      const to = `${rel}/${name}`
      const st = statFollow(from)
      if (st?.isDirectory()) addTree(element, from, to)
      else files.set(to, { path: to, source: from, element, dangling: !st })
    }
  }

  for (const el of [...elements].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    for (const name of readdirSync(el.dir).sort()) {
      const from = join(el.dir, name)
      const st = statFollow(from)
      if (st?.isDirectory()) {
        if (SKIPPED_DIRS.has(name)) continue
        dirs.add(name)
        for (const entry of readdirSync(from).sort()) {
          const entryFrom = join(from, entry)
          const to = `${name}/${entry}`
          if (exclude.has(entry)) {
            excluded.push({ path: to, element: el.name })
            continue
          }
          const est = statFollow(entryFrom)
          const existing = files.get(to)
          if (existing && !est?.isDirectory()) {
            throw new ElementError(
              `there is a duplicated hook in your elements: ${to} in ‘${existing.element}’ and ‘${el.name}’`,
            )
          }
          if (est?.isDirectory()) addTree(el.name, entryFrom, to)
          else files.set(to, { path: to, source: entryFrom, element: el.name, dangling: !est })
        }
      } else if (st?.isFile() || !st) {
        if (name.endsWith('.pyc')) continue
        files.set(name, { path: name, source: from, element: el.name, dangling: !st })
      }
    }
  }
  return {
    files: [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
    dirs: [...dirs].sort(),
    excluded,
  }
}

/** Writes the planned tree under `root` (a workspace directory), keeping file modes. */
export function prepareHooksTree(plan: HooksPlan, root: string): void {
  mkdirSync(root, { recursive: true })
  for (const d of plan.dirs) mkdirSync(join(root, d), { recursive: true })
  for (const f of plan.files) {
    const to = join(root, f.path)
    mkdirSync(dirname(to), { recursive: true })
    if (f.dangling) {
      symlinkSync(readlinkSync(f.source), to)
      continue
    }
    copyFileSync(f.source, to)
    chmodSync(to, statSync(f.source).mode & 0o7777)
  }
}

export interface PhaseScript {
  name: string
  /** The element it came from (unknown for scripts added during the build). */
  element: string | undefined
}

export type SkipReason = 'bad-name' | 'not-executable' | 'not-a-file' | 'excluded'

export interface SkippedFile {
  name: string
  element: string | undefined
  reason: SkipReason
}

/**
 * The scripts a phase directory runs, in order, and the files it skips with the reason: the
 * rules of dib-run-parts (names `^[0-9A-Za-z_-]+$`, regular after symlinks, executable).
 */
export function listPhaseScripts(plan: HooksPlan, hook: string): { scripts: PhaseScript[]; skipped: SkippedFile[] } {
  const scripts: PhaseScript[] = []
  const skipped: SkippedFile[] = []
  for (const f of plan.files) {
    if (dirname(f.path) !== hook) continue
    const name = f.path.slice(hook.length + 1)
    if (!SCRIPT_NAME.test(name)) {
      skipped.push({ name, element: f.element, reason: 'bad-name' })
      continue
    }
    const st = f.dangling ? undefined : statSync(f.source)
    if (!st?.isFile()) skipped.push({ name, element: f.element, reason: 'not-a-file' })
    else if ((st.mode & 0o111) === 0) skipped.push({ name, element: f.element, reason: 'not-executable' })
    else scripts.push({ name, element: f.element })
  }
  for (const x of plan.excluded) {
    if (dirname(x.path) === hook)
      skipped.push({ name: x.path.slice(hook.length + 1), element: x.element, reason: 'excluded' })
  }
  return { scripts: sortRunParts(scripts, (s) => s.name), skipped }
}

/** environment.d files sourced before every phase, in order (byte order of names). */
export function listEnvironmentFiles(plan: HooksPlan): PhaseScript[] {
  const out: PhaseScript[] = []
  for (const f of plan.files) {
    if (dirname(f.path) !== 'environment.d') continue
    const name = f.path.slice('environment.d/'.length)
    if (!ENV_FILE_NAME.test(name) || f.dangling || !statSync(f.source).isFile()) continue
    out.push({ name, element: f.element })
  }
  return sortEnvFiles(out, (s) => s.name)
}
