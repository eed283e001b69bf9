// A private redis-server for tests: 127.0.0.1 on a free port, its own temp dir, no persistence
// (`--save ''`, no AOF). Never the system's service. Debian's redis-server (scripts/setup.sh).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { Redis } from 'ioredis'

export interface PrivateRedis {
  url: string
  port: number
  /** A client for the test's own checks (closed by stop). */
  client: Redis
  stop(): Promise<void>
}

/** A port nothing listens on right now (the OS's pick). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      s.close(() => resolve(port))
    })
  })
}

export async function startRedis(): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'vdib-redis.'))
  const port = await freePort()
  // prettier-ignore
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--logfile', join(dir, 'redis.log'),
  ], { stdio: 'ignore' })
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  const url = `redis://127.0.0.1:${port}`
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  client.on('error', () => undefined)
  for (let i = 0; ; i++) {
    try {
      await client.connect()
      break
    } catch (e) {
      if (i > 100) {
        child.kill('SIGKILL')
        rmSync(dir, { recursive: true, force: true })
        throw e
      }
      await sleep(50)
    }
  }
  return {
    url,
    port,
    client,
    async stop() {
      client.disconnect()
      child.kill('SIGTERM')
      await Promise.race([exited, sleep(5000)])
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
