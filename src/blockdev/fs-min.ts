// The smallest device each planned file system can be made on, for its type and mkfs options,
// so that a layout mkfs would refuse is refused before launch. Models of what the appliance's
// tools (Debian 12: e2fsprogs 1.47 with its mke2fs.conf, xfsprogs 6.1, dosfstools 4.2,
// btrfs-progs 6.2) enforce, checked against the real tools in test/unit/blockdev/fs-min.test.ts.
// Never stricter than the tool: options the model does not know fall back to a bound that holds
// whatever they do.

const KiB = 1024
const MiB = 1024 ** 2

/** The one reason mkfs would refuse a device of `size` bytes, or undefined if it would not. */
export function checkFsFits(type: string, opts: readonly string[], size: number): number | undefined {
  const min = minFsSize(type, opts)
  if (min === undefined) return undefined
  if (/^ext[234]$/.test(type)) return extFits(type, opts, size) ? undefined : min
  return size >= min ? undefined : min
}

/** The smallest size (bytes) mkfs accepts for this type and options; undefined: no bound. */
export function minFsSize(type: string, opts: readonly string[]): number | undefined {
  if (/^ext[234]$/.test(type)) return extMin(type, opts)
  if (type === 'xfs') return xfsMin(opts)
  if (type === 'vfat' || type === 'fat') return vfatMin(opts)
  if (type === 'btrfs') return btrfsMin(opts)
  if (type === 'swap') return 40 * KiB
  return undefined
}

/** getopt(3) over `spec`: [option letter, argument] pairs; undefined on anything unexpected. */
function getopt(args: readonly string[], spec: string): [string, string | undefined][] | undefined {
  const out: [string, string | undefined][] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (!a.startsWith('-') || a === '-' || a.startsWith('--')) return undefined
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!
      const at = spec.indexOf(c)
      if (at === -1 || c === ':') return undefined
      if (spec[at + 1] === ':') {
        const v = j + 1 < a.length ? a.slice(j + 1) : args[++i]
        if (v === undefined) return undefined
        out.push([c, v])
        break
      }
      out.push([c, undefined])
    }
  }
  return out
}

// ---- ext2/3/4 --------------------------------------------------------------------------------

/** mke2fs 1.47's getopt string. */
const MKE2FS_OPTS = 'b:cd:e:g:i:jl:m:no:qr:s:t:vC:DE:FG:I:J:KL:M:N:O:R:ST:U:Vz:'
/** Debian 12's /etc/mke2fs.conf. */
const BASE_FEATURES = ['sparse_super', 'large_file', 'filetype', 'resize_inode', 'dir_index', 'ext_attr']
const TYPE_FEATURES: Record<string, string[]> = {
  ext2: [],
  ext3: ['has_journal'],
  ext4: ['has_journal', 'extent', 'huge_file', 'flex_bg', 'metadata_csum', '64bit', 'dir_nlink', 'extra_isize'],
}
/** Features whose layout the model does not follow: only the journal's lower bound is used. */
const UNMODELLED_FEATURES = new Set(['meta_bg', 'bigalloc', 'sparse_super2', 'quota', 'orphan_file'])

interface ExtModel {
  /** Requested journal size in MiB (-J size=), or undefined for none / the automatic size. */
  journalMiB: number | undefined
  /** Options whose effect on the layout is not modelled: use the bound that holds regardless. */
  exact: boolean
  blockSize: number | undefined
  inodeRatio: number | undefined
  inodeSize: number
  features: Set<string>
}

