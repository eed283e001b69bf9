// squashfs (xz): tar2sqfs (squashfs-tools-ng) on the host, on every core, from the image root's
// archive less the contents of ./dev/ (the original's `-e dev/*`). It writes the file itself.
import { link, open, unlink } from 'node:fs/promises'
import { availableParallelism } from 'node:os'

import { HostToolError, PrerequisiteError } from '../errors.js'
import { runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { outputWriteError, runFromArchive } from './stream.js'
import { dropDevContents } from './tar-filter.js'
import { defineFormat } from './types.js'

/** What the full-disk probe writes after a failure: tar2sqfs says only "I/O error". */
const PROBE_BYTES = 64 * 1024

export const squashfs = defineFormat({
  name: 'squashfs',
  extension: 'squash',
  source: 'archive',
  progress: () => 'Compressing the image as squashfs',
  checkHost() {
    if (!findExecutable('tar2sqfs')) {
      throw new PrerequisiteError('tar2sqfs needed but not found', { hint: 'install squashfs-tools-ng' })
    }
  },
  async fromArchive(ctx, archive, target) {
    const temp = target!
    const hold = await holdOutput(temp)
    const input = archive.read()
    const filter = dropDevContents()
    input.pipe(filter)
    // -e: an NFS export table, as mksquashfs makes by default; -d: the time of directories
    // the archive does not list (it lists them all, ./ included), and the image's own.
    // prettier-ignore
    const args = [
      '-q', '-f', '-c', 'xz', '-j', String(availableParallelism()), '-e',
      '-d', `mtime=${ctx.sourceDateEpoch ?? Math.floor(Date.now() / 1000)}`, temp,
    ]
    const run = (signal: AbortSignal) => runTool('tar2sqfs', args, { input: filter, signal, tailLines: 10 })
    try {
      await runFromArchive(archive, [input, filter], run, { signal: ctx.signal })
    } catch (e) {
      throw await squashfsError(ctx.finalPath(temp), hold ?? temp, e)
    } finally {
      if (hold) await unlink(hold).catch(() => undefined)
    }
  },
})

/**
 * A second link to the output (created empty, as tar2sqfs would): tar2sqfs removes its output
 * when a write fails, which frees the space; the link keeps it until the failure is understood.
 * Undefined where links cannot be made (then the output itself is probed).
 */
async function holdOutput(temp: string): Promise<string | undefined> {
  const hold = `${temp}.hold`
  try {
    await (await open(temp, 'a')).close()
    await link(temp, hold)
    return hold
  } catch {
    return undefined
  }
}

/**
 * tar2sqfs's failure as the out-of-space error of the other outputs when the output's file
 * system is full: it reports every failed write as "I/O error", so a write there decides.
 */
async function squashfsError(final: string, file: string, e: unknown): Promise<unknown> {
  if (!(e instanceof HostToolError)) return e
  try {
    const f = await open(file, 'a')
    try {
      await f.write(Buffer.alloc(PROBE_BYTES))
      await f.sync()
    } finally {
      await f.close()
    }
  } catch (probe) {
    const code = (probe as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EDQUOT') return outputWriteError(final, probe)
  }
  return e
}
