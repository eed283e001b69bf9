// Moving the staged outputs into place, all or nothing: each file or directory entry an output
// replaces is first renamed aside under a hidden name in the same directory, and only once every
// output is in place are those removed. If a step fails, what was moved in is removed again and
// what was moved aside is renamed back, so the output directory holds the old set or the new one.
import { randomBytes } from 'node:crypto'
import { lstat, readdir, rename, rm, rmdir } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

import { VirtDibError } from '../errors.js'

/** What commitStaged needs of a staged output (StagedFile in context.ts). */
export interface StagedPath {
  /** Where it was written (a hidden name in the same directory as `final`). */
  temp: string
  /** Where it goes. */
  final: string
}

interface Move {
  /** The path that now holds the new output. */
  target: string
  /** Where the old occupant of `target` was put, if there was one. */
  aside: string | undefined
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  )
}

function asideName(path: string): string {
  return join(dirname(path), `.${basename(path)}.vdib-${randomBytes(4).toString('hex')}.old`)
}

/** A file from before that could not be renamed back: it is still at `aside`. */
interface Stranded {
  target: string
  aside: string
}

function commitError(final: string, e: unknown, stranded: readonly Stranded[]): VirtDibError {
  const why = e instanceof Error ? e.message : String(e)
  const left = stranded
    .slice(0, 2)
    .map((m) => `‘${m.target}’ is left at ‘${basename(m.aside)}’`)
    .concat(stranded.length > 2 ? [`${stranded.length - 2} more`] : [])
    .join(', ')
  return new VirtDibError(`cannot put the output ‘${final}’ in place: ${why}`, {
    cause: e,
    hint:
      stranded.length === 0
        ? 'no output was replaced: the files from before are all still there'
        : `some files from before could not be put back: ${left} (rename it back by hand)`,
  })
}

/** The ops the commit (and its roll back) uses; tests replace one to fail on purpose. */
export interface CommitFs {
  rename(from: string, to: string): Promise<void>
}

const realFs: CommitFs = { rename }

/**
 * Moves every staged output into place. A staged directory ($NAME.d) is merged into an existing
 * directory entry by entry (as the original does); a staged file never replaces a directory.
 * Throws (after rolling back) when any move fails.
 */
export async function commitStaged(staged: readonly StagedPath[], fs: CommitFs = realFs): Promise<void> {
  const moves: Move[] = []
  const emptied: string[] = []
  const stranded: Stranded[] = []
  // Puts `from` at `target`, keeping what was there aside; recorded only once it is done.
  const replace = async (from: string, target: string) => {
    let aside: string | undefined
    if (await exists(target)) {
      aside = asideName(target)
      await fs.rename(target, aside)
    }
    try {
      await fs.rename(from, target)
    } catch (e) {
      // Its own failure to go back must not hide the first error, nor be reported as restored.
      if (aside) await fs.rename(aside, target).catch(() => stranded.push({ target, aside }))
      throw e
    }
    moves.push({ target, aside })
  }
  for (const s of staged) {
    try {
      const dir = (await lstat(s.temp)).isDirectory()
      const finalStat = await lstat(s.final).catch(() => undefined)
      if (dir && finalStat?.isDirectory()) {
        for (const e of await readdir(s.temp)) await replace(join(s.temp, e), join(s.final, e))
        emptied.push(s.temp)
        continue
      }
      if (!dir && finalStat?.isDirectory()) throw new VirtDibError(`‘${s.final}’ is a directory`)
      await replace(s.temp, s.final)
    } catch (e) {
      stranded.push(...(await rollBack(moves, staged, fs)))
      throw commitError(s.final, e, stranded)
    }
  }
  // Committed: what was kept aside goes; a failure here only leaves a hidden file behind.
  for (const m of moves) if (m.aside) await rm(m.aside, { recursive: true, force: true }).catch(() => undefined)
  for (const d of emptied) await rmdir(d).catch(() => undefined)
}

/**
 * Undoes `moves`, newest first: the new output goes back to its temp name when it came from
 * one (so that the usual cleanup removes it, or --no-delete-on-failure keeps it), the old
 * occupant is renamed back.
 */
async function rollBack(moves: Move[], staged: readonly StagedPath[], fs: CommitFs): Promise<Stranded[]> {
  const stranded: Stranded[] = []
  const tempOf = new Map<string, string>()
  for (const s of staged) tempOf.set(s.final, s.temp)
  for (const m of moves.reverse()) {
    const parentTemp = tempOf.get(dirname(m.target))
    const back = tempOf.get(m.target) ?? (parentTemp ? join(parentTemp, basename(m.target)) : undefined)
    try {
      if (back) await fs.rename(m.target, back)
      else await rm(m.target, { recursive: true, force: true })
    } catch {
      await rm(m.target, { recursive: true, force: true }).catch(() => undefined)
    }
    const aside = m.aside
    if (aside) await fs.rename(aside, m.target).catch(() => stranded.push({ target: m.target, aside }))
  }
  return stranded
}
