// The appliance of a build: created, given its drives and launched here (the only place that
// launches), then the build root and the aux tree are set up in it. One function per step.
import { existsSync } from 'node:fs'
import { statfs } from 'node:fs/promises'
import { dirname, join } from 'node:path'

import { filesystemDevice } from '../blockdev/devices.js'
import type { BlockDeviceLayout } from '../blockdev/layout.js'
import { activateScript, createLayoutScript } from '../blockdev/script.js'
import { shellQuote } from '../util/shell-quote.js'
import * as L from '../elements/layout.js'
import { VirtDibError } from '../errors.js'
import { Guestfs, GuestfsError } from '../guestfs/index.js'
import { applianceCacheRoot, prepareAppliance } from '../host/appliance.js'
import { makeAuxImage } from '../host/aux-image.js'
import { applianceAppend, chooseBackendSettings } from '../host/kvm.js'
import { listQemuTemps, qemuTempDir, removeOrphanQemuTemps } from '../host/qemu-temps.js'
import { runTool } from '../host/spawn.js'
import { extraPackages } from '../phases/extra-packages.js'
import { formatSize } from '../util/sizes.js'
import { hooksAfter } from './cache-boundaries.js'
import { PHASE_HOOKS } from '../cache/keys.js'
import { restoreDrive } from './snapshot.js'
import type { BuildContext } from './context.js'
import { writeLayoutState } from './image.js'

const GiB = 1024 ** 3
/** The aux drive's virtual size: sparse, and mke2fs -d sizes nothing; room for what elements add. */
export const AUX_IMAGE_SIZE = 16 * GiB
/**
 * The tree drive's virtual size with the step cache on: fixed, so that snapshots of the tree do
 * not depend on --size (builds of other sizes share them); sparse, only what the tree holds is written.
 */
export const TREE_DISK_SIZE = 64 * GiB
/**
 * The tree drive's file system: only a build scratch, so no journal (its blocks would change in
 * every snapshot), inode tables left uninitialised (and mounted noinit_itable: never zeroed in the
 * background), one inode per 16 KiB.
 */
export const TREE_MKFS = 'mkfs.ext4 -q -F -O ^has_journal -E lazy_itable_init=1,nodiscard -i 16384'
/** Drives by label: /dev/disk/guestfs/<label> inside the appliance. */
export const DRIVE = {
  out: '/dev/disk/guestfs/out',
  build: '/dev/disk/guestfs/build',
  aux: '/dev/disk/guestfs/aux',
  perm: '/dev/disk/guestfs/perm',
  export: '/dev/disk/guestfs/export',
} as const

/**
 * The export drive's virtual size (sparse: only the archive's bytes are written). An archive can
 * be larger than the tree's file system (512-byte headers for every entry, pax records, padding).
 */
export function exportDriveSize(diskSize: number): number {
  return 4 * diskSize + GiB
}

/**
 * Creates the handle (virt-dib's appliance unless the stock one is asked for), the output disk,
 * the build disk and the export drive; returns the host paths of the output disk and the export
 * drive (the tar output's staged file itself when tar is asked: the archive is written in place).
 */
