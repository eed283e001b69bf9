// Block-device layouts: diskimage-builder's own layout examples (mbr, gpt/efi, lvm, several
// partitions, tree and graph notation) rewritten as test data, planned without an appliance;
// partition tables are checked against the real sfdisk/sgdisk on a sparse file.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { afterAll, describe, expect, it } from 'vitest'

import { chooseConfigSource, configToGraph, DEFAULT_CONFIG } from '../../../src/blockdev/config.js'
import { blockDevices, createdValues, planValues } from '../../../src/blockdev/devices.js'
import { planLayout, sortMounts, type RootParams } from '../../../src/blockdev/layout.js'
import {
  canBuildInPlace,
  COPY_CHECK,
  copyTreeCommands,
  createLayoutScript,
  fstabScript,
  fstabText,
  globEscape,
  layoutScript,
  mkfsArgv,
  partitionCommands,
} from '../../../src/blockdev/script.js'
import { parseAbsSize, parseRelSize } from '../../../src/blockdev/size.js'
import { BlockDeviceConfigError } from '../../../src/errors.js'

const GiB = 1024 ** 3
const MiB = 1024 ** 2
const params = (o: Partial<RootParams> = {}): RootParams => ({
  diskSize: 5 * GiB,
  fsType: 'ext4',
  rootLabel: undefined,
  mkfsOptions: undefined,
  rootFsUuid: 'root-uuid',
  ...o,
})
const plan = (yaml: string, o: Partial<RootParams> = {}) =>
  planLayout(configToGraph({ origin: 'test', yaml }), 'test', params(o))
