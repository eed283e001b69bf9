// planBuild's validation of what would otherwise fail, or do harm, after launch: --arch pasted
// into a file name, --mkfs-options split as the original's shell split it, a --size too small
// for the root file system; and the image cache created as the original creates it.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { describePlan } from '../../../src/api/dry-run.js'
import type { BuildOptions } from '../../../src/api/options.js'
import { planBuild, pseudoFsOf } from '../../../src/api/plan.js'
import { BuildContext } from '../../../src/engine/context.js'
import { elementArray, prepareAuxTree, prepareImageCache } from '../../../src/engine/prepare-aux.js'
import { splitShellWords } from '../../../src/blockdev/shell-words.js'
import { BlockDeviceConfigError, ElementError, UsageError, VirtDibError } from '../../../src/errors.js'
import { formatControlFile } from '../../../src/phases/runner/control-file.js'
import { demoOptions } from '../../helpers/demo-options.js'

const MiB = 1024 ** 2
const tmp = mkdtempSync(join(tmpdir(), 'vdib-plan.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const options = (o: Partial<BuildOptions> = {}): BuildOptions => demoOptions(tmp, o)

describe('--arch', () => {
  it('takes architecture names', () => {
    for (const arch of ['amd64', 'x86_64', 'aarch64', 'arm64', 'i386', 'ppc64le', 's390x', 'armhf', 'hurd-i386']) {
      expect(planBuild(options({ arch })).arch).toBe(arch)
    }
  })

  it('refuses anything that could leave the element directory in block-device-ARCH.yaml', () => {
    for (const arch of ['../x', '', '.x', '-x', 'a/b', 'x y', "a'b", 'x86_64\n', 'a.yaml', 'x'.repeat(65)]) {
      const plan = () => planBuild(options({ arch }))
      expect(plan, JSON.stringify(arch)).toThrow(UsageError)
      expect(plan, JSON.stringify(arch)).toThrow(`invalid --arch ‘${arch}’`)
    }
  })
})

describe('--mkfs-options', () => {
  it('is split as the shell splits it, after diskimage-builder’s own ext4 options', () => {
    const plan = planBuild(options({ mkfsOptions: `-O "^has_journal" -E 'a b'` }))
    expect(plan.layout.root.opts).toEqual(['-i', '4096', '-J', 'size=64', '-O', '^has_journal', '-E', 'a b'])
  })

  // The original spliced the string into a shell command: compare with bash's own split.
  const bashWords = (s: string): string[] => {
    const r = spawnSync('bash', ['-c', `eval "set -- $1"; printf '%s\\0' "$@"`, '_', s], { encoding: 'utf8' })
    return r.stdout.split('\0').slice(0, -1)
  }
  for (const s of [
    `-O "^has_journal" -E 'a b'`,
    `  -L  x\ty  `,
    `-E a\\ b -c`,
    `"a"'b'c "" ''`,
    `-E "q\\"uote" 'back\\slash' "d\\\\b" "keep\\n"`,
    `a\\\nb`,
    `-O ^metadata_csum,^64bit`,
  ]) {
    it(`splits ${JSON.stringify(s)} as bash does`, () => {
      expect(splitShellWords(s, '--mkfs-options')).toEqual(bashWords(s))
    })
  }

  it('refuses an unbalanced quote before launch', () => {
    for (const [s, what] of [
      [`-E 'a b`, 'single quote'],
      [`-E "a b`, 'double quote'],
      [`-E "a\\"`, 'double quote'],
    ] as const) {
      const plan = () => planBuild(options({ mkfsOptions: s }))
      expect(plan).toThrow(UsageError)
      expect(plan).toThrow(`--mkfs-options ‘${s}’: a ${what} is not closed`)
    }
    expect(() => planBuild(options({ mkfsOptions: 'x\\' }))).toThrow(/it ends with a backslash/)
  })

  it('keeps $, ` and globs as characters (they reach mkfs as data, never a shell)', () => {
    expect(splitShellWords('-L $(id) `x` * [a]', 'x')).toEqual(['-L', '$(id)', '`x`', '*', '[a]'])
  })
})

describe('--size and the root file system', () => {
  it('refuses a --size the default ext4 root (64M journal) cannot be made on', () => {
    const plan = () => planBuild(options({ size: 64 * MiB }))
    expect(plan).toThrow(BlockDeviceConfigError)
    expect(plan).toThrow(
      /^the ext4 file system ‘mkfs_root’ needs at least 130\.\dM but its disk is 64M \(--size 64M\)$/,
    )
    expect(planBuild(options({ size: 160 * MiB })).size).toBe(160 * MiB)
    // a smaller journal through --mkfs-options makes it fit
    expect(planBuild(options({ size: 64 * MiB, mkfsOptions: '-J size=16' })).size).toBe(64 * MiB)
  })

  it('checks only the --size disk, not the one-file-system layout kept for a device block-device.d names', () => {
    const layout = `- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      opts: "-J size=4"\n      mount:\n        mount_point: /\n`
    const plan = planBuild(options({ size: 64 * MiB, envvars: [{ name: 'DIB_BLOCK_DEVICE_CONFIG', value: layout }] }))
    expect(plan.layout.root.opts).toEqual(['-J', 'size=4'])
    expect(plan.overrideLayout.root.opts).toEqual(['-i', '4096', '-J', 'size=64'])
  })
})

describe('--image-cache', () => {
  it('is created with mode 0755 (and parents) when missing, as the original does', () => {
    const dir = join(tmp, 'cache', 'deep', 'image-create')
    const old = process.umask(0o022)
    try {
      prepareImageCache(dir)
    } finally {
      process.umask(old)
    }
    expect(statSync(dir).isDirectory()).toBe(true)
    expect(statSync(dir).mode & 0o777).toBe(0o755)
    prepareImageCache(dir) // exists: nothing to do
  })

  it('is refused with one line when it cannot be created', () => {
    const file = join(tmp, 'a-file')
    writeFileSync(file, '')
    expect(() => prepareImageCache(join(file, 'cache'))).toThrow(VirtDibError)
    expect(() => prepareImageCache(join(file, 'cache'))).toThrow(
      `cannot create the image cache ‘${file}/cache’: ENOTDIR`,
    )
  })

  it('is created while the aux data is prepared, before anything is launched', async () => {
    const dir = join(tmp, 'build-cache', 'image-create')
    const plan = planBuild(options({ imageCache: dir, env: { ...options().env, TMPDIR: tmp } }))
    const ctx = await BuildContext.open(plan, {})
    try {
      expect(existsSync(dir)).toBe(false)
      prepareAuxTree(ctx)
      expect(statSync(dir).isDirectory()).toBe(true)
    } finally {
      await ctx.cleanup.run()
    }
  })

  it('is not created by planning or --dry-run', () => {
    const dir = join(tmp, 'dry-cache')
    describePlan(planBuild(options({ imageCache: dir })))
    expect(existsSync(dir)).toBe(false)
  })
})

describe('get_image_element_array', () => {
  it('survives diskimage-builder’s eval with blanks, quotes and $( ) in element paths', () => {
    const weird = join(tmp, `my elements $(touch ${join(tmp, 'PWNED')}) it's`)
    mkdirSync(join(weird, 'os'), { recursive: true })
    writeFileSync(join(weird, 'os', 'element-provides'), 'operating-system\n')
    const plan = planBuild(options({ elements: ['os'], elementPaths: [weird] }))
    const control = formatControlFile({
      hook: 'install.d',
      hooksDir: '/h',
      token: 't',
      console: '',
      log: '',
      cwd: '/',
      exclude: [],
      trace: false,
      extraEnv: '',
      vars: [],
      elementArray: elementArray({ plan }),
      where: 'chroot',
    })
    // What diskimage-builder's element scripts do with it.
    const script = `${control}\neval declare -A image_elements=($(get_image_element_array))\nprintf '%s' "\${image_elements[os]}"`
    const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.stdout).toBe(join(weird, 'os'))
    expect(existsSync(join(tmp, 'PWNED'))).toBe(false)
  })

  it('refuses element names a shell would expand in that array', () => {
    const dir = join(tmp, 'names')
    for (const n of ['$(id)', 'a b']) {
      mkdirSync(join(dir, n), { recursive: true })
      writeFileSync(join(dir, n, 'element-provides'), 'operating-system\n')
      const plan = () => planBuild(options({ elements: [n], elementPaths: [dir] }))
      expect(plan).toThrow(ElementError)
      expect(plan).toThrow(`invalid element name ‘${n}’ in the element list`)
    }
  })
})

describe('--drive', () => {
  it('takes a regular file', () => {
    const drive = join(tmp, 'drive.img')
    writeFileSync(drive, '')
    expect(() => planBuild(options({ drive }))).not.toThrow()
  })

  it('refuses a directory and a character device before launch (they failed only when qemu opened them)', () => {
    for (const [drive, what] of [
      [tmp, 'a directory'],
      ['/dev/null', 'a character device'],
    ] as const) {
      const plan = () => planBuild(options({ drive }))
      expect(plan).toThrow(UsageError)
      expect(plan).toThrow(`--drive ‘${drive}’ is ${what}, not a regular file or a block device`)
    }
  })
})

describe('the output directory', () => {
  it('is refused on a kernel pseudo file system, which root’s access() check lets through', () => {
    expect(pseudoFsOf('/sys')).toBe('sysfs')
    expect(pseudoFsOf('/proc')).toBe('proc')
    expect(pseudoFsOf(tmp)).toBeUndefined()
    expect(pseudoFsOf('/nonexistent')).toBeUndefined()
    const plan = () => planBuild(options({ name: '/proc/img' }))
    expect(plan).toThrow(UsageError)
    expect(plan).toThrow('output directory ‘/proc’ is on a proc file system, which cannot hold images')
  })
})
