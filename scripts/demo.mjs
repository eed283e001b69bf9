// Builds the demo image from examples/elements with the CLI: demo.qcow2 (+ .tar) in ./demo-out/.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const lib = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
if (!existsSync(join(lib, 'die'))) {
  console.error(`demo: ${lib} is missing: install python3-diskimage-builder (scripts/setup.sh does)`)
  process.exit(1)
}
const out = resolve(process.env.DEMO_OUT ?? join(root, 'demo-out'))
mkdirSync(out, { recursive: true })
// prettier-ignore
const args = [
  '-B', lib,
  '-p', join(root, 'examples', 'elements'),
  '--skip-base',
  '--size', '1G',
  '--formats', 'qcow2,tar',
  '--checksum',
  '--name', join(out, 'demo'),
  'demo-os', 'demo-app',
]
console.log(`demo: virt-dib ${args.join(' ')}`)
const r = spawnSync(join(root, 'bin', 'virt-dib'), args, { stdio: 'inherit' })
if (r.status === 0) console.log(`demo: done — ${join(out, 'demo.qcow2')} and ${join(out, 'demo.tar')}`)
process.exit(r.status ?? 1)