const tmp = mkdtempSync(join(tmpdir(), 'vdib-bd.'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const MBR_ONE = `
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 100%
        mkfs:
          mount:
            mount_point: /
            fstab:
              options: "defaults"
              fsck-passno: 1
`
const MBR_LOGICAL = `
- local_loop:
    name: image0
- partitioning:
    base: image0
    name: mbr
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 55%
        mkfs:
          type: xfs
          mount: { mount_point: /, fstab: { options: defaults, fsck-passno: 1 } }
      - name: var
        size: 40%
        mkfs:
          type: ext4
          mount: { mount_point: /var, fstab: { options: defaults } }
      - name: var_log
        size: 5%
        mkfs:
          type: vfat
          label: varlog
          mount: { mount_point: /var/log, fstab: { options: defaults } }
`
const GPT_EFI = `
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 16MiB
        mkfs:
          type: vfat
          mount: { mount_point: /boot/efi, fstab: { options: defaults, fsck-passno: 2 } }
      - name: BSP
        type: 'EF02'
        size: 8MiB
      - name: Root-Part
        type: '8300'
        size: 100%
        mkfs:
          type: ext4
          mount: { mount_point: /, fstab: { options: defaults, fsck-passno: 1 } }
`
// diskimage-builder's LVM example, with the small volumes at xfsprogs 5.19's 300M minimum.
const LVM_TREE = `
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 3G
- lvm:
    name: lvm
    pvs:
      - { name: pv, base: root, options: ["--force"] }
    vgs:
      - { name: vg, base: ["pv"], options: ["--force"] }
    lvs:
      - { name: lv_root, base: vg, size: 1500M }
      - { name: lv_var, base: vg, size: 500M }
      - { name: lv_log, base: vg, size: 300M }
      - { name: lv_audit, base: vg, size: 300M }
- mkfs:
    name: fs_root
    base: lv_root
    label: img-rootfs
    type: xfs
    mount: { mount_point: /, fstab: { options: "rw,relatime", fsck-passno: 1 } }
- mkfs:
    name: fs_audit
    base: lv_audit
    type: xfs
    mount: { mount_point: /var/log/audit, fstab: { options: "rw,relatime" } }
- mkfs:
    name: fs_var
    base: lv_var
    type: xfs
    mount: { mount_point: /var, fstab: { options: "rw,relatime" } }
- mkfs:
    name: fs_log
    base: lv_log
    type: xfs
    mount: { mount_point: /var/log, fstab: { options: "rw,relatime" } }
`
const GRAPH = `
- local_loop:
    name: image0
- partitioning:
    name: mbr
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 100%
- mkfs:
    name: mkfs_root
    base: root
    type: btrfs
- mount:
    name: mount_mkfs_root
    base: mkfs_root
    mount_point: /
- fstab:
    name: fstab_mount_mkfs_root
    base: mount_mkfs_root
    fsck-passno: 1
`

describe('block-device sizes', () => {
  it('reads diskimage-builder size specifications', () => {
    expect(parseAbsSize('1GiB', 'x')).toBe(GiB)
    expect(parseAbsSize('1G', 'x')).toBe(1e9)
    expect(parseAbsSize('1.5 MiB', 'x')).toBe(1.5 * MiB)
    expect(parseAbsSize('4096', 'x')).toBe(4096)
    expect(parseAbsSize('KiB', 'x')).toBe(1024)
    expect(parseRelSize('50%', 1000, 'x')).toBe(500)
    expect(() => parseAbsSize('12 parsecs', 'x')).toThrow(/invalid size ‘12 parsecs’ for x/)
    expect(() => parseRelSize('150%', 1000, 'x')).toThrow(BlockDeviceConfigError)
  })
})

describe('block-device config: tree and graph notation', () => {
  it('flattens the default tree: names from plugin and parent, children before parents', () => {
    const g = configToGraph({ origin: 'default', yaml: DEFAULT_CONFIG })
    expect(g.map((e) => [e.plugin, e.fields['name'], e.fields['base']])).toEqual([
      ['fstab', 'fstab_mount_mkfs_root', 'mount_mkfs_root'],
      ['mount', 'mount_mkfs_root', 'mkfs_root'],
      ['mkfs', 'mkfs_root', 'image0'],
      ['local_loop', 'image0', undefined],
    ])
  })

  it('gives partitions the partitioning base and their children the partition as base', () => {
    const g = configToGraph({ origin: 't', yaml: MBR_ONE })
    const part = g.find((e) => e.plugin === 'partitioning')!
    expect(part.fields['name']).toBe('partitioning_image0')
    expect((part.fields['partitions'] as { base: string }[])[0]!.base).toBe('image0')
    expect(g.find((e) => e.plugin === 'mkfs')!.fields).toMatchObject({ name: 'mkfs_root', base: 'root' })
  })

  it('plans graph notation exactly as the same layout in tree notation', () => {
    const tree = plan(MBR_ONE.replace('mkfs:', 'mkfs:\n          type: btrfs'))
    const graph = plan(GRAPH)
    for (const l of [tree, graph])
      expect(l.root).toMatchObject({ name: 'mkfs_root', type: 'btrfs', label: 'cloudimg-rootfs' })
    expect(graph.tables).toEqual(tree.tables.map((t) => ({ ...t, name: 'mbr' })))
    expect(fstabText(graph)).toBe('LABEL=cloudimg-rootfs / btrfs defaults 0 1\n')
  })

  it('takes the layout from DIB_BLOCK_DEVICE_CONFIG, file://, an element (arch file first), or the default', () => {
    const el = join(tmp, 'bd-el')
    execFileSync('mkdir', ['-p', el])
    writeFileSync(join(el, 'block-device-default.yaml'), 'default')
    writeFileSync(join(el, 'block-device-arm64.yaml'), 'arm')
    const elements = [
      { name: 'bd', dir: el, elementPath: tmp, deps: [], provides: [], reason: { kind: 'requested' as const } },
    ]
    expect(chooseConfigSource('- inline', elements, 'amd64')).toEqual({
      origin: 'DIB_BLOCK_DEVICE_CONFIG',
      yaml: '- inline',
    })
    expect(chooseConfigSource(`file://${join(el, 'block-device-arm64.yaml')}`, elements, 'amd64').yaml).toBe('arm')
    expect(chooseConfigSource(undefined, elements, 'arm64').yaml).toBe('arm')
    expect(chooseConfigSource(undefined, elements, 'amd64').yaml).toBe('default')
    expect(chooseConfigSource(undefined, [], 'amd64').origin).toBe('default')
    expect(() => chooseConfigSource('file:///nonexistent/x.yaml', [], 'amd64')).toThrow(
      /cannot read DIB_BLOCK_DEVICE_CONFIG file \/nonexistent\/x\.yaml: ENOENT/,
    )
  })
})

describe('block-device layout planning', () => {
  it('default: one file system on the whole disk, root values from the command line', () => {
    const l = plan(DEFAULT_CONFIG, { fsType: 'xfs', mkfsOptions: '-K' })
    expect(l.tables).toEqual([])
    expect(l.root).toMatchObject({
      name: 'mkfs_root',
      base: 'image0',
      type: 'xfs',
      label: 'img-rootfs',
      uuid: 'root-uuid',
      opts: ['-K'],
    })
    expect(plan(DEFAULT_CONFIG).root.opts).toEqual(['-i', '4096', '-J', 'size=64'])
    expect(plan(DEFAULT_CONFIG, { rootLabel: 'mine' }).root.label).toBe('mine')
    expect(planValues(plan(DEFAULT_CONFIG))).toEqual({
      'root-label': 'cloudimg-rootfs',
      'root-fstype': 'ext4',
      'mount-points': '/',
    })
    expect(createdValues(plan(DEFAULT_CONFIG), '/dev/sda', '/out/img.raw')).toMatchObject({
      'image-block-device': '/dev/sda',
      'image-block-devices': ' [image0]=/dev/sda ',
      'image-block-partition': '/dev/sda',
      'image-path': '/out/img.raw',
    })
  })

  it('mbr: one primary partition over the disk, aligned, the table sfdisk writes is the planned one', () => {
    const l = plan(MBR_ONE)
    const t = l.tables[0]!
    expect(t.partitions).toEqual([
      {
        name: 'root',
        number: 1,
        startSector: 2048,
        sizeSectors: (5 * GiB - 2 * MiB) / 512,
        type: '83',
        bootable: true,
        logical: false,
      },
    ])
    expect(createdValues(l, '/dev/sda', 'x')).toMatchObject({
      'image-block-device': '/dev/sda',
      'image-block-devices': ' [image0]=/dev/sda  [root]=/dev/sda1 ',
      'image-block-partition': '/dev/sda1',
    })
    expect(dumpMbr(l)).toEqual(['start=2048 size=10481664 type=83 bootable'])
  })

  it('mbr with logical partitions: an extended partition, each logical after its own EBR', () => {
    const l = plan(MBR_LOGICAL, { diskSize: GiB })
    const t = l.tables[0]!
    expect(t.partitions.map((p) => [p.name, p.number, p.logical])).toEqual([
      ['root', 1, false],
      ['var', 5, true],
      ['var_log', 6, true],
    ])
    const rootEnd = t.partitions[0]!.startSector + t.partitions[0]!.sizeSectors
    expect(t.extended).toEqual({
      number: 2,
      startSector: Math.ceil(rootEnd / 2048) * 2048,
      sizeSectors: GiB / 512 - t.extended!.startSector,
    })
    for (const p of t.partitions) expect(p.startSector % 2048).toBe(0)
    expect(t.partitions[1]!.startSector).toBe(t.extended!.startSector + 2048) // the EBR's MiB
    const dump = dumpMbr(l)
    expect(dump).toHaveLength(4)
    expect(dump[1]).toMatch(/^start=\d+ size=\d+ type=f$/)
    expect(dump.slice(2)).toEqual(
      t.partitions.slice(1).map((p) => `start=${p.startSector} size=${p.sizeSectors} type=83`),
    )
    expect(l.mounts.map((m) => m.mountPoint)).toEqual(['/', '/var', '/var/log'])
    expect(l.filesystems.find((f) => f.type === 'vfat')!.label).toBe('VARLOG')
    expect(fstabText(l).split('\n')[2]).toBe('LABEL=VARLOG /var/log vfat defaults 0 2')
  })

  it('gpt/efi: whole-MiB partitions one after the other, sgdisk gets the names', () => {
    const l = plan(GPT_EFI, { diskSize: GiB })
    const t = l.tables[0]!
    expect(t.partitions.map((p) => [p.name, p.number, p.type, (p.sizeSectors * 512) / MiB])).toEqual([
      ['ESP', 1, 'EF00', 16],
      ['BSP', 2, 'EF02', 8],
      ['Root-Part', 3, '8300', 1024 - 2 - 24],
    ])
    const img = join(tmp, 'gpt.img')
    writeFileSync(img, '')
    execFileSync('truncate', ['-s', String(GiB), img])
    execFileSync('bash', ['-c', partitionCommands(t, img).join('\n')])
    const dump = execFileSync('sfdisk', ['--dump', img], { encoding: 'utf8' })
    const lines = dump.split('\n').filter((x) => x.startsWith(img))
    expect(lines).toHaveLength(3)
    expect(lines[2]).toContain('name="Root-Part"')
    for (const [i, p] of t.partitions.entries()) {
      expect(lines[i]).toContain(`start=${' '.repeat(0)}`)
      expect(lines[i]!.replace(/\s+/g, ' ')).toContain(`start= ${p.startSector}, size= ${p.sizeSectors},`)
    }
    expect(l.configMountPoints).toEqual(['/boot/efi', '/'])
    expect(l.mounts.map((m) => m.mountPoint)).toEqual(['/', '/boot/efi'])
    expect(planValues(l)['mount-points']).toBe('/boot/efi|/')
  })

  it('lvm: physical volume on a partition, logical volumes mounted in order, device-mapper names', () => {
    const l = plan(LVM_TREE)
    expect(l.mounts.map((m) => m.mountPoint)).toEqual(['/', '/var', '/var/log', '/var/log/audit'])
    expect(l.root).toMatchObject({ name: 'fs_root', type: 'xfs', label: 'img-rootfs' })
    const d = blockDevices(l, '/dev/sda')
    expect(Object.fromEntries(d)).toEqual({
      image0: '/dev/sda',
      root: '/dev/sda1',
      lv_root: '/dev/mapper/vg-lv_root',
      lv_var: '/dev/mapper/vg-lv_var',
      lv_log: '/dev/mapper/vg-lv_log',
      lv_audit: '/dev/mapper/vg-lv_audit',
    })
    expect(l.order.indexOf('lvm')).toBeLessThan(l.order.indexOf('pv'))
    expect(l.order.indexOf('root')).toBeLessThan(l.order.indexOf('lvm'))
    const s = layoutScript(l, { disk: '/dev/sda', source: '/sysroot', target: '/t' })
    expect(s).toContain(`'pvcreate' '--yes' '/dev/sda1' '--force'`)
    expect(s).toContain(`'vgcreate' 'vg' '/dev/sda1' '--force'`)
    expect(s).toContain(`'lvcreate' '--yes' '--name' 'lv_root' '-L' '1500M' 'vg'`)
    expect(s.indexOf(`mount '/dev/mapper/vg-lv_var' '/t/var'`)).toBeLessThan(
      s.indexOf(`mount '/dev/mapper/vg-lv_log' '/t/var/log'`),
    )
    expect(execFileSync('bash', ['-n'], { input: s }).toString()).toBe('')
  })

  it('builds in place only on one POSIX file system at /; else apart and copied on', () => {
    expect(canBuildInPlace(plan(DEFAULT_CONFIG))).toBe(true)
    expect(canBuildInPlace(plan(DEFAULT_CONFIG, { fsType: 'xfs' }))).toBe(true)
    expect(canBuildInPlace(plan(MBR_ONE))).toBe(true)
    expect(canBuildInPlace(plan(DEFAULT_CONFIG, { fsType: 'vfat', rootLabel: 'ROOT' }))).toBe(false)
    expect(canBuildInPlace(plan(LVM_TREE))).toBe(false)
    expect(canBuildInPlace(plan(MBR_LOGICAL))).toBe(false)
    // In place: the layout is only created (nothing mounted, nothing copied); fstab comes later.
    const l = plan(MBR_ONE)
    const create = createLayoutScript(l, '/dev/sda')
    expect(create).toContain(`'mkfs' '-t' 'ext4'`)
    expect(create).not.toMatch(/\bmount\b|tar |fstab/)
    expect(execFileSync('bash', ['-n'], { input: create }).toString()).toBe('')
    const fstab = fstabScript(l, '/sysroot')!
    expect(fstab).toContain(`> '/sysroot/etc/fstab'`)
    expect(execFileSync('bash', ['-n'], { input: fstab }).toString()).toBe('')
    expect(fstabScript(plan(DEFAULT_CONFIG), '/r')).toContain('LABEL=cloudimg-rootfs / ext4 defaults 0 1')
  })

  it('escapes blanks in fstab fields', () => {
    const l = plan(MBR_ONE.replace('mkfs:', 'mkfs:\n          label: "my root"'))
    expect(fstabText(l)).toBe('LABEL=my\\040root / ext4 defaults 0 1\n')
  })

  it('sorts mount points parents first', () => {
    const m = (p: string) => ({ mountPoint: p })
    expect(sortMounts([m('/var/log'), m('/boot/efi'), m('/'), m('/var'), m('/boot')]).map((x) => x.mountPoint)).toEqual(
      ['/', '/boot', '/var', '/boot/efi', '/var/log'],
    )
  })

  it('builds mkfs commands with label, UUID and options, quoted word by word', () => {
    const fs = { name: 'x', base: 'b', type: 'ext4', label: "it's", opts: ['-O', '$(reboot)'], uuid: 'u' }
    expect(mkfsArgv(fs, '/dev/sda1')).toEqual([
      'mkfs',
      '-t',
      'ext4',
      '-F',
      '-O',
      '$(reboot)',
      '-L',
      "it's",
      '-U',
      'u',
      '-q',
      '/dev/sda1',
    ])
    expect(mkfsArgv({ ...fs, type: 'xfs', opts: [] }, '/d')).toEqual([
      'mkfs',
      '-t',
      'xfs',
      '-f',
      '-L',
      "it's",
      '-m',
      'uuid=u',
      '-q',
      '/d',
    ])
    expect(mkfsArgv({ ...fs, type: 'vfat', label: 'EFI', opts: [] }, '/d')).toEqual([
      'mkfs',
      '-t',
      'vfat',
      '-n',
      'EFI',
      '/d',
    ])
  })

  it('refuses node names a shell would read as code; keeps labels and mount points as data', () => {
    const evil = `a'b $(touch ${join(tmp, 'PWNED')})`
    // IMAGE_BLOCK_DEVICES is `eval`ed by the bootloader element: node names must be plain words.
    expect(() => plan(GPT_EFI.replace('BSP', evil), { diskSize: GiB })).toThrow(
      /block-device config \(test\): node name ‘a'b \$\(touch .*PWNED\)’ is not a plain name/,
    )
    for (const name of ['Root Part', '-x', '.x', '+x', 'a/b', 'a]=x', 'é']) {
      expect(() => plan(GPT_EFI.replace('Root-Part', name), { diskSize: GiB }), name).toThrow(/is not a plain name/)
    }
    const l = plan(
      GPT_EFI.replace('type: vfat', 'type: vfat\n          label: "a\'$(id)"').replace(
        'mount_point: /boot/efi',
        'mount_point: "/boot/a\'$(id)"',
      ),
      { diskSize: GiB },
    )
    expect(l.filesystems[0]!.label).toBe("A'$(ID)")
    const script = layoutScript(l, { disk: '/dev/sda', source: '/s', target: '/t' })
    expect(execFileSync('bash', ['-n'], { input: script }).toString()).toBe('')
    expect(script).toContain(`'-n' 'A'\\''$(ID)'`)
  })
})

describe('block-device layout errors (before anything is launched)', () => {
  const bad = (yaml: string, re: RegExp, o: Partial<RootParams> = {}) => {
    expect(() => plan(yaml, o)).toThrow(BlockDeviceConfigError)
    expect(() => plan(yaml, o)).toThrow(re)
  }
  it('rejects what diskimage-builder rejects, naming the problem', () => {
    bad('- local_loop:\n    name: image0\n- frobnicate:\n    name: x', /unknown block-device plugin ‘frobnicate’/)
    bad('- local_loop:\n    name: image0\n  mkfs:\n    name: y', /exactly one plugin key, not local_loop, mkfs/)
    bad(
      `${DEFAULT_CONFIG}- mkfs:\n    name: mkfs_root\n    base: image0\n    type: ext4\n`,
      /duplicate node name ‘mkfs_root’/,
    )
    bad(
      DEFAULT_CONFIG.replace('name: mkfs_root', 'name: mkfs_root\n      base: nothere'),
      /‘mkfs_root’ refers to ‘nothere’, which is not defined/,
    )
    bad(
      MBR_ONE.replace('mkfs:', 'mkfs:\n          label: much-too-long-a-label'),
      /label ‘much-too-long-a-label’ too long for file system ext4: 21 > 16/,
    )
    bad(
      MBR_LOGICAL.replace('type: ext4', 'type: ext4\n          label: img-rootfs'),
      /label ‘img-rootfs’ used by both ‘mkfs_root’ and ‘mkfs_var’/,
    )
    bad(MBR_ONE.replace('100%', '6G'), /partition ‘root’ \(6G\) does not fit/)
    bad(GPT_EFI.replace('size: 16MiB', 'size: 2GiB'), /partition ‘ESP’ \(2GiB\) does not fit/, { diskSize: GiB })
    bad(
      MBR_LOGICAL.replace('flags: [ boot, primary ]', 'flags: [ boot ]').replace(
        'size: 5%',
        'size: 5%\n        flags: [ primary ]',
      ),
      /all primary partitions must come first/,
    )
    bad(
      GPT_EFI.replace("type: 'EF02'", "type: 'EF02'\n        flags: [ primary ]"),
      /primary flag not supported for GPT/,
    )
    bad(MBR_ONE.replace('mount_point: /', 'mount_point: /srv'), /nothing is mounted at \//)
    bad(`${DEFAULT_CONFIG}- local_loop:\n    name: image1\n`, /2 local_loop disks/)
    bad(LVM_TREE.replace('size: 500M', 'size: 5000M'), /logical volumes of ‘vg’ need \d+ bytes but the group has \d+/)
    bad(LVM_TREE.replace('base: ["pv"]', 'base: ["pv0"]'), /base ‘pv0’ of vgs ‘vg’ does not match a valid pvs/)
    bad(
      DEFAULT_CONFIG.replace('name: mkfs_root', 'name: mkfs_root\n      type: ntfs'),
      /unsupported file system type ‘ntfs’/,
    )
    bad(
      GRAPH.replace('base: mkfs_root', 'base: root'),
      /‘mount_mkfs_root’ cannot be based on ‘root’ \(a partition\); it needs a mkfs/,
    )
    bad(
      MBR_ONE.replace('mount_point: /', 'mount_point: /../../etc'),
      /mount point ‘\/\.\.\/\.\.\/etc’ .* must be an absolute, normalised path/,
    )
    bad(MBR_ONE.replace('mount_point: /', 'mount_point: "/my dir"'), /without blanks/)
    bad(LVM_TREE.replace('name: lv_var', 'name: "lv var"'), /logical volume name ‘lv var’ is not a valid LVM name/)
    bad(LVM_TREE.replace('name: vg,', 'name: "-vg",').replace('base: vg,', 'base: "-vg",'), /volume group name ‘-vg’/)
    bad('key: value', /must be a list of plugin entries/)
    bad('- [unclosed', /is not valid YAML/)
  })

  // Values of the wrong YAML type were turned into text: a size map became `[object Object]`,
  // `type: [1]` became "1" (an MBR type byte), `uuid: {a: b}` a UUID.
  it('refuses a value of the wrong type for every scalar and list field, naming field and node', () => {
    const loop = '- local_loop: {name: image0}'
    const fs = '- mkfs: {name: r, base: image0, type: ext4}\n- mount: {name: m, base: r, mount_point: /}'
    const part = (p: string, label = 'mbr') =>
      `${loop}\n- partitioning: {base: image0, label: ${label}, partitions: [{name: root, ${p}, mkfs: {type: ext4, mount: {mount_point: /}}}]}`
    const mkfs = (f: string) =>
      `${loop}\n- mkfs: {name: r, base: image0, type: ext4, ${f}}\n- mount: {name: m, base: r, mount_point: /}`
    const lvm = (pv: string, vg: string, lv: string) =>
      `${loop}\n- lvm: {name: lvm, pvs: [{name: pv, base: image0${pv}}], vgs: [{name: vg, base: ${vg}}], lvs: [{name: lv, base: vg, size: 100M${lv}}]}\n- mkfs: {name: r, base: lv, type: ext4}\n- mount: {name: m, base: r, mount_point: /}`
    const cases: [string, RegExp][] = [
      [
        part('size: {a: b}'),
        /^block-device config \(test\): size of partition ‘root’ must be a string or a number, not a mapping$/,
      ],
      [part('size: [1]'), /size of partition ‘root’ must be a string or a number, not a list/],
      [part('size: true'), /size of partition ‘root’ must be a string or a number, not a boolean/],
      [part('size: 1G, type: [1]'), /type of partition ‘root’ must be a string or a number, not a list/],
      [part('size: 1G, type: {a: b}', 'gpt'), /type of partition ‘root’ must be a string or a number, not a mapping/],
      [part('size: 1G, flags: [{boot: 1}]'), /flags of partition ‘root’ must be a list of words, not of a mapping/],
      [
        `${loop}\n- partitioning: {base: image0, label: mbr, partitions: [{name: {a: b}, size: 1G, mkfs: {type: ext4, mount: {mount_point: /}}}]}`,
        /name of a partition must be a string, not a mapping/,
      ],
      [
        `${loop}\n- partitioning: {base: image0, label: mbr, align: [1], partitions: [{name: r, size: 1G}]}`,
        /align of partitioning ‘partitioning_image0’ must be a string or a number, not a list/,
      ],
      [
        `${loop.replace('}', ', size: {a: b}}')}\n${fs}`,
        /size of local_loop ‘image0’ must be a string or a number, not a mapping/,
      ],
      [mkfs('uuid: {a: b}'), /uuid of mkfs ‘r’ must be a string or a number, not a mapping/],
      [mkfs('label: [x]'), /label of mkfs ‘r’ must be a string or a number, not a list/],
      [mkfs('opts: [-m, 0]'), /opts of mkfs ‘r’ must be a string or a number, not a list/],
      [
        `${loop}\n- mkfs: {name: r, base: image0, type: [1]}\n- mount: {name: m, base: r, mount_point: /}`,
        /type of mkfs ‘r’ must be a string or a number, not a list/,
      ],
      [
        `${loop}\n- mkfs: {name: r, base: image0, type: ext4}\n- mount: {name: m, base: r, mount_point: [/]}`,
        /mount_point of mount ‘m’ must be a string or a number, not a list/,
      ],
      [
        `${loop}\n${fs}\n- fstab: {name: f, base: m, options: {a: b}}`,
        /options of fstab ‘f’ must be a string or a number, not a mapping/,
      ],
      [
        `${loop}\n${fs}\n- fstab: {name: f, base: m, fsck-passno: [1]}`,
        /fsck-passno of ‘f’ must be a non-negative integer/,
      ],
      [
        `${loop}\n${fs}\n- fstab: {name: f, base: m, dump-freq: true}`,
        /dump-freq of ‘f’ must be a non-negative integer/,
      ],
      [`${loop}\n- mkfs: {base: {a: b}, type: ext4}`, /base of a ‘mkfs’ entry must be a string, not a mapping/],
      [`- local_loop: {name: [image0]}`, /name of a ‘local_loop’ entry must be a string, not a list/],
      [lvm(', options: [{a: b}]', '[pv]', ''), /options of pvs ‘pv’ must be a list of words, not of a mapping/],
      [lvm('', '[[pv]]', ''), /base of vgs ‘vg’ must be a list of pvs names, not of a list/],
      [lvm('', '[pv]', ', extents: {a: b}'), /extents of lvs ‘lv’ must be a string or a number, not a mapping/],
      [lvm('', '[pv]', ', thin-pool: [x]'), /thin-pool of lvs ‘lv’ must be a string or a number, not a list/],
    ]
    for (const [yaml, re] of cases) {
      expect(() => plan(yaml), yaml).toThrow(BlockDeviceConfigError)
      expect(() => plan(yaml), yaml).toThrow(re)
    }
  })

  it('still takes YAML numbers where text is written (size: 1024, type: 83, label: 2024)', () => {
    const l = plan(
      '- local_loop: {name: image0}\n- partitioning: {base: image0, label: mbr, align: 1048576, partitions: [{name: root, size: 1073741824, type: 83, mkfs: {type: ext4, label: 2024, mount: {mount_point: /, fstab: {fsck-passno: "1", dump-freq: 0}}}}]}',
    )
    expect(l.tables[0]!.partitions[0]).toMatchObject({ type: '83', sizeSectors: 1073741824 / 512 })
    expect(l.root.label).toBe('2024')
    expect(l.fstab[0]).toMatchObject({ fsckPassno: 1, dumpFreq: 0 })
  })
})

/** The partition table the generated commands write, as sfdisk reads it back. */
function dumpMbr(l: ReturnType<typeof plan>): string[] {
  const img = join(tmp, `mbr-${Math.random().toString(36).slice(2)}.img`)
  writeFileSync(img, '')
  execFileSync('truncate', ['-s', String(l.diskSize), img])
  execFileSync('bash', ['-c', partitionCommands(l.tables[0]!, img).join('\n')])
  return execFileSync('sfdisk', ['--dump', img], { encoding: 'utf8' })
    .split('\n')
    .filter((x) => x.startsWith(img))
    .map((x) =>
      x
        .slice(x.indexOf(':') + 1)
        .replace(/\s+/g, '')
        .replace(/,/g, ' ')
        .replace(/=/g, '='),
    )
    .map((x) => x.replace(/start=/, 'start=').trim())
}

describe('mount points with glob characters', () => {
  const GLOBBY = `
- local_loop: { name: image0 }
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: data
        size: 64MiB
        mkfs: { type: vfat, label: data, mount: { mount_point: "/srv/a[1]*", fstab: { options: defaults } } }
      - name: root
        size: 100%
        mkfs: { name: mkfs_root, mount: { mount_point: / } }
`
  it('escapes *, ?, [ and \\ for find -path', () => {
    expect(globEscape('./srv/a[1]*?\\x')).toBe('./srv/a\\[1\\]\\*\\?\\\\x')
  })

  it('copies the tree literally: a sibling the pattern would match is copied and counted (run on the host)', () => {
    const l = plan(GLOBBY, { diskSize: GiB })
    const src = join(tmp, 'glob-src')
    const dst = join(tmp, 'glob-dst')
    // The tree: the FAT mount's content, a sibling that `a[1]*` would match as a pattern, and a
    // directory named lost+found that is not a file system's own.
    for (const d of ['etc', 'srv/a[1]*', 'srv/a1x/lost+found']) mkdirSync(join(src, d), { recursive: true })
    writeFileSync(join(src, 'etc/hostname'), 'h\n')
    writeFileSync(join(src, 'srv/a[1]*/inside'), 'fat\n')
    writeFileSync(join(src, 'srv/a1x/must-copy'), 'x\n')
    writeFileSync(join(src, 'srv/a1x/lost+found/keep'), 'k\n')
    // The layout as mounted: the FAT file system at its mount point, with a lost+found of its own.
    mkdirSync(join(dst, 'srv/a[1]*/lost+found'), { recursive: true })
    const script = [
      'set -euo pipefail',
      'step() { :; }',
      ...copyTreeCommands(l, src, dst),
      COPY_CHECK,
      'echo "$src $dst"',
    ].join('\n')
    const out = execFileSync('bash', ['-c', script], { encoding: 'utf8' }).trim()
    expect(readdirSync(join(dst, 'srv/a1x')).sort()).toEqual(['lost+found', 'must-copy'])
    expect(existsSync(join(dst, 'srv/a1x/lost+found/keep'))).toBe(true)
    expect(existsSync(join(dst, 'srv/a[1]*/inside'))).toBe(true)
    const [s, d] = out.split(' ').map(Number)
    // Counted: everything copied plus the fstab written; only the FAT file system's own lost+found
    // is left out (a pattern would also have left out srv/a1x/lost+found).
    expect(d).toBe(s! + 1)
    expect(existsSync(join(dst, 'etc/fstab'))).toBe(true)
    expect(copyTreeCommands(l, src, dst).join('\n')).toContain(`'--no-wildcards' '--exclude=./srv/a[1]*'`)
  })
})
