// Builds the addon with node-gyp from binding.gyp into build-gyp/ (its own folder, so it never
// shadows the cmake-js build in build/). Uses the local Node headers: no download.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const work = join(root, 'build-gyp', 'src')
rmSync(join(root, 'build-gyp'), { recursive: true, force: true })
mkdirSync(work, { recursive: true })
symlinkSync(join(root, 'binding.gyp'), join(work, 'binding.gyp'))
symlinkSync(join(root, 'native'), join(work, 'native'))

const nodedir = [process.env.npm_config_nodedir, '/usr', resolve(dirname(process.execPath), '..')].find(
  (d) => d && existsSync(join(d, 'include', 'node', 'node_api.h')),
)
if (!nodedir) {
  console.error('build-gyp: no local Node headers (include/node/node_api.h) found')
  process.exit(1)
}
const require = createRequire(import.meta.url)
const gyp = require.resolve('node-gyp/bin/node-gyp.js')
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { cwd: work, stdio: 'inherit' })
if (r.status !== 0) process.exit(r.status ?? 1)
mkdirSync(join(root, 'build-gyp', 'Release'), { recursive: true })
cpSync(join(work, 'build', 'Release', 'virt_dib.node'), join(root, 'build-gyp', 'Release', 'virt_dib.node'))
console.log(`build-gyp: ${join(root, 'build-gyp', 'Release', 'virt_dib.node')}`)
