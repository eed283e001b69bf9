// Binding overhead: (1) a cheap library-side call made many times through the worker queue from
// JS vs the same call in a C loop — the difference per call in µs; (2) wall time of one
// appliance launch through the binding vs `guestfish -a /dev/null run`, alternating.
// Not a test: prints a report (and appends it to bench/RESULTS-overhead.md with --write).
import { execFileSync, spawnSync } from 'node:child_process'
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { Guestfs } from '../dist/guestfs/index.js'
import { chooseBackendSettings } from '../dist/host/kvm.js'

const N = Number(process.env.BENCH_CALLS ?? 20000)
const LAUNCHES = Number(process.env.BENCH_LAUNCHES ?? 3)
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]

function cLoopMicros() {
  const dir = mkdtempSync(join(tmpdir(), 'vdib-bench.'))
  try {
    writeFileSync(
      join(dir, 'loop.c'),
      `#include <guestfs.h>\n#include <stdio.h>\n#include <time.h>\nint main(void){guestfs_h*g=guestfs_create();struct timespec a,b;clock_gettime(CLOCK_MONOTONIC,&a);for(int i=0;i<${N};i++)guestfs_get_memsize(g);clock_gettime(CLOCK_MONOTONIC,&b);printf("%f\\n",((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/1e3/${N});guestfs_close(g);return 0;}\n`,
    )
    execFileSync('cc', ['-O2', '-o', join(dir, 'loop'), join(dir, 'loop.c'), '-lguestfs'])
    return Number(execFileSync(join(dir, 'loop'), { encoding: 'utf8' }))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function jsMicros(mode) {
  const g = await Guestfs.create({ environment: false })
  for (let i = 0; i < 1000; i++) await g.getMemsize() // warm up
  const t = process.hrtime.bigint()
  if (mode === 'sequential') {
    for (let i = 0; i < N; i++) await g.getMemsize()
  } else {
    const all = []
    for (let i = 0; i < N; i++) all.push(g.getMemsize())
    await Promise.all(all)
  }
  const us = Number(process.hrtime.bigint() - t) / 1e3 / N
  await g.close()
  return us
}

async function launchBinding() {
  const backendSettings = chooseBackendSettings()
  const g = await Guestfs.create(backendSettings ? { backendSettings } : {})
  await g.addDrive('/dev/null')
  const t = Date.now()
  await g.launch()
  const s = (Date.now() - t) / 1000
  await g.close()
  return s
}

function launchGuestfish() {
  const env = { ...process.env }
  if (chooseBackendSettings()) env.LIBGUESTFS_BACKEND_SETTINGS = 'force_tcg'
  const t = Date.now()
  const r = spawnSync('guestfish', ['-a', '/dev/null', 'run'], { env, stdio: 'ignore' })
  if (r.status !== 0) throw new Error('guestfish failed')
  return (Date.now() - t) / 1000
}

const c = cLoopMicros()
const seq = await jsMicros('sequential')
const pipe = await jsMicros('pipelined')
const lines = [
  `## Binding overhead (${new Date().toISOString()})`,
  '',
  `- C loop, guestfs_get_memsize: ${c.toFixed(3)} µs/call`,
  `- JS, awaited one by one: ${seq.toFixed(2)} µs/call (added: ${(seq - c).toFixed(2)} µs)`,
  `- JS, ${N} queued at once: ${pipe.toFixed(2)} µs/call (added: ${(pipe - c).toFixed(2)} µs)`,
]
if (LAUNCHES > 0) {
  const a = []
  const b = []
  for (let i = 0; i < LAUNCHES; i++) {
    a.push(await launchBinding())
    b.push(launchGuestfish())
  }
  lines.push(
    `- launch through the binding: median ${median(a).toFixed(1)} s (${a.map((x) => x.toFixed(1)).join(', ')})`,
    `- guestfish -a /dev/null run: median ${median(b).toFixed(1)} s (${b.map((x) => x.toFixed(1)).join(', ')})`,
    `- ratio binding/guestfish: ${(median(a) / median(b)).toFixed(2)}`,
  )
}
const report = lines.join('\n') + '\n'
process.stdout.write(report)
if (process.argv.includes('--write')) appendFileSync(new URL('./RESULTS-overhead.md', import.meta.url), report + '\n')
