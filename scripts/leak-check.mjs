// Leak check of the addon: runs a workload (test/fixtures/scripts/leak-workload.cjs) under
// valgrind and fails if memory is definitely lost in frames of virt_dib.node.
import { spawnSync } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const addon = process.env.VIRT_DIB_ADDON ?? join(root, 'build', 'Release', 'virt_dib.node')
// prettier-ignore
const r = spawnSync('valgrind', [
  '--leak-check=full', '--show-leak-kinds=definite', '--errors-for-leak-kinds=definite',
  '--num-callers=30',
  process.execPath, '--expose-gc', join(root, 'test', 'fixtures', 'scripts', 'leak-workload.cjs'),
], { encoding: 'utf8', env: { ...process.env, VIRT_DIB_ADDON_PATH: addon, LEAK_ROUNDS: process.env.LEAK_ROUNDS ?? '30' } })
if (r.error) {
  console.error(`leak-check: cannot run valgrind (${r.error.message}); apt-get install valgrind`)
  process.exit(2)
}
const log = r.stderr
const summary = /definitely lost: ([\d,]+) bytes in ([\d,]+) blocks/.exec(log)
const records = log.split(/\n==\d+== \n/).filter((b) => /definitely lost/.test(b) && /virt_dib\.node/.test(b))
console.log(r.stdout.trim())
if (r.status !== 0)
  console.log(
    `leak-check: the workload failed (status ${r.status}):\n${log
      .split('\n')
      .filter((l) => !l.startsWith('=='))
      .join('\n')}`,
  )
console.log(
  `valgrind: definitely lost (whole process): ${summary ? `${summary[1]} bytes in ${summary[2]} blocks` : '0 bytes'}`,
)
console.log(`valgrind: definite leaks with virt_dib.node frames: ${records.length}`)
for (const rec of records) console.log(rec)
process.exit(r.status === 0 && records.length === 0 ? 0 : 1)