export async function openAppliance(ctx: BuildContext): Promise<{ disk: string; exportDrive: string }> {
  const { plan } = ctx
  const o = plan.appliance
  ctx.progress('Opening the disks')
  const backendSettings = chooseBackendSettings(plan.env)
  const append = applianceAppend(plan.env)
  const g = await Guestfs.create({
    abortPolicy: 'kill-appliance',
    program: 'virt-dib',
    ...(backendSettings ? { backendSettings } : {}),
    ...(append ? { append } : {}),
    ...(o.memsize !== undefined ? { memsize: o.memsize } : {}),
    ...(o.smp !== undefined ? { smp: o.smp } : {}),
    network: o.network,
    verbose: o.verbose,
    trace: o.trace,
  })
  ctx.g = g
  // Undone after the appliance's close (the stack runs backwards): a qemu killed while it booted
  // leaves its snapshot overlay in its TMPDIR.
  const qemuTmp = qemuTempDir(process.env)
  const temps = new Set(listQemuTemps(qemuTmp))
  ctx.cleanup.defer('qemu temporaries', () => void removeOrphanQemuTemps(qemuTmp, temps))
  ctx.cleanup.defer('appliance', () => closeAppliance(g, ctx.signal.aborted))
  if (!o.stock) {
    const stockPath = await g.getPath()
    const appliance = await prepareAppliance({
      stockPath,
      extraPackages: o.packages,
      cacheRoot: applianceCacheRoot(plan.env),
      env: plan.env,
      signal: ctx.signal,
    })
    if (appliance.fresh) ctx.progress('Prepared the build appliance (first use of this package set)')
    await g.setPath(appliance.path)
    await g.setCachedir(appliance.cachedir)
  }
  if (o.verbose) {
    g.on('library', (t) => ctx.emit({ kind: 'debug', text: t.trimEnd() }))
  }
  if (o.trace) g.on('trace', (t) => ctx.emit({ kind: 'debug', text: `libguestfs: trace: ${t}` }))

  // The output disk: straight in the output directory when raw is wanted (renamed at the end).
  const raw = plan.formats.find((f) => f.isRawDisk)
  const disk =
    raw && !plan.ramdisk ? ctx.stage(`${plan.outputPath}.raw`, 'raw').temp : join(ctx.workspace, L.WORKSPACE.disk)
  await checkRoomForDisk(dirname(disk), plan.size)
  const cache = ctx.cache
  // Discard on the drives a snapshot reads: fstrim turns what a phase deleted into holes.
  const discard = cache ? { discard: 'besteffort' as const } : {}
  if (cache?.resume?.boundary.drives.includes('disk')) await restoreDrive(ctx, cache, 'disk', disk)
  else await g.diskCreate(disk, 'raw', plan.size, { preallocation: 'sparse' })
  await g.addDrive(disk, { format: 'raw', label: 'out', cachemode: 'unsafe', ...discard })
  if (cache) {
    // A host file (a scratch drive cannot be read from the host): the tree's snapshots come from it.
    const tree = join(ctx.workspace, L.WORKSPACE.treeDisk)
    if (cache.resume?.boundary.drives.includes('tree')) await restoreDrive(ctx, cache, 'tree', tree)
    else await g.diskCreate(tree, 'raw', TREE_DISK_SIZE, { preallocation: 'sparse' })
    await g.addDrive(tree, { format: 'raw', label: 'build', cachemode: 'unsafe', ...discard })
  } else if (!plan.buildInPlace) await g.addDriveScratch(plan.size + GiB, { label: 'build' })
  // The guest's own tar writes archives here (block I/O, no daemon copy); the host reads them
  // through its page cache, so a flush-ignoring cache mode loses nothing.
  const tar = plan.formats.find((f) => f.isArchive)
  const exportDrive =
    tar && !plan.ramdisk
      ? ctx.stage(`${plan.outputPath}.tar`, 'tar').temp
      : join(ctx.workspace, L.WORKSPACE.exportDrive)
  await g.diskCreate(exportDrive, 'raw', exportDriveSize(plan.size), { preallocation: 'sparse' })
  await g.addDrive(exportDrive, { format: 'raw', label: 'export', cachemode: 'unsafe' })
  return { disk, exportDrive }
}

/** Packs the aux tree into the aux drive and adds it, and the helper drive (--drive). */
export async function addAuxDrives(ctx: BuildContext, auxDir: string): Promise<void> {
  const { g, plan } = ctx
  const auxImage = join(ctx.workspace, L.WORKSPACE.auxImage)
  const cache = ctx.cache
  if (cache?.resume) await restoreDrive(ctx, cache, 'aux', auxImage)
  else await makeAuxImage(auxDir, auxImage, AUX_IMAGE_SIZE, ctx.signal)
  await g.addDrive(auxImage, {
    format: 'raw',
    label: 'aux',
    cachemode: 'unsafe',
    ...(cache ? { discard: 'besteffort' as const } : {}),
  })
  const drive = plan.appliance.drive
  if (drive) await g.addDrive(drive.path, { label: 'perm', ...(drive.format ? { format: drive.format } : {}) })
}

/**
 * Boots the appliance. From then on the disk files grow while the guest writes: a full host file
 * system must stop the build (the space watch kills the appliance), not pause qemu forever.
 */
export async function launchAppliance(ctx: BuildContext, disk: string): Promise<void> {
  await ctx.g.launch({ signal: ctx.signal })
  ctx.watchHostSpace(disk, await ctx.g.getTmpdir())
}

/** How long a close (shutdown: sync, qemu exits) may take before the appliance is killed instead. */
export const CLOSE_WAIT_MS = 60_000

/** What closeAppliance needs of a handle (Guestfs). */
export type ClosableAppliance = Pick<Guestfs, 'busy' | 'killAppliance' | 'close'>

/**
 * Closes the handle at the end of a build. close() is queued behind the running call, so a call
 * still running (after an abort, or a failure that left a transfer going nobody reads) would keep
 * it waiting forever: then the appliance is killed first, which fails that call at once. A close
 * that still takes longer than `waitMs` (a guest that does not shut down) kills it too.
 */
export async function closeAppliance(g: ClosableAppliance, aborted: boolean, waitMs = CLOSE_WAIT_MS): Promise<void> {
  if (aborted || g.busy) g.killAppliance()
  const closing = g.close().then(
    () => true,
    () => true,
  )
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), waitMs).unref()))
  const closed = await Promise.race([closing, late])
  clearTimeout(timer)
  if (closed) return
  g.killAppliance()
  await closing
}

