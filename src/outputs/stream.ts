// Streams into host sinks and tools (output files, pigz, tar2sqfs, docker import): the first
// failure on either side stops everything at once and is the error reported; nothing is left to
// reject unhandled.
import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'

import { VirtDibError } from '../errors.js'
import { describeSystemError } from '../util/system-error.js'
import { boundedWait } from '../util/wait.js'
import type { ArchiveFile, FileSink } from './types.js'

/** How long a stopped transfer may take to settle before the error is reported anyway. */
export const SETTLE_MS = 10_000
/**
 * The same once the build is aborted: shorter than the CLI's hard exit after a second signal
 * (HARD_EXIT_MS, 5 s), so the cleanup that follows still runs.
 */
export const SETTLE_ON_ABORT_MS = 2000

/**
 * Awaits every task. The first one to reject calls `stop` (which must make the others settle
 * soon: cancel the transfer, kill the process) and is the error thrown once they have, or after
 * a bounded wait ({@link SETTLE_MS}; {@link SETTLE_ON_ABORT_MS} once `signal`, the build's, aborts).
 */
export async function settleTogether(
  tasks: readonly Promise<unknown>[],
  stop: (e: unknown) => void,
  signal?: AbortSignal,
): Promise<void> {
  let failure: { error: unknown } | undefined
  let failed!: () => void
  const first = new Promise<void>((resolve) => (failed = resolve))
  const all = Promise.all(
    tasks.map((t) =>
      t.then(undefined, (e: unknown) => {
        if (failure) return
        failure = { error: e }
        try {
          stop(e)
        } finally {
          failed()
        }
      }),
    ),
  )
  await Promise.race([all, first])
  if (!failure) return
  await Promise.race([all, boundedWait(SETTLE_MS, signal, SETTLE_ON_ABORT_MS)])
  throw failure.error
}

/** The error for a failed write (or read) of an output file, naming the file (its final name) and the cause. */
export function outputWriteError(file: string, e: unknown, doing: 'writing' | 'reading' = 'writing'): VirtDibError {
  if (e instanceof VirtDibError) return e
  const errno = e as NodeJS.ErrnoException
  const what = `${doing} ‘${file}’ failed: ${describeSystemError(e)}`
  if (errno.code === 'ENOSPC' || errno.code === 'EDQUOT') {
    return new VirtDibError(`out of space on the host: ${what}`, {
      cause: e,
      hint: 'free some space there, or build elsewhere (TMPDIR, --name)',
    })
  }
  return new VirtDibError(what, { cause: e })
}

/** Read size of the archive: large reads keep the tools fed with few wake-ups. */
const ARCHIVE_CHUNK = 1024 * 1024

/** The archive in the first `bytes` bytes of the file `path` (the export drive, or a file holding it). */
export function archiveFile(path: string, bytes: number): ArchiveFile {
  return {
    path,
    bytes,
    read: () =>
      bytes === 0 ? Readable.from([]) : createReadStream(path, { end: bytes - 1, highWaterMark: ARCHIVE_CHUNK }),
  }
}

/**
 * Runs `tool`, a host process fed by the archive through `feeds` (the archive's stream first,
 * then filters), and writing into `sinks` if any: the first failure (the tool's, a read of the
 * archive, a filter's, a sink's) stops everything else — the tool through its signal — and is the
 * error reported; a failed read names the archive's file. The feeds are destroyed at the end.
 */
export async function runFromArchive(
  archive: ArchiveFile,
  feeds: readonly Readable[],
  tool: (signal: AbortSignal) => Promise<unknown>,
  o: { signal: AbortSignal; sinks?: readonly FileSink[] },
): Promise<void> {
  let feedFailed!: (e: unknown) => void
  let toolEnded!: () => void
  const fed = new Promise<void>((resolve, reject) => ((toolEnded = resolve), (feedFailed = reject)))
  for (const s of feeds) s.on('error', (e: unknown) => feedFailed(outputWriteError(archive.path, e, 'reading')))
  const stop = new AbortController()
  const done = tool(AbortSignal.any([o.signal, stop.signal]))
  // Once the tool has ended the feeds no longer matter (it may not read the record padding).
  done.then(toolEnded, toolEnded)
  const sinks = o.sinks ?? []
  try {
    await settleTogether(
      [done, fed, ...sinks.map((s) => s.done)],
      (e) => {
        stop.abort(e)
        for (const s of feeds) s.destroy()
        for (const s of sinks) s.destroy()
      },
      o.signal,
    )
  } finally {
    for (const s of feeds) s.destroy()
  }
}