function extModel(type: string, opts: readonly string[]): ExtModel {
  const m: ExtModel = {
    journalMiB: undefined,
    exact: true,
    blockSize: undefined,
    inodeRatio: undefined,
    inodeSize: 256,
    features: new Set([...BASE_FEATURES, ...TYPE_FEATURES[type]!]),
  }
  const parsed = getopt(opts, MKE2FS_OPTS)
  if (parsed === undefined) return { ...m, exact: false, journalMiB: undefined }
  let forceJournal = false
  for (const [c, v] of parsed) {
    switch (c) {
      case 'b':
        m.blockSize = Number(v)
        if (![1024, 2048, 4096, 65536].includes(m.blockSize)) m.exact = false
        break
      case 'i':
        m.inodeRatio = Number(v)
        if (!Number.isInteger(m.inodeRatio) || m.inodeRatio < 1024) m.exact = false
        break
      case 'I':
        m.inodeSize = Number(v)
        if (![128, 256, 512, 1024].includes(m.inodeSize)) m.exact = false
        break
      case 'j':
        forceJournal = true
        break
      case 'J': {
        forceJournal = true
        for (const o of v!.split(',')) {
          const [k, val] = o.split('=')
          if (k === 'size') m.journalMiB = Number(val)
          else if (k === 'device' || k === 'location') m.exact = false
        }
        break
      }
      case 'O':
        for (const f of v!.split(',')) {
          if (f === 'none') m.features.clear()
          else if (f.startsWith('^') || f.startsWith('-')) m.features.delete(f.slice(1))
          else m.features.add(f.startsWith('+') ? f.slice(1) : f)
        }
        break
      case 'c':
      case 'D':
      case 'F':
      case 'K':
      case 'L':
      case 'm':
      case 'n':
      case 'q':
      case 'S':
      case 'U':
      case 'v':
      case 'V':
      case 'e':
      case 'o':
      case 'M':
      case 'l':
      case 'z':
      case 'd':
        break
      default:
        // -g -G -N -C -T -r -E -R -s -t: they change group sizes, counts or usage types.
        m.exact = false
    }
  }
  if (forceJournal) m.features.add('has_journal')
  for (const f of m.features) if (UNMODELLED_FEATURES.has(f)) m.exact = false
  if (!m.features.has('sparse_super')) m.exact = false
  if (!m.features.has('has_journal')) m.journalMiB = undefined
  if (m.journalMiB !== undefined && !(Number.isFinite(m.journalMiB) && m.journalMiB > 0)) {
    m.journalMiB = undefined
  }
  return m
}

/** 0, 1 and the powers of 3, 5 and 7 below n: the groups holding superblock backups. */
function backupGroups(n: number): number {
  const g = new Set([0, 1])
  for (const b of [3, 5, 7]) for (let p = b; p < n; p *= b) g.add(p)
  return [...g].filter((x) => x < n).length
}

/**
 * Free blocks as mke2fs counts them when it sizes the journal (ext2fs_initialize): the disk less
 * the superblocks and group descriptors (with the blocks reserved for growth), and, without
 * flex_bg, less each group's bitmaps and inode table too.
 */
function extFreeBlocks(m: ExtModel, size: number, blockSize: number): number {
  const blocks = Math.floor(size / blockSize)
  const firstData = blockSize === 1024 ? 1 : 0
  const perGroup = 8 * blockSize
  const groups = Math.ceil((blocks - firstData) / perGroup)
  const desc = m.features.has('64bit') ? 64 : 32
  const gdt = Math.ceil((groups * desc) / blockSize)
  let reserved = 0
  if (m.features.has('resize_inode')) {
    const maxBlocks = Math.min(2 ** 32 - 1, blocks * 1024)
    const maxGroups = Math.ceil((maxBlocks - firstData) / perGroup)
    reserved = Math.max(0, Math.min(blockSize / 4, Math.ceil(maxGroups / (blockSize / desc)) - gdt))
  }
  let overhead = firstData + backupGroups(groups) * (1 + gdt + reserved)
  if (!m.features.has('flex_bg')) {
    const ratio = m.inodeRatio ?? (size < 512 * MiB ? 4096 : 16384)
    const perBlock = blockSize / m.inodeSize
    let inodesPerGroup = Math.ceil(Math.floor((blocks * blockSize) / ratio) / groups)
    inodesPerGroup = Math.ceil(inodesPerGroup / perBlock) * perBlock
    overhead += groups * (2 + (inodesPerGroup * m.inodeSize) / blockSize)
  }
  return blocks - overhead
}