/**
 * The disk file is sparse, but if its file system fills up while the guest writes, qemu pauses the
 * guest and the build would hang: refuse a disk that the file system could not hold whole.
 */
async function checkRoomForDisk(dir: string, size: number): Promise<void> {
  const s = await statfs(dir)
  const free = s.bavail * s.bsize
  if (free < size) {
    throw new VirtDibError(
      `not enough space in ${dir} for the ${formatSize(size)} disk image: ${formatSize(free)} free`,
      { hint: 'use a smaller --size, or another directory (--name for raw output, TMPDIR otherwise)' },
    )
  }
}

/**
 * Mounts a device named as the appliance kernel names it (what `readlink -f` of a drive label,
 * sfdisk or a block-device.d script gives). Not through the API: libguestfs takes /dev/sdX as the
 * Xth drive added and translates it, and under emulation the kernel may enumerate the drives in
 * another order, so a kernel name passed to the API can mount a different drive.
 */
export async function mountKernelDevice(ctx: BuildContext, device: string, mountPoint: string): Promise<void> {
  const at = shellQuote(mountPoint === '/' ? L.SYSROOT : L.inAppliance(mountPoint))
  await ctx.g.shOutside(`mkdir -p ${at}; mount ${shellQuote(device)} ${at}`, { errexit: true, signal: ctx.signal })
}

/** Mounts --drive (the whole disk, or its first partition); no file system is the user's error. */
async function mountHelperDrive(ctx: BuildContext): Promise<void> {
  const at = shellQuote(L.inAppliance(L.PERM))
  const script = `d=$(readlink -f ${DRIVE.perm}); p=$d; [ -b "\${d}1" ] && p=\${d}1; mkdir -p ${at}; mount "$p" ${at}`
  try {
    await ctx.g.shOutside(script, { errexit: true, signal: ctx.signal })
  } catch (e) {
    if (!(e instanceof GuestfsError) || e.applianceDied || ctx.signal.aborted) throw e
    throw new VirtDibError(
      `the helper drive ${ctx.plan.appliance.drive?.path} cannot be mounted: ${e.message.trim().split('\n').pop()}`,
      { cause: e, hint: 'the helper drive needs a file system (on the whole disk or its first partition)' },
    )
  }
}

/**
 * Makes the build root (the image's own layout when the tree is built in place, a scratch file
 * system otherwise) and mounts it with the aux drive. Returns the output disk's kernel name.
 */
export async function prepareBuildRoot(ctx: BuildContext): Promise<string> {
  const { g, plan } = ctx
  ctx.progress('Preparing auxiliary data')
  const outDevice = (await g.shOutside(`readlink -f ${DRIVE.out}`)).trim()
  if (plan.buildInPlace) {
    const script = createLayoutScript(plan.layout, outDevice)
    await g.shOutside(script, { bash: true, signal: ctx.signal })
    await mountKernelDevice(ctx, filesystemDevice(plan.layout, outDevice, plan.layout.mounts[0]!.base), '/')
  } else if (ctx.cache) {
    await g.shOutside(`${TREE_MKFS} ${DRIVE.build} && ${mountTreeDrive()}`, { signal: ctx.signal })
  } else {
    await g.mkfs('ext4', DRIVE.build)
    await g.mount(DRIVE.build, '/')
  }
  await mountAux(ctx, true)
  // mke2fs -d keeps the host owner: a build run by a normal user makes it root's, as uploaded.
  if (process.getuid?.() !== 0) await g.shOutside(`chown -R 0:0 ${L.inAppliance(L.AUX)}`)
  if (ctx.plan.appliance.drive) await mountHelperDrive(ctx)
  await g.mkdirP(L.PERM_IMAGE_CACHE)
  await g.mkdirP(L.PERM_LOGS)
  await g.lnSf(L.IN_TARGET_D_TARGET, L.IN_TARGET_D)
  return outDevice
}

/** Mounts the cached build's tree drive as the image root (see prepareBuildRoot for why noinit_itable). */
function mountTreeDrive(): string {
  return `mount -o noinit_itable ${DRIVE.build} ${L.SYSROOT}`
}

/**
 * A build resumed from the step cache: its drives were restored before the launch. Mounts the
 * tree (before the block-device step) or the image's layout (after it) and the aux drive, as the
 * steps it skipped had left them, and refreshes what in the aux tree belongs to this build, not to
 * the one that stored the snapshot: the control files (the environment has IMAGE_NAME…), the
 * block-device plan, and `$NAME.d`'s name. Returns the output disk's kernel name.
 */
