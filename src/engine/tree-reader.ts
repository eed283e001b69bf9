// Who reads the finished image tree for the tree outputs: the host, at host speed, through a
// userspace ext4 reader on the disk file (src/host/ext4-reader.ts), or the guest's own tar (under
// emulation every byte costs guest CPU). The host reads only what it can read exactly: one
// ext2/3/4 file system at / on the output disk, no LVM; anything else stays with the guest.
import type { BlockDeviceLayout } from '../blockdev/layout.js'
import { hostTreeReaderSupport } from '../host/ext4-reader.js'
import * as L from '../elements/layout.js'
import type { BuildContext } from './context.js'

export type TreeReader = { kind: 'host'; offset: number } | { kind: 'guest'; reason: string }

const HOST_READABLE = new Set(['ext2', 'ext3', 'ext4'])

/** Why the host cannot read this layout's tree itself, or undefined if it can. */
export function layoutNotHostReadable(layout: BlockDeviceLayout): string | undefined {
  if (layout.lvm.length > 0) return 'the layout has LVM volumes'
  if (layout.mounts.length !== 1) return `the tree spans ${layout.mounts.length} file systems`
  if (!HOST_READABLE.has(layout.root.type)) return `the root file system is ${layout.root.type}, not ext2/3/4`
  return undefined
}

/**
 * Where the image root's file system starts on the output disk, from what the guest says of the
 * device mounted at its root: `part START PARENT` (START in 512-byte sectors) or `disk 0 NAME`.
 */
export function parseRootDevice(text: string, outDevice: string): { offset: number } | { reason: string } {
  const m = /^(part|disk) (\d+) (\S+)$/m.exec(text.trim())
  if (!m) return { reason: `the root device was not recognised (${text.trim().split('\n')[0] ?? ''})` }
  const disk = outDevice.replace(/^\/dev\//, '')
  if (m[3] !== disk) return { reason: `the root file system is on ${m[3]}, not on the output disk ${disk}` }
  return { offset: Number(m[2]) * 512 }
}

/** The guest's view of the device mounted at the image root (see {@link parseRootDevice}). */
const ROOT_DEVICE_SCRIPT = [
  `src=$(findmnt -n -o SOURCE ${L.SYSROOT})`,
  'b=$(basename "$(readlink -f "$src")")',
  'if [ -e /sys/class/block/$b/partition ]; then',
  '  echo part $(cat /sys/class/block/$b/start) $(basename "$(readlink -f /sys/class/block/$b/..)")',
  'else echo disk 0 $b; fi',
].join('\n')

/**
 * Chooses the reader: the host when the layout, the host's tools and the disk allow it, unless
 * VIRT_DIB_TREE_READER=guest asks for the guest (benchmarks compare the two).
 */
export async function chooseTreeReader(
  ctx: BuildContext,
  layout: BlockDeviceLayout,
  outDevice: string,
): Promise<TreeReader> {
  if (ctx.plan.env['VIRT_DIB_TREE_READER'] === 'guest') return { kind: 'guest', reason: 'VIRT_DIB_TREE_READER=guest' }
  const notReadable = layoutNotHostReadable(layout)
  if (notReadable) return { kind: 'guest', reason: notReadable }
  const support = hostTreeReaderSupport()
  if (!support.ok) return { kind: 'guest', reason: support.reason }
  const where = parseRootDevice(await ctx.g.shOutside(ROOT_DEVICE_SCRIPT, { signal: ctx.signal }), outDevice)
  return 'offset' in where ? { kind: 'host', offset: where.offset } : { kind: 'guest', reason: where.reason }
}
