// The bash script that carries out a planned layout inside the appliance in one round trip:
// partition tables, LVM, file systems, then the built tree copied onto them with every mount
// point in place and fstab written. Every value is quoted: names and labels stay data.
import { shellQuote as q } from '../util/shell-quote.js'
import { blockDevices, filesystemDevice } from './devices.js'
import type { BlockDeviceLayout, FilesystemPlan, PartitionTablePlan } from './layout.js'

export interface LayoutScriptOptions {
  /** The output disk in the appliance (/dev/sda). */
  disk: string
  /** The built tree, copied onto the layout. */
  source: string
  /** Where the layout is mounted while the tree is copied. */
  target: string
}

const MiB = 1024 ** 2

function sfdiskInput(t: PartitionTablePlan): string {
  const lines = ['label: dos']
  const byNumber = [...t.partitions.filter((p) => !p.logical)]
  for (const p of byNumber) {
    lines.push(`start=${p.startSector}, size=${p.sizeSectors}, type=${p.type}${p.bootable ? ', bootable' : ''}`)
  }
  if (t.extended) lines.push(`start=${t.extended.startSector}, size=${t.extended.sizeSectors}, type=f`)
  for (const p of t.partitions.filter((x) => x.logical)) {
    lines.push(`start=${p.startSector}, size=${p.sizeSectors}, type=${p.type}${p.bootable ? ', bootable' : ''}`)
  }
  return lines.join('\n')
}

export function partitionCommands(t: PartitionTablePlan, disk: string): string[] {
  if (t.label === 'mbr') {
    return [
      `sfdisk --quiet --wipe always --no-reread --no-tell-kernel ${q(disk)} <<'VDIB_SFDISK'\n${sfdiskInput(t)}\nVDIB_SFDISK`,
    ]
  }
  // As diskimage-builder: sizes in whole MiB, each partition right after the previous one.
  const args = t.partitions.flatMap((p) => [
    '-n',
    `${p.number}:0:+${(p.sizeSectors * 512) / MiB}M`,
    '-t',
    `${p.number}:${p.type}`,
    '-c',
    `${p.number}:${p.name}`,
  ])
  return [['sgdisk', '--clear', ...args, disk].map(q).join(' ') + ' >/dev/null']
}

/** mkfs with diskimage-builder's arguments (options, label, UUID, quiet), forced on a fresh device. */
export function mkfsArgv(fs: FilesystemPlan, device: string): string[] {
  const vfat = fs.type === 'vfat' || fs.type === 'fat'
  const ext = /^ext[234]$/.test(fs.type)
  const force = ext ? ['-F'] : fs.type === 'xfs' || fs.type === 'btrfs' ? ['-f'] : []
  const label = vfat ? ['-n', fs.label] : ['-L', fs.label]
  // vfat takes a 32-bit volume id, not a UUID: diskimage-builder writes none either.
  const uuid = ext || fs.type === 'btrfs' ? ['-U', fs.uuid] : fs.type === 'xfs' ? ['-m', `uuid=${fs.uuid}`] : []
  const quiet = ext || fs.type === 'xfs' ? ['-q'] : []
  return ['mkfs', '-t', fs.type, ...force, ...fs.opts, ...label, ...uuid, ...quiet, device]
}

