// A real build of the demo elements plus a probe element that records what every phase sees;
// one build feeds many assertions. Then a failing build, which must leave nothing behind.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  build,
  describePlan,
  planBuild,
  type BuildEvent,
  type BuildOptions,
  type BuildResult,
} from '../../src/index.js'
import { ScriptError } from '../../src/errors.js'
import { createHandle } from '../helpers/appliance.js'
import { dockerdSupport, startPrivateDockerd, type PrivateDockerd } from '../helpers/dockerd.js'
import { DIB_PHASE_ORDER } from '../helpers/phases.js'
import { tempDir } from '../helpers/temp.js'
import { qemuDescendants, waitFor } from '../helpers/processes.js'

const root = resolve(import.meta.dirname, '..', '..')
const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
const demoElements = join(root, 'examples', 'elements')
const fixtures = join(root, 'test', 'fixtures', 'elements')

/** dib.* temp dirs in a TMPDIR we give each build, so other processes cannot interfere. */
function workspaceDirs(tmp: string): string[] {
  return readdirSync(tmp).filter((d) => d.startsWith('dib.'))
}

const MiB = 1024 ** 2
// Listings of a whole image are larger than execFileSync's 1 MiB default.
const LISTING = { encoding: 'utf8', maxBuffer: 256 * MiB } as const

/** One entry of `tar -tv` or `unsquashfs -lln`: type and mode, uid/gid, size or major,minor, hard link target. */
interface Listed {
  readonly mode: string
  readonly owner: string
  readonly size: string
  readonly linkTo: string | undefined
}

/**
 * Entries by path ('./etc/x', whatever the tool prints before it: `prefix` is replaced by '.'),
 * from listing lines like `crw--w---- 0/5   1,3 2026-12-02 01:00 ./etc/x` (unsquashfs pads
 * major, minor as `1,  3`) and `hrw-r--r-- 0/0 0 … ./b link to ./a`.
 */
function listed(lines: readonly string[], prefix = '.'): Map<string, Listed> {
  const m = new Map<string, Listed>()
  for (const l of lines) {
    const r = /^(\S{10}) (\d+\/\d+) +(\d+|\d+, *\d+) \d{4}-\d\d-\d\d \d\d:\d\d (.*)$/.exec(l)
    if (!r) continue
    const [path, linkTo] = r[4]!.split(' link to ')
    const name = path === prefix ? '.' : path!.startsWith(`${prefix}/`) ? `.${path!.slice(prefix.length)}` : path!
    m.set(name, { mode: r[1]!, owner: r[2]!, size: r[3]!.replace(/ /g, ''), linkTo })
  }
  return m
}

/** `tar -tv` of a tarball, or of a tgz through gunzip -c: one line per entry, in archive order. */
function tarVerbose(archive: string): string[] {
  const out = archive.endsWith('.tgz')
    ? execFileSync('sh', ['-c', 'gunzip -c "$1" | tar -tvf -', 'sh', archive], LISTING)
    : execFileSync('tar', ['-tvf', archive], LISTING)
  return out.split('\n').filter(Boolean)
}

// What the probe's root.d makes besides the xattr probe (test/fixtures/elements/probe/root.d/10-probe).
const HARD_LINKS = ['./etc/probe-hardlink-a', './etc/probe-hardlink-b'] as const
const SPARSE = {
  path: './var/lib/probe-sparse',
  size: 64 * MiB,
  offset: 40 * MiB,
  data: Buffer.from(Array.from({ length: 256 }, (_, i) => `sparse-${String(i).padStart(8, '0')}\n`).join('')),
}

/** The device node, the fifo and the sparse file as a listing shows them (owners and modes exact). */
function expectSpecialEntries(entries: Map<string, Listed>): void {
  expect(entries.get('./etc/probe-null')).toMatchObject({ mode: 'crw--w----', owner: '0/5', size: '1,3' })
  expect(entries.get('./etc/probe-fifo')).toMatchObject({ mode: 'prw-r--r--', owner: '0/0' })
  expect(entries.get(SPARSE.path)).toMatchObject({ mode: '-rw-r--r--', owner: '0/0', size: String(SPARSE.size) })
}