export async function resumeBuildRoot(
  ctx: BuildContext,
  o: { auxDir: string; layout: BlockDeviceLayout | undefined; disk: string },
): Promise<string> {
  const { g, plan } = ctx
  const run = ctx.cache!
  ctx.progress('Restoring the build from the step cache')
  const outDevice = (await g.shOutside(`readlink -f ${DRIVE.out}`)).trim()
  if (o.layout) {
    const activate = activateScript(o.layout)
    if (activate) await g.shOutside(activate, { signal: ctx.signal })
    for (const m of o.layout.mounts)
      await mountKernelDevice(ctx, filesystemDevice(o.layout, outDevice, m.base), m.mountPoint)
  } else {
    await g.shOutside(mountTreeDrive(), { signal: ctx.signal })
  }
  await mountAux(ctx, true)
  if (ctx.plan.appliance.drive) await mountHelperDrive(ctx)
  await g.mkdirP(L.PERM_IMAGE_CACHE)
  await g.mkdirP(L.PERM_LOGS)
  await refreshAux(ctx, o.auxDir)
  const was = run.resume!.state.imageName
  if (was !== plan.imageName) {
    const from = shellQuote(L.inAppliance(L.outDir(was)))
    const to = shellQuote(L.inAppliance(L.outDir(plan.imageName)))
    await g.shOutside(`if [ -d ${from} ]; then mv -T ${from} ${to}; else mkdir -p ${to}; fi`, { errexit: true })
  }
  if (o.layout) await writeLayoutState(ctx, o.layout, outDevice, o.disk)
  return outDevice
}

/**
 * The aux tree of a restored build is the one stored, with what extra-data.d wrote into it; what
 * this build's plan says there replaces it where it may differ: the scripts of the phases still to
 * run (the stored build's own are removed first: a script deleted since must not run), the
 * runners' control files, the extra packages' script and the block-device plan. One tar_in.
 */
async function refreshAux(ctx: BuildContext, auxDir: string): Promise<void> {
  const run = ctx.cache!
  const { state, boundary } = run.resume!
  const later = new Set(hooksAfter(boundary.phase))
  const stale = state.hookFiles.filter((f) => later.has(f.slice(0, f.indexOf('/'))))
  if (stale.length > 0) {
    const rm = stale.map((f) => shellQuote(L.inAppliance(L.guest(`${L.AUX_TREE.hooks}/${f}`))))
    await ctx.g.shOutside(`rm -f ${rm.join(' ')}`, { errexit: true, signal: ctx.signal })
  }
  const paths = [
    ...[...later].map((h) => `${L.AUX_TREE.hooks}/${h}`),
    ...(run.fromBase ? layerFiles(ctx, later) : []),
    L.AUX_TREE.runners,
    `${L.AUX_TREE.blockdev}/plan`,
    L.AUX_TREE.blockdevConfig,
    L.AUX_TREE.blockdevParams,
    ...(extraPackages.scriptsDir !== undefined ? [extraPackages.scriptsDir] : []),
  ].filter((p) => existsSync(L.onHost(auxDir, p)))
  const tarball = join(ctx.workspace, 'aux-refresh.tar')
  await runTool('tar', ['-C', auxDir, '--owner=0', '--group=0', '-cf', tarball, ...paths], { signal: ctx.signal })
  await ctx.g.tarIn(tarball, L.AUX, {}, { signal: ctx.signal })
}

/**
 * A layer resumed from its base's snapshot: its own elements' files in the hooks tree outside the
 * phases (environment.d, bin/, data), besides the later phases' scripts. The base's elements'
 * are there already (a data tarball in an element is not copied in again).
 */
function layerFiles(ctx: BuildContext, later: ReadonlySet<string>): string[] {
  const layer = ctx.plan.layer
  if (layer === undefined) return []
  const base = new Set(layer.base.resolution.elements.map((e) => e.name))
  return ctx.plan.hooks.files
    .filter((f) => !base.has(f.element) && !PHASE_HOOKS_SET.has(f.path.slice(0, f.path.indexOf('/'))))
    .filter((f) => !later.has(f.path.slice(0, f.path.indexOf('/'))))
    .map((f) => `${L.AUX_TREE.hooks}/${f.path}`)
}

const PHASE_HOOKS_SET: ReadonlySet<string> = new Set(PHASE_HOOKS)

/** Mounts the aux drive (and the helper drive) into the image root mounted at /. */
export async function mountAux(ctx: BuildContext, first = false): Promise<void> {
  const g = ctx.g
  await g.mkdirP(L.AUX)
  if (first) await g.chmod(0o1777, '/tmp')
  await g.mount(DRIVE.aux, L.AUX)
  if (!first && ctx.plan.appliance.drive) await mountHelperDrive(ctx)
}
