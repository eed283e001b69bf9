// Plans a block-device layout from graph notation: every node checked and typed, the order of
// creation, partition geometry computed for the disk of --size, mount order, fstab. Pure: the
// appliance only carries the plan out (src/blockdev/script.ts), so every error is raised here,
// before anything is launched.
import { createHash } from 'node:crypto'

import { BlockDeviceConfigError } from '../errors.js'
import { type Fields, type GraphEntry, isRecord, kindOf } from './config.js'
import { checkFsFits } from './fs-min.js'
import { splitShellWords } from './shell-words.js'
import { parseAbsSize, parseRelSize } from './size.js'

const SECTOR = 512
const MiB = 1024 ** 2

export interface PartitionPlan {
  name: string
  /** Partition number as the kernel names it: 1–4 primary, 5… logical. */
  number: number
  startSector: number
  sizeSectors: number
  /** MBR: hex byte ("83"); GPT: sgdisk type code or GUID ("8300", "EF00"). */
  type: string
  bootable: boolean
  logical: boolean
}

export interface PartitionTablePlan {
  name: string
  base: string
  label: 'mbr' | 'gpt'
  alignBytes: number
  partitions: PartitionPlan[]
  /** MBR with logical partitions: the extended partition holding them. */
  extended?: { number: number; startSector: number; sizeSectors: number }
}

export interface LvmPlan {
  name: string
  pvs: { name: string; base: string; options: string[] }[]
  vgs: { name: string; base: string[]; options: string[] }[]
  lvs: LvPlan[]
}

/**
 * A logical volume. `thin-pool` and `thin` are our extension (diskimage-builder can only pass
 * lvcreate options): `type: thin-pool` makes a pool, `thin-pool: NAME` a thin volume in it whose
 * size is virtual.
 */
export interface LvPlan {
  name: string
  base: string
  kind: 'plain' | 'thin-pool' | 'thin'
  pool?: string
  size?: string
  extents?: string
  options: string[]
}

export interface FilesystemPlan {
  name: string
  base: string
  type: string
  label: string
  opts: string[]
  uuid: string
}

export interface MountPlan {
  name: string
  /** The mkfs node mounted here. */
  base: string
  mountPoint: string
}

export interface FstabPlan {
  name: string
  /** The mount node this entry is for. */
  base: string
  options: string
  dumpFreq: number
  fsckPassno: number
}

export interface BlockDeviceLayout {
  origin: string
  /** The local_loop node: the output disk. */
  image: string
  diskSize: number
  tables: PartitionTablePlan[]
  lvm: LvmPlan[]
  filesystems: FilesystemPlan[]
  /** In mount order: parents before children. */
  mounts: MountPlan[]
  fstab: FstabPlan[]
  /** Mount points in configuration order, as `getval mount-points` prints them. */
  configMountPoints: string[]
  /** Node names in creation order (a topological order of the graph). */
  order: string[]
  root: FilesystemPlan
  warnings: string[]
}

/** Values from the command line that diskimage-builder merges into the node named mkfs_root. */
export interface RootParams {
  diskSize: number
  fsType: string
  /** --root-label; undefined = diskimage-builder's default for the file system type. */
  rootLabel: string | undefined
  mkfsOptions: string | undefined
  rootFsUuid: string
}

/** Longest label each file system takes (mkfs refuses longer ones, or truncates them). */
export const MAX_LABEL: Record<string, number> = {
  ext2: 16,
  ext3: 16,
  ext4: 16,
  xfs: 12,
  vfat: 11,
  fat: 11,
  btrfs: 255,
}
/** Node names: a plain word (LVM's characters), so that no shell reading them sees code. */
const NODE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/
export const FS_TYPES = ['ext2', 'ext3', 'ext4', 'xfs', 'vfat', 'fat', 'btrfs'] as const

export function defaultRootLabel(fsType: string): string {
  return fsType === 'xfs' ? 'img-rootfs' : 'cloudimg-rootfs'
}

