// clang-tidy over native/*.cc with .clang-tidy: cmake-js configures (no build) into a temp dir to
// get compile_commands.json, so the flags and include dirs are exactly the cmake-js build's.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { availableParallelism, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const tidy = process.env.CLANG_TIDY ?? 'clang-tidy'
if (spawnSync(tidy, ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(`lint-native: ${tidy} not found (scripts/setup.sh installs Debian's clang-tidy)`)
  process.exit(1)
}

const out = mkdtempSync(join(tmpdir(), 'virt-dib-tidy-'))
try {
  const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js')
  const conf = spawnSync(
    process.execPath,
    [cmakeJs, 'configure', '--out', out, '--CDCMAKE_EXPORT_COMPILE_COMMANDS=ON'],
    { cwd: root, encoding: 'utf8' },
  )
  if (conf.status !== 0) {
    process.stderr.write(conf.stdout + conf.stderr)
    throw new Error('cmake-js configure failed')
  }
  const files = readdirSync(join(root, 'native'))
    .filter((f) => f.endsWith('.cc'))
    .map((f) => join(root, 'native', f))
  // One clang-tidy per file, as many at once as there are cores; output is printed per file, whole.
  let failed = 0
  const queue = [...files]
  const worker = async () => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
      const { status, output } = await run(tidy, ['-p', out, '--quiet', f])
      // clang-tidy counts what it suppressed in system headers ("N warnings generated."): noise.
      const findings = output.replace(/^\d+ warnings? generated\.\n/gm, '')
      if (findings.trim()) process.stdout.write(findings)
      if (status !== 0) failed++
    }
  }
  await Promise.all(Array.from({ length: Math.min(availableParallelism(), files.length) }, worker))
  if (failed) {
    console.error(`lint-native: clang-tidy failed on ${failed} of ${files.length} files`)
    process.exitCode = 1
  } else console.log(`lint-native: ${files.length} files clean`)
} finally {
  rmSync(out, { recursive: true, force: true })
}

/** Runs a command; resolves with its status and its stdout and stderr together. */
function run(cmd, args) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('error', reject)
    child.on('close', (status) => resolvePromise({ status, output }))
  })
}
