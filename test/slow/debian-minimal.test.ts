// The real thing (opt-in, slow under TCG): Debian's own elements — debian-minimal (bookworm,
// with base, network on) plus vm (block-device-mbr, bootloader) — build a tar and a qcow2. The
// root has /etc/debian_version and a working apt, and the qcow2 boots in qemu through its own
// boot loader (no -kernel) until a test element's unit prints a marker on the serial console.
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { build, type BuildEvent, type BuildResult } from '../../src/index.js'
import { createHandle } from '../helpers/appliance.js'
import { DIB_ELEMENTS, DIB_LIB } from '../helpers/cli.js'
import { debianEnvvars } from '../helpers/mirror.js'

const fixtures = resolve(import.meta.dirname, '..', 'fixtures', 'elements')
const BOOT_TIMEOUT_S = 20 * 60

describe('debian-minimal vm (bookworm, block-device-mbr, bootloader)', () => {
  const out = mkdtempSync(join(tmpdir(), 'vdib-debian.'))
  const name = join(out, 'debian')
  const events: BuildEvent[] = []
  let result: BuildResult
  let seconds = 0

  beforeAll(async () => {
    const t = Date.now()
    result = await build(
      {
        elements: ['debian-minimal', 'vm', 'boot-marker'],
        libPath: DIB_LIB,
        elementPaths: [DIB_ELEMENTS, fixtures],
        envvars: debianEnvvars(),
        memsize: 2048,
        smp: 2,
        size: 3 * 1024 ** 3,
        formats: ['tar', 'qcow2'],
        name,
      },
      {
        onEvent: (e) => {
          events.push(e)
          if (['progress', 'step', 'script-end'].includes(e.kind)) console.log(JSON.stringify(e))
        },
      },
    )
    seconds = (Date.now() - t) / 1000
    console.log(`debian-minimal vm build: ${seconds.toFixed(0)} s`)
  }, 150 * 60_000)
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  it('writes a tar and a qcow2', () => {
    expect(result.outputs.map((o) => o.format).sort()).toEqual(['qcow2', 'tar'])
    expect(seconds).toBeGreaterThan(0)
  })

  it('has a Debian root with /etc/debian_version, apt and a boot loader configuration', () => {
    const v = execFileSync('tar', ['-xOf', `${name}.tar`, './etc/debian_version'], { encoding: 'utf8' })
    expect(v).toMatch(/^12\./)
    const list = execFileSync('tar', ['-tf', `${name}.tar`], { encoding: 'utf8', maxBuffer: 256 * 1024 ** 2 })
    expect(list).toMatch(/\.\/usr\/bin\/apt\n/)
    expect(list).toMatch(/\.\/boot\/grub\/grub\.cfg\n/)
    const fstab = execFileSync('tar', ['-xOf', `${name}.tar`, './etc/fstab'], { encoding: 'utf8' })
    expect(fstab).toBe('LABEL=cloudimg-rootfs / ext4 defaults 0 1\n')
  })

  it(
    'runs apt inside the image (opened in a second appliance); the disk has the mbr layout',
    async () => {
      const g = await createHandle()
      try {
        await g.addDrive(`${name}.qcow2`, { format: 'qcow2', readonly: true })
        await g.launch()
        expect(await g.partGetParttype('/dev/sda')).toBe('msdos')
        expect(await g.debug('sh', ['sfdisk --dump /dev/sda'])).toMatch(
          /\/dev\/sda1 : start= +2048, .*type=83, bootable/,
        )
        expect(await g.vfsLabel('/dev/sda1')).toBe('cloudimg-rootfs')
        await g.mountRo('/dev/sda1', '/')
        expect(await g.sh('apt --version')).toMatch(/^apt 2\./)
        expect(await g.cat('/boot/grub/grub.cfg')).toMatch(/root=LABEL=cloudimg-rootfs/)
      } finally {
        await g.close()
      }
    },
    10 * 60_000,
  )

  it(
    'boots through its own boot loader to the marker on the serial console',
    async () => {
      const t = Date.now()
      // prettier-ignore
      const qemu = spawn('qemu-system-x86_64', [
        '-machine', 'accel=tcg', '-cpu', 'max', '-m', '1024', '-smp', '2',
        '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
        '-drive', `file=${name}.qcow2,format=qcow2,if=virtio,snapshot=on`,
        '-nic', 'none',
      ], { stdio: ['ignore', 'pipe', 'pipe'] })
      let console_ = ''
      const marker = await new Promise<string | undefined>((resolve) => {
        const timer = setTimeout(() => resolve(undefined), BOOT_TIMEOUT_S * 1000)
        qemu.stdout.on('data', (b: Buffer) => {
          console_ += b.toString()
          // Only a whole line: the console arrives in chunks that can end mid-line.
          const m = /VDIB-BOOT-MARKER: [^\r\n]*(?=\r?\n)/.exec(console_)
          if (m) {
            clearTimeout(timer)
            resolve(m[0])
          }
        })
        qemu.on('exit', () => {
          clearTimeout(timer)
          resolve(undefined)
        })
      })
      qemu.kill('SIGKILL')
      const boot = (Date.now() - t) / 1000
      console.log(`boot to marker: ${boot.toFixed(0)} s`)
      expect(marker, `serial console (last 3000 chars):\n${console_.slice(-3000)}`).toMatch(
        /^VDIB-BOOT-MARKER: 12\.\S+ root=\/dev\/vda1/,
      )
    },
    (BOOT_TIMEOUT_S + 60) * 1000,
  )
})
