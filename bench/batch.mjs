// Workload 5 (issue #16): four images over workload 2's tree, each a layer over one base with its own
// finalise.d element. (A) `virt-dib batch -j 2` of the base and its four layers, with a fresh cache;
// (B) four single builds of ours in a row, no cache; (C) the original virt-dib four times. Alternating
// A B C per run; writes bench/RESULTS-batch.md. Target: A ≤ 0.40 × B.
//   node bench/batch.mjs [--runs N] [--out bench/RESULTS-batch.md] [--prepare-only]
// (--prepare-only: writes the flavour elements and a batch file, prints the commands, runs nothing)
// Never part of the tests or CI. Needs root-free qemu (TCG here).
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i === -1 ? dflt : args[i + 1]
}
const RUNS = Number(opt('--runs', '1'))
const RESULTS = resolve(opt('--out', join(root, 'bench', 'RESULTS-batch.md')))
const PREPARE_ONLY = args.includes('--prepare-only')
const JOBS = 2
const FLAVOURS = [1, 2, 3, 4]
const work = join(root, 'bench', 'out', 'batch')

const paths = [
  join(root, 'examples', 'elements'),
  join(root, 'bench', 'elements'),
  join(root, 'test', 'fixtures', 'elements'),
]
const common = ['-B', LIB, ...paths.flatMap((p) => ['-p', p]), '--skip-base']
// Workload 2 of bench/run.mjs, less its elements.
const TREE = ['--size', '3G', '--formats', 'tar,qcow2', '--checksum']
const BASE_ELEMENTS = ['demo-os', 'bench-data']
const FORMATS = ['tar', 'qcow2']

const env = { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg' }
const f1 = (x) => x.toFixed(1)
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** bench-flavour-N: one finalise.d script writing N to /etc/bench-flavour (rewritten only if it differs). */
function ensureFlavourElements() {
  for (const n of FLAVOURS) {
    const dir = join(root, 'bench', 'elements', `bench-flavour-${n}`)
    const files = {
      'README.rst': `bench-flavour-${n}: writes ${n} to /etc/bench-flavour in finalise.d (bench/batch.mjs, workload 5).\n`,
      [`finalise.d/60-bench-flavour-${n}`]: `#!/bin/bash\nset -eu\necho ${n} > /etc/bench-flavour\n`,
    }
    for (const [rel, text] of Object.entries(files)) {
      const p = join(dir, rel)
      mkdirSync(dirname(p), { recursive: true })
      if (!existsSync(p) || readFileSync(p, 'utf8') !== text) writeFileSync(p, text)
      if (rel.startsWith('finalise.d/')) chmodSync(p, 0o755)
    }
  }
}

/** The batch file of (A), in `dir`: the outputs land next to it. */
function writeBatchFile(dir) {
  mkdirSync(dir, { recursive: true })
  const list = (xs) => `[${xs.join(', ')}]`
  const lines = [
    `# Workload 5 of the benchmark, written by bench/batch.mjs: a base and four layers over it.`,
    'defaults:',
    `  libPath: ${JSON.stringify(LIB)}`,
    `  elementPaths: ${list(paths.map((p) => JSON.stringify(p)))}`,
    '  skipBase: true',
    '  size: 3G',
    `  formats: ${list(FORMATS)}`,
    '  checksum: true',
    'builds:',
    '  - name: base',
    `    elements: ${list(BASE_ELEMENTS)}`,
    ...FLAVOURS.flatMap((n) => [`  - name: flavour-${n}`, '    base: base', `    elements: [bench-flavour-${n}]`]),
    '',
  ]
  const file = join(dir, 'batch.yaml')
  writeFileSync(file, lines.join('\n'))
  return file
}

/** Spawns one tool; wall seconds, status and its output (also kept in `dir`/`log`). */
function timed(cmd, argv, dir, log) {
  return new Promise((done) => {
    const t = process.hrtime.bigint()
    const child = spawn(cmd, argv, { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (b) => (output += b))
    child.stderr.on('data', (b) => (output += b))
    child.on('close', (status) => {
      const seconds = Number(process.hrtime.bigint() - t) / 1e9
      writeFileSync(join(dir, log), output)
      done({ seconds, status, output })
    })
  })
}

const ourBin = join(root, 'bin', 'virt-dib')

function batchCommand(file, cache, events) {
  return [
    process.execPath,
    [ourBin, 'batch', '-j', String(JOBS), file, '--cache-dir', cache, `--machine-readable=file:${events}`],
  ]
}
function singleCommand(tool, dir, n) {
  const own = ['--name', join(dir, `flavour-${n}`), ...TREE, ...BASE_ELEMENTS, `bench-flavour-${n}`]
  return tool === 'ours'
    ? [process.execPath, [ourBin, ...common, '--no-cache', ...own]]
    : ['/usr/bin/virt-dib', [...common, '--python', 'python3', ...own]]
}

const readEvents = (file) =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l))
    : []

