// `dib-block-device` for outside-chroot scripts, without Python: it answers `getval SYMBOL` from
// one file per symbol that virt-dib writes (plan/ before the build, created/ once the layout
// exists), and the params.yaml that DIB_BLOCK_DEVICE_PARAMS_YAML points at.
import { stringify } from 'yaml'

import type { BlockDeviceValues } from './devices.js'
import type { BlockDeviceLayout } from './layout.js'

/** Symbols that only exist once the layout was created. */
const CREATED_ONLY = ['image-path', 'image-block-device', 'image-block-devices', 'image-block-partition']

export const DIB_BLOCK_DEVICE_SCRIPT = `#!/bin/bash
# virt-dib's dib-block-device: the getval answers of the layout virt-dib plans and creates.
set -u
state="$(dirname "$(readlink -f "$0")")/../blockdev"
while [ $# -gt 0 ]; do
  case $1 in
    --params) shift 2 ;;
    --params=*) shift ;;
    *) break ;;
  esac
done
case "\${1:-}" in
  getval)
    sym=\${2:-}
    if [[ ! $sym =~ ^[a-z-]+$ ]]; then echo "dib-block-device: invalid symbol [$sym] for getval" >&2; exit 1; fi
    for f in "$state/created/$sym" "$state/plan/$sym"; do
      if [ -f "$f" ]; then cat "$f"; exit 0; fi
    done
    case " ${CREATED_ONLY.join(' ')} " in
      *" $sym "*) echo "dib-block-device: $sym is not known before the block device is created" >&2 ;;
      *) echo "dib-block-device: invalid symbol [$sym] for getval" >&2 ;;
    esac
    exit 1 ;;
  init|create|writefstab|umount|cleanup|delete)
    echo "dib-block-device: virt-dib does '$1' itself" >&2
    exit 0 ;;
  *)
    echo "usage: dib-block-device [--params FILE] getval SYMBOL" >&2
    exit 1 ;;
esac
`

/** One file per symbol under `plan/` or `created/`; the content is what getval prints. */
export function getvalFiles(values: BlockDeviceValues, dir: 'plan' | 'created'): [string, string][] {
  return Object.entries(values)
    .filter((e): e is [string, string] => typeof e[1] === 'string')
    .map(([k, v]) => [`${dir}/${k}`, `${v}\n`])
}

/** diskimage-builder's parameter file, with the paths as the appliance sees them. */
export function paramsYaml(
  layout: BlockDeviceLayout,
  p: {
    configPath: string
    imageDir: string
    buildDir: string
    mountBase: string
    fsType: string
    rootLabel: string | undefined
    mkfsOptions: string | undefined
  },
): string {
  const doc: Record<string, string> = {
    config: p.configPath,
    'image-dir': p.imageDir,
    'root-fs-type': p.fsType,
    'root-label': p.rootLabel ?? '',
    'mount-base': p.mountBase,
    'build-dir': p.buildDir,
    'image-size': `${Math.ceil(layout.diskSize / 1024)}KiB`,
  }
  if (p.mkfsOptions) doc['root-fs-opts'] = p.mkfsOptions
  return stringify(doc)
}
