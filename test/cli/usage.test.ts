// The CLI contract before any appliance: exit codes and the exact lines of the original.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, root, runCli } from '../helpers/cli.js'

const demo = join(root, 'examples', 'elements')

describe('virt-dib CLI without an appliance', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'vdib-cli.'))
  afterAll(() => rmSync(tmp, { recursive: true, force: true }))
  const env = { ...process.env, TMPDIR: tmp }

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

  const cases: [string[], RegExp | string][] = [
    [
      ['--foo'],
      "virt-dib: unrecognized option '--foo'\nTry ‘virt-dib --help’ or consult virt-dib(1) for more information.\n",
    ],
    [
      ['-m', 'abc', 'x'],
      'virt-dib: ‘abc’ is not a numeric value.\nTry ‘virt-dib --help’ or consult virt-dib(1) for more information.\n',
    ],
    [['--name'], /option '--name' requires an argument/],
    [['--size', '5', 'x'], 'virt-dib: error: 5: cannot parse size field\n'],
    [['--formats', 'foo', 'x'], 'virt-dib: error: invalid format ‘foo’ in --formats\n'],
    [['--formats', '', 'x'], 'virt-dib: error: invalid format ‘’ in --formats\n'],
    [['--debug', '-1', 'x'], 'virt-dib: error: --debug parameter must be >= 0\n'],
    [['x'], 'virt-dib: error: -B must be specified\n'],
    [['-B', '/tmp'], 'virt-dib: error: at least one distribution root element must be specified\n'],
    [['-B', '/tmp', 'x'], /^virt-dib: error: the specified base path is not the diskimage-builder library\n/],
    [['--machine-readable=bogus', 'x'], 'virt-dib: error: invalid format string for --machine-readable: bogus\n'],
    [['-B', DIB_LIB, '-p', '/nonexistent', 'x'], 'virt-dib: error: element path ‘/nonexistent’ does not exist\n'],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', 'demo-os', 'nothere'],
      /element ‘nothere’ not found \(requested on the command line\)/,
    ],
    [['-B', DIB_LIB, '-p', demo, 'demo-app'], /element ‘base’ not found/],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', 'demo-app'],
      /^virt-dib: error: please include an operating system element\n/,
    ],
    [['-B', DIB_LIB, '-p', demo, '--skip-base', '../x'], /invalid element name ‘\.\.\/x’/],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--envvar', 'A-B=1', 'demo-os'],
      /invalid variable name ‘A-B’ in --envvar/,
    ],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--root-label', 'a-label-far-too-long', 'demo-os'],
      /root label ‘a-label-far-too-long’ is too long for ext4/,
    ],
    [['-B', DIB_LIB, '-p', demo, '--skip-base', '--fs-type', 'ntfs', 'demo-os'], /unsupported --fs-type ‘ntfs’/],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--name', '/nonexistent/dir/img', 'demo-os'],
      /output directory ‘\/nonexistent\/dir’ does not exist/,
    ],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--drive', '/nonexistent.img', 'demo-os'],
      /--drive ‘\/nonexistent.img’ does not exist/,
    ],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--python', 'no-such-python', 'demo-os'],
      'virt-dib: error: no-such-python needed but not found\n',
    ],
    [['--size', 'abc', 'x'], 'virt-dib: error: abc: cannot parse size field\n'],
    [['-B', DIB_LIB, '-p', demo, '--skip-base', '--size', '0G', 'demo-os'], /--size must be greater than zero/],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--drive-format', 'vmdk', 'demo-os'],
      /--drive-format must be raw or qcow2/,
    ],
    [['-B', DIB_LIB, '-p', demo, '--skip-base', '--smp', '0', 'demo-os'], /--smp must be between 1 and 255/],
    [['-B', DIB_LIB, '-p', demo, '--skip-base', '-m', '16', 'demo-os'], /-m must be between 256 and/],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--formats', 'docker', 'demo-os'],
      /docker: a target was not specified, use ‘--docker-target’/,
    ],
    [
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--envvar', 'DIB_BLOCK_DEVICE_CONFIG=- frob: {name: x}', 'demo-os'],
      /^virt-dib: error: unknown block-device plugin ‘frob’ \(known: local_loop, partitioning, lvm, mkfs, mount, fstab\)\n$/,
    ],
    [
      // prettier-ignore
      ['-B', DIB_LIB, '-p', demo, '--skip-base', '--size', '1G', '--envvar',
        'DIB_BLOCK_DEVICE_CONFIG=- local_loop: {name: image0}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: 2GiB, mkfs: {mount: {mount_point: /}}}]}',
        'demo-os'],
      /^virt-dib: error: block-device config \(DIB_BLOCK_DEVICE_CONFIG\): partition ‘root’ \(2GiB\) does not fit/,
    ],
  ]
  for (const [args, expected] of cases) {
    it(`rejects ${JSON.stringify(args)} with exit 1 and a clear message, leaving nothing`, () => {
      const r = runCli(args, { env })
      expect(r.status).toBe(1)
      if (typeof expected === 'string') expect(r.stderr).toBe(expected)
      else expect(r.stderr).toMatch(expected)
      expect(readdirSync(tmp)).toEqual([])
    })
  }

  it('accepts -name (getopt_long_only) and unambiguous prefixes', () => {
    const r = runCli(['-B', DIB_LIB, '-p', demo, '--skip-b', '-name', join(tmp, 'x'), '--dry-run=json', 'demo-os'])
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout).outputs).toEqual([`${join(tmp, 'x')}.qcow2`])
  })
})

describe('host tools are checked before anything is launched', () => {
  it('qcow2 without qemu-img on PATH: a clear error, nothing left', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'vdib-cli2.'))
    try {
      const bin = join(tmp, 'bin')
      // Only what virt-dib itself needs besides qemu-img: node and a python.
      const r = runCli(
        [
          '-B',
          DIB_LIB,
          '-p',
          join(root, 'examples', 'elements'),
          '--skip-base',
          '--python',
          '/usr/bin/python3',
          '--name',
          join(tmp, 'x'),
          'demo-os',
        ],
        {
          env: { PATH: bin, HOME: tmp, TMPDIR: tmp },
        },
      )
      expect(r.stderr).toBe('virt-dib: error: qemu-img needed but not found\n')
      expect(r.status).toBe(1)
      expect(readdirSync(tmp)).toEqual([])
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  })
})
