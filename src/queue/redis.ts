// Connections to Redis for the queue: a URL (redis://, rediss:// for TLS, a password or ACL user in
// it), refused in one line within a few seconds when nothing answers — the client alone would retry
// forever. Once connected, BullMQ's connections reconnect on their own (a Redis restart is survived).
import { Redis } from 'ioredis'

import { VirtDibError } from '../errors.js'

/** Redis cannot be reached, or refused us (wrong password, not a Redis). */
export class QueueConnectionError extends VirtDibError {
  override name = 'QueueConnectionError'
}

/** The URL as messages show it: without its password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString().replace(/\/$/, '')
  } catch {
    // Not parseable: its userinfo (a password) is masked all the same.
    return url.replace(/\/\/[^@/]*@/, '//***@')
  }
}

/** Checks the URL's form: redis:// or rediss://, a host. */
export function checkRedisUrl(url: string): void {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new VirtDibError(
      `--redis ‘${redactUrl(url)}’ is not a URL (redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS)`,
    )
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new VirtDibError(`--redis ‘${redactUrl(url)}’: the scheme must be redis:// or rediss://, not ${u.protocol}//`)
  }
  if (u.hostname === '') throw new VirtDibError(`--redis ‘${redactUrl(url)}’ has no host`)
}

export interface OpenRedisOptions {
  /** How long the first connection may take (default 5 s). */
  timeoutMs?: number
}

/**
 * A connected client for BullMQ (maxRetriesPerRequest: null, as its workers need). Rejects with a
 * {@link QueueConnectionError} naming the URL and the last error when it is not ready in time.
 */
export async function openRedis(url: string, o: OpenRedisOptions = {}): Promise<Redis> {
  checkRedisUrl(url)
  const client = new Redis(url, {
    maxRetriesPerRequest: null,
    lazyConnect: true,
    // A socket that never connected must not keep the process 2 s after the error line (ioredis's default).
    disconnectTimeout: 100,
    connectTimeout: Math.min(o.timeoutMs ?? 5000, 10_000),
    // Reconnects stay quick: a worker should be back soon after Redis is.
    retryStrategy: (times) => Math.min(times * 250, 2000),
  })
  let last: unknown
  // An unhandled 'error' would print a stack per retry; keep the last for the message.
  client.on('error', (e: unknown) => (last = e))
  const ready = new Promise<void>((resolve) => client.once('ready', () => resolve()))
  client.connect().catch((e: unknown) => (last = e))
  const timeoutMs = o.timeoutMs ?? 5000
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)))
  const r = await Promise.race([ready, timedOut])
  clearTimeout(timer)
  if (r === 'timeout') {
    client.disconnect()
    const why = last instanceof Error ? last.message : 'no answer'
    throw new QueueConnectionError(`cannot reach Redis at ${redactUrl(url)} within ${timeoutMs / 1000} s: ${why}`, {
      hint: 'is redis-server running there, and are the password and TLS (rediss://) right?',
    })
  }
  return client
}
