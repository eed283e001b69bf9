// Device names of a planned layout once the disk's name in the appliance is known, and the
// values diskimage-builder hands to elements about it (IMAGE_BLOCK_DEVICE(S), getval answers).
import type { BlockDeviceLayout } from './layout.js'

/** Partition n of a disk, as the kernel names it (/dev/sda1, /dev/nvme0n1p1). */
export function partitionDevice(disk: string, n: number): string {
  return /\d$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`
}

/** Device-mapper name of a logical volume (dashes doubled, as dm does). */
export function lvDevice(vg: string, lv: string): string {
  const esc = (s: string) => s.replace(/-/g, '--')
  return `/dev/mapper/${esc(vg)}-${esc(lv)}`
}

/**
 * Block devices by node name, in creation order: the disk, partitions, logical volumes
 * (what diskimage-builder records as `blockdev` in its state). File systems map to the device
 * they are made on.
 */
export function blockDevices(layout: BlockDeviceLayout, disk: string): Map<string, string> {
  const m = new Map<string, string>()
  for (const name of layout.order) {
    if (name === layout.image) m.set(name, disk)
    for (const t of layout.tables) {
      const p = t.partitions.find((x) => x.name === name)
      if (p) m.set(name, partitionDevice(disk, p.number))
    }
    for (const l of layout.lvm) {
      const lv = l.lvs.find((x) => x.name === name)
      if (lv && lv.kind !== 'thin-pool') m.set(name, lvDevice(lv.base, lv.name))
    }
  }
  return m
}

export function filesystemDevice(layout: BlockDeviceLayout, disk: string, fsName: string): string {
  const fs = layout.filesystems.find((f) => f.name === fsName)!
  return blockDevices(layout, disk).get(fs.base)!
}

/** The answers of `dib-block-device getval SYMBOL` and the variables derived from them. */
export interface BlockDeviceValues {
  'root-label': string
  'root-fstype': string
  'mount-points': string
  'boot-label'?: string
  'image-path'?: string
  'image-block-device'?: string
  'image-block-devices'?: string
  'image-block-partition'?: string
}

/** What is known before the layout exists (diskimage-builder reads these before root.d). */
export function planValues(layout: BlockDeviceLayout): BlockDeviceValues {
  const boot = layout.mounts.find((m) => m.mountPoint === '/boot')
  const bootFs = boot && layout.filesystems.find((f) => f.name === boot.base)
  return {
    'root-label': layout.root.label,
    'root-fstype': layout.root.type,
    'mount-points': layout.configMountPoints.join('|'),
    ...(bootFs ? { 'boot-label': bootFs.label } : {}),
  }
}

/** Everything, once the layout was created on `disk` (imagePath: the disk image file on the host). */
export function createdValues(layout: BlockDeviceLayout, disk: string, imagePath: string): BlockDeviceValues {
  const devices = blockDevices(layout, disk)
  return {
    ...planValues(layout),
    'image-path': imagePath,
    'image-block-device': disk,
    // The exact shape diskimage-builder prints: bootloader `eval`s it into an associative array.
    'image-block-devices': [...devices].map(([k, v]) => ` [${k}]=${v} `).join(''),
    'image-block-partition': devices.get('root') ?? disk,
  }
}
