// The README's test command: unit tier, then the appliance tier (one file at a time), then a
// plain closing line `N passed, N failed, N skipped` over both, so a run that ran no test, or
// skipped some (a missing tool, no root), is visible.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const dir = mkdtempSync(join(tmpdir(), 'vdib-results.'))
const tiers = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['unit', 'appliance']
let passed = 0
let failed = 0
let skipped = 0
let status = 0
for (const tier of tiers) {
  const json = join(dir, `${tier}.json`)
  // prettier-ignore
  const r = spawnSync('npx', [
    'vitest', 'run', '--project', tier, '--no-file-parallelism',
    '--reporter=default', '--reporter=json', `--outputFile.json=${json}`,
  ], { stdio: 'inherit' })
  if (r.status !== 0) status = r.status ?? 1
  try {
    const res = JSON.parse(readFileSync(json, 'utf8'))
    passed += res.numPassedTests
    failed += res.numFailedTests
    // vitest's JSON (Jest's shape) counts skipped tests as pending, todo ones apart.
    skipped += (res.numPendingTests ?? 0) + (res.numTodoTests ?? 0)
  } catch {
    failed += 1 // the tier crashed before reporting
  }
}
rmSync(dir, { recursive: true, force: true })
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(status !== 0 ? status : failed > 0 ? 1 : 0)