function extFits(type: string, opts: readonly string[], size: number): boolean {
  const m = extModel(type, opts)
  if (m.journalMiB === undefined) return true
  const journal = m.journalMiB * MiB
  // mke2fs.conf: "small" (< 512 MiB) and "floppy" file systems get 1 KiB blocks.
  const blockSize = m.blockSize ?? (size < 512 * MiB ? 1024 : 4096)
  // Below 2048 blocks mke2fs makes no journal at all.
  if (Math.floor(size / blockSize) < 2048) return true
  if (!m.exact) return journal <= Math.floor(size / 2)
  // The model matches mke2fs to the block in most cases and is off by up to 1% otherwise (very
  // low inode ratios, flex_bg without 64bit): keep a small margin rather than accept a failure.
  const blocks = Math.floor(size / blockSize)
  const ratio = m.inodeRatio ?? 4096
  const margin =
    Math.ceil(
      blocks *
        (0.004 +
          (!m.features.has('flex_bg') && ratio < 4096 ? (size < 1024 * MiB ? 0.008 : 0.012) : 0) +
          (m.features.has('resize_inode') ? 0 : 0.005)),
    ) +
    (256 * KiB) / blockSize
  return (2 * journal) / blockSize + margin <= extFreeBlocks(m, size, blockSize)
}

function extMin(type: string, opts: readonly string[]): number | undefined {
  const m = extModel(type, opts)
  if (m.journalMiB === undefined) return undefined
  // The smallest size from twice the journal up, in 64 KiB steps (the model is cheap).
  for (let s = Math.floor((2 * m.journalMiB * MiB) / (64 * KiB)) * 64 * KiB; ; s += 64 * KiB) {
    if (extFits(type, opts, s) && Math.floor(s / (m.blockSize ?? (s < 512 * MiB ? 1024 : 4096))) >= 2048) return s
  }
}

// ---- xfs, vfat, btrfs ------------------------------------------------------------------------

/** xfsprogs 5.19 and later refuse data sections under 300 MiB. */
function xfsMin(_opts: readonly string[]): number {
  return 300 * MiB
}

/**
 * mkfs.fat: FAT16 needs at least 4085 clusters (its smallest automatic cluster is 4 sectors);
 * FAT12 and FAT32 have no minimum that matters here (FAT32 below 65525 clusters only warns).
 */
function vfatMin(opts: readonly string[]): number | undefined {
  const parsed = getopt(opts, 'aAb:cCf:F:g:h:iI:l:m:M:n:r:R:s:S:vD:')
  if (parsed === undefined) return undefined
  const get = (c: string) => parsed.filter(([k]) => k === c).at(-1)?.[1]
  if (get('F') !== '16') return undefined
  const sector = Number(get('S') ?? 512)
  const perCluster = Number(get('s') ?? 4)
  if (!Number.isInteger(sector) || !Number.isInteger(perCluster)) return undefined
  // Measured: the FATs, the root directory and the alignment of the data area add a little.
  return Math.ceil(4085 * sector * perCluster * 1.001) + 64 * KiB + 4 * sector * perCluster
}

/** mkfs.btrfs 6.2 on one device, by metadata and data profile (mixed block groups: one profile). */
function btrfsMin(opts: readonly string[]): number {
  let mixed = false
  let meta: string | undefined
  let data: string | undefined
  for (let i = 0; i < opts.length; i++) {
    const o = opts[i]!
    const value = (long: string, short: string) =>
      o === long || o === short ? opts[++i] : o.startsWith(`${long}=`) ? o.slice(long.length + 1) : undefined
    if (o === '-M' || o === '--mixed') mixed = true
    const m = value('--metadata', '-m')
    const d = value('--data', '-d')
    if (m !== undefined) meta = m.toLowerCase()
    if (d !== undefined) data = d.toLowerCase()
  }
  if (mixed) return meta === 'dup' || data === 'dup' ? 157 * MiB : 16 * MiB
  meta ??= 'dup'
  data ??= 'single'
  const table: Record<string, number> = {
    'single/single': 45 * MiB,
    'dup/single': 109 * MiB,
    'single/dup': 165 * MiB,
    'dup/dup': 229 * MiB,
  }
  return table[`${meta}/${data}`] ?? 16 * MiB
}
