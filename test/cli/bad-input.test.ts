// The bad-input table: every row is refused before an appliance is launched, each at its own
// place in the code (`path` names it; the ids are checked to be distinct). Every row asserts the
// exit code, one `virt-dib: error: …` line plus at most one hint line (getopt errors keep the
// original's two-line form), no stack trace, no `libguestfs error:`, no qemu started (the
// hypervisor is a script that leaves a marker if anything runs it), nothing new in TMPDIR or
// HOME, and the output directory, which holds an older output, untouched. The rows run as child
// processes side by side.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { openSync, closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { DIB_LIB, runCliAsync } from '../helpers/cli.js'
import { TempTree } from '../helpers/element-tree.js'
import { markerHypervisor } from '../helpers/sandbox.js'

interface Ctx {
  /** The row's output directory (holds img.qcow2 from "an older build"). */
  out: string
  /** The row's TMPDIR. */
  tmp: string
  /** Element path with the fixture elements below. */
  els: string
  /** A path to a plain file. */
  file: string
}

interface Row {
  /** The code path the row reaches (distinct across the table). */
  path: string
  args: (c: Ctx) => string[]
  /** The error line (without `virt-dib: error: `), or the getopt message. */
  error: RegExp
  /** The hint line (without `virt-dib: `), if the row has one. */
  hint?: RegExp
  /** getopt's form: `virt-dib: MSG` and the `Try ‘virt-dib --help’` line. */
  getopt?: true
  /** The command that line names, if not `virt-dib --help` (a verb's own help). */
  tryHelp?: string
  code?: number
  env?: (c: Ctx) => NodeJS.ProcessEnv
  /** Refused once the build has started (still before launch): the first info lines are shown. */
  announces?: true
  /** Extra descriptors for fd:N rows: [stdin, stdout, stderr, 3, …] */
  stdio?: (c: Ctx) => ('pipe' | 'ignore' | number)[]
}

const tree = new TempTree()
const els = tree.elements('els', {
  os: { provides: ['operating-system'] },
  'prov-a': { provides: ['thing'] },
  'prov-b': { provides: ['thing'] },
  'dup-a': { files: { 'install.d/10-same': '!#!/bin/sh\n' } },
  'dup-b': { files: { 'install.d/10-same': '!#!/bin/sh\n' } },
  'bad-dep': { deps: ['../evil'] },
  'needs-ghost': { deps: ['ghost'] },
  real: { provides: ['virtual'] },
  'bd-yaml': { files: { 'block-device-default.yaml': '- local_loop: {name: image0\n' } },
  'loop-dot': { links: { 'install.d/x': '.' } },
  'loop-chain': { links: { 'install.d/p': 'q', 'install.d/q': 'p' } },
  'fifo-el': { files: { 'install.d/10-ok': '!#!/bin/sh\n' } },
})
execFileSync('mkfifo', [join(els, 'fifo-el', 'install.d', 'fifo')])
// An element path whose index cannot be read at all: apart, so the other rows can use `els`.
const badEls = tree.elements('bad-els', { 'deps-dir': {} })
mkdirSync(join(badEls, 'deps-dir', 'element-deps'))
const plainFile = tree.path('plain-file')
writeFileSync(plainFile, 'not a directory\n')

const base = mkdtempSync(join(tmpdir(), 'vdib-bad.'))
const marker = join(base, 'markers')
mkdirSync(marker)
// Anything that runs "qemu" (libguestfs probes it before a launch) leaves a marker named after
// the row: a launch attempt is seen even if it fails.
const hv = markerHypervisor(base)

afterAll(() => {
  tree.remove()
  rmSync(base, { recursive: true, force: true })
})

// --python: no probe for the interpreter that imports diskimage_builder (the rows stay fast).
const common = (c: Ctx) => [
  '-B',
  DIB_LIB,
  '-p',
  c.els,
  '--skip-base',
  '--python',
  '/usr/bin/python3',
  '--name',
  join(c.out, 'img'),
]
const ok = (c: Ctx, ...more: string[]) => [...common(c), ...more, 'os']
const bd = (c: Ctx, yaml: string, ...more: string[]) => ok(c, ...more, '--envvar', `DIB_BLOCK_DEVICE_CONFIG=${yaml}`)
const loop = '- local_loop: {name: image0}'
const bdErr = (m: string) => new RegExp(`^block-device config \\(DIB_BLOCK_DEVICE_CONFIG\\): ${m}`)