/** The file's member at `./etc/bench-flavour` (or without the `./`), or null when it has none. */
function flavourIn(tarPath) {
  for (const member of ['./etc/bench-flavour', 'etc/bench-flavour']) {
    const r = spawnSync('tar', ['-xOf', tarPath, member], { encoding: 'utf8' })
    if (r.status === 0) return r.stdout.trim()
  }
  return null
}

/** Every output of the batch is there, the layers' trees hold their flavour and the base's does not. */
function verifyBatch(dir) {
  const problems = []
  for (const name of ['base', ...FLAVOURS.map((n) => `flavour-${n}`)]) {
    for (const ext of FORMATS) {
      for (const f of [`${name}.${ext}`, `${name}.${ext}.md5`, `${name}.${ext}.sha256`]) {
        if (!existsSync(join(dir, f))) problems.push(`${f} missing`)
      }
    }
    const qcow2 = join(dir, `${name}.qcow2`)
    if (existsSync(qcow2)) {
      const info = spawnSync('qemu-img', ['info', '--output=json', qcow2], { encoding: 'utf8' })
      const format = info.status === 0 ? JSON.parse(info.stdout).format : `unreadable (${info.stderr.trim()})`
      if (format !== 'qcow2') problems.push(`${name}.qcow2 is ${format}`)
    }
  }
  const baseTar = join(dir, 'base.tar')
  if (existsSync(baseTar) && flavourIn(baseTar) !== null) problems.push('base.tar holds ./etc/bench-flavour')
  for (const n of FLAVOURS) {
    const tar = join(dir, `flavour-${n}.tar`)
    if (!existsSync(tar)) continue
    const got = flavourIn(tar)
    if (got !== String(n))
      problems.push(`flavour-${n}.tar: ./etc/bench-flavour is ${got === null ? 'missing' : `‘${got}’`}`)
  }
  if (problems.length > 0) throw new Error(`the batch's outputs in ${dir} are wrong:\n  ${problems.join('\n  ')}`)
}

/** Removes a run's images (several GB); logs and events stay. */
function dropImages(dir, names) {
  for (const name of names)
    for (const ext of FORMATS)
      for (const f of [`${name}.${ext}`, `${name}.${ext}.md5`, `${name}.${ext}.sha256`])
        rmSync(join(dir, f), { force: true })
}

/** (A): the batch, from an empty cache. */
async function runBatch(i) {
  const dir = join(work, `run-${i}`, 'A')
  rmSync(dir, { recursive: true, force: true })
  const file = writeBatchFile(dir)
  const cache = join(dir, 'cache')
  mkdirSync(cache, { recursive: true })
  const events = join(dir, 'events.jsonl')
  const [cmd, argv] = batchCommand(file, cache, events)
  const r = await timed(cmd, argv, dir, 'output.log')
  if (r.status !== 0) throw new Error(`the batch failed (status ${r.status}):\n${r.output.slice(-3000)}`)
  verifyBatch(dir)
  dropImages(dir, ['base', ...FLAVOURS.map((n) => `flavour-${n}`)])
  rmSync(cache, { recursive: true, force: true })
  return { seconds: r.seconds, builds: perBuild(readEvents(events)) }
}

/** Each build of the batch from its events: when it ran, how long, what its cache hits restored. */
function perBuild(events) {
  const builds = new Map()
  const get = (name) => {
    if (!builds.has(name)) builds.set(name, { name, reused: [], outputs: [], stored: 0 })
    return builds.get(name)
  }
  for (const e of events) {
    if (typeof e.build !== 'string') continue
    const b = get(e.build)
    if (e.kind === 'build-start') b.start = e.elapsed
    else if (e.kind === 'build-end')
      Object.assign(b, { end: e.elapsed, status: e.status, seconds: e.seconds, reason: e.reason })
    else if (e.kind === 'cache-hit') b.reused.push(...e.steps)
    else if (e.kind === 'cache-store') b.stored++
    else if (e.kind === 'output') b.outputs.push(`${basename(e.path)} ${(e.size / 2 ** 20).toFixed(0)} MiB`)
  }
  return [...builds.values()]
}

