// The binding against real appliances (TCG here): three launches for the whole file.
// A: file systems, sh, transfers, progress, cancellation, close with a call queued.
// B: killing the appliance during a long call.  C: a launched handle lost to GC.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { Guestfs, type ProgressEvent } from '../../src/guestfs/index.js'
import { createHandle } from '../helpers/appliance.js'
import { makeMiniRootTarball, removeDir } from '../helpers/mini-root.js'
import { qemuDescendants, waitFor } from '../helpers/processes.js'

const work = mkdtempSync(join(tmpdir(), 'vdib-binding.'))
afterAll(() => {
  rmSync(work, { recursive: true, force: true })
})

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

describe('appliance A: file systems, commands, transfers', () => {
  let g: Guestfs
  let mini: { tarball: string; dir: string }

  beforeAll(async () => {
    mini = makeMiniRootTarball()
    g = await createHandle()
    await g.addDriveScratch(2 * 1024 ** 3)
    await g.addDriveScratch(256 * 1024 ** 2, { label: 'second' })
    await g.launch()
    await g.mkfs('ext4', '/dev/sda', { label: 'vdibtest' })
    await g.mount('/dev/sda', '/')
  })
  afterAll(async () => {
    if (g && g.state === 'open') await g.close()
    removeDir(mini.dir)
  })

  it('partitions a disk (mbr, gpt) and builds LVM on it', async () => {
    const disk = '/dev/sdb'
    await g.partInit(disk, 'mbr')
    await g.partAdd(disk, 'p', 2048, 200_000)
    await g.partAdd(disk, 'p', 200_001, -1)
    await g.partSetBootable(disk, 1, true)
    await g.partSetMbrId(disk, 2, 0x8e)
    const parts = await g.partList(disk)
    expect(parts.map((p) => p.part_num)).toEqual([1, 2])
    expect(parts[0]!.part_start).toBe(2048 * 512)
    expect(await g.partGetParttype(disk)).toBe('msdos')
    expect(await g.partGetMbrId(disk, 2)).toBe(0x8e)
    expect(await g.listPartitions()).toEqual(['/dev/sdb1', '/dev/sdb2'])
    await g.pvcreate('/dev/sdb2')
    await g.vgcreate('vg0', ['/dev/sdb2'])
    await g.lvcreate('lv0', 'vg0', 32)
    await g.lvcreateFree('lv1', 'vg0', 100)
    expect((await g.lvs()).sort()).toEqual(['/dev/vg0/lv0', '/dev/vg0/lv1'])
    await g.mkfs('ext2', '/dev/vg0/lv1', { label: 'lvvol' })
    expect(await g.vfsType('/dev/vg0/lv1')).toBe('ext2')
    expect(await g.vfsLabel('/dev/vg0/lv1')).toBe('lvvol')
    await g.vgActivateAll(false)
    await g.partInit(disk, 'gpt')
    await g.partAdd(disk, 'p', 2048, -34)
    await g.partSetName(disk, 1, 'root')
    await g.partSetGptType(disk, 1, '0FC63DAF-8483-4772-8E79-3D69D8477DE4')
    expect(await g.partGetGptType(disk, 1)).toBe('0FC63DAF-8483-4772-8E79-3D69D8477DE4')
    expect(await g.partGetParttype(disk)).toBe('gpt')
    expect(await g.featureAvailable(['lvm2'])).toBe(true)
  })

  it('lists the device and reads back labels after mkfs', async () => {
    expect(await g.listDevices()).toEqual(['/dev/sda', '/dev/sdb'])
    expect(await g.vfsType('/dev/sda')).toBe('ext4')
    expect(await g.vfsLabel('/dev/sda')).toBe('vdibtest')
    expect(await g.getPid()).toBeGreaterThan(0)
  })

  it('writes and reads files back, bytes intact', async () => {
    const bytes = Buffer.from([0, 1, 2, 255, 10, 0, 0x80])
    await g.write('/bin.dat', bytes)
    expect(Buffer.compare(await g.readFile('/bin.dat'), bytes)).toBe(0)
    await g.mkdirP('/a/b/c')
    await g.writeAppend('/a/b/c/t.txt', 'héllo\n')
    await g.writeAppend('/a/b/c/t.txt', 'world\n')
    expect(await g.cat('/a/b/c/t.txt')).toBe('héllo\nworld\n')
    expect(await g.isDir('/a/b')).toBe(true)
    expect((await g.statns('/a/b/c/t.txt')).st_size).toBe(13)
  })

  it('unpacks a root with tar_in from a stream and runs sh in it', async () => {
    await g.tarInStream(createReadStream(mini.tarball), '/')
    expect(await g.sh('echo hello; echo err >&2')).toBe('hello\n')
    expect(await g.shLines('for i in 1 2 3; do echo $i; done')).toEqual(['1', '2', '3'])
    expect(await g.command(['/bin/sh', '-c', 'echo "$0"', 'arg with spaces'])).toBe('arg with spaces\n')
  })

  it('rejects a failing sh with its stderr and no errno', async () => {
    const e = await g.sh('echo out; echo "it broke" >&2; exit 3').catch((x: unknown) => x)
    expect(e).toMatchObject({ name: 'GuestfsError', op: 'sh', code: 'ERR_GUESTFS' })
    expect((e as Error).message).toMatch(/it broke/)
  })

  it('round-trips a tree through tar_out to a stream and to a file', async () => {
    const { stream, done } = g.tarOutStream('/a', { numericowner: true })
    const tar = await collect(stream)
    await done
    const file = join(work, 'a.tar')
    writeFileSync(file, tar)
    const listing = execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()
    expect(listing).toEqual(['./', './b/', './b/c/', './b/c/t.txt'])
    await g.tarOut('/a', join(work, 'a2.tar.gz'), { compress: 'gzip' })
    expect(execFileSync('tar', ['-tzf', join(work, 'a2.tar.gz')], { encoding: 'utf8' })).toMatch(/t\.txt/)
    await g.mkdir('/restored')
    await g.tarIn(file, '/restored')
    expect(await g.cat('/restored/b/c/t.txt')).toBe('héllo\nworld\n')
  })

  it('uploads and downloads a file with progress events', async () => {
    const src = join(work, 'big.bin')
    execFileSync('head', ['-c', String(64 * 1024 * 1024), '/dev/urandom'], { stdio: ['ignore', 'ignore', 'ignore'] })
    execFileSync('sh', ['-c', `head -c ${64 * 1024 * 1024} /dev/urandom > ${src}`])
    const progress: ProgressEvent[] = []
    const onProgress = (p: ProgressEvent) => progress.push(p)
    g.on('progress', onProgress)
    await g.upload(src, '/big.bin')
    const dst = join(work, 'big.out')
    await g.download('/big.bin', dst)
    g.off('progress', onProgress)
    const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex')
    expect(statSync(dst).size).toBe(64 * 1024 * 1024)
    expect(sha(dst)).toBe(sha(src))
    expect(await g.checksum('sha256', '/big.bin')).toBe(sha(src))
    // Deterministic progress: guestfsd's debug progress ticks for the given seconds.
    const ticks: ProgressEvent[] = []
    g.on('progress', (p) => ticks.push(p))
    await g.debug('progress', ['3'])
    expect(ticks.length).toBeGreaterThan(0)
    expect(ticks.at(-1)!.position).toBe(ticks.at(-1)!.total)
    g.removeAllListeners('progress')
  })

  it('cancels a large running transfer and stays usable', async () => {
    await g.fallocate64('/huge', 1536 * 1024 * 1024)
    const ac = new AbortController()
    const dst = join(work, 'huge.out')
    const t0 = Date.now()
    const pending = g.download('/huge', dst, { signal: ac.signal })
    setTimeout(() => ac.abort(), 1500)
    const e = await pending.catch((x: unknown) => x)
    expect(e).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' })
    expect(Date.now() - t0).toBeLessThan(60_000)
    expect(statSync(dst).size).toBeLessThan(1536 * 1024 * 1024)
    // The same handle still answers.
    expect(await g.sh('echo still here')).toBe('still here\n')
  })

  it('streams a download and aborts it by destroying the stream reader', async () => {
    const ac = new AbortController()
    const { stream, done } = g.downloadStream('/huge', { signal: ac.signal })
    let got = 0
    for await (const chunk of stream) {
      got += (chunk as Buffer).length
      if (got > 8 * 1024 * 1024) {
        ac.abort()
        stream.destroy()
        break
      }
    }
    await expect(done).rejects.toMatchObject({ name: 'AbortError' })
    expect(await g.exists('/huge')).toBe(true)
  })

  it('makes a squashfs of a directory', async () => {
    const out = join(work, 'a.squash')
    await g.mksquashfs('/a', out, { compress: 'xz' })
    expect(readFileSync(out).subarray(0, 4).toString('latin1')).toBe('hsqs')
  })

  it('runs a queued call before close, then closes and leaves no qemu', async () => {
    const queued = g.sh('sleep 2; echo done')
    const closing = g.close()
    expect(await queued).toBe('done\n')
    await closing
    expect(g.state).toBe('closed')
    expect(await waitFor(() => qemuDescendants().length === 0, 10_000)).toBe(true)
  })
})

