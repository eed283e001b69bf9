// tgz: the image root's archive gzipped on the host, by pigz on every core when it is installed,
// else by Node's zlib (one core); either way through the output's file sink, which hashes it.
import { availableParallelism } from 'node:os'
import { pipeline } from 'node:stream/promises'
import { createGzip } from 'node:zlib'

import { abortError, runTool } from '../host/spawn.js'
import { findExecutable } from '../host/which.js'
import { outputWriteError, runFromArchive } from './stream.js'
import { defineFormat, type ArchiveFile, type FormatContext } from './types.js'

export const tgz = defineFormat({
  name: 'tgz',
  extension: 'tgz',
  source: 'archive',
  progress: () => 'Compressing the image as tar.gz',
  async fromArchive(ctx, archive, target) {
    await gzipArchive(ctx, archive, target!, findExecutable('pigz'))
  },
})

/**
 * Gzips `archive` into the staged output `target` (its temporary or final path) at level 6: with
 * the pigz at `pigz` (-n: no name or time stamp in the header, as zlib writes it), or with zlib
 * when it is undefined.
 */
export async function gzipArchive(
  ctx: Pick<FormatContext<unknown>, 'fileSink' | 'finalPath' | 'signal'>,
  archive: ArchiveFile,
  target: string,
  pigz: string | undefined,
): Promise<void> {
  const input = archive.read()
  const sink = ctx.fileSink(target)
  if (pigz) {
    const args = ['-n', '-6', '-p', String(availableParallelism())]
    const run = (signal: AbortSignal) => runTool(pigz, args, { input, stdoutTo: sink, signal, tailLines: 10 })
    await runFromArchive(archive, [input], run, { signal: ctx.signal, sinks: [sink] })
    return
  }
  const gzip = createGzip({ level: 6 })
  input.pipe(gzip)
  const run = async (signal: AbortSignal) => {
    try {
      await pipeline(gzip, sink, { signal })
    } catch (e) {
      if (signal.aborted) throw abortError(signal)
      await sink.done // the file's own error (ENOSPC, naming the output) when it is the cause
      throw outputWriteError(ctx.finalPath(target), e)
    }
    await sink.done
  }
  await runFromArchive(archive, [input], run, { signal: ctx.signal })
}