const RACE = /mount point is not a directory/

/** (B) or (C): the four flavours one after the other, each a flat build; the sum of their wall times. */
async function runSingles(tool, i, retries) {
  const dir = join(work, `run-${i}`, tool === 'ours' ? 'B' : 'C')
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const each = []
  for (const n of FLAVOURS) {
    const [cmd, argv] = singleCommand(tool, dir, n)
    for (let attempt = 0; ; attempt++) {
      const r = await timed(cmd, argv, dir, `flavour-${n}.log`)
      if (r.status === 0) {
        each.push(r.seconds)
        break
      }
      if (tool === 'original' && RACE.test(r.output) && attempt < 3) {
        retries.count++
        console.log(`bench batch: original hit the device race (flavour-${n}, run ${i + 1}); retrying`)
        continue
      }
      throw new Error(`${tool} failed on flavour-${n} (status ${r.status}):\n${r.output.slice(-3000)}`)
    }
    const got = flavourIn(join(dir, `flavour-${n}.tar`))
    if (got !== String(n)) throw new Error(`${tool}'s flavour-${n}.tar: ./etc/bench-flavour is ${got ?? 'missing'}`)
    dropImages(dir, [`flavour-${n}`])
  }
  return { seconds: each.reduce((a, b) => a + b, 0), each }
}

/** bench-data.tar is generated by bench/run.mjs (workload 2's tree). */
function ensureDataTarball() {
  if (existsSync(join(root, 'bench', 'elements', 'bench-data', 'bench-data.tar'))) return
  const r = spawnSync(process.execPath, [join(root, 'bench', 'run.mjs'), '--workloads', '2', '--prepare-only'], {
    stdio: 'inherit',
  })
  if (r.status !== 0) throw new Error('generating bench-data.tar (bench/run.mjs --prepare-only) failed')
}

function versions() {
  const v = (cmd, a) => (spawnSync(cmd, a, { encoding: 'utf8' }).stdout ?? '').split('\n')[0].trim()
  return [
    `- original: ${v('/usr/bin/virt-dib', ['--version'])}`,
    `- ours: ${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version} (git ${v('git', ['-C', root, 'rev-parse', '--short', 'HEAD'])})`,
    `- libguestfs: ${v('dpkg-query', ['-W', '-f=${Version}', 'libguestfs0'])}; qemu: ${v('qemu-system-x86_64', ['--version'])}; node ${process.version}`,
  ]
}

const shell = (cmd, argv) => [cmd, ...argv].map((a) => (/^[\w./:=,@+-]+$/.test(a) ? a : `'${a}'`)).join(' ')

function prepareOnly() {
  const dir = join(work, 'prepare')
  rmSync(dir, { recursive: true, force: true })
  const file = writeBatchFile(dir)
  const tarball = join(root, 'bench', 'elements', 'bench-data', 'bench-data.tar')
  console.log(`bench batch: wrote bench/elements/bench-flavour-{${FLAVOURS.join(',')}} and ${relative(root, file)}:\n`)
  console.log(readFileSync(file, 'utf8'))
  console.log(
    `bench batch: bench-data.tar ${existsSync(tarball) ? 'is there' : 'is missing (a run generates it through bench/run.mjs --prepare-only)'}`,
  )
  console.log(
    `bench batch: each run (env LIBGUESTFS_BACKEND_SETTINGS=${env.LIBGUESTFS_BACKEND_SETTINGS}), in the run's folder:`,
  )
  const rd = join(work, 'run-0')
  console.log(
    `(A) ${shell(...batchCommand(join(rd, 'A', 'batch.yaml'), join(rd, 'A', 'cache'), join(rd, 'A', 'events.jsonl')))}`,
  )
  for (const n of FLAVOURS) console.log(`(B) ${shell(...singleCommand('ours', join(rd, 'B'), n))}`)
  for (const n of FLAVOURS) console.log(`(C) ${shell(...singleCommand('original', join(rd, 'C'), n))}`)
}