const rows: Row[] = [
  // ---- getopt (src/cli/parse.ts, src/cli/options.ts)
  { path: 'parse: unknown option', args: () => ['--foo'], error: /^unrecognized option '--foo'$/, getopt: true },
  { path: 'parse: ambiguous prefix', args: () => ['--dr', 'x'], error: /^unrecognized option '--dr'$/, getopt: true },
  {
    path: 'parse: argument to a switch',
    args: () => ['--quiet=1', 'x'],
    error: /^option '--quiet' doesn't allow an argument$/,
    getopt: true,
  },
  {
    path: 'parse: missing argument',
    args: () => ['--name'],
    error: /^option '--name' requires an argument$/,
    getopt: true,
  },
  {
    path: 'options: not a number',
    args: () => ['-m', 'abc', 'x'],
    error: /^‘abc’ is not a numeric value\.$/,
    getopt: true,
  },
  {
    path: 'options: number out of range',
    args: () => ['--debug', '99999999999', 'x'],
    error: /^‘99999999999’ is out of range\.$/,
    getopt: true,
  },
  // ---- option values (src/cli/options.ts)
  { path: 'options: --size unparsable', args: () => ['--size', '5', 'x'], error: /^5: cannot parse size field$/ },
  {
    path: 'options: --formats unknown',
    args: () => ['--formats', 'foo', 'x'],
    error: /^invalid format ‘foo’ in --formats$/,
  },
  {
    path: 'flags: --dry-run value',
    args: (c) => ok(c, '--dry-run=bogus'),
    error: /^--dry-run takes no value or ‘json’, not ‘bogus’$/,
  },
  { path: 'options: --debug negative', args: () => ['--debug', '-1', 'x'], error: /^--debug parameter must be >= 0$/ },
  {
    path: 'environment: --envvar name',
    args: (c) => ok(c, '--envvar', 'A-B=1'),
    error: /^invalid variable name ‘A-B’ in --envvar$/,
  },
  // ---- --machine-readable (src/cli/channel.ts), opened before anything else
  {
    path: 'channel: bad format string',
    args: () => ['--machine-readable=bogus', 'x'],
    error: /^invalid format string for --machine-readable: bogus$/,
  },
  {
    path: 'channel: file cannot be opened',
    args: () => ['--machine-readable=file:/nonexistent/x'],
    error: /^cannot open the --machine-readable file \/nonexistent\/x: no such file or directory \(ENOENT\)$/,
  },
  {
    path: 'channel: descriptor not open',
    args: () => ['--machine-readable=fd:1000', 'x'],
    error: /^cannot use --machine-readable file descriptor 1000: it is not open$/,
  },
  {
    path: 'channel: descriptor read-only',
    args: () => ['--machine-readable=fd:3'],
    stdio: (c) => ['ignore', 'pipe', 'pipe', openSync(c.file, 'r')],
    error: /^cannot use --machine-readable file descriptor 3: it is not open for writing$/,
  },
  {
    path: 'channel: write fails (full disk)',
    args: () => ['--machine-readable=file:/dev/full'],
    error: /^cannot write to the --machine-readable file \/dev\/full: no space left on device \(ENOSPC\)$/,
  },
  {
    path: 'channel: descriptor number too large',
    args: () => ['--machine-readable=fd:99999999999999999999', 'x'],
    error: /^invalid --machine-readable file descriptor 99999999999999999999$/,
  },
  // ---- the plan (src/api/plan.ts)
  { path: 'plan: -B missing', args: () => ['x'], error: /^-B must be specified$/ },
  {
    path: 'plan: no element',
    args: () => ['-B', '/tmp'],
    error: /^at least one distribution root element must be specified$/,
  },
  {
    path: 'plan: -B is not the library',
    args: () => ['-B', '/tmp', 'x'],
    error: /^the specified base path is not the diskimage-builder library$/,
    hint: /^‘\/tmp\/die’ does not exist/,
  },
  { path: 'plan: --size zero', args: (c) => ok(c, '--size', '0G'), error: /^--size must be greater than zero$/ },
  { path: 'plan: --size too small', args: (c) => ok(c, '--size', '1M'), error: /^--size 1048576 is too small/ },
  {
    path: 'plan: --fs-type unsupported',
    args: (c) => ok(c, '--fs-type', 'ntfs'),
    error: /^unsupported --fs-type ‘ntfs’$/,
    hint: /^supported: ext2/,
  },
  {
    path: 'plan: --root-label too long',
    args: (c) => ok(c, '--root-label', 'a-label-far-too-long'),
    error: /^root label ‘a-label-far-too-long’ is too long for ext4/,
  },
  { path: 'plan: --smp range', args: (c) => ok(c, '--smp', '0'), error: /^--smp must be between 1 and 255$/ },
  { path: 'plan: -m range', args: (c) => ok(c, '-m', '16'), error: /^-m must be between 256 and/ },
  {
    path: 'plan: --drive missing',
    args: (c) => ok(c, '--drive', '/nonexistent.img'),
    error: /^--drive ‘\/nonexistent.img’ does not exist or is not readable and writable$/,
  },
  {
    path: 'plan: --drive is a directory',
    args: (c) => ok(c, '--drive', c.tmp),
    error: /^--drive ‘.*\/tmp’ is a directory, not a regular file or a block device$/,
  },
  {
    path: 'plan: --drive is a character device',
    args: (c) => ok(c, '--drive', '/dev/null'),
    error: /^--drive ‘\/dev\/null’ is a character device, not a regular file or a block device$/,
  },
  {
    path: 'plan: --drive-format',
    args: (c) => ok(c, '--drive-format', 'vmdk'),
    error: /^--drive-format must be raw or qcow2, not ‘vmdk’$/,
  },
  { path: 'plan: --name invalid', args: (c) => [...ok(c), '--name', 'img/'], error: /^invalid --name ‘img\/’$/ },
  {
    path: 'plan: output directory missing',
    args: (c) => [...ok(c), '--name', '/nonexistent/dir/img'],
    error: /^output directory ‘\/nonexistent\/dir’ does not exist$/,
  },
  {
    path: 'plan: output directory is a file',
    args: (c) => [...ok(c), '--name', join(c.file, 'img')],
    error: /^output directory ‘.*plain-file’ is not a directory$/,
  },
  {
    // As root /sys passes the access() check; only the statfs type tells.
    path: 'plan: output directory on a pseudo file system',
    args: (c) => [...ok(c), '--name', '/sys/img'],
    error: /^output directory ‘\/sys’ is on a sysfs file system, which cannot hold images$/,
  },
  {
    path: 'plan: --python not found',
    args: (c) => ok(c, '--python', 'no-such-python'),
    error: /^no-such-python needed but not found$/,
  },
  // ---- output formats' host checks (src/outputs/*)
  {
    path: 'docker: no target',
    args: (c) => ok(c, '--formats', 'docker'),
    error: /^docker: a target was not specified, use ‘--docker-target’$/,
  },
  {
    path: 'qcow2: qemu-img missing',
    args: (c) => ok(c, '--python', '/usr/bin/python3'),
    env: (c) => ({ PATH: join(c.tmp, 'no-bin'), TMPDIR: c.tmp, HOME: join(c.tmp, 'home') }),
    error: /^qemu-img needed but not found$/,
  },
  {
    path: 'vhd: no converter',
    args: (c) => ok(c, '--python', '/usr/bin/python3', '--formats', 'vhd'),
    env: (c) => ({ PATH: join(c.tmp, 'no-bin'), TMPDIR: c.tmp, HOME: join(c.tmp, 'home') }),
    error: /^vhd-util needed but not found$/,
    hint: /^or install qemu-img/,
  },
  {
    path: 'docker: docker missing',
    args: (c) => ok(c, '--python', '/usr/bin/python3', '--formats', 'docker', '--docker-target', 'x'),
    env: (c) => ({ PATH: join(c.tmp, 'no-bin'), TMPDIR: c.tmp, HOME: join(c.tmp, 'home') }),
    error: /^docker needed but not found$/,
  },
  // ---- elements (src/elements/*)
  {
    path: 'discover: element path missing',
    args: () => ['-B', DIB_LIB, '-p', '/nonexistent', 'x'],
    error: /^element path ‘\/nonexistent’ does not exist$/,
  },
  {
    path: 'discover: element path is a file',
    args: (c) => ['-B', DIB_LIB, '-p', c.file, 'x'],
    error: /^element path ‘.*plain-file’ is not a directory$/,
  },
  {
    path: 'deps: requested element not found',
    args: (c) => [...ok(c), 'nothere'],
    error: /^element ‘nothere’ not found \(requested on the command line\)$/,
  },
  {
    path: 'deps: base not found',
    args: (c) => ['-B', DIB_LIB, '-p', c.els, '--name', join(c.out, 'img'), 'os'],
    error: /^element ‘base’ not found/,
  },
  {
    path: 'deps: dependency not found',
    args: (c) => [...ok(c), 'needs-ghost'],
    error: /^element ‘ghost’ not found \(required by ‘needs-ghost’\)$/,
  },
  {
    path: 'deps: implicit ramdisk element not found',
    args: (c) => ok(c, '--ramdisk'),
    error: /^element ‘ramdisk’ not found \(added implicitly\)$/,
  },
  {
    path: 'deps: no operating system',
    args: (c) => [...common(c), 'prov-a'],
    error: /^please include an operating system element$/,
    hint: /provid.*operating-system/,
  },
  {
    path: 'deps: provided twice',
    args: (c) => [...ok(c), 'prov-a', 'prov-b'],
    error: /^‘thing’ is provided by both ‘prov-a’ and ‘prov-b’$/,
  },
  {
    path: 'deps: requested element already provided',
    args: (c) => [...ok(c), 'real', 'virtual'],
    error: /^following elements are already provided by another element: ‘virtual’ \(by ‘real’\)$/,
  },
  {
    path: 'names: invalid requested name',
    args: (c) => [...ok(c), '../x'],
    error: /^invalid element name ‘\.\.\/x’/,
  },
  {
    path: 'names: invalid name in element-deps',
    args: (c) => [...ok(c), 'bad-dep'],
    error: /^invalid element name ‘\.\.\/evil’ in element-deps of ‘bad-dep’$/,
  },
  {
    path: 'hooks: duplicated hook',
    args: (c) => [...ok(c), 'dup-a', 'dup-b'],
    error: /^there is a duplicated hook in your elements: install\.d\/10-same in ‘dup-a’ and ‘dup-b’$/,
  },
  // ---- block-device layouts (src/blockdev/*)
  {
    path: 'blockdev config: element file is not YAML',
    args: (c) => [...ok(c), 'bd-yaml'],
    error: /^block-device config \(.*block-device-default\.yaml\) is not valid YAML/,
  },
  {
    path: 'blockdev config: file:// unreadable',
    args: (c) => bd(c, 'file:///nonexistent.yaml'),
    error: /^cannot read DIB_BLOCK_DEVICE_CONFIG file \/nonexistent\.yaml: ENOENT$/,
  },
  {
    // Was an internal error (JSON of a cyclic value, or unbounded recursion in tree notation).
    path: 'blockdev config: YAML alias cycle',
    args: (c) =>
      bd(c, `${loop}\n- mkfs: &m {name: r, base: image0, type: ext4, mount: {name: x, mount_point: /, mkfs: *m}}`),
    error: /^block-device config \(DIB_BLOCK_DEVICE_CONFIG\) refers to itself through a YAML alias$/,
  },
  {
    path: 'blockdev config: not a list',
    args: (c) => bd(c, 'local_loop: {name: image0}'),
    error: /^block-device config \(DIB_BLOCK_DEVICE_CONFIG\) must be a list of plugin entries$/,
  },
  { path: 'blockdev config: entry not a mapping', args: (c) => bd(c, '- 42'), error: bdErr('entry is not a mapping') },
  {
    path: 'blockdev config: two plugin keys',
    args: (c) => bd(c, '- {local_loop: {name: a}, mkfs: {name: b}}'),
    error: bdErr('each entry must have exactly one plugin key'),
  },
  {
    path: 'blockdev config: unknown plugin',
    args: (c) => bd(c, '- frob: {name: x}'),
    error: /^unknown block-device plugin ‘frob’ \(known: local_loop, partitioning, lvm, mkfs, mount, fstab\)$/,
  },
  {
    path: 'blockdev config: plugin settings not a mapping',
    args: (c) => bd(c, '- local_loop: 3'),
    error: /^block-device plugin ‘local_loop’ needs a mapping of settings$/,
  },
  {
    path: 'blockdev config: entry without a name',
    args: (c) => bd(c, '- mkfs: {type: ext4}'),
    error: /^block-device ‘mkfs’ entry needs a name \(or a base\)$/,
  },
  {
    path: 'blockdev size: invalid size',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: lots, mkfs: {mount: {mount_point: /}}}]}`,
      ),
    error: /^invalid size ‘lots’ for partition ‘root’$/,
  },
  {
    path: 'blockdev size: bad percentage',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: 150%, mkfs: {mount: {mount_point: /}}}]}`,
      ),
    error: /^invalid size ‘150%’ for partition ‘root’: a percentage must be in \(0, 100\]$/,
  },
  {
    path: 'layout: duplicate node name',
    args: (c) => bd(c, `${loop}\n- local_loop: {name: image0}`),
    error: bdErr('duplicate node name ‘image0’'),
  },
  {
    path: 'layout: mount point not normalised',
    args: (c) =>
      bd(c, `${loop}\n- mkfs: {name: r, base: image0, type: ext4}\n- mount: {name: m, base: r, mount_point: /a/../b}`),
    error: bdErr('mount point ‘/a/\\.\\./b’ of ‘m’ must be an absolute, normalised path without blanks'),
  },
  {
    path: 'layout: undefined reference',
    args: (c) => bd(c, `${loop}\n- mkfs: {name: r, base: nowhere, type: ext4}`),
    error: bdErr('‘r’ refers to ‘nowhere’, which is not defined'),
  },
  {
    path: 'layout: wrong kind of base',
    args: (c) => bd(c, `${loop}\n- mkfs: {name: r, base: image0, type: ext4}\n- mkfs: {name: s, base: r, type: ext4}`),
    error: bdErr('‘s’ cannot be based on ‘r’ \\(a mkfs\\); it needs a local_loop or partition or lv'),
  },
  {
    path: 'layout: no local_loop',
    args: (c) => bd(c, '[]'),
    error: bdErr('no local_loop: there is no disk to put the layout on'),
  },
  {
    path: 'layout: nothing mounted at /',
    args: (c) =>
      bd(c, `${loop}\n- mkfs: {name: r, base: image0, type: ext4}\n- mount: {name: m, base: r, mount_point: /srv}`),
    error: bdErr('nothing is mounted at /'),
  },
  {
    path: 'layout: partition table label',
    args: (c) => bd(c, `${loop}\n- partitioning: {base: image0, label: apm, partitions: [{name: root, size: 1G}]}`),
    error: bdErr('label of partitioning ‘partitioning_image0’ must be mbr or gpt'),
  },
  {
    path: 'layout: no partitions',
    args: (c) => bd(c, `${loop}\n- partitioning: {base: image0, label: mbr, partitions: []}`),
    error: bdErr('partitioning ‘partitioning_image0’ needs partitions'),
  },
  {
    path: 'layout: partition without size',
    args: (c) => bd(c, `${loop}\n- partitioning: {base: image0, label: mbr, partitions: [{name: root}]}`),
    error: bdErr('partition ‘root’ has no size'),
  },
  {
    path: 'layout: unknown partition flag',
    args: (c) =>
      bd(c, `${loop}\n- partitioning: {base: image0, label: mbr, partitions: [{name: root, size: 1G, flags: [fast]}]}`),
    error: bdErr('unknown flag ‘fast’ on partition ‘root’'),
  },
  {
    path: 'layout: primary flag on GPT',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: 1G, flags: [primary]}]}`,
      ),
    error: bdErr('primary flag not supported for GPT partition ‘root’'),
  },
  {
    path: 'layout: MBR type byte',
    args: (c) =>
      bd(c, `${loop}\n- partitioning: {base: image0, label: mbr, partitions: [{name: root, size: 1G, type: zz}]}`),
    error: bdErr('type ‘zz’ of partition ‘root’ is not an MBR type byte'),
  },
  {
    path: 'layout: partition does not fit',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: 2GiB, mkfs: {mount: {mount_point: /}}}]}`,
        '--size',
        '1G',
      ),
    error: bdErr('partition ‘root’ \\(2GiB\\) does not fit'),
  },
  {
    path: 'layout: more than 4 primary partitions',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: mbr, partitions: [${[1, 2, 3, 4, 5].map((i) => `{name: p${i}, size: 10M, flags: [primary]${i === 1 ? ', mkfs: {type: ext4, mount: {mount_point: /}}' : ''}}`).join(', ')}]}`,
      ),
    error: bdErr('more than 4 primary partitions on ‘image0’'),
  },
  {
    path: 'layout: invalid LVM name',
    args: (c) =>
      bd(
        c,
        `${loop}\n- lvm: {name: lvm, pvs: [{name: pv, base: image0}], vgs: [{name: 'bad vg', base: [pv]}], lvs: [{name: lv, base: 'bad vg', size: 100M}]}`,
      ),
    error: bdErr('volume group name ‘bad vg’ is not a valid LVM name'),
  },
  {
    path: 'layout: mkfs without type',
    args: (c) => bd(c, `${loop}\n- mkfs: {name: data, base: image0}`),
    error: bdErr('mkfs ‘data’ needs a type'),
  },
  {
    path: 'layout: mkfs unsupported type',
    args: (c) => bd(c, `${loop}\n- mkfs: {name: data, base: image0, type: zfs}`),
    error: bdErr('mkfs ‘data’: unsupported file system type ‘zfs’'),
  },
  {
    path: 'layout: label too long for its file system',
    args: (c) => bd(c, `${loop}\n- mkfs: {name: data, base: image0, type: vfat, label: muchtoolonglabel}`),
    error: bdErr('label ‘MUCHTOOLONGLABEL’ too long for file system vfat: 16 > 11'),
  },
  {
    path: 'layout: same mount point twice',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: a, size: 100M}, {name: b, size: 100M}]}\n- mkfs: {name: fa, base: a, type: ext4}\n- mkfs: {name: fb, base: b, type: ext4}\n- mount: {name: ma, base: fa, mount_point: /}\n- mount: {name: mb, base: fb, mount_point: /}`,
      ),
    error: bdErr('mount point ‘/’ specified more than once'),
  },
  {
    path: 'layout: file system label used twice',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: a, size: 100M}, {name: b, size: 100M}]}\n- mkfs: {name: fa, base: a, type: ext4, label: same}\n- mkfs: {name: fb, base: b, type: ext4, label: same}\n- mount: {name: ma, base: fa, mount_point: /}`,
      ),
    error: bdErr('file system label ‘same’ used by both ‘fa’ and ‘fb’'),
  },
  {
    path: 'layout: align not a multiple of 512',
    args: (c) =>
      bd(c, `${loop}\n- partitioning: {base: image0, label: mbr, align: 100, partitions: [{name: r, size: 1G}]}`),
    error: bdErr('align of ‘partitioning_image0’ must be a multiple of 512 bytes'),
  },
  {
    path: 'layout: partition flags not a list',
    args: (c) =>
      bd(c, `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: r, size: 1G, flags: boot}]}`),
    error: bdErr('flags of partition ‘r’ must be a list'),
  },
  {
    path: 'layout: LVM options not a list',
    args: (c) =>
      bd(
        c,
        `${loop}\n- lvm: {name: lvm, pvs: [{name: pv, base: image0, options: x}], vgs: [{name: vg, base: [pv]}], lvs: [{name: lv, base: vg, size: 100M}]}`,
      ),
    error: bdErr('options of pvs ‘pv’ must be a list'),
  },
  {
    path: 'layout: fstab number field',
    args: (c) =>
      bd(
        c,
        `${loop}\n- mkfs: {name: r, base: image0, type: ext4}\n- mount: {name: m, base: r, mount_point: /}\n- fstab: {name: f, base: m, dump-freq: x}`,
      ),
    error: bdErr('dump-freq of ‘f’ must be a non-negative integer'),
  },
  {
    // Was ``invalid size ‘[object Object]’``; `type: [1]` was taken as the MBR type byte 1.
    path: 'layout: scalar field of the wrong type',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: {a: b}, mkfs: {mount: {mount_point: /}}}]}`,
      ),
    error: bdErr('size of partition ‘root’ must be a string or a number, not a mapping$'),
  },
  {
    path: 'blockdev config: node name of the wrong type',
    args: (c) => bd(c, `${loop}\n- mkfs: {base: [image0], type: ext4}`),
    error: bdErr('base of a ‘mkfs’ entry must be a string, not a list$'),
  },
  {
    path: 'layout: list of words holds a mapping',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: mbr, partitions: [{name: r, size: 1G, flags: [{boot: 1}]}]}`,
      ),
    error: bdErr('flags of partition ‘r’ must be a list of words, not of a mapping$'),
  },
  {
    path: 'layout: LVM names of the wrong type',
    args: (c) =>
      bd(
        c,
        `${loop}\n- lvm: {name: lvm, pvs: [{name: pv, base: image0}], vgs: [{name: vg, base: [[pv]]}], lvs: [{name: lv, base: vg, size: 100M}]}`,
      ),
    error: bdErr('base of vgs ‘vg’ must be a list of pvs names, not of a list$'),
  },
  // ---- validations added by issue 12 (file system minimums, names, --arch, --mkfs-options, links)
  {
    path: 'fs-min: ext4 root larger than the disk',
    args: (c) => ok(c, '--size', '64M'),
    error: /^the ext4 file system ‘mkfs_root’ needs at least [\d.]+M but its disk is 64M \(--size 64M\)$/,
    hint: /^give it more room: a larger --size$/,
  },
  {
    path: 'fs-min: xfs minimum',
    args: (c) => ok(c, '--fs-type', 'xfs', '--size', '200M'),
    error: /^the xfs file system ‘mkfs_root’ needs at least 300M but its disk is 200M \(--size 200M\)$/,
    hint: /^give it more room/,
  },
  {
    path: 'fs-min: file system larger than its partition',
    args: (c) =>
      bd(
        c,
        `${loop}\n- partitioning: {base: image0, label: gpt, partitions: [{name: root, size: 20M, mkfs: {type: ext4, mount: {mount_point: /}}}]}`,
      ),
    error: bdErr('the ext4 file system ‘mkfs_root’ needs at least [\\d.]+M but its partition ‘root’ is 19M'),
    hint: /^give it more room: a larger --size or larger sizes in the layout$/,
  },
  {
    path: 'layout: node name not a plain name',
    args: (c) => bd(c, "- local_loop: {name: 'a b'}"),
    error: bdErr('node name ‘a b’ is not a plain name'),
  },
  {
    path: 'layout: mount point with a shell character',
    args: (c) =>
      bd(c, `${loop}\n- mkfs: {name: r, base: image0, type: ext4}\n- mount: {name: m, base: r, mount_point: "/a|b"}`),
    error: bdErr('mount point ‘/a\\|b’ of ‘m’ contains ‘\\|’'),
  },
  {
    path: 'plan: --arch not a plain name',
    args: (c) => ok(c, '--arch', '../x'),
    error: /^invalid --arch ‘\.\.\/x’$/,
    hint: /^an architecture name such as amd64/,
  },
  {
    path: 'shell words: --mkfs-options single quote',
    args: (c) => ok(c, '--mkfs-options', "-E 'a b"),
    error: /^--mkfs-options ‘-E 'a b’: a single quote is not closed$/,
  },
  {
    path: 'shell words: --mkfs-options double quote',
    args: (c) => ok(c, '--mkfs-options', '-E "a b'),
    error: /^--mkfs-options ‘-E "a b’: a double quote is not closed$/,
  },
  {
    path: 'shell words: --mkfs-options trailing backslash',
    args: (c) => ok(c, '--mkfs-options', 'x\\'),
    error: /^--mkfs-options ‘x\\’: it ends with a backslash$/,
  },
  {
    path: 'prepare-aux: image cache cannot be created',
    args: (c) => ok(c, '--image-cache', join(c.file, 'cache')),
    error: /^cannot create the image cache ‘.*plain-file\/cache’: ENOTDIR$/,
    hint: /^choose another directory with --image-cache$/,
    announces: true,
  },
  {
    path: 'hooks: link back to its own directory',
    args: (c) => [...ok(c), 'loop-dot'],
    error:
      /^element ‘loop-dot’: ‘install\.d\/x’ is a symbolic link loop \(-> \.\): it leads back to a directory it is in$/,
  },
  {
    path: 'hooks: endless chain of links',
    args: (c) => [...ok(c), 'loop-chain'],
    error: /^element ‘loop-chain’: ‘install\.d\/[pq]’ is a symbolic link loop \(-> [pq]\)$/,
  },
  {
    path: 'hooks: a FIFO in a hook directory',
    args: (c) => [...ok(c), 'fifo-el'],
    error: /^element ‘fifo-el’: ‘install\.d\/fifo’ is not a file, a directory or a symbolic link$/,
  },
  // ---- the step cache (src/cli/options.ts, src/api/plan.ts) and the verbs (src/cli/verbs.ts, cache-command.ts)
  {
    path: 'options: --cache-max-size unparsable',
    args: (c) => ok(c, '--cache', '--cache-max-size', '20'),
    error: /^--cache-max-size ‘20’ is not a size \(a number and b, K, M or G: 20G\)$/,
  },
  {
    path: 'options: --cache-max-age unparsable',
    args: (c) => ok(c, '--cache', '--cache-max-age', '2 days'),
    error: /^--cache-max-age ‘2 days’ is not a duration \(a number and s, m, h, d or w: 30m, 2h, 7d, 1w\)$/,
  },
  {
    path: 'options: --cache-max-age without the cache',
    args: (c) => ok(c, '--cache-max-age', '2h'),
    error: /^--cache-max-age needs the step cache \(--cache\)$/,
  },
  {
    path: 'plan: --rebuild-from names no phase',
    args: (c) => ok(c, '--cache', '--rebuild-from', 'instal'),
    error: /^--rebuild-from ‘instal’ is not a phase: one of root\.d, .*, cleanup\.d \(\.d may be left out\)$/,
  },
  {
    path: 'plan: --rebuild-from without the cache',
    args: (c) => ok(c, '--rebuild-from', 'install'),
    error: /^--rebuild-from needs the step cache \(--cache\)$/,
  },
  {
    path: 'plan: --cache-dir is a file',
    args: (c) => ok(c, '--cache-dir', c.file),
    error: /^cache directory ‘.*plain-file’ is not a directory$/,
  },
  {
    path: 'verbs: one not in this version',
    args: () => ['boot'],
    error: /^‘boot’ \(booting an image just built\) is not available in this version$/,
  },
  {
    path: 'verbs: cache without a command',
    args: () => ['cache'],
    error: /^cache needs a command: list or prune$/,
    getopt: true,
    tryHelp: 'virt-dib cache --help',
  },
  {
    path: 'verbs: cache with an unknown command',
    args: () => ['cache', '-B', DIB_LIB],
    error: /^cache: unknown command ‘-B’ \(list or prune\)$/,
    getopt: true,
    tryHelp: 'virt-dib cache --help',
  },
  {
    path: 'verbs: cache prune --older-than unparsable',
    args: (c) => ['cache', 'prune', '--cache-dir', join(c.tmp, 'none'), '--older-than', 'ages'],
    error: /^--older-than ‘ages’ is not a duration/,
  },
  {
    path: 'verbs: a verb after an option is an element, and -B is missing',
    args: (c) => ['--cache-dir', join(c.tmp, 'none'), 'cache', 'list'],
    error: /^-B must be specified$/,
    hint: /^‘cache’ is a verb only as the first argument: virt-dib cache …$/,
  },
  {
    path: 'discover: element-deps cannot be read',
    args: () => ['-B', DIB_LIB, '-p', badEls, '--skip-base', '--python', '/usr/bin/python3', 'deps-dir'],
    error: /^cannot read .*\/deps-dir\/element-deps: EISDIR$/,
  },
]

interface Listing {
  name: string
  hash?: string
  mtimeMs: number
}

function listing(dir: string): Listing[] {
  return readdirSync(dir)
    .sort()
    .map((name) => {
      const p = join(dir, name)
      const st = statSync(p)
      return {
        name,
        mtimeMs: st.mtimeMs,
        ...(st.isFile() ? { hash: createHash('sha256').update(readFileSync(p)).digest('hex') } : {}),
      }
    })
}

describe('the bad-input table', () => {
  it('has at least 40 rows, each reaching a different code path', () => {
    const paths = rows.map((r) => r.path)
    expect(new Set(paths).size).toBe(paths.length)
    expect(paths.length).toBeGreaterThanOrEqual(40)
  })

  describe.concurrent('each row is refused before launch, in one line, leaving nothing', () => {
    rows.forEach((row, i) => {
      it(`${row.path}`, async () => {
        const dir = join(base, `row${i}`)
        const c: Ctx = { out: join(dir, 'out'), tmp: join(dir, 'tmp'), els, file: plainFile }
        mkdirSync(c.out, { recursive: true })
        mkdirSync(c.tmp, { recursive: true })
        writeFileSync(join(c.out, 'img.qcow2'), 'an older build')
        const before = { out: listing(c.out), tmp: listing(c.tmp) }
        const launched = join(marker, `row${i}`)
        const env = {
          ...(row.env ? row.env(c) : { ...process.env, TMPDIR: c.tmp, HOME: join(c.tmp, 'home') }),
          LIBGUESTFS_HV: hv,
          VDIB_TEST_MARKER: launched,
        }
        const stdio = row.stdio?.(c)
        let r
        try {
          r = await runCliAsync(row.args(c), { cwd: c.out, env, ...(stdio ? { stdio } : {}) })
        } finally {
          for (const fd of stdio?.slice(3) ?? []) if (typeof fd === 'number') closeSync(fd)
        }
        const context = `${JSON.stringify(row.args(c))}\nstderr: ${r.stderr}\nstdout: ${r.stdout}`
        expect(r.status, context).toBe(row.code ?? 1)
        const lines = r.stderr.split('\n')
        expect(lines.pop(), `stderr ends with a newline: ${context}`).toBe('')
        expect(r.stderr, context).not.toMatch(/^\s+at /m)
        expect(r.stderr, context).not.toMatch(/libguestfs error:|internal error/)
        if (row.announces) expect(r.stdout, context).toMatch(/^(virt-dib: [^\n]*\n)*$/)
        else expect(r.stdout, context).toBe('')
        if (row.getopt) {
          expect(lines.length, context).toBe(2)
          expect(lines[0]!.replace(/^virt-dib: /, ''), context).toMatch(row.error)
          const help = row.tryHelp ?? 'virt-dib --help'
          expect(lines[1], context).toBe(`Try ‘${help}’ or consult virt-dib(1) for more information.`)
        } else {
          expect(lines.length, context).toBeLessThanOrEqual(row.hint ? 2 : 1)
          expect(lines[0], context).toMatch(/^virt-dib: error: /)
          expect(lines[0]!.replace(/^virt-dib: error: /, ''), context).toMatch(row.error)
          if (row.hint) expect(lines[1]?.replace(/^virt-dib: /, ''), context).toMatch(row.hint)
        }
        expect(existsSync(launched), `an appliance launch was attempted: ${context}`).toBe(false)
        expect(listing(c.tmp), `left in TMPDIR or HOME: ${context}`).toEqual(before.tmp)
        expect(listing(c.out), `the output directory changed: ${context}`).toEqual(before.out)
      })
    })
  })
})
