// --machine-readable write errors in the middle of a build: the channel's failure aborts the build
// through its AbortController, the cleanup runs, and the run ends with one line naming the
// channel, before any appliance is launched (the hypervisor is a script that leaves a marker).
import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'

import { describe, expect, it, vi } from 'vitest'

import { channelOver } from '../../src/cli/channel.js'
import { VirtDibError } from '../../src/errors.js'
import { DIB_LIB, root, runCliAsync } from '../helpers/cli.js'
import { cliSandbox } from '../helpers/sandbox.js'

const sandbox = cliSandbox('vdib-mr.')

function place(name: string) {
  const { out, tmp, marker, env } = sandbox.place(name)
  // prettier-ignore
  const args = ['-B', DIB_LIB, '-p', join(root, 'examples', 'elements'), '--skip-base', '--python', '/usr/bin/python3',
    '--name', join(out, 'img')]
  return { out, tmp, marker, env, args }
}

describe('--machine-readable write errors during a build', () => {
  it('file:/dev/full: the first event fails, the build stops before launch, one line, nothing left', async () => {
    const p = place('full')
    const r = await runCliAsync([...p.args, '--machine-readable=file:/dev/full', 'demo-os'], { env: p.env, cwd: p.out })
    expect(r.stderr).toBe(
      'virt-dib: error: cannot write to the --machine-readable file /dev/full: no space left on device (ENOSPC)\n',
    )
    expect(r.status).toBe(1)
    expect(existsSync(p.marker), 'an appliance launch was attempted').toBe(false)
    expect(readdirSync(p.tmp)).toEqual([])
    expect(readdirSync(p.out)).toEqual(['img.qcow2'])
  })

  it('fd:3, a pipe whose reader goes away: EPIPE stops the build before launch, one line, nothing left', async () => {
    const p = place('pipe')
    const child = spawn(
      process.execPath,
      [join(root, 'bin', 'virt-dib'), ...p.args, '--machine-readable=fd:3', 'demo-os'],
      {
        cwd: p.out,
        env: p.env,
        stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      },
    )
    let stderr = ''
    let events = ''
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()))
    child.stdout!.resume()
    const reader = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }
    // The reader takes the first event, then closes its end.
    reader.once('data', (b: Buffer) => {
      events += b.toString()
      reader.destroy()
    })
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve))
    expect(JSON.parse(events.split('\n')[0]!)).toMatchObject({ kind: 'info' })
    expect(stderr).toBe('virt-dib: error: cannot write to --machine-readable file descriptor 3: broken pipe (EPIPE)\n')
    expect(status).toBe(1)
    expect(existsSync(p.marker), 'an appliance launch was attempted').toBe(false)
    expect(readdirSync(p.tmp)).toEqual([])
    expect(readdirSync(p.out)).toEqual(['img.qcow2'])
  })
})

describe('the channel over a stream that fails', () => {
  it('reports the first error once, ignores later writes, and close() rejects with it', async () => {
    let writes = 0
    const stream = new Writable({
      write(_chunk, _enc, cb) {
        writes++
        cb(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }))
      },
    })
    const onError = vi.fn()
    const ch = channelOver(stream, 'the test channel', true, onError)
    ch.write('one\n')
    await new Promise((r) => setImmediate(r))
    ch.write('two\n')
    await expect(ch.close()).rejects.toThrow('cannot write to the test channel: i/o error (EIO)')
    expect(onError).toHaveBeenCalledTimes(1)
    expect(onError.mock.calls[0]![0]).toBeInstanceOf(VirtDibError)
    expect(writes).toBe(1)
  })
})
