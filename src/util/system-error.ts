// Node's system errors in words, for one-line messages: the CLI's channels and the output files
// use the same wording.

/** What streams say as bare `write EPIPE`, in words. */
const ERRNO_TEXT: Record<string, string> = {
  EPIPE: 'broken pipe',
  ECONNRESET: 'connection reset by peer',
  EIO: 'input/output error',
  ENOSPC: 'no space left on device',
  EAGAIN: 'resource temporarily unavailable',
  EBADF: 'bad file descriptor',
}

/**
 * Node's `ENOSPC: no space left on device, write` (fs) or `write EPIPE` (streams) as
 * `no space left on device (ENOSPC)`.
 */
export function describeSystemError(e: unknown): string {
  const err = e as NodeJS.ErrnoException
  if (!(e instanceof Error)) return String(e)
  if (err.code && err.message === `${err.syscall} ${err.code}`)
    return `${ERRNO_TEXT[err.code] ?? 'error'} (${err.code})`
  if (!err.code || !err.message.startsWith(`${err.code}: `)) return err.message
  return `${err.message.slice(err.code.length + 2).replace(/, \w+( '.*')?$/, '')} (${err.code})`
}