/**
 * `checkFit: false` for a layout whose device is not the --size disk (the one a block-device.d
 * script names): its size is unknown until then.
 */
export function planLayout(
  entries: readonly GraphEntry[],
  origin: string,
  params: RootParams,
  { checkFit = true }: { checkFit?: boolean } = {},
): BlockDeviceLayout {
  const err = (m: string) => new BlockDeviceConfigError(`block-device config (${origin}): ${m}`)
  const warnings: string[] = []
  const loops: { name: string; fields: Fields }[] = []
  const tables: PartitionTablePlan[] = []
  const lvm: LvmPlan[] = []
  const filesystems: FilesystemPlan[] = []
  const mountsInConfig: MountPlan[] = []
  const fstab: FstabPlan[] = []
  const sizesOf = new Map<PartitionTablePlan, string[]>()
  /** node name → names it depends on */
  const edges = new Map<string, string[]>()
  const kind = new Map<string, string>()
  const addNode = (name: string, what: string, from: string[]) => {
    // Names become keys of IMAGE_BLOCK_DEVICES, which the bootloader element `eval`s into an
    // array: diskimage-builder has no rule, ours keeps them plain words (LVM's characters).
    if (!NODE_NAME.test(name)) {
      throw err(`node name ‘${name}’ is not a plain name (letters, digits and _ . + -, not starting with . + -)`)
    }
    if (kind.has(name)) throw err(`duplicate node name ‘${name}’`)
    kind.set(name, what)
    edges.set(name, from)
  }

  for (const { plugin, fields } of entries) {
    const name = str(fields, 'name', plugin, err)
    switch (plugin) {
      case 'local_loop': {
        loops.push({ name, fields })
        addNode(name, 'local_loop', [])
        break
      }
      case 'partitioning': {
        const { table: t, sizes } = partitioningNode(name, fields, err)
        tables.push(t)
        sizesOf.set(t, sizes)
        // The partitioning entry itself is not a node; its partitions are, chained in order.
        let prev: string | undefined
        for (const p of t.partitions) {
          addNode(p.name, 'partition', prev ? [t.base, prev] : [t.base])
          prev = p.name
        }
        break
      }
      case 'lvm': {
        const l = lvmNode(name, fields, err)
        lvm.push(l)
        addNode(name, 'lvm', [...new Set(l.pvs.map((p) => p.base))])
        for (const pv of l.pvs) addNode(pv.name, 'pv', [name])
        for (const vg of l.vgs) addNode(vg.name, 'vg', vg.base)
        for (const lv of l.lvs)
          addNode(lv.name, lv.kind === 'thin-pool' ? 'thin-pool' : 'lv', lv.pool ? [lv.base, lv.pool] : [lv.base])
        break
      }
      case 'mkfs': {
        const f = mkfsNode(name, fields, params, err)
        filesystems.push(f)
        addNode(name, 'mkfs', [f.base])
        break
      }
      case 'mount': {
        const mp = str(fields, 'mount_point', `mount ‘${name}’`, err)
        // Mounted under the copy target in the appliance: no way out of it, nothing fstab cannot say.
        if (!/^\/([^/\s]+(\/[^/\s]+)*)?$/.test(mp) || mp.split('/').some((c) => c === '.' || c === '..')) {
          throw err(`mount point ‘${mp}’ of ‘${name}’ must be an absolute, normalised path without blanks`)
        }
        // DIB_MOUNTPOINTS and `getval mount-points` separate mount points with '|'.
        if (mp.includes('|')) throw err(`mount point ‘${mp}’ of ‘${name}’ contains ‘|’`)
        if (mountsInConfig.some((m) => m.mountPoint === mp)) throw err(`mount point ‘${mp}’ specified more than once`)
        mountsInConfig.push({ name, base: str(fields, 'base', `mount ‘${name}’`, err), mountPoint: mp })
        addNode(name, 'mount', [mountsInConfig.at(-1)!.base])
        break
      }
      case 'fstab': {
        fstab.push({
          name,
          base: str(fields, 'base', `fstab ‘${name}’`, err),
          options: scalar(fields, 'options', `fstab ‘${name}’`, err) ?? 'defaults',
          dumpFreq: int(fields['dump-freq'] ?? 0, `dump-freq of ‘${name}’`, err),
          fsckPassno: int(fields['fsck-passno'] ?? 2, `fsck-passno of ‘${name}’`, err),
        })
        addNode(name, 'fstab', [fstab.at(-1)!.base])
        break
      }
    }
  }

  // Every edge must point at a node, and at the right kind of node.
  for (const [name, from] of edges) {
    for (const f of from) if (!kind.has(f)) throw err(`‘${name}’ refers to ‘${f}’, which is not defined`)
  }
  const expectBase = (node: string, base: string, allowed: string[]) => {
    if (!allowed.includes(kind.get(base)!)) {
      throw err(`‘${node}’ cannot be based on ‘${base}’ (a ${kind.get(base)}); it needs a ${allowed.join(' or ')}`)
    }
  }
  for (const t of tables) for (const p of t.partitions) expectBase(p.name, t.base, ['local_loop'])
  for (const l of lvm) {
    for (const pv of l.pvs) expectBase(pv.name, pv.base, ['local_loop', 'partition'])
    for (const vg of l.vgs) for (const b of vg.base) expectBase(vg.name, b, ['pv'])
    for (const lv of l.lvs) expectBase(lv.name, lv.base, ['vg'])
    for (const lv of l.lvs) if (lv.pool) expectBase(lv.name, lv.pool, ['thin-pool'])
  }
  for (const f of filesystems) expectBase(f.name, f.base, ['local_loop', 'partition', 'lv'])
  for (const m of mountsInConfig) expectBase(m.name, m.base, ['mkfs'])
  for (const f of fstab) expectBase(f.name, f.base, ['mount'])

  if (loops.length === 0) throw err('no local_loop: there is no disk to put the layout on')
  if (loops.length > 1) {
    throw err(
      `${loops.length} local_loop disks (${loops.map((l) => l.name).join(', ')}): virt-dib writes one disk image`,
    )
  }
  const image = loops[0]!
  const loopSize = scalar(image.fields, 'size', `local_loop ‘${image.name}’`, err)
  if (loopSize !== undefined) {
    const want = parseAbsSize(loopSize, `the size of ‘${image.name}’`)
    if (want !== params.diskSize)
      warnings.push(`block-device: the size of ‘${image.name}’ is ignored; the disk is --size`)
  }
  const tablesOn = new Map<string, PartitionTablePlan>()
  for (const t of tables) {
    if (tablesOn.has(t.base)) throw err(`‘${t.base}’ is partitioned twice`)
    tablesOn.set(t.base, t)
  }

  // Several file systems on one device, or one device used twice, cannot work.
  const used = new Map<string, string>()
  const claim = (device: string, by: string) => {
    const prev = used.get(device)
    if (prev !== undefined) throw err(`‘${device}’ is used by both ‘${prev}’ and ‘${by}’`)
    used.set(device, by)
  }
  for (const t of tables) claim(t.base, t.name)
  for (const l of lvm) for (const pv of l.pvs) claim(pv.base, pv.name)
  for (const f of filesystems) claim(f.base, f.name)
  const labels = new Map<string, string>()
  for (const f of filesystems) {
    const prev = labels.get(f.label)
    if (prev !== undefined) throw err(`file system label ‘${f.label}’ used by both ‘${prev}’ and ‘${f.name}’`)
    labels.set(f.label, f.name)
  }

  const rootMount = mountsInConfig.find((m) => m.mountPoint === '/')
  if (!rootMount) throw err('nothing is mounted at /')
  const root = filesystems.find((f) => f.name === rootMount.base)!
  const mounts = sortMounts(mountsInConfig)
  const fsByName = new Map(filesystems.map((f) => [f.name, f]))
  for (const m of mounts) {
    if (fsByName.get(m.base)!.type === 'swap') throw err(`‘${m.name}’ mounts swap`)
  }

  for (const t of tables) computeGeometry(t, sizesOf.get(t)!, params.diskSize, err)
  checkLvmFits(lvm, tables, params.diskSize, err)
  if (checkFit) checkFilesystemsFit(filesystems, tables, lvm, params.diskSize, origin)

  return {
    origin,
    image: image.name,
    diskSize: params.diskSize,
    tables,
    lvm,
    filesystems,
    mounts,
    fstab,
    configMountPoints: mountsInConfig.map((m) => m.mountPoint),
    order: topologicalOrder(edges, err),
    root,
    warnings,
  }
}

