// The image's file systems: the layout carried out in the appliance after block-device.d, the
// built tree copied onto it, and the final clean-up before outputs.
import { createdValues, filesystemDevice } from '../blockdev/devices.js'
import { getvalFiles } from '../blockdev/getval.js'
import type { BlockDeviceLayout } from '../blockdev/layout.js'
import { deactivateScript, fstabScript, layoutScript } from '../blockdev/script.js'
import { phaseEnvironment } from '../elements/environment.js'
import { shellQuote } from '../util/shell-quote.js'
import * as L from '../elements/layout.js'
import { formatExtraEnv } from '../phases/runner/control-file.js'
import { phase } from '../phases/registry.js'
import { mountAux, mountKernelDevice } from './appliance.js'
import type { BuildContext } from './context.js'

/** Where the layout is mounted in the appliance while the tree is copied onto it. */
const FINAL = '/vdib-final'

/**
 * After block-device.d: the layout (partitions, LVM, file systems), the tree copy and fstab, all in
 * one appliance round trip; then the layout is mounted as the image root for the later phases.
 * A tree built in place is already on the layout: only fstab is written. Returns the layout made.
 */
export async function createBlockDevice(
  ctx: BuildContext,
  { outDevice, namedDevice, disk: diskFile }: { outDevice: string; namedDevice: string | undefined; disk: string },
): Promise<BlockDeviceLayout> {
  const { plan, g } = ctx
  // compat: a device named by block-device.d gets one file system, as in the original.
  const layout: BlockDeviceLayout = namedDevice !== undefined ? plan.overrideLayout : plan.layout
  const disk = namedDevice ?? outDevice
  const copy = !plan.buildInPlace || namedDevice !== undefined
  ctx.progress('Setting up the destination root')
  if (copy) {
    const script = layoutScript(layout, { disk, source: L.SYSROOT, target: FINAL })
    await g.shOutside(script, { bash: true, signal: ctx.signal })
  }
  const writes = layoutStateWrites(ctx, layout, disk, diskFile)
  if (copy) {
    await g.umountAll()
    // Parents first: each mount point exists on the file system mounted before it.
    for (const m of layout.mounts) await mountKernelDevice(ctx, filesystemDevice(layout, disk, m.base), m.mountPoint)
    await mountAux(ctx)
  }
  // fstab (in place) and the state later phases read: one round trip.
  const fstab = copy ? undefined : fstabScript(layout, L.SYSROOT)
  await ctx.g.shOutside([...(fstab ? [fstab] : []), ...writes].join('\n'), { errexit: true, signal: ctx.signal })
  return layout
}

/**
 * What the phases after block-device.d read of the layout made on `disk` (the device as this
 * appliance names it): IMAGE_BLOCK_DEVICE and friends, and the getval answers; as shell lines.
 */
function layoutStateWrites(ctx: BuildContext, layout: BlockDeviceLayout, disk: string, diskFile: string): string[] {
  const values = createdValues(layout, disk, diskFile)
  // The environment model is the one source of these values: what it gives the later phases.
  const blockDevice = { device: values['image-block-device']!, devices: values['image-block-devices']! }
  const { vars } = phaseEnvironment(
    { ...ctx.plan.envInputs, blockDevice },
    { ...phase('pre-finalise.d'), where: 'appliance' },
  )
  const late = vars.filter((v) => v.source === 'block-device' || v.name === 'DIB_IMAGE_SIZE')
  const files: [string, string][] = [
    [L.BLOCK_DEVICE_ENV, formatExtraEnv(late)],
    ...getvalFiles(values, 'created').map(([p, c]): [string, string] => [`${L.BLOCKDEV}/${p}`, c]),
  ]
  return files.map(([p, c]) => `printf '%s' ${shellQuote(c)} > ${shellQuote(L.inAppliance(p))}`)
}

/**
 * A layout restored from the step cache: the kernel may name its disk otherwise than in the
 * build that stored it (drives are probed asynchronously), so that state is written again.
 */
export async function writeLayoutState(
  ctx: BuildContext,
  layout: BlockDeviceLayout,
  disk: string,
  diskFile: string,
): Promise<void> {
  await ctx.g.shOutside(layoutStateWrites(ctx, layout, disk, diskFile).join('\n'), {
    errexit: true,
    signal: ctx.signal,
  })
}

/** Empties /tmp, truncates logs under /var/log and removes /root/*.log, like diskimage-builder. */
export async function finalizeImage(ctx: BuildContext): Promise<void> {
  const g = ctx.g
  if (ctx.plan.appliance.drive) await g.umount(L.PERM)
  await g.umount(L.AUX)
  await ctx.g.shOutside(
    [
      `cd ${L.SYSROOT}`,
      `if [ -d tmp ]; then find tmp -mindepth 1 -maxdepth 1 -exec rm -rf {} +; fi`,
      // divergence: the original failed when /var/log did not exist.
      `if [ -d var/log ]; then find var/log -type f -exec truncate -s 0 {} +; fi`,
      `if [ -d root ]; then find root -type f -name '*.log' -delete; fi`,
    ].join('; '),
    { errexit: true, signal: ctx.signal },
  )
}

/**
 * Makes the image's file systems read-only, so the host can read the disk file while the guest
 * still reads the tree (disk conversions run beside the tarball).
 */
export async function freezeImage(ctx: BuildContext, layout: BlockDeviceLayout): Promise<void> {
  const mounts = [...layout.mounts].reverse()
  const at = (mp: string) => shellQuote(mp === '/' ? L.SYSROOT : `${L.SYSROOT}${mp}`)
  await ctx.g.shOutside(['sync', ...mounts.map((m) => `mount -o remount,ro ${at(m.mountPoint)}`), 'sync'].join('; '), {
    errexit: true,
    signal: ctx.signal,
  })
}

/** Unmounts the image and deactivates its volume groups, so the disk file is complete. */
export async function releaseImage(ctx: BuildContext, layout: BlockDeviceLayout): Promise<void> {
  await ctx.g.umountAll()
  const deactivate = deactivateScript(layout)
  if (deactivate) await ctx.g.shOutside(deactivate, { errexit: true, signal: ctx.signal })
}
