// tgz: the tar stream gzipped on the host (the host CPU is ~10x faster than the guest's here).
import { pipeline } from 'node:stream'
import { createGzip } from 'node:zlib'

import { outputWriteError } from './stream.js'
import { defineFormat, type FileSink } from './types.js'

export const tgz = defineFormat({
  name: 'tgz',
  extension: 'tgz',
  source: 'tar-stream',
  progress: () => 'Compressing the image as tar.gz',
  consumeTar(ctx, target) {
    const gzip = createGzip({ level: 6 })
    const sink = ctx.fileSink(target!)
    // pipeline: a failing file destroys the compressor too (pipe() would leave it to fill up).
    const piped = new Promise<void>((resolve, reject) => pipeline(gzip, sink, (e) => (e ? reject(e) : resolve())))
    const done = Promise.allSettled([sink.done, piped]).then(([file, gz]) => {
      if (file.status === 'rejected') throw file.reason
      if (gz.status === 'rejected') throw outputWriteError(target!, gz.reason)
    })
    done.catch(() => undefined) // awaited by whoever pumps the stream; never unhandled
    return Object.assign(gzip, { done }) satisfies FileSink
  },
})
