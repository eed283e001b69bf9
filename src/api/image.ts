// The image's file systems: the block device step (block-device.d, then the layout), copying
// the built tree onto it, and the final clean-up before outputs are taken.
import { phaseEnvironment, shellQuote } from '../elements/environment.js'
import * as L from '../elements/layout.js'
import { formatExtraEnv } from '../phases/control-file.js'
import { phase } from '../phases/registry.js'
import { runPhase } from '../phases/run-scripts.js'
import { DRIVE, mountAux } from './appliance.js'
import type { BuildContext } from './context.js'

const FINAL = '/vdib-final'

async function applianceSh(ctx: BuildContext, script: string): Promise<string> {
  return ctx.g.debug('sh', [`set -e; ${script}`], { signal: ctx.signal })
}

/**
 * mkfs command for the root file system, with diskimage-builder's ext4 defaults, the label and
 * the UUID given at creation (as diskimage-builder does: no separate tune2fs that could race
 * with udev probing the new file system).
 */
export function mkfsCommand(
  fsType: string,
  device: string,
  mkfsOptions: string | undefined,
  label: string,
  uuid: string,
): string {
  const extra = fsType === 'ext4' ? ['-i', '4096', '-J', 'size=64'] : []
  const force = fsType === 'xfs' || fsType === 'btrfs' ? ['-f'] : fsType.startsWith('ext') ? ['-F'] : []
  const ids =
    fsType === 'vfat'
      ? ['-n', label]
      : fsType === 'xfs'
        ? ['-L', label, '-m', `uuid=${uuid}`]
        : ['-L', label, '-U', uuid]
  // --mkfs-options is a list of words: split on blanks, each passed as one literal argument.
  const user = (mkfsOptions ?? '').split(/\s+/).filter(Boolean)
  return ['mkfs', '-t', fsType, ...force, ...extra, ...ids, ...user, device].map(shellQuote).join(' ')
}

/** block-device.d, then the layout (one file system on the whole disk), then the tree copy. */
export async function createBlockDevice(ctx: BuildContext): Promise<void> {
  const { plan, g } = ctx
  const outDev = (await applianceSh(ctx, `readlink -f ${DRIVE.out}`)).trim()
  const bd = await runPhase(ctx, phase('block-device.d'))
  ctx.checkAborted()
  const device = bd.blockDevice ?? outDev
  ctx.progress('Setting up the destination root')
  await applianceSh(
    ctx,
    `${mkfsCommand(plan.fsType, device, plan.options.mkfsOptions, plan.rootLabel, plan.rootFsUuid)}; udevadm settle || true`,
  )
  // Copy the built tree (everything, hidden top-level files included) onto the new file system.
  ctx.progress('Copying the root tree onto the image')
  const t = Date.now()
  // bash with pipefail: a failure on either side of the tar pipe must fail the build, never leave
  // a partial tree behind (the appliance's /bin/sh is dash). The copy is then checked.
  const copy = [
    'set -euo pipefail',
    `mkdir -p ${FINAL}`,
    `mount ${shellQuote(device)} ${FINAL}`,
    `cd ${L.SYSROOT}`,
    `tar --one-file-system --xattrs --xattrs-include='*' --acls --numeric-owner --exclude=./lost+found -cf - . | tar -C ${FINAL} --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -`,
    `src=$(find . -xdev -path ./lost+found -prune -o -print | wc -l)`,
    `dst=$(cd ${FINAL} && find . -xdev -path ./lost+found -prune -o -print | wc -l)`,
    `sync`,
    `umount ${FINAL}`,
    `rmdir ${FINAL}`,
    `[ "$src" -le "$dst" ] || { echo "copied $dst of $src entries" >&2; exit 1; }`,
  ].join('\n')
  await ctx.g.debug('sh', [`exec bash -c ${shellQuote(copy)}`], { signal: ctx.signal })
  ctx.emit({ kind: 'step', name: 'copy-tree', seconds: (Date.now() - t) / 1000 })
  await g.umountAll()
  await g.mount(device, '/')
  await mountAux(ctx)
  ctx.blockDevice = { device }
  // The environment model is the one source of these values: what it gives the later phases.
  const { vars } = phaseEnvironment({ ...plan.envInputs, blockDevice: { device } }, 'pre-finalise.d', 'appliance')
  const late = vars.filter((v) => v.source === 'block-device' || v.name === 'DIB_IMAGE_SIZE')
  await g.write(`${L.RUNNERS}/block-device.env`, formatExtraEnv(late))
}

/** Empties /tmp, truncates logs under /var/log and removes /root/*.log, like diskimage-builder. */
export async function finalizeImage(ctx: BuildContext): Promise<void> {
  const g = ctx.g
  if (ctx.plan.options.drive) await g.umount(L.PERM)
  await g.umount(L.AUX)
  await applianceSh(
    ctx,
    [
      `cd ${L.SYSROOT}`,
      `if [ -d tmp ]; then find tmp -mindepth 1 -maxdepth 1 -exec rm -rf {} +; fi`,
      // divergence: the original failed when /var/log did not exist.
      `if [ -d var/log ]; then find var/log -type f -exec truncate -s 0 {} +; fi`,
      `if [ -d root ]; then find root -type f -name '*.log' -delete; fi`,
    ].join('; '),
  )
}