/** fstab fields are blank-separated: blanks and backslashes inside one are octal escapes. */
function fstabField(v: string | number): string {
  return String(v).replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`)
}

export function fstabText(layout: BlockDeviceLayout): string {
  const lines: string[] = []
  for (const m of layout.mounts) {
    const e = layout.fstab.find((f) => f.base === m.name)
    if (!e) continue
    const fs = layout.filesystems.find((f) => f.name === m.base)!
    lines.push(
      [`LABEL=${fs.label}`, m.mountPoint, fs.type, e.options, e.dumpFreq, e.fsckPassno].map(fstabField).join(' '),
    )
  }
  return lines.length > 0 ? lines.join('\n') + '\n' : ''
}

const isVfat = (t: string) => t === 'vfat' || t === 'fat'

/** A literal path as a find -path pattern: *, ?, [ and \ lose their meaning. */
export function globEscape(path: string): string {
  return path.replace(/[*?[\]\\]/g, (c) => `\\${c}`)
}

const SCRIPT_HEAD = [
  'set -euo pipefail',
  'exec </dev/null',
  'settle() { udevadm settle --timeout=120 || true; }',
  // udev may lag behind the kernel under emulation; a missing node is an error, not a race.
  'wait_dev() { local i; for i in $(seq 1 300); do [ -b "$1" ] && return 0; sleep 0.1; done; echo "virt-dib: block device $1 did not appear" >&2; exit 1; }',
  'step() { echo "virt-dib: $*" >&2; }',
]

/** Partition tables, LVM and file systems: the layout created, nothing mounted. */
function createCommands(layout: BlockDeviceLayout, disk: string): string[] {
  const devices = blockDevices(layout, disk)
  const dev = (name: string) => devices.get(name)!
  const s: string[] = []
  for (const t of layout.tables) {
    s.push(`step ${q(`partitioning ${t.base} (${t.label})`)}`)
    s.push(...partitionCommands(t, dev(t.base)))
    s.push(`partx --update ${q(dev(t.base))} 2>/dev/null || blockdev --rereadpt ${q(dev(t.base))}`, 'settle')
    for (const p of t.partitions) s.push(`wait_dev ${q(dev(p.name))}`)
  }
  for (const l of layout.lvm) {
    s.push(`step ${q(`LVM ${l.name}`)}`)
    for (const pv of l.pvs) s.push(['pvcreate', '--yes', dev(pv.base), ...pv.options].map(q).join(' ') + ' >/dev/null')
    for (const vg of l.vgs) {
      const pvDevs = vg.base.map((b) => dev(l.pvs.find((p) => p.name === b)!.base))
      s.push(['vgcreate', vg.name, ...pvDevs, ...vg.options].map(q).join(' ') + ' >/dev/null')
    }
    for (const lv of l.lvs) {
      const size = lv.size !== undefined ? ['-L', lv.size] : ['-l', lv.extents!]
      const how =
        lv.kind === 'thin-pool'
          ? ['--type', 'thin-pool', ...size]
          : lv.kind === 'thin'
            ? ['--type', 'thin', '--virtualsize', lv.size!, '--thinpool', lv.pool!]
            : size
      s.push(['lvcreate', '--yes', '--name', lv.name, ...how, ...lv.options, lv.base].map(q).join(' ') + ' >/dev/null')
    }
    s.push('settle')
    // Thin pools have no block device of their own to wait for.
    for (const lv of l.lvs) if (devices.has(lv.name)) s.push(`wait_dev ${q(dev(lv.name))}`)
  }
  for (const fs of layout.filesystems) {
    s.push(`step ${q(`mkfs ${fs.type} on ${dev(fs.base)} (${fs.label})`)}`)
    s.push(mkfsArgv(fs, dev(fs.base)).map(q).join(' ') + ' >/dev/null')
  }
  s.push('settle')
  return s
}

/** Writes the layout's fstab into the tree at `root` (nothing when no mount asks for an entry). */
function fstabCommands(layout: BlockDeviceLayout, root: string): string[] {
  const fstab = fstabText(layout)
  if (fstab === '') return []
  return [`mkdir -p ${q(`${root}/etc`)}`, `printf '%s' ${q(fstab)} > ${q(`${root}/etc/fstab`)}`]
}

/** Only creates the layout on `disk` (the tree will be built straight onto it). */
export function createLayoutScript(layout: BlockDeviceLayout, disk: string): string {
  return [...SCRIPT_HEAD, ...createCommands(layout, disk)].join('\n')
}

/** The fstab of a layout the tree was built on (nothing to copy). */
export function fstabScript(layout: BlockDeviceLayout, root: string): string | undefined {
  const c = fstabCommands(layout, root)
  return c.length > 0 ? ['set -eu', ...c].join('\n') : undefined
}

/**
 * True when the tree can be built straight onto the layout: one file system, mounted at /, that
 * keeps owners, modes and links. Anything else is built apart and copied on, as diskimage-builder
 * does, so each subtree lands on its own file system.
 */
export function canBuildInPlace(layout: BlockDeviceLayout): boolean {
  if (layout.mounts.length !== 1 || layout.mounts[0]!.mountPoint !== '/') return false
  const fs = layout.filesystems.find((f) => f.name === layout.mounts[0]!.base)
  return fs !== undefined && /^(ext[234]|xfs|btrfs)$/.test(fs.type)
}

/** Creates the layout, then copies the built tree at `source` onto it and writes fstab. */
export function layoutScript(layout: BlockDeviceLayout, o: LayoutScriptOptions): string {
  const s: string[] = [...SCRIPT_HEAD, ...createCommands(layout, o.disk)]

  // Mount the layout at the target, parents first, then copy the tree onto it.
  const t = o.target
  const mounted: string[] = []
  for (const m of layout.mounts) {
    const at = m.mountPoint === '/' ? t : `${t}${m.mountPoint}`
    s.push(`mkdir -p ${q(at)}`, `mount ${q(filesystemDevice(layout, o.disk, m.base))} ${q(at)}`)
    mounted.push(at)
  }
  s.push(
    ...copyTreeCommands(layout, o.source, t),
    'sync',
    ...[...mounted].reverse().map((m) => `umount ${q(m)}`),
    COPY_CHECK,
  )
  return s.join('\n')
}

/** Fails the script when fewer entries arrived than were copied (after copyTreeCommands). */
export const COPY_CHECK = `[ "$src" -le "$dst" ] || { echo "virt-dib: copied $dst of $src entries onto the image" >&2; exit 1; }`

/**
 * Copies the tree at `source` onto the layout mounted at `target` and writes fstab; leaves the
 * entry counts of both sides in $src and $dst. FAT mounts are copied apart (no owners or links).
 */
export function copyTreeCommands(layout: BlockDeviceLayout, source: string, target: string): string[] {
  const fsOf = (name: string) => layout.filesystems.find((f) => f.name === name)!
  const t = target
  const s: string[] = []
  const vfatMounts = layout.mounts.filter((m) => m.mountPoint !== '/' && isVfat(fsOf(m.base).type))
  // Mount points are names, not patterns: tar takes them literally after --no-wildcards.
  const excludes = ['--no-wildcards', ...vfatMounts.map((m) => `--exclude=.${m.mountPoint}`)].map(q).join(' ')
  s.push(
    `step ${q('copying the tree')}`,
    `cd ${q(source)}`,
    `tar --one-file-system --xattrs --xattrs-include='*' --acls --numeric-owner --sparse --exclude=./lost+found ${excludes} -cf - . | tar -C ${q(t)} --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -`,
  )
  // FAT keeps no owners, modes or links: copy those trees without them (as cp -r would).
  for (const m of vfatMounts) {
    s.push(
      `if [ -d ${q(`.${m.mountPoint}`)} ]; then cp -rT --preserve=timestamps ${q(`.${m.mountPoint}`)} ${q(`${t}${m.mountPoint}`)}; fi`,
    )
  }
  s.push(...fstabCommands(layout, t))
  // A silent partial copy must fail the build: count what arrived (each file system's own
  // lost+found aside).
  const prune = layout.mounts
    .map(
      (m) =>
        `-path ${q(m.mountPoint === '/' ? './lost+found' : `${globEscape(`.${m.mountPoint}`)}/lost+found`)} -prune`,
    )
    .join(' -o ')
  s.push(
    `src=$(find . -xdev -path ./lost+found -prune -o -print | wc -l)`,
    `dst=$(cd ${q(t)} && find . \\( ${prune} \\) -o -print | wc -l)`,
  )
  return s
}

/** Activates the image's volume groups again (a disk restored from the step cache), or undefined without LVM. */
export function activateScript(layout: BlockDeviceLayout): string | undefined {
  const vgs = layout.lvm.flatMap((l) => l.vgs.map((v) => v.name))
  if (vgs.length === 0) return undefined
  return `vgscan --mknodes >/dev/null 2>&1; vgchange -ay ${vgs.map(q).join(' ')} >/dev/null && (udevadm settle || true)`
}

/** Deactivates the image's volume groups so the disk is left consistent for its users. */
export function deactivateScript(layout: BlockDeviceLayout): string | undefined {
  const vgs = layout.lvm.flatMap((l) => l.vgs.map((v) => v.name))
  if (vgs.length === 0) return undefined
  return `vgchange -an ${vgs.map(q).join(' ')} >/dev/null && (udevadm settle || true)`
}
