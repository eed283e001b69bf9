// Waits that end sooner once the build is aborted (so a second Ctrl-C finds the cleanup done).

/**
 * Resolves after `ms`, or `abortMs` after `signal` aborts if that comes first (at once shortened
 * when it aborts while waiting). The timer never keeps the process alive.
 */
export function boundedWait(ms: number, signal: AbortSignal | undefined, abortMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const end = Date.now() + ms
    let timer: NodeJS.Timeout | undefined
    const arm = (until: number) => {
      clearTimeout(timer)
      timer = setTimeout(done, Math.max(0, until - Date.now())).unref()
    }
    const onAbort = () => arm(Math.min(end, Date.now() + abortMs))
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }
    if (signal?.aborted) return onAbort()
    arm(end)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