describe('appliance B: killed during a long call', () => {
  it('aborts a running sh by killing qemu; the error says the appliance died', async () => {
    const g = await createHandle()
    try {
      await g.addDriveScratch(64 * 1024 * 1024)
      await g.launch()
      const ac = new AbortController()
      const t0 = Date.now()
      const running = g.debug('sh', ['sleep 600'], { signal: ac.signal, onAbort: 'kill-appliance' })
      setTimeout(() => ac.abort(), 1000)
      const e = (await running.catch((x: unknown) => x)) as Error & { cause?: { applianceDied?: boolean } }
      expect(e.name).toBe('AbortError')
      expect(e.cause?.applianceDied).toBe(true)
      expect(Date.now() - t0).toBeLessThan(30_000)
      expect(await g.getState()).toBe(0) // back to config: libguestfs reaped qemu
    } finally {
      await g.close()
    }
    expect(await waitFor(() => qemuDescendants().length === 0, 10_000)).toBe(true)
  })
})

describe('appliance C: a launched handle lost to GC', () => {
  it('is closed in the background: its qemu goes away', async () => {
    let pid = 0
    await (async () => {
      const g = await createHandle()
      await g.addDriveScratch(64 * 1024 * 1024)
      await g.launch()
      pid = await g.getPid()
    })()
    expect(pid).toBeGreaterThan(0)
    const alive = () => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    expect(alive()).toBe(true)
    const gone = await waitFor(
      () => {
        globalThis.gc?.()
        return !alive()
      },
      60_000,
      250,
    )
    expect(gone).toBe(true)
  })

  afterAll(async () => {
    expect(await waitFor(() => qemuDescendants().length === 0, 10_000)).toBe(true)
  })
})