/** Parents before children ("/" < "/boot" < "/boot/efi"), siblings by name. */
export function sortMounts<T extends { mountPoint: string }>(mounts: readonly T[]): T[] {
  const depth = (p: string) => (p === '/' ? 0 : p.split('/').filter(Boolean).length)
  return [...mounts].sort((a, b) => depth(a.mountPoint) - depth(b.mountPoint) || cmp(a.mountPoint, b.mountPoint))
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function topologicalOrder(edges: Map<string, string[]>, err: (m: string) => Error): string[] {
  const order: string[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (n: string, path: string[]) => {
    const s = state.get(n)
    if (s === 'done') return
    if (s === 'visiting') throw err(`dependency cycle: ${[...path, n].join(' → ')}`)
    state.set(n, 'visiting')
    for (const f of edges.get(n) ?? []) visit(f, [...path, n])
    state.set(n, 'done')
    order.push(n)
  }
  for (const n of edges.keys()) visit(n, [])
  return order
}

function partitioningNode(
  name: string,
  f: Fields,
  err: (m: string) => Error,
): { table: PartitionTablePlan; sizes: string[] } {
  const base = str(f, 'base', `partitioning ‘${name}’`, err)
  const label = f['label']
  if (label !== 'mbr' && label !== 'gpt') throw err(`label of partitioning ‘${name}’ must be mbr or gpt`)
  const align = scalar(f, 'align', `partitioning ‘${name}’`, err)
  const alignBytes = align === undefined ? MiB : parseAbsSize(align, `the align of ‘${name}’`)
  if (alignBytes < SECTOR || alignBytes % SECTOR !== 0) throw err(`align of ‘${name}’ must be a multiple of 512 bytes`)
  const parts = f['partitions']
  if (!Array.isArray(parts) || parts.length === 0) throw err(`partitioning ‘${name}’ needs partitions`)
  const sizes: string[] = []
  const partitions = parts.map((p: unknown, i): PartitionPlan => {
    if (!isRecord(p)) throw err(`partition ${i + 1} of ‘${name}’ is not a mapping`)
    const pname = str(p, 'name', `partition ${i + 1} of ‘${name}’`, err)
    const flags = p['flags'] ?? []
    if (!Array.isArray(flags)) throw err(`flags of partition ‘${pname}’ must be a list`)
    for (const fl of flags) {
      if (typeof fl !== 'string')
        throw err(`flags of partition ‘${pname}’ must be a list of words, not of ${kindOf(fl)}`)
      if (fl !== 'boot' && fl !== 'primary') throw err(`unknown flag ‘${fl}’ on partition ‘${pname}’`)
    }
    if (label === 'gpt' && flags.includes('primary'))
      throw err(`primary flag not supported for GPT partition ‘${pname}’`)
    const size = scalar(p, 'size', `partition ‘${pname}’`, err)
    if (size === undefined) throw err(`partition ‘${pname}’ has no size`)
    const type = partitionType(label, scalar(p, 'type', `partition ‘${pname}’`, err), pname, err)
    sizes.push(size)
    return {
      name: pname,
      number: 0,
      startSector: 0,
      sizeSectors: 0,
      type,
      bootable: flags.includes('boot'),
      logical: label === 'mbr' && !flags.includes('primary'),
    }
  })
  return { table: { name, base, label, alignBytes, partitions }, sizes }
}

function partitionType(label: 'mbr' | 'gpt', t: string | undefined, pname: string, err: (m: string) => Error): string {
  if (t === undefined) return label === 'mbr' ? '83' : '8300'
  // A YAML number (type: 83) means the digits the user wrote, read as hex as diskimage-builder does.
  const text = t.trim()
  if (label === 'mbr') {
    const hex = text.replace(/^0x/i, '')
    if (!/^[0-9a-f]{1,2}$/i.test(hex) || parseInt(hex, 16) === 0) {
      throw err(`type ‘${text}’ of partition ‘${pname}’ is not an MBR type byte`)
    }
    return parseInt(hex, 16).toString(16)
  }
  if (!/^([0-9a-f]{4}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i.test(text)) {
    throw err(`type ‘${text}’ of partition ‘${pname}’ is not a GPT type code or GUID`)
  }
  return text.toUpperCase()
}

/**
 * diskimage-builder's geometry. MBR: aligned primaries, then one extended partition to the end of
 * the disk holding logical partitions, each after its own aligned EBR; "N%" is of the space not
 * yet used. GPT: consecutive partitions of whole MiB, "N%" of what is left of the disk less 2 MiB.
 */
function computeGeometry(t: PartitionTablePlan, sizes: string[], diskSize: number, err: (m: string) => Error): void {
  const diskSectors = Math.floor(diskSize / SECTOR)
  const align = t.alignBytes / SECTOR
  const up = (s: number) => Math.ceil(s / align) * align
  if (t.label === 'gpt') {
    let free = diskSize - 2 * MiB
    let next = up(34)
    t.partitions.forEach((p, i) => {
      const bytes = parseRelSize(sizes[i]!, free, `partition ‘${p.name}’`)
      const mib = Math.floor(bytes / MiB)
      if (mib < 1) throw err(`partition ‘${p.name}’ is smaller than 1 MiB`)
      if (bytes > free)
        throw err(`partition ‘${p.name}’ (${sizes[i]}) does not fit: ${free} bytes are left on the disk`)
      p.number = i + 1
      p.startSector = next
      p.sizeSectors = (mib * MiB) / SECTOR
      next = up(p.startSector + p.sizeSectors)
      free -= bytes
    })
    if (t.partitions.length > 128) throw err(`more than 128 GPT partitions on ‘${t.base}’`)
    return
  }
  let nextFree = up(1)
  let primaries = 0
  let logicalSeen = false
  let number = 0
  for (const [i, p] of t.partitions.entries()) {
    const free = diskSize - (nextFree + up(1)) * SECTOR
    const bytes = parseRelSize(sizes[i]!, free, `partition ‘${p.name}’`)
    const length = Math.floor(bytes / SECTOR)
    if (length < 1) throw err(`partition ‘${p.name}’ is empty`)
    if (!p.logical) {
      if (logicalSeen)
        throw err(`primary partition ‘${p.name}’ after a logical one: all primary partitions must come first`)
      if (primaries === 4) throw err(`more than 4 primary partitions on ‘${t.base}’`)
      p.startSector = up(nextFree)
      p.sizeSectors = length
      p.number = ++number
      primaries++
      nextFree = up(p.startSector + length)
    } else {
      if (!logicalSeen) {
        if (primaries === 4) throw err(`no room for an extended partition on ‘${t.base}’ after 4 primary ones`)
        t.extended = { number: number + 1, startSector: nextFree, sizeSectors: diskSectors - nextFree }
        number = 4
        logicalSeen = true
      }
      const ebr = nextFree
      p.startSector = up(ebr + 1)
      p.sizeSectors = length
      p.number = ++number
      nextFree = up(p.startSector + length)
    }
    if (p.startSector + p.sizeSectors > diskSectors) {
      throw err(`partition ‘${p.name}’ (${sizes[i]}) does not fit on the ${diskSize}-byte disk`)
    }
  }
}

function lvmNode(name: string, f: Fields, err: (m: string) => Error): LvmPlan {
  const list = (k: string): Fields[] => {
    const v = f[k]
    if (!Array.isArray(v) || v.length === 0) throw err(`lvm ‘${name}’ needs ‘${k}’`)
    return v.map((x: unknown) => {
      if (!isRecord(x)) throw err(`an entry of ‘${k}’ in lvm ‘${name}’ is not a mapping`)
      return x
    })
  }
  const opts = (x: Fields, what: string): string[] => {
    const o = x['options']
    if (o === undefined || o === null) return []
    if (!Array.isArray(o)) throw err(`options of ${what} must be a list`)
    return o.map((x: unknown) => {
      if (typeof x === 'string' || (typeof x === 'number' && Number.isFinite(x))) return String(x)
      throw err(`options of ${what} must be a list of words, not of ${kindOf(x)}`)
    })
  }
  // LVM's own rule for names, checked here rather than by lvcreate in the middle of a build.
  const lvmName = (n: string, what: string) => {
    if (!/^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/.test(n) || n === '.' || n === '..') {
      throw err(`${what} name ‘${n}’ is not a valid LVM name`)
    }
    return n
  }
  const pvs = list('pvs').map((p) => {
    const n = str(p, 'name', `a pvs entry of ‘${name}’`, err)
    return { name: n, base: str(p, 'base', `pvs ‘${n}’`, err), options: opts(p, `pvs ‘${n}’`) }
  })
  const vgs = list('vgs').map((v) => {
    const n = lvmName(str(v, 'name', `a vgs entry of ‘${name}’`, err), 'volume group')
    const base = v['base']
    if (!Array.isArray(base) || base.length === 0) throw err(`vgs ‘${n}’ needs a list of pvs as base`)
    for (const b of base) {
      if (typeof b !== 'string') throw err(`base of vgs ‘${n}’ must be a list of pvs names, not of ${kindOf(b)}`)
      if (!pvs.some((p) => p.name === b)) throw err(`base ‘${b}’ of vgs ‘${n}’ does not match a valid pvs`)
    }
    return { name: n, base: base as string[], options: opts(v, `vgs ‘${n}’`) }
  })
  const lvs = list('lvs').map((l): LvPlan => {
    const n = lvmName(str(l, 'name', `an lvs entry of ‘${name}’`, err), 'logical volume')
    const base = str(l, 'base', `lvs ‘${n}’`, err)
    if (!vgs.some((v) => v.name === base)) throw err(`base ‘${base}’ of lvs ‘${n}’ does not match a valid vg`)
    const what = `lvs ‘${n}’`
    const [size, extents, type, pool] = ['size', 'extents', 'type', 'thin-pool'].map((k) => scalar(l, k, what, err))
    if (size === undefined && extents === undefined) throw err(`lvs ‘${n}’ needs a size or extents`)
    if (type !== undefined && type !== 'thin-pool') throw err(`type of lvs ‘${n}’ can only be thin-pool`)
    if (pool !== undefined && size === undefined) throw err(`thin volume ‘${n}’ needs a (virtual) size`)
    return {
      name: n,
      base,
      kind: type === 'thin-pool' ? 'thin-pool' : pool !== undefined ? 'thin' : 'plain',
      ...(pool !== undefined ? { pool } : {}),
      ...(size !== undefined ? { size } : {}),
      ...(extents !== undefined ? { extents } : {}),
      options: opts(l, `lvs ‘${n}’`),
    }
  })
  for (const lv of lvs.filter((x) => x.kind === 'thin')) {
    const p = lvs.find((x) => x.name === lv.pool)
    if (!p || p.kind !== 'thin-pool' || p.base !== lv.base) {
      throw err(`thin volume ‘${lv.name}’: ‘${lv.pool}’ is not a thin pool of ‘${lv.base}’`)
    }
  }
  return { name, pvs, vgs, lvs }
}

/** lvcreate -L sizes: binary units, MiB when none is given. */
export function lvmSizeBytes(spec: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([bBsSkKmMgGtTpPeE]?)$/.exec(spec.trim())
  if (!m) return undefined
  const f: Record<string, number> = {
    b: 1,
    s: 512,
    k: 1024,
    m: MiB,
    g: 1024 ** 3,
    t: 1024 ** 4,
    p: 1024 ** 5,
    e: 1024 ** 6,
  }
  return Number(m[1]) * f[(m[2] || 'm').toLowerCase()]!
}

/** Logical volumes with absolute sizes must fit their volume group (less LVM's metadata). */
function checkLvmFits(lvm: LvmPlan[], tables: PartitionTablePlan[], diskSize: number, err: (m: string) => Error): void {
  const deviceSize = (name: string): number => {
    for (const t of tables) {
      const p = t.partitions.find((x) => x.name === name)
      if (p) return p.sizeSectors * SECTOR
    }
    return diskSize
  }
  for (const l of lvm) {
    for (const vg of l.vgs) {
      // Each PV loses its first MiB to metadata and the rest is counted in 4 MiB extents.
      const capacity = vg.base
        .map((pv) => l.pvs.find((p) => p.name === pv)!.base)
        .reduce((s, dev) => s + Math.max(0, Math.floor((deviceSize(dev) - MiB) / (4 * MiB))) * 4 * MiB, 0)
      let want = 0
      for (const lv of l.lvs.filter((x) => x.base === vg.name)) {
        if (lv.size === undefined) continue
        const b = lvmSizeBytes(lv.size)
        if (b === undefined) throw err(`size ‘${lv.size}’ of lvs ‘${lv.name}’ is not an lvcreate size`)
        // Thin volumes are virtual: only what is carved from the group counts.
        const virtual = (o: string) => o === '--thin' || o === '-T' || o.startsWith('--virtualsize') || o === '-V'
        if (lv.kind === 'thin' || lv.options.some(virtual)) continue
        want += Math.ceil(b / (4 * MiB)) * 4 * MiB
      }
      if (want > capacity) {
        throw err(`logical volumes of ‘${vg.name}’ need ${want} bytes but the group has ${capacity}`)
      }
    }
  }
}

/** A size for messages: "64M", "129.6M" (needs round up, sizes down). */
export function formatMiB(bytes: number, round: 'up' | 'down'): string {
  const tenths = (round === 'up' ? Math.ceil : Math.floor)((bytes / MiB) * 10) / 10
  return `${Number.isInteger(tenths) ? tenths : tenths.toFixed(1)}M`
}

/** The size of the device a file system is made on, where the plan knows it. */
function deviceOf(
  base: string,
  tables: PartitionTablePlan[],
  lvm: LvmPlan[],
  diskSize: number,
): { what: string; size: number } | undefined {
  for (const t of tables) {
    const p = t.partitions.find((x) => x.name === base)
    if (p) return { what: `partition ‘${p.name}’`, size: p.sizeSectors * SECTOR }
  }
  for (const l of lvm) {
    const lv = l.lvs.find((x) => x.name === base)
    if (!lv) continue
    // lvcreate rounds sizes up to whole 4 MiB extents; extents and percentages are left to it.
    const bytes =
      lv.size !== undefined
        ? lvmSizeBytes(lv.size)
        : /^\d+$/.test(lv.extents ?? '')
          ? Number(lv.extents) * 4 * MiB
          : undefined
    if (bytes === undefined) return undefined
    return { what: `logical volume ‘${lv.name}’`, size: Math.ceil(bytes / (4 * MiB)) * 4 * MiB }
  }
  return { what: 'disk', size: diskSize }
}

/** mkfs would refuse a device too small for the file system and its options: say so now. */
function checkFilesystemsFit(
  filesystems: FilesystemPlan[],
  tables: PartitionTablePlan[],
  lvm: LvmPlan[],
  diskSize: number,
  origin: string,
): void {
  for (const f of filesystems) {
    const dev = deviceOf(f.base, tables, lvm, diskSize)
    if (!dev) continue
    const need = checkFsFits(f.type, f.opts, dev.size)
    if (need === undefined) continue
    const where = origin === 'default' ? '' : `block-device config (${origin}): `
    throw new BlockDeviceConfigError(
      `${where}the ${f.type} file system ‘${f.name}’ needs at least ${formatMiB(need, 'up')} but its ${dev.what} is ${formatMiB(dev.size, 'down')} (--size ${formatMiB(diskSize, 'down')})`,
      { hint: `give it more room: a larger --size${origin === 'default' ? '' : ' or larger sizes in the layout'}` },
    )
  }
}

function mkfsNode(name: string, f: Fields, params: RootParams, err: (m: string) => Error): FilesystemPlan {
  const base = str(f, 'base', `mkfs ‘${name}’`, err)
  // diskimage-builder fills the node named mkfs_root from the command line where it is silent.
  const isRoot = name === 'mkfs_root'
  const what = `mkfs ‘${name}’`
  const [fType, fLabel, fOpts, fUuid] = ['type', 'label', 'opts', 'uuid'].map((k) => scalar(f, k, what, err))
  const type = fType ?? (isRoot ? params.fsType : undefined)
  if (type === undefined) throw err(`mkfs ‘${name}’ needs a type`)
  if (!(FS_TYPES as readonly string[]).includes(type) && type !== 'swap') {
    throw err(`mkfs ‘${name}’: unsupported file system type ‘${type}’ (supported: ${FS_TYPES.join(', ')}, swap)`)
  }
  let label: string
  if (fLabel !== undefined) label = fLabel
  else if (isRoot) label = params.rootLabel ?? defaultRootLabel(type)
  else label = name
  if (type === 'vfat' || type === 'fat') label = label.toUpperCase()
  const max = MAX_LABEL[type]
  if (max !== undefined && label.length > max) {
    throw err(`label ‘${label}’ too long for file system ${type}: ${label.length} > ${max}`)
  }
  // For the root, diskimage-builder's own ext4 defaults come before --mkfs-options.
  // --mkfs-options is split as a shell splits it; the layout's own opts as diskimage-builder
  // does (on blanks).
  const rootOpts = () => [
    ...(type === 'ext4' ? ['-i', '4096', '-J', 'size=64'] : []),
    ...splitShellWords(params.mkfsOptions ?? '', '--mkfs-options'),
  ]
  const opts = fOpts !== undefined ? fOpts.split(/\s+/).filter(Boolean) : isRoot ? rootOpts() : []
  // The others derive from the root's: random with it, the same for the same plan seed.
  const uuid = fUuid ?? (isRoot ? params.rootFsUuid : uuidFrom(`${params.rootFsUuid}\0${name}`))
  return { name, base, type, label, opts, uuid }
}

/** A version-4-shaped UUID derived from `seed`. */
function uuidFrom(seed: string): string {
  const b = createHash('sha256').update(`virt-dib fs-uuid\0${seed}`).digest()
  b[6] = (b[6]! & 0x0f) | 0x40
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = b.subarray(0, 16).toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/**
 * A field that is text: a string, or a YAML number taken as the digits written (`size: 1024`,
 * `type: 83`); undefined when absent or empty (`key:` is null). Anything else is refused here,
 * not turned into `[object Object]` or, for `[1]`, into "1".
 */
function scalar(f: Fields, key: string, what: string, err: (m: string) => Error): string | undefined {
  const v = f[key]
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string') return v
  if (typeof v === 'number' && Number.isFinite(v)) return String(v)
  throw err(`${key} of ${what} must be a string or a number, not ${kindOf(v)}`)
}

function str(f: Fields, key: string, what: string, err: (m: string) => Error): string {
  const v = scalar(f, key, what, err)
  if (v === undefined || v === '') throw err(`${what} needs ‘${key}’`)
  return v
}

function int(v: unknown, what: string, err: (m: string) => Error): number {
  // Number() would take [1], true and '' as integers.
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN
  if (!Number.isInteger(n) || n < 0) throw err(`${what} must be a non-negative integer`)
  return n
}
