// The aux drive's tree, described once: each entry is a path relative to the aux root, from which
// the host path (under the workspace's aux directory, where prepare-aux writes it) and the guest
// path (under AUX, where the image sees it in the chroot; /sysroot… outside it) both derive.
// Also the host phase's files in the workspace. One definition for the pipeline, the runners and
// the environment model.
import { join, posix } from 'node:path'

import type { Where } from '../events.js'

/** The image root as the appliance sees it (guestfs mounts the root file system here). */
export const SYSROOT = '/sysroot'
/** Everything virt-dib brings into the image during the build; removed before the outputs. */
export const AUX = '/tmp/in_target.aux'
/** Where diskimage-builder elements expect the hooks inside the chroot (a symlink into AUX). */
export const IN_TARGET_D = '/tmp/in_target.d'

/** Every path of the aux tree, relative to its root. */
export const AUX_TREE = {
  /** The merged hooks tree of all elements. */
  hooks: 'hooks',
  environmentD: 'hooks/environment.d',
  hooksRunParts: 'hooks/dib-run-parts',
  /** diskimage-builder's lib (-B). */
  lib: 'lib',
  /** fake sudo/awk, dib-block-device, dib-run-parts: first on PATH outside the chroot. */
  fakeBin: 'fake-bin',
  /** The runner, one control file per phase, and what is learnt during the build. */
  runners: 'run',
  runner: 'run/run-phase',
  /** IMAGE_BLOCK_DEVICE and friends, sourced by the phases after block-device.d. */
  blockDeviceEnv: 'run/block-device.env',
  /** The block-device layout's state: params.yaml and the answers of `dib-block-device getval`. */
  blockdev: 'blockdev',
  blockdevConfig: 'blockdev/config.yaml',
  blockdevParams: 'blockdev/params.yaml',
  /** Copied out after the build: `$NAME.d`. */
  out: 'out',
  /** The helper drive: HOME, the image cache and the build logs; persistent with --drive. */
  perm: 'perm',
  permHome: 'perm/home',
  permImageCache: 'perm/home/.cache/image-create',
  permLogs: 'perm/logs',
} as const

/** An aux-relative path, e.g. one of AUX_TREE or made by the helpers below. */
export type AuxPath = string

/** `$NAME.d` inside the aux tree: what cleanup.d and manifests leave there is copied out. */
export function outDirPath(imageName: string): AuxPath {
  return `${AUX_TREE.out}/${imageName}.d`
}

/** The control file of a phase that runs in the appliance or the chroot. */
export function controlFilePath(hook: string): AuxPath {
  return `${AUX_TREE.runners}/${hook}.ctl`
}

/** A build log on the helper drive. */
export function logPath(name: string): AuxPath {
  return `${AUX_TREE.permLogs}/${name}`
}

/** The guest path (as the chroot sees it) of an aux-relative path. */
export function guest(rel: AuxPath): string {
  return rel === '' ? AUX : `${AUX}/${rel}`
}

/** The host path of an aux-relative path, under the aux directory prepared in the workspace. */
export function onHost(auxDir: string, rel: AuxPath): string {
  return join(auxDir, rel)
}

/** A guest path of the image as the appliance sees it outside the chroot. */
export function inAppliance(path: string): string {
  return `${SYSROOT}${path}`
}

/**
 * A guest path as a script at `where` sees it: unchanged in the chroot, under /sysroot in the
 * appliance, under the FUSE mount of the image on the host.
 */
export function seenFrom(where: Where, path: string, hostMount = ''): string {
  return where === 'appliance' ? inAppliance(path) : where === 'host' ? `${hostMount}${path}` : path
}

// Guest paths, as element scripts and the pipeline use them.
export const HOOKS = guest(AUX_TREE.hooks)
export const LIB = guest(AUX_TREE.lib)
export const RUNNERS = guest(AUX_TREE.runners)
export const FAKE_BIN = guest(AUX_TREE.fakeBin)
export const PERM = guest(AUX_TREE.perm)
export const PERM_HOME = guest(AUX_TREE.permHome)
export const PERM_IMAGE_CACHE = guest(AUX_TREE.permImageCache)
export const PERM_LOGS = guest(AUX_TREE.permLogs)
export const OUT = guest(AUX_TREE.out)
export const BLOCKDEV = guest(AUX_TREE.blockdev)
export const BLOCKDEV_PARAMS = guest(AUX_TREE.blockdevParams)
export const BLOCK_DEVICE_ENV = guest(AUX_TREE.blockDeviceEnv)

/** What the IN_TARGET_D symlink points at: relative, so it holds in the chroot and under /sysroot. */
export const IN_TARGET_D_TARGET = posix.relative(posix.dirname(IN_TARGET_D), HOOKS)

/** `$NAME.d` inside the image (guest path). */
export function outDir(imageName: string): string {
  return guest(outDirPath(imageName))
}

/** The host phase's files in the build workspace, relative to it (extra-data.d runs outside the aux tree). */
export const WORKSPACE = {
  /** The aux tree as prepared on the host, before it becomes a disk image. */
  aux: 'aux',
  runner: 'run-phase.bash',
  /** fake sudo for extra-data.d. */
  fakeBin: 'host-bin',
  /** Where the image is mounted (FUSE) while extra-data.d runs. */
  imageView: 'extra-data.d',
  /** The aux tree packed as a disk image (the aux drive). */
  auxImage: 'aux.img',
  /** The output disk when it is not written in the output directory (raw not asked, or ramdisk). */
  disk: 'image.raw',
  /** The export drive when it is not the tar output itself (tar not asked, or ramdisk). */
  exportDrive: 'export.raw',
  /** The tree's drive with the step cache on (a host file, so its snapshots can be read). */
  treeDisk: 'tree.raw',
} as const

/** The control file of a phase: in the workspace for a host phase, else its guest path as seen from `where`. */
export function controlFileAt(where: Where, hook: string, workspace: string): string {
  if (where === 'host') return join(workspace, `${hook}.ctl`)
  return seenFrom(where, guest(controlFilePath(hook)))
}

/** The runner: in the workspace for a host phase, else its guest path as seen from `where`. */
export function runnerAt(where: Where, workspace: string): string {
  if (where === 'host') return join(workspace, WORKSPACE.runner)
  return seenFrom(where, guest(AUX_TREE.runner))
}
