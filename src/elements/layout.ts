// Where things are inside the image while it is built (paths as element scripts see them in
// the chroot; outside the chroot the appliance sees them under /sysroot). One definition for
// the pipeline, the runners and the environment model.

/** The image root as the appliance sees it (guestfs mounts the root file system here). */
export const SYSROOT = '/sysroot'
/** Everything virt-dib brings into the image during the build; removed before the outputs. */
export const AUX = '/tmp/in_target.aux'
export const HOOKS = `${AUX}/hooks`
/** Where diskimage-builder elements expect the hooks inside the chroot. */
export const IN_TARGET_D = '/tmp/in_target.d'
export const LIB = `${AUX}/lib`
export const RUNNERS = `${AUX}/run`
export const FAKE_BIN = `${AUX}/fake-bin`
/** The helper drive: HOME, the image cache and the build logs; persistent with --drive. */
export const PERM = `${AUX}/perm`
export const PERM_HOME = `${PERM}/home`
export const PERM_IMAGE_CACHE = `${PERM_HOME}/.cache/image-create`
export const OUT = `${AUX}/out`
/** The block-device layout's state: params.yaml and the answers of `dib-block-device getval`. */
export const BLOCKDEV = `${AUX}/blockdev`
export const BLOCKDEV_PARAMS = `${BLOCKDEV}/params.yaml`

/** `$NAME.d` inside the image: what cleanup.d and manifests leave there is copied out. */
export function outDir(imageName: string): string {
  return `${OUT}/${imageName}.d`
}

/** A path of the image as the appliance sees it outside the chroot. */
export function inAppliance(path: string): string {
  return `${SYSROOT}${path}`
}
