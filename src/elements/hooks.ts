// Merges the hooks of the expanded elements into one tree, with diskimage-builder's rules:
// every subdirectory of an element is merged (except tests and caches); a file that already
// exists at the first level of a subdirectory is a duplicate and an error; deeper files and
// top-level files are overwritten silently by later elements (in name order). Symlinks are
// followed, so the appliance receives real files (rules: entryKind).
import {
  accessSync,
  chmodSync,
  constants,
  copyFileSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  statSync,
  symlinkSync,
} from 'node:fs'
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

type EntryKind = { kind: 'dir'; real: string } | { kind: 'file' } | { kind: 'dangling' }

/**
 * What an element entry is once symbolic links are followed, under these rules (README):
 * links are followed wherever they point, as `cp -L` would, so the appliance gets real files;
 * a link that points nowhere is kept as a link; a link that leads back to a directory being
 * copied (`install.d/x -> .`, `-> ..`, `-> /`), a chain of links that never ends, and anything
 * that is not a file, directory or link (a FIFO would hang the copy) are refused.
 */
function entryKind(path: string, rel: string, element: string, walking: readonly string[]): EntryKind {
  const fail = (why: string) => new ElementError(`element ‘${element}’: ‘${rel}’ ${why}`)
  let link: string | undefined
  try {
    if (lstatSync(path).isSymbolicLink()) link = readlinkSync(path)
  } catch (e) {
    throw fail(`cannot be read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
  }
  let st: ReturnType<typeof statSync>
  try {
    st = statSync(path)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ELOOP') throw fail(`is a symbolic link loop (-> ${link ?? '?'})`)
    if (link !== undefined && (code === 'ENOENT' || code === 'ENOTDIR')) return { kind: 'dangling' }
    throw fail(`cannot be read: ${code ?? String(e)}`)
  }
  if (st.isDirectory()) {
    const real = realpathSync(path)
    // Following it would copy a directory into itself, without end.
    if (walking.some((w) => w === real || w.startsWith(real === '/' ? '/' : `${real}/`))) {
      throw fail(`is a symbolic link loop (-> ${link ?? '?'}): it leads back to a directory it is in`)
    }
    try {
      accessSync(path, constants.R_OK | constants.X_OK)
    } catch {
      throw fail('is a directory that cannot be read')
    }
    return { kind: 'dir', real }
  }
  if (!st.isFile()) throw fail('is not a file, a directory or a symbolic link')
  try {
    accessSync(path, constants.R_OK)
  } catch {
    throw fail('cannot be read')
  }
  return { kind: 'file' }
}

/** Reads the element directories and plans the merged tree (host reads only, no writes). */
export function planHooksTree(elements: readonly ResolvedElement[], excludeScripts: readonly string[] = []): HooksPlan {
  const files = new Map<string, HookFile>()
  const dirs = new Set<string>()
  const excluded: ExcludedScript[] = []
  const exclude = new Set([...excludeScripts, ...BUILTIN_EXCLUDED_SCRIPTS])

  const list = (dir: string, rel: string, element: string): string[] => {
    try {
      return readdirSync(dir).sort()
    } catch (e) {
      throw new ElementError(
        `element ‘${element}’: ‘${rel || '.'}’ cannot be read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      )
    }
  }
  const addTree = (element: string, src: string, rel: string, walking: readonly string[]) => {
    dirs.add(rel)
    for (const name of list(src, rel, element)) {
      const from = join(src, name)
      const to = `${rel}/${name}`
      const k = entryKind(from, to, element, walking)
      if (k.kind === 'dir') addTree(element, from, to, [...walking, k.real])
      else files.set(to, { path: to, source: from, element, dangling: k.kind === 'dangling' })
    }
  }

  for (const el of [...elements].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const top = [realpathSync(el.dir)]
    for (const name of list(el.dir, '', el.name)) {
      const from = join(el.dir, name)
      const st = entryKind(from, name, el.name, top)
      if (st.kind === 'dir') {
        if (SKIPPED_DIRS.has(name)) continue
        dirs.add(name)
        const walking = [...top, st.real]
        for (const entry of list(from, name, el.name)) {
          const entryFrom = join(from, entry)
          const to = `${name}/${entry}`
          if (exclude.has(entry)) {
            excluded.push({ path: to, element: el.name })
            continue
          }
          const est = entryKind(entryFrom, to, el.name, walking)
          const existing = files.get(to)
          if (existing && est.kind !== 'dir') {
            throw new ElementError(
              `there is a duplicated hook in your elements: ${to} in ‘${existing.element}’ and ‘${el.name}’`,
            )
          }
          if (est.kind === 'dir') addTree(el.name, entryFrom, to, [...walking, est.real])
          else files.set(to, { path: to, source: entryFrom, element: el.name, dangling: est.kind === 'dangling' })
        }
      } else {
        if (name.endsWith('.pyc')) continue
        files.set(name, { path: name, source: from, element: el.name, dangling: st.kind === 'dangling' })
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