async function main() {
  ensureFlavourElements()
  if (PREPARE_ONLY) return prepareOnly()
  ensureDataTarball()
  const A = []
  const B = []
  const C = []
  const retries = { count: 0 }
  for (let i = 0; i < RUNS; i++) {
    A.push(await runBatch(i))
    console.log(`bench batch: run ${i + 1}: (A) batch -j ${JOBS}: ${f1(A[i].seconds)} s`)
    B.push(await runSingles('ours', i, retries))
    console.log(`bench batch: run ${i + 1}: (B) ours ×4: ${f1(B[i].seconds)} s (${B[i].each.map(f1).join(' + ')})`)
    C.push(await runSingles('original', i, retries))
    console.log(`bench batch: run ${i + 1}: (C) original ×4: ${f1(C[i].seconds)} s (${C[i].each.map(f1).join(' + ')})`)
  }
  const a = median(A.map((r) => r.seconds))
  const b = median(B.map((r) => r.seconds))
  const c = median(C.map((r) => r.seconds))
  const range = (xs) => (xs.length > 1 ? ` (${f1(Math.min(...xs))}–${f1(Math.max(...xs))})` : '')
  const cpu = cpus()[0]?.model ?? 'unknown'
  const kvm = existsSync('/dev/kvm') ? 'present but forced off (TCG)' : 'none (TCG)'
  const last = A.at(-1)
  const reusedCell = (r) => {
    if (r.reused.length === 0) return '—'
    return r.reused.length === 1 ? r.reused[0] : `${r.reused.length}: ${r.reused[0]} … ${r.reused.at(-1)}`
  }
  const lines = [
    '# Benchmarks: batch builds (workload 5)',
    '',
    `Written by \`npm run bench:batch\` (bench/batch.mjs) on ${new Date().toISOString().slice(0, 16)}Z; ${RUNS} run(s), alternating A, B, C.`,
    '',
    `Machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, KVM: ${kvm}.`,
    ...versions(),
    '',
    "Four images over workload 2's tree (demo-os bench-data, --size 3G, tar+qcow2, --checksum), each with its",
    'own finalise.d element (bench-flavour-N). (A) one `virt-dib batch -j 2` of a base and four layers over it',
    '(`base: base`), from an empty cache: it writes the base image too, five in all; (B) four single builds of',
    'ours in a row, no cache; (C) the original virt-dib four times.',
    '',
    '| measurement | median s |',
    '|---|---|',
    `| (A) ours, \`batch -j ${JOBS}\`: base + 4 layers | ${f1(a)}${range(A.map((r) => r.seconds))} |`,
    `| (B) ours, 4 single builds in a row | ${f1(b)}${range(B.map((r) => r.seconds))} |`,
    `| (C) original, 4 builds in a row | ${f1(c)}${range(C.map((r) => r.seconds))} |`,
    `| **A/B** (target ≤ 0.40) | **${(a / b).toFixed(2)}** ${a / b <= 0.4 ? '(met)' : '(missed)'} |`,
    `| **A/C** | **${(a / c).toFixed(2)}** |`,
    '',
    `Single builds, per flavour (median s): ours ${FLAVOURS.map((_, k) => f1(median(B.map((r) => r.each[k])))).join(', ')}; original ${FLAVOURS.map((_, k) => f1(median(C.map((r) => r.each[k])))).join(', ')}.`,
    `Original builds retried after its device race (\`mount point is not a directory\`): ${retries.count}.`,
    '',
    `## The batch's builds (run ${RUNS}, from its --machine-readable events)`,
    '',
    'Every output was checked: there, with its checksums; flavour-N.tar holds ./etc/bench-flavour = N, base.tar none.',
    '',
    '| build | result | started at s | ended at s | seconds | snapshots stored | phases reused (cache hits) | outputs |',
    '|---|---|---|---|---|---|---|---|',
    ...last.builds.map(
      (r) =>
        `| ${r.name} | ${r.status ?? '?'}${r.reason ? ` (${r.reason})` : ''} | ${r.start === undefined ? '?' : f1(r.start)} | ${r.end === undefined ? '?' : f1(r.end)} | ${r.seconds === undefined ? '?' : f1(r.seconds)} | ${r.stored} | ${reusedCell(r)} | ${r.outputs.join(', ') || '—'} |`,
    ),
    '',
  ]
  const reusedLists = last.builds.filter((r) => r.reused.length > 0)
  if (reusedLists.length > 0) {
    lines.push('Reused, in full:', '', ...reusedLists.map((r) => `- ${r.name}: ${r.reused.join(', ')}`), '')
  }
  writeFileSync(RESULTS, lines.join('\n'))
  console.log(lines.join('\n'))
  console.log(`bench batch: wrote ${RESULTS}`)
}

main().catch((e) => {
  console.error(`bench batch: ${e.message}`)
  process.exit(1)
})