/** Runs `extract` into a fresh directory, then `check` on it; the directory is removed after. */
function withExtracted(extract: (dir: string) => void, check: (dir: string) => void): void {
  const x = mkdtempSync(join(tmpdir(), 'vdib-extract.'))
  try {
    extract(x)
    check(x)
  } finally {
    rmSync(x, { recursive: true, force: true })
  }
}

/** The extracted hard link pair is one inode with two names, and the sparse file is still sparse. */
function expectLinksAndSparse(dir: string): void {
  const [a, b] = HARD_LINKS.map((p) => statSync(join(dir, p)))
  expect(a!.ino).toBe(b!.ino)
  expect(a!.nlink).toBe(2)
  expect(readFileSync(join(dir, HARD_LINKS[0]), 'utf8')).toBe('probe-hardlink\n')
  const file = join(dir, SPARSE.path)
  const st = statSync(file)
  expect(st.size).toBe(SPARSE.size)
  expect(st.blocks * 512, `${SPARSE.path} occupies ${st.blocks * 512} bytes`).toBeLessThan(MiB)
  const bytes = readFileSync(file)
  const end = SPARSE.offset + SPARSE.data.length
  expect(bytes.subarray(SPARSE.offset, end).equals(SPARSE.data)).toBe(true)
  expect(bytes.subarray(0, SPARSE.offset).equals(Buffer.alloc(SPARSE.offset)), 'zeros before the data').toBe(true)
  expect(bytes.subarray(end).equals(Buffer.alloc(SPARSE.size - end)), 'zeros after the data').toBe(true)
}

