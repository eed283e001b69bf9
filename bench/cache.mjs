// The step cache's benchmark (issue #14): for workloads 1 and 2 of bench/run.mjs (plus a finalise.d
// script to edit), the original virt-dib (it has no cache: every build is cold), ours without the
// cache, ours with --cache cold, warm (no change, another --name) and warm after a finalise.d edit;
// the snapshots' cost per phase on the cold run. Writes bench/RESULTS-cache.md.
//   node bench/cache.mjs [--runs N] [--workloads 1,2] [--out bench/RESULTS-cache.md]
// Never part of the tests or CI.
import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i === -1 ? dflt : args[i + 1]
}
const RUNS = Number(opt('--runs', '1'))
const WORKLOADS = opt('--workloads', '1,2').split(',').map(Number)
const RESULTS = resolve(opt('--out', join(root, 'bench', 'RESULTS-cache.md')))
const work = join(root, 'bench', 'out', 'cache')

const WORKLOAD = {
  1: {
    title: 'script-heavy: a small root and 40 tiny scripts',
    args: ['--size', '1G', '--formats', 'qcow2', 'demo-os', 'bench-scripts', 'finalise-stamp'],
  },
  2: {
    title: 'data-heavy: a ~570 MB root from one tarball, tar+qcow2 --checksum',
    args: ['--size', '3G', '--formats', 'tar,qcow2', '--checksum', 'demo-os', 'bench-data', 'finalise-stamp'],
  },
}

const env = { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg' }
const f1 = (x) => x.toFixed(1)
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]

/** One build; wall seconds and (ours) the events. */
function runOnce(tool, dir, elements, extra, w) {
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const events = join(dir, 'events.jsonl')
  const common = ['-B', LIB, '-p', elements, '--skip-base', '--name', join(dir, 'img'), ...WORKLOAD[w].args]
  const argv =
    tool === 'ours'
      ? [join(root, 'bin', 'virt-dib'), `--machine-readable=file:${events}`, ...extra, ...common]
      : ['--python', 'python3', ...common]
  const cmd = tool === 'ours' ? process.execPath : '/usr/bin/virt-dib'
  return new Promise((done, fail) => {
    const t = process.hrtime.bigint()
    const child = spawn(cmd, argv, { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (b) => (output += b))
    child.stderr.on('data', (b) => (output += b))
    child.on('close', (status) => {
      const seconds = Number(process.hrtime.bigint() - t) / 1e9
      writeFileSync(join(dir, 'output.log'), output)
      if (status !== 0) return fail(new Error(`${tool} ${extra.join(' ')} failed (${status}):\n${output.slice(-2000)}`))
      const ev = existsSync(events)
        ? readFileSync(events, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l))
        : []
      for (const f of ['img.qcow2', 'img.tar', 'img.raw']) rmSync(join(dir, f), { force: true })
      done({ seconds, events: ev })
    })
  })
}

/** The elements of the bench, copied so a finalise.d script can be edited. */
function copyElements(dir) {
  rmSync(dir, { recursive: true, force: true })
  for (const p of [join(root, 'examples', 'elements'), join(root, 'bench', 'elements')])
    cpSync(p, dir, { recursive: true })
  cpSync(join(root, 'test', 'fixtures', 'elements'), dir, { recursive: true })
  return dir
}

/** Bytes allocated under `dir`. */
function du(dir) {
  let total = 0
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isFile()) total += statSync(p).blocks * 512
    }
  }
  if (existsSync(dir)) walk(dir)
  return total
}

async function main() {
  mkdirSync(work, { recursive: true })
  const rows = []
  const snapshotLines = []
  for (const w of WORKLOADS) {
    const r = { original: [], plain: [], cold: [], warm: [], edited: [], snapshots: [], cacheBytes: [] }
    for (let i = 0; i < RUNS; i++) {
      const elements = copyElements(join(work, `w${w}-elements`))
      const cache = join(work, `w${w}-steps`)
      rmSync(cache, { recursive: true, force: true })
      const cached = ['--cache-dir', cache]
      r.original.push((await runOnce('original', join(work, `w${w}-original`), elements, [], w)).seconds)
      r.plain.push((await runOnce('ours', join(work, `w${w}-plain`), elements, [], w)).seconds)
      const cold = await runOnce('ours', join(work, `w${w}-cold`), elements, cached, w)
      r.cold.push(cold.seconds)
      r.cacheBytes.push(du(cache))
      const stores = cold.events.filter((e) => e.kind === 'cache-store')
      r.snapshots.push(stores)
      r.warm.push((await runOnce('ours', join(work, `w${w}-warm`), elements, cached, w)).seconds)
      const script = join(elements, 'finalise-stamp', 'finalise.d', '95-finalise-stamp')
      writeFileSync(script, readFileSync(script, 'utf8').replace('stamp one', `stamp edited ${i}`))
      r.edited.push((await runOnce('ours', join(work, `w${w}-edited`), elements, cached, w)).seconds)
      console.log(
        `bench cache: w${w} run ${i + 1}: original ${f1(r.original[i])} s, ours ${f1(r.plain[i])} s, cold ${f1(cold.seconds)} s, warm ${f1(r.warm[i])} s, edited ${f1(r.edited[i])} s`,
      )
    }
    const cold = median(r.cold)
    rows.push(
      `| ${w} | ${f1(median(r.original))} | ${f1(median(r.plain))} | ${f1(cold)} | ${f1(median(r.warm))} (${((100 * median(r.warm)) / cold).toFixed(0)} %) | ${f1(median(r.edited))} (${((100 * median(r.edited)) / cold).toFixed(0)} %) | ${(median(r.cacheBytes) / 2 ** 20).toFixed(0)} MiB |`,
    )
    const last = r.snapshots.at(-1)
    const total = last.reduce((a, e) => a + e.seconds, 0)
    const beside = last.reduce((a, e) => a + (e.writeSeconds ?? 0), 0)
    snapshotLines.push(
      '',
      `### Snapshots of the cold build, workload ${w}: the build waited ${f1(total)} s in all, ${((100 * total) / r.cold.at(-1)).toFixed(1)} % of the cold build`,
      '',
      `Waited: the guest frozen while the changed clusters are read. Written: the qcow2 delta deflated, written and committed beside the next steps (${f1(beside)} s in all).`,
      '',
      '| after | waited s | written beside the build s | bytes |',
      '|---|---|---|---|',
      ...last.map(
        (e) =>
          `| ${e.step} | ${e.seconds.toFixed(2)} | ${(e.writeSeconds ?? 0).toFixed(2)} | ${(e.bytes / 2 ** 20).toFixed(1)} MiB |`,
      ),
    )
  }
  const lines = [
    '# Benchmarks: the step cache (--cache)',
    '',
    `Written by \`npm run bench:cache\` (bench/cache.mjs) on ${new Date().toISOString().slice(0, 16)}Z; ${RUNS} run(s), machine ${cpus().length} × ${cpus()[0]?.model ?? '?'}, TCG.`,
    'The original has no cache: each of its builds is cold. Warm: the same build again under another name;',
    'edited: then one finalise.d script changed (everything up to the block-device step is reused).',
    '',
    '| workload | original s | ours, no cache s | ours --cache cold s | warm s (of cold) | edited s (of cold) | cache after cold |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    ...snapshotLines,
    '',
  ]
  writeFileSync(RESULTS, lines.join('\n'))
  console.log(lines.join('\n'))
}

await main()
