// The CLI contract before any appliance: --help, --version, the capability list and getopt
// habits. Every refusal is a row of the bad-input table (bad-input.test.ts).
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, runCli } from '../helpers/cli.js'

const demo = join(root, 'examples', 'elements')

describe('virt-dib CLI without an appliance', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'vdib-cli.'))
  afterAll(() => rmSync(tmp, { recursive: true, force: true }))

  it('--help lists every option of the original, sorted like it', () => {
    const r = runCli(['--help'])
    expect(r.status).toBe(0)
    for (const o of [
      '--arch',
      '-B',
      '--checksum',
      '--colours',
      '--debug',
      '--docker-target',
      '--drive',
      '--drive-format',
      '--element-path',
      '--envvar',
      '--exclude-element',
      '--exclude-script',
      '--extra-packages',
      '--formats',
      '--fs-type',
      '--image-cache',
      '--install-type',
      '--memsize',
      '--machine-readable',
      '--mkfs-options',
      '--name',
      '--network',
      '--no-delete-on-failure',
      '--no-network',
      '--python',
      '--quiet',
      '--qemu-img-options',
      '--ramdisk',
      '--ramdisk-element',
      '--root-label',
      '--size',
      '--skip-base',
      '--smp',
      '-u',
      '--version',
      '--verbose',
      '-x',
    ]) {
      expect(r.stdout).toContain(o)
    }
    expect(r.stdout.indexOf('-p, --element-path')).toBeLessThan(r.stdout.indexOf('--envvar'))
  })

  it('--version', () => {
    expect(runCli(['--version'])).toMatchObject({
      status: 0,
      stdout: expect.stringMatching(/^virt-dib \d+\.\d+\.\d+\n$/),
    })
  })

  it('--machine-readable alone prints the capabilities', () => {
    const r = runCli(['--machine-readable'])
    expect(r.status).toBe(0)
    expect(r.stdout.split('\n')[0]).toBe('virt-dib')
    expect(r.stdout).toContain('output:qcow2\n')
    expect(r.stdout).toContain('output:tar\n')
  })

  it('--machine-readable=file:PATH, fd:N and stream:stderr carry the same list', () => {
    const expected = runCli(['--machine-readable']).stdout
    const file = join(tmp, 'caps.txt')
    expect(runCli([`--machine-readable=file:${file}`])).toMatchObject({ status: 0, stdout: '', stderr: '' })
    expect(readFileSync(file, 'utf8')).toBe(expected)
    const fd = runCli(['--machine-readable=fd:2'])
    expect(fd).toMatchObject({ status: 0, stdout: '', stderr: expected })
    expect(runCli(['--machine-readable=stream:stderr'])).toMatchObject({ status: 0, stdout: '', stderr: expected })
  })

  it('--help into a closed pipe (virt-dib --help | true): one line, exit 1, no stack trace', async () => {
    const child = spawn(process.execPath, [join(root, 'bin', 'virt-dib'), '--help'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout.destroy() // the reader is gone before virt-dib writes
    let stderr = ''
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve))
    expect(stderr).toBe('virt-dib: error: cannot write to standard output: broken pipe (EPIPE)\n')
    expect(status).toBe(1)
  })

  // The refusals (bad options, elements, layouts, host tools): test/cli/bad-input.test.ts.

  it('accepts -name (getopt_long_only) and unambiguous prefixes', () => {
    const r = runCli(['-B', DIB_LIB, '-p', demo, '--skip-b', '-name', join(tmp, 'x'), '--dry-run=json', 'demo-os'])
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout).outputs).toEqual([`${join(tmp, 'x')}.qcow2`])
  })
})