describe('demo build: demo-os demo-app probe → every output format', () => {
  const out = tempDir('vdib-build.')
  const tmp = tempDir('vdib-tmp.')
  const events: BuildEvent[] = []
  let result: BuildResult
  // docker: a private dockerd of the test's own when it can run here (root, docker.io), else a stub.
  const real = dockerdSupport()
  const skipped = real.ok ? '' : ` (skipped: ${real.reason})`
  let daemon: PrivateDockerd | undefined
  let options: BuildOptions
  const name = join(out, 'img')
  const probe = (f: string) => readFileSync(join(`${name}.d`, f), 'utf8')
  const env = (hook: string) =>
    Object.fromEntries(
      probe(`${hook}.env`)
        .split('\n')
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    )

  beforeAll(async () => {
    const dockerEnv: NodeJS.ProcessEnv = {}
    if (real.ok) {
      daemon = await startPrivateDockerd()
      process.env['PATH'] = `${daemon.bin}:${process.env['PATH']}`
      dockerEnv['DOCKER_HOST'] = daemon.host
    } else {
      // A stand-in docker client on PATH: it records what it gets.
      process.env['PATH'] = `${join(root, 'test', 'fixtures', 'bin')}:${process.env['PATH']}`
      process.env['VDIB_FAKE_DOCKER_DIR'] = out
    }
    options = {
      elements: ['demo-os', 'demo-app', 'probe'],
      libPath: LIB,
      elementPaths: [demoElements, fixtures],
      skipBase: true,
      size: 768 * 1024 ** 2,
      formats: ['qcow2', 'tar', 'raw', 'tgz', 'squashfs', 'vhd', 'docker'],
      dockerTarget: 'vdib/demo:test',
      checksum: true,
      name,
      excludeScripts: ['99-probe-excluded'],
      envvars: [{ name: 'PROBE_SET', value: `it's "quoted" $(not run) \`nor this\`` }, { name: 'PROBE_CARRIED' }],
      extraPackages: ['pkg-a', 'pkg b'],
      // prettier-ignore
      env: { ...process.env, ...dockerEnv, TMPDIR: tmp, PROBE_CARRIED: 'from host', PROBE_SECRET: 'must not leak', DIB_PROBE: 'x' },
    }
    result = await build(options, { onEvent: (e) => events.push(e) })
  }, 20 * 60_000)

  afterAll(async () => {
    if (daemon) {
      try {
        daemon.docker(['rmi', '--force', 'vdib/demo:test'])
      } catch {
        // the build failed before the import: nothing to remove
      }
      await daemon.stop()
    }
    rmSync(out, { recursive: true, force: true })
    rmSync(tmp, { recursive: true, force: true })
  })

  it('runs exactly the steps the dry run lists, in that order, each reading only the plan fields it declares', () => {
    const steps = events.flatMap((e) => (e.kind === 'step' ? [e.name] : []))
    expect(steps).toEqual(describePlan(planBuild(options)).steps.map((s) => s.name))
    expect(steps).toContain('extra-data-unmount')
    expect(steps).toContain('extra-packages')
    expect(events.filter((e) => e.kind === 'debug' && e.text.startsWith('internal:'))).toEqual([])
  })

  it('reads the image tree on the host for the tree outputs (one ext4 file system at /)', () => {
    const said = events.flatMap((e) => (e.kind === 'progress' || e.kind === 'debug' ? [e.text] : []))
    expect(said).toContain('Archiving the image tree (read on the host)')
    expect(said.filter((t) => t.startsWith('the guest archives the image tree'))).toEqual([])
  })

  it('writes every requested output with checksums that md5sum -c and sha256sum -c accept', () => {
    expect(result.outputs.map((o) => o.format).sort()).toEqual(['qcow2', 'raw', 'squashfs', 'tar', 'tgz', 'vhd'])
    for (const ext of ['qcow2', 'raw', 'tar', 'tgz', 'squash', 'vhd']) {
      expect(existsSync(`${name}.${ext}`)).toBe(true)
      execFileSync('md5sum', ['-c', `img.${ext}.md5`], { cwd: out })
      execFileSync('sha256sum', ['-c', `img.${ext}.sha256`], { cwd: out })
    }
    expect(readdirSync(out).filter((f) => f.startsWith('.'))).toEqual([]) // no temp names left
    // checksums in the result are those of the files
    const tar = result.outputs.find((o) => o.format === 'tar')!
    expect(readFileSync(`${name}.tar.sha256`, 'utf8')).toBe(`${tar.sha256}  img.tar\n`)
  })

  it('keeps extended attributes, owners and modes in the tarball', () => {
    const x = mkdtempSync(join(tmpdir(), 'vdib-xattr.'))
    try {
      execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-C', x, '-xf', `${name}.tar`, './etc/xattr-probe'])
      expect(
        execFileSync('getfattr', ['--only-values', '-n', 'user.vdib', join(x, 'etc/xattr-probe')], {
          encoding: 'utf8',
        }),
      ).toBe('probe-value')
      expect(statSync(join(x, 'etc/xattr-probe')).mode & 0o777).toBe(0o640)
      expect(execFileSync('tar', ['-tvf', `${name}.tar`, './etc/xattr-probe'], { encoding: 'utf8' })).toMatch(
        /^-rw-r----- 0\/0 /,
      )
    } finally {
      rmSync(x, { recursive: true, force: true })
    }
  })

  it('keeps hard links, a device node, a fifo and a sparse file in the tarball', () => {
    const entries = listed(tarVerbose(`${name}.tar`))
    expectSpecialEntries(entries)
    // Whichever name comes first in the archive is the file, the other a link to it.
    const pair = HARD_LINKS.map((p) => entries.get(p))
    const links = pair.filter((e) => e?.linkTo !== undefined)
    expect(links, `hard link entries: ${JSON.stringify(pair)}`).toHaveLength(1)
    const link = links[0]!
    const file = pair.find((e) => e !== link)
    expect(file).toMatchObject({ mode: '-rw-r--r--', owner: '0/0', size: '15', linkTo: undefined })
    expect(link).toMatchObject({ mode: 'hrw-r--r--', owner: '0/0' })
    expect(link.linkTo).toBe(HARD_LINKS[pair.indexOf(file)])
    withExtracted(
      (x) =>
        execFileSync('tar', [
          '--xattrs',
          '--xattrs-include=*',
          '-C',
          x,
          '-xf',
          `${name}.tar`,
          ...HARD_LINKS,
          SPARSE.path,
        ]),
      expectLinksAndSparse,
    )
  })

  it('the tgz lists exactly what the tarball lists, entry by entry (tar -tv: types, modes, owners, sizes, links)', () => {
    expect(tarVerbose(`${name}.tgz`).sort()).toEqual(tarVerbose(`${name}.tar`).sort())
  })

  it('keeps hard links, a device node, a fifo, a sparse file and extended attributes in the squashfs', () => {
    const entries = listed(execFileSync('unsquashfs', ['-lln', `${name}.squash`], LISTING).split('\n'), 'squashfs-root')
    expectSpecialEntries(entries)
    // The listing shows no link counts (squashfs-tools 4.5.1): the extracted pair shows them.
    for (const p of HARD_LINKS) expect(entries.get(p)).toMatchObject({ mode: '-rw-r--r--', owner: '0/0', size: '15' })
    const squashPaths = [...HARD_LINKS, SPARSE.path, './etc/xattr-probe'].map((p) => p.slice(1))
    withExtracted(
      (x) => execFileSync('unsquashfs', ['-q', '-n', '-d', join(x, 'r'), `${name}.squash`, ...squashPaths]),
      (x) => {
        expectLinksAndSparse(join(x, 'r'))
        const xattr = join(x, 'r', 'etc/xattr-probe')
        expect(execFileSync('getfattr', ['--only-values', '-n', 'user.vdib', xattr], { encoding: 'utf8' })).toBe(
          'probe-value',
        )
        expect(statSync(xattr).mode & 0o777).toBe(0o640)
      },
    )
  })

  it('tgz, squashfs and vhd hold the same image, read back with the real tools', () => {
    const tarList = execFileSync('tar', ['-tf', `${name}.tar`], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .sort()
    const tgzList = execFileSync('tar', ['-tzf', `${name}.tgz`], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .sort()
    expect(tgzList).toEqual(tarList)
    const squash = execFileSync('unsquashfs', ['-l', `${name}.squash`], { encoding: 'utf8' })
    expect(squash).toMatch(/squashfs-root\/usr\/local\/bin\/hello/)
    expect(squash).not.toMatch(/squashfs-root\/proc\/./)
    const vhd = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', `${name}.vhd`], { encoding: 'utf8' }))
    expect(vhd.format).toBe('vpc')
    expect(vhd['virtual-size']).toBeGreaterThanOrEqual(768 * 1024 ** 2)
  })

  it.skipIf(!real.ok)(
    `imports the image into a real docker daemon with --docker-target: its programs run${skipped}`,
    () => {
      expect(daemon!.docker(['image', 'inspect', '--format', '{{.Os}}', 'vdib/demo:test']).trim()).toBe('linux')
      const run = (cmd: string[]) => daemon!.docker(['run', '--rm', '--network', 'none', 'vdib/demo:test', ...cmd])
      const fromTar = execFileSync('tar', ['-xOf', `${name}.tar`, './etc/demo-built'], { encoding: 'utf8' })
      expect(fromTar).toMatch(/^built by virt-dib at /)
      expect(run(['cat', '/etc/demo-built'])).toBe(fromTar)
      expect(run(['/usr/local/bin/hello'])).toMatch(/^hello from the virt-dib demo image/)
    },
  )

  it.skipIf(!real.ok)(
    `the docker image keeps the hard links, the device node, the fifo and the sparse file's data${skipped}`,
    () => {
      const run = (cmd: string[]) => daemon!.docker(['run', '--rm', '--network', 'none', 'vdib/demo:test', ...cmd])
      const paths = [...HARD_LINKS, './etc/probe-null', './etc/probe-fifo', SPARSE.path].map((p) => p.slice(1))
      const stat = new Map(
        run(['stat', '-c', '%n|%F|%h|%i|%a|%u:%g|%s|%t,%T', ...paths])
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split('|'))
          .map(([n, type, links, inode, mode, owner, size, dev]) => [
            `.${n}`,
            { type, links, inode, mode, owner, size, dev },
          ]),
      )
      const [a, b] = HARD_LINKS.map((p) => stat.get(p))
      expect(a).toMatchObject({ type: 'regular file', links: '2', mode: '644', owner: '0:0', size: '15' })
      expect(b).toEqual(a) // the same inode too
      expect(stat.get('./etc/probe-null')).toMatchObject({
        type: 'character special file',
        mode: '620',
        owner: '0:5',
        dev: '1,3',
      })
      expect(stat.get('./etc/probe-fifo')).toMatchObject({ type: 'fifo', mode: '644', owner: '0:0' })
      expect(stat.get(SPARSE.path)).toMatchObject({ type: 'regular file', mode: '644', size: String(SPARSE.size) })
      const at = `tail -c +${SPARSE.offset + 1} ${SPARSE.path.slice(1)} | head -c ${SPARSE.data.length}`
      expect(run(['sh', '-c', at])).toBe(SPARSE.data.toString())
    },
  )

  it.skipIf(real.ok)(
    'imports the tarball through stdin with --docker-target (stub client, when no private dockerd can run)',
    () => {
      expect(readFileSync(join(out, 'docker.args'), 'utf8')).toBe('import\n-\nvdib/demo:test\n')
      const stdin = readFileSync(join(out, 'docker.stdin'))
      expect(Buffer.compare(stdin, readFileSync(`${name}.tar`))).toBe(0)
    },
  )

  it('makes a disk of --size: qemu-img agrees, and the raw file has that size', () => {
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', `${name}.qcow2`], { encoding: 'utf8' }))
    expect(info['virtual-size']).toBe(768 * 1024 ** 2)
    execFileSync('qemu-img', ['check', `${name}.qcow2`])
    expect(statSync(`${name}.raw`).size).toBe(768 * 1024 ** 2)
  })

  it('tars the image root without the build scaffolding, logs truncated, tmp emptied', () => {
    const list = execFileSync('tar', ['-tvf', `${name}.tar`], { encoding: 'utf8' })
    expect(list).toMatch(/\.\/usr\/local\/bin\/hello/)
    expect(list).toMatch(/\.\/etc\/demo-extra-data\.txt/)
    expect(list).toMatch(/\.\/etc\/demo-built/) // written by finalise.d, on the final file system
    expect(list).not.toMatch(/in_target/)
    // lost+found is there, as in diskimage-builder's tarballs (mkfs makes it on the final fs)
    expect(list).toMatch(/0\/0 +0 [^\n]* \.\/var\/log\/demo-root\.log/)
    const tmpEntries = list.split('\n').filter((l) => / \.\/tmp\/./.test(l))
    expect(tmpEntries).toEqual([])
  })

  it('runs the phases in diskimage-builder order, each where it belongs', () => {
    expect(probe('order').trim().split('\n')).toEqual([...DIB_PHASE_ORDER])
    const where = (h: string) => probe(`${h}.where`).trim()
    expect(['root.d', 'post-root.d', 'block-device.d', 'pre-finalise.d', 'cleanup.d'].map(where)).toEqual(
      Array(5).fill('appliance'),
    )
    expect(['pre-install.d', 'install.d', 'post-install.d', 'finalise.d'].map(where)).toEqual(Array(4).fill('chroot'))
    expect(where('extra-data.d')).toBe('host')
  })

  it('orders scripts like sort -n across elements, skips bad names, non-executables and excluded ones', () => {
    expect(probe('install-order').trim().split('\n')).toEqual(['probe-noprefix', '05-probe-first', '5-probe-second'])
    const started = events
      .filter((e) => e.kind === 'script-start' && e.hook === 'install.d')
      .map((e) => (e as { script: string }).script)
    expect(started).toEqual([
      'probe-noprefix',
      '05-probe-first',
      '5-probe-second',
      '10-probe',
      '50-demo-app',
      '60-demo-extra-data',
    ])
  })

  it('sources environment.d in byte order and passes --envvar values literally', () => {
    const e = env('install.d')
    expect(e['PROBE_ORDER']).toBe('ba')
    expect(e['PROBE_SET']).toBe(`it's "quoted" $(not run) \`nor this\``)
    expect(e['PROBE_CARRIED']).toBe('from host')
    expect(e['PROBE_SECRET']).toBeUndefined()
    expect(e['DIB_PROBE']).toBeUndefined()
    expect(e['DIB_ENV']).toContain('DIB_PROBE')
    expect(e['DIB_OFFLINE']).toBe('')
    expect(e['ARCH']).toBe('amd64')
    expect(e['IMAGE_NAME']).toBe('img')
    expect(e['HOME']).toBe('/root')
    expect(e['DIB_DEFAULT_INSTALLTYPE']).toBe('source')
    expect(e['TARGET_ROOT']).toBeUndefined()
  })

  it('runs outside scripts in an appliance with the tools diskimage-builder needs', () => {
    expect(probe('root.d.tools').trim().split('\n')).toEqual([
      'python3',
      'perl',
      'gpgv',
      'awk',
      'debootstrap',
      'sudo',
      'wget',
      'git',
      'python3-yaml',
    ])
  })

  it('gives outside phases TARGET_ROOT where diskimage-builder does, and the block device later', () => {
    expect(env('root.d')['TARGET_ROOT']).toBe('/sysroot')
    expect(env('cleanup.d')['TARGET_ROOT']).toBe('/sysroot')
    expect(env('post-root.d')['TARGET_ROOT']).toBeUndefined()
    expect(env('post-install.d')['IMAGE_BLOCK_DEVICE']).toBeUndefined()
    expect(env('finalise.d')['IMAGE_BLOCK_DEVICE']).toMatch(/^\/dev\/sd[a-z]$/)
    expect(env('pre-finalise.d')['DIB_ROOT_FSTYPE']).toBe('ext4')
    expect(probe('cleanup.d.cwd').trim()).toBe('/sysroot/tmp/in_target.aux/out/img.d')
    expect(probe('install.d.cwd').trim()).toBe('/')
  })

  it('gives extra-data.d the host environment plus the DIB variables, and its files reach the guest', () => {
    const e = env('extra-data.d')
    expect(e['PROBE_SECRET']).toBe('must not leak') // host phase: host environment, as DIB
    expect(e['TMP_HOOKS_PATH']).toMatch(/\/tmp\/in_target\.aux\/hooks$/)
    expect(e['DIB_PYTHON_EXEC']).toMatch(/python/)
    const tar = execFileSync('tar', ['-xOf', `${name}.tar`, './etc/demo-extra-data.txt'], { encoding: 'utf8' })
    expect(tar).toMatch(/^from extra-data\.d on /)
  })

  it('hands --extra-packages to install-packages in one call, each name intact', () => {
    const pkgs = execFileSync('tar', ['-xOf', `${name}.tar`, './var/lib/demo-os/packages'], { encoding: 'utf8' })
    expect(pkgs).toBe('pkg-a pkg b\n')
  })

  it('shows script output live, before the script ends, with durations', () => {
    const i = events.findIndex(
      (e) => e.kind === 'script-output' && e.line === 'demo-app: installed /usr/local/bin/hello',
    )
    const end = events.findIndex((e) => e.kind === 'script-end' && e.script === '50-demo-app')
    expect(i).toBeGreaterThan(-1)
    expect(i).toBeLessThan(end)
    const ends = events.filter((e) => e.kind === 'script-end')
    expect(ends.every((e) => typeof (e as { seconds: number }).seconds === 'number')).toBe(true)
  })

  it('leaves $NAME.d with what cleanup.d wrote', () => {
    expect(probe('demo-manifest.txt')).toMatch(/^image: img\nelements: demo-app demo-os probe\n/)
  })

  it('leaves no temp dir and no qemu behind', async () => {
    expect(workspaceDirs(tmp)).toEqual([])
    expect(await waitFor(() => qemuDescendants().length === 0, 10_000)).toBe(true)
  })

  it('produces an image that works: a second appliance chroots into it and runs its programs', async () => {
    const g = await createHandle()
    try {
      await g.addDrive(`${name}.qcow2`, { format: 'qcow2', readonly: true })
      await g.launch()
      const fs = await g.listFilesystems()
      expect(Object.values(fs)).toContain('ext4')
      const dev = Object.keys(fs)[0]!
      expect(await g.vfsLabel(dev)).toBe('cloudimg-rootfs')
      await g.mountRo(dev, '/')
      expect(await g.sh('/usr/local/bin/hello')).toMatch(/^hello from the virt-dib demo image/)
      const etc = await g.ls('/etc')
      expect(etc, `image /etc: ${etc.join(' ')}`).toContain('demo-built')
      expect(await g.sh('cat /etc/demo-built /etc/demo-app.conf')).toMatch(
        /^built by virt-dib at .* on \/dev\/sd[a-z]\ngreeting=hello\n$/,
      )
    } finally {
      await g.close()
    }
  })
})

describe('failing builds leave nothing behind', () => {
  const out = tempDir('vdib-fail.')
  const tmp = tempDir('vdib-tmp.')
  afterAll(() => {
    rmSync(out, { recursive: true, force: true })
    rmSync(tmp, { recursive: true, force: true })
  })

  it(
    'a failing chroot script: ScriptError with hook, script, status and output; outputs removed; old files kept',
    async () => {
      const name = join(out, 'img')
      writeFileSync(`${name}.qcow2`, 'previous build')
      const events: BuildEvent[] = []
      const e = await build(
        {
          elements: ['demo-os', 'failing'],
          libPath: LIB,
          elementPaths: [demoElements, fixtures],
          skipBase: true,
          size: 256 * 1024 ** 2,
          formats: ['qcow2', 'raw'],
          name,
          env: { ...process.env, TMPDIR: tmp },
        },
        { onEvent: (ev) => events.push(ev) },
      ).catch((x: unknown) => x)
      expect(e).toBeInstanceOf(ScriptError)
      expect(e).toMatchObject({ hook: 'install.d', script: '20-fail', status: 7, where: 'chroot', exitCode: 1 })
      expect((e as ScriptError).outputTail).toEqual(['about to fail', 'the reason is on stderr'])
      expect(readFileSync(`${name}.qcow2`, 'utf8')).toBe('previous build')
      expect(readdirSync(out)).toEqual(['img.qcow2'])
      expect(workspaceDirs(tmp)).toEqual([])
      expect(await waitFor(() => qemuDescendants().length === 0, 10_000)).toBe(true)
    },
    20 * 60_000,
  )
})

describe('ramdisk mode (with a --name that must stay data)', () => {
  const out = tempDir('vdib-ramdisk.')
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  it(
    'writes no image, only $NAME.d with the kernel and initramfs the ramdisk element made',
    async () => {
      const base = `ird it's "$(touch pwned)" \`touch pwned2\` ü`
      const name = join(out, base)
      const result = await build({
        elements: ['demo-os'],
        ramdisk: true,
        ramdiskElement: 'mini-ramdisk',
        libPath: LIB,
        elementPaths: [demoElements, fixtures],
        skipBase: true,
        size: 256 * 1024 ** 2,
        formats: ['qcow2', 'tar'],
        name,
      })
      expect(result.outputs).toEqual([])
      expect(readdirSync(out)).toEqual([`${base}.d`])
      expect(readdirSync(`${name}.d`).sort()).toEqual([`${base}.initramfs`, `${base}.kernel`])
      const list = execFileSync('sh', ['-c', 'zcat "$1" | cpio -t --quiet', 'sh', `${name}.d/${base}.initramfs`], {
        encoding: 'utf8',
      })
      expect(list).toMatch(/^usr\/bin\/bash$/m)
      for (const dir of [out, process.cwd(), root]) {
        expect(existsSync(join(dir, 'pwned')) || existsSync(join(dir, 'pwned2'))).toBe(false)
      }
    },
    20 * 60_000,
  )
})
