// Every output format, by name. Checked once at load: sorted, unique, well-named (the OCaml
// bake()). The CLI builds --formats validation and --machine-readable from this map.
import type { OutputFormatName } from '../api/options.js'
import { docker } from './docker.js'
import { qcow2 } from './qcow2.js'
import { raw } from './raw.js'
import { squashfs } from './squashfs.js'
import { tar } from './tar.js'
import { tgz } from './tgz.js'
import type { OutputFormat } from './types.js'
import { vhd } from './vhd.js'

function bake(formats: OutputFormat[]): ReadonlyMap<OutputFormatName, OutputFormat> {
  const map = new Map<OutputFormatName, OutputFormat>()
  for (const f of [...formats].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (!/^[a-z][a-z0-9]*$/.test(f.name)) throw new Error(`bad output format name ${f.name}`)
    if (map.has(f.name)) throw new Error(`duplicate output format ${f.name}`)
    map.set(f.name, f)
  }
  return map
}

export const OUTPUT_FORMATS = bake([docker, qcow2, raw, squashfs, tar, tgz, vhd])

export function isFormatName(name: string): name is OutputFormatName {
  return OUTPUT_FORMATS.has(name as OutputFormatName)
}

/** Formats whose host tools exist here (docker only with a docker client). */
export function availableFormats(): OutputFormatName[] {
  return [...OUTPUT_FORMATS.values()]
    .filter((f) => {
      try {
        f.checkHost?.({ elements: [], libPath: '', elementPaths: [], dockerTarget: 'x' })
        return true
      } catch {
        return false
      }
    })
    .map((f) => f.name)
}
