// Side-by-side benchmark: the original virt-dib (Debian's libguestfs-tools) and ours, on the same
// element sets, alternating A B A B, several runs each; writes bench/RESULTS.md.
//   node bench/run.mjs [--runs N] [--workloads 1,2,3,4] [--tools original,ours,native] [--out bench/RESULTS.md] [--prepare-only]
// (native: diskimage-builder's own disk-image-create on the host, as root with loop devices, on the
// workloads it can build the same way: not ramdisk mode)
// (--tools ours: our code only, e.g. before/after a refactor; no ratio is printed then)
// Never part of the tests or CI. Needs root-free qemu (TCG here) and ~1 hour with the defaults.
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const LIB = '/usr/lib/python3/dist-packages/diskimage_builder/lib'
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i === -1 ? dflt : args[i + 1]
}
const RUNS = Number(opt('--runs', '3'))
const WORKLOADS = opt('--workloads', '1,2,3,4').split(',').map(Number)
const TOOLS = opt('--tools', 'original,ours,native').split(',')
const RESULTS = resolve(opt('--out', join(root, 'bench', 'RESULTS.md')))
const work = join(root, 'bench', 'out')
mkdirSync(work, { recursive: true })

const paths = [
  join(root, 'examples', 'elements'),
  join(root, 'bench', 'elements'),
  join(root, 'test', 'fixtures', 'elements'),
]
const common = ['-B', LIB, ...paths.flatMap((p) => ['-p', p]), '--skip-base']

/** The data-heavy tree: ~580 MB in ~2600 files, half compressible text, half pseudo-random. */
function ensureDataTarball() {
  const tarPath = join(root, 'bench', 'elements', 'bench-data', 'bench-data.tar')
  if (existsSync(tarPath)) return tarPath
  const src = join(work, 'data-src')
  rmSync(src, { recursive: true, force: true })
  let seed = createHash('sha256').update('virt-dib bench').digest()
  const random = (n) => {
    const chunks = []
    let len = 0
    while (len < n) {
      seed = createHash('sha256').update(seed).digest()
      chunks.push(seed)
      len += seed.length
    }
    return Buffer.concat(chunks).subarray(0, n)
  }
  let total = 0
  for (let d = 0; d < 26; d++) {
    const dir = join(src, 'opt', 'bench', `d${String(d).padStart(2, '0')}`)
    mkdirSync(dir, { recursive: true })
    for (let f = 0; f < 100; f++) {
      const size = 40_000 + (((d * 100 + f) * 7919) % 330_000)
      const body =
        f % 2 === 0
          ? Buffer.from(`line ${d}/${f} of the virt-dib benchmark tree\n`.repeat(Math.ceil(size / 45))).subarray(
              0,
              size,
            )
          : random(size)
      writeFileSync(join(dir, `f${String(f).padStart(3, '0')}`), body)
      total += size
    }
  }
  // A few big files, as real roots have (libraries, firmware).
  for (let i = 0; i < 2; i++) {
    writeFileSync(join(src, 'opt', 'bench', `big${i}.bin`), random(16 * 1024 * 1024))
    total += 16 * 1024 * 1024
  }
  const r = spawnSync('tar', ['-C', src, '--owner=0', '--group=0', '-cf', tarPath, '.'], { stdio: 'inherit' })
  if (r.status !== 0) throw new Error('tar of the benchmark tree failed')
  rmSync(src, { recursive: true, force: true })
  console.log(`bench: generated ${tarPath} (${(total / 1e6).toFixed(0)} MB of files)`)
  return tarPath
}

const WORKLOAD = {
  1: {
    title: 'script-heavy: a small root and 40 tiny scripts over the phases both tools run',
    args: ['--size', '1G', '--formats', 'qcow2', 'demo-os', 'bench-scripts'],
  },
  2: {
    title: 'data-heavy: a ~570 MB root from one tarball, --formats tar,qcow2 --checksum',
    args: ['--size', '3G', '--formats', 'tar,qcow2', '--checksum', 'demo-os', 'bench-data'],
  },
  3: {
    title: 'ramdisk mode (a stand-in ramdisk element packs the root into an initramfs)',
    args: ['--ramdisk', '--ramdisk-element', 'mini-ramdisk', 'demo-os'],
  },
  4: {
    title: "workload 2's tree to every file format: tar,tgz,squashfs,qcow2,raw,vhd --checksum",
    args: ['--size', '3G', '--formats', 'tar,tgz,squashfs,qcow2,raw,vhd', '--checksum', 'demo-os', 'bench-data'],
  },
}

const env = { ...process.env, LIBGUESTFS_BACKEND_SETTINGS: process.env.LIBGUESTFS_BACKEND_SETTINGS ?? 'force_tcg' }

/** The original and disk-image-create make vhd with vhd-util, which Debian 12 does not ship: without it, they make the rest. */
const hasVhdUtil = () => spawnSync('sh', ['-c', 'command -v vhd-util']).status === 0
function originalArgs(a) {
  if (hasVhdUtil()) return a
  return a.map((x, i) =>
    a[i - 1] === '--formats'
      ? x
          .split(',')
          .filter((f) => f !== 'vhd')
          .join(',')
      : x,
  )
}

/**
 * A workload's virt-dib arguments as disk-image-create's (the same elements and outputs, on the
 * host); undefined where it has no such run (ramdisk mode is ramdisk-image-create's, another tool).
 */
function nativeArgs(w, out) {
  const a = WORKLOAD[w].args
  if (a.includes('--ramdisk')) return undefined
  const argv = ['-n', '-o', out]
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--size') argv.push('--image-size', String(parseInt(a[++i], 10)))
    else if (a[i] === '--formats') argv.push('-t', originalArgs(['--formats', a[++i]])[1])
    else if (a[i] === '--checksum') argv.push('--checksum')
    else argv.push(a[i])
  }
  return argv
}
const nativeEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LC_ALL: 'C',
  ELEMENTS_PATH: paths.join(':'),
}
const canRunNative = () =>
  process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v disk-image-create']).status === 0

/** Runs one build; returns wall seconds, status, output, our events, and the peak RSS of the tool's own process. */
function runOnce(tool, w, i) {
  const dir = join(work, `w${w}-${tool}-${i}`)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const events = join(dir, 'events.jsonl')
  const argv =
    tool === 'ours'
      ? [
          join(root, 'bin', 'virt-dib'),
          ...common,
          `--machine-readable=file:${events}`,
          '--name',
          join(dir, 'img'),
          ...WORKLOAD[w].args,
        ]
      : [...common, '--python', 'python3', '--name', join(dir, 'img'), ...originalArgs(WORKLOAD[w].args)]
  const cmd = tool === 'ours' ? process.execPath : tool === 'native' ? 'disk-image-create' : '/usr/bin/virt-dib'
  const runEnv = tool === 'native' ? nativeEnv : env
  if (tool === 'native') argv.splice(0, argv.length, ...nativeArgs(w, join(dir, 'img')))
  return new Promise((resolvePromise) => {
    const t = process.hrtime.bigint()
    const child = spawn(cmd, argv, { env: runEnv, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (b) => (output += b))
    child.stderr.on('data', (b) => (output += b))
    let peak = 0
    const sampler = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
        if (m) peak = Math.max(peak, Number(m[1]) * 1024)
      } catch {
        // exited
      }
    }, 200)
    child.on('close', (status) => {
      clearInterval(sampler)
      const seconds = Number(process.hrtime.bigint() - t) / 1e9
      writeFileSync(join(dir, 'output.log'), output)
      const ev =
        tool === 'ours' && existsSync(events)
          ? readFileSync(events, 'utf8')
              .trim()
              .split('\n')
              .map((l) => JSON.parse(l))
          : []
      for (const f of readdirSync(dir))
        if (/^img\.(qcow2|tar|tgz|squashfs|raw|vhd)$/.test(f)) rmSync(join(dir, f), { force: true })
      resolvePromise({ seconds, status, output, events: ev, peak })
    })
  })
}

const RACE = /mount point is not a directory/

async function measure(tool, w, i, retries) {
  for (let attempt = 0; ; attempt++) {
    const r = await runOnce(tool, w, i)
    if (r.status === 0) return r
    if (tool === 'original' && RACE.test(r.output) && attempt < 3) {
      retries.count++
      console.log(`bench: original hit the device race (w${w} run ${i}); retrying`)
      continue
    }
    throw new Error(`${tool} failed on workload ${w} (status ${r.status}):\n${r.output.slice(-3000)}`)
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const f1 = (x) => x.toFixed(1)

/** Where our time goes: launch, each phase, each output, checksums (medians over the runs). */
function breakdown(runs) {
  const keys = new Map()
  for (const r of runs) {
    const seen = new Map()
    // Each phase is also a step (same name, its step event includes the runner's overhead);
    // builds from before the step table have only the phase-end event.
    const hooks = new Set(r.events.filter((e) => e.kind === 'phase-end').map((e) => e.hook))
    const steps = new Set(r.events.filter((e) => e.kind === 'step').map((e) => e.name))
    for (const e of r.events) {
      let k
      if (e.kind === 'step') k = `${hooks.has(e.name) ? 'phase' : 'step'}: ${e.name}`
      else if (e.kind === 'phase-end' && !steps.has(e.hook)) k = `phase: ${e.hook}`
      else continue
      seen.set(k, (seen.get(k) ?? 0) + (e.seconds ?? 0))
    }
    // The elements' own work is their scripts' time; virt-dib's is what is left of the wall time
    // once the launch and the scripts are taken out.
    const scripts = r.events.filter((e) => e.kind === 'script-end').reduce((t, e) => t + e.seconds, 0)
    const launch = r.events.find((e) => e.kind === 'step' && e.name === 'launch')?.seconds ?? 0
    seen.set("total: the elements' own scripts", scripts)
    seen.set("total: virt-dib's own time (wall - launch - scripts)", r.seconds - launch - scripts)
    for (const [k, v] of seen) keys.set(k, [...(keys.get(k) ?? []), v])
  }
  return [...keys].map(([k, v]) => `| ${k} | ${f1(median(v))} |`)
}

/**
 * The original's own breakdown, read from its progress lines (`[  21.4] Setting up the destination
 * root`): each step lasts until the next line; `Running: <phase>/<script>` lines add up by phase.
 */
function originalBreakdown(runs) {
  const keys = new Map()
  for (const r of runs) {
    const marks = []
    for (const line of r.output.split('\n')) {
      const m = /^\[\s*([\d.]+)\] (.*)$/.exec(line)
      if (m) marks.push({ t: Number(m[1]), what: m[2] })
    }
    marks.push({ t: r.seconds, what: 'end' })
    const seen = new Map()
    for (let i = 0; i + 1 < marks.length; i++) {
      const run = /^Running: ([^/]+)\//.exec(marks[i].what)
      const k = run ? `phase: ${run[1]}` : marks[i].what.replace(/ \/.*$/, '')
      seen.set(k, (seen.get(k) ?? 0) + (marks[i + 1].t - marks[i].t))
    }
    for (const [k, v] of seen) keys.set(k, [...(keys.get(k) ?? []), v])
  }
  return [...keys].map(([k, v]) => `| ${k} | ${f1(median(v))} |`)
}

function versions() {
  const v = (cmd, a) => (spawnSync(cmd, a, { encoding: 'utf8' }).stdout ?? '').split('\n')[0].trim()
  return [
    `- original: ${v('/usr/bin/virt-dib', ['--version'])}`,
    `- ours: ${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version} (git ${v('git', ['-C', root, 'rev-parse', '--short', 'HEAD'])})`,
    `- libguestfs: ${v('dpkg-query', ['-W', '-f=${Version}', 'libguestfs0'])}; qemu: ${v('qemu-system-x86_64', ['--version'])}`,
    `- diskimage-builder: ${v('dpkg-query', ['-W', '-f=${Version}', 'python3-diskimage-builder'])}; node ${process.version}`,
  ]
}

async function main() {
  if (WORKLOADS.includes(2) || WORKLOADS.includes(4)) ensureDataTarball()
  if (args.includes('--prepare-only')) return
  const results = {}
  const retries = { count: 0 }
  const native = TOOLS.includes('native') && canRunNative()
  if (TOOLS.includes('native') && !native) console.log('bench: no native column (needs root and disk-image-create)')
  for (const w of WORKLOADS) {
    results[w] = { original: [], ours: [], native: [] }
    for (let i = 0; i < RUNS; i++) {
      for (const tool of TOOLS) {
        if (tool === 'native' && (!native || nativeArgs(w, '') === undefined)) continue
        const r = await measure(tool, w, i, retries)
        results[w][tool].push(r)
        console.log(`bench: w${w} ${tool} run ${i + 1}: ${f1(r.seconds)} s`)
      }
    }
  }
  const cpu = cpus()[0]?.model ?? 'unknown'
  const kvm = existsSync('/dev/kvm') ? 'present but forced off (TCG)' : 'none (TCG)'
  const lines = [
    '# Benchmarks: ours vs the original virt-dib',
    '',
    `Written by \`npm run bench\` (bench/run.mjs) on ${new Date().toISOString().slice(0, 16)}Z; ${RUNS} runs per tool and workload, alternating ${TOOLS.join(', ')}.`,
    '',
    `Machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, KVM: ${kvm}.`,
    ...versions(),
    '',
    '| workload | original median (min–max) s | ours median (min–max) s | ratio ours/original | native disk-image-create median s | ratio ours/native |',
    '|---|---|---|---|---|---|',
  ]
  for (const w of WORKLOADS) {
    const o = results[w].original.map((r) => r.seconds)
    const u = results[w].ours.map((r) => r.seconds)
    const n = results[w].native.map((r) => r.seconds)
    const cell = (xs) => (xs.length === 0 ? '—' : `${f1(median(xs))} (${f1(Math.min(...xs))}–${f1(Math.max(...xs))})`)
    const ratio = (a, b) => (a.length > 0 && b.length > 0 ? `**${(median(a) / median(b)).toFixed(2)}**` : '—')
    lines.push(
      `| ${w}. ${WORKLOAD[w].title} | ${cell(o)} | ${cell(u)} | ${ratio(u, o)} | ${cell(n)} | ${ratio(u, n)} |`,
    )
  }
  if (results[4]?.original.length && !hasVhdUtil()) {
    lines.push(
      '',
      'Workload 4, the original and native: without vhd (they need vhd-util, which Debian 12 does not ship).',
    )
  }
  if (results[4]?.ours.length) {
    // Workload 4's target: each extra format costs host time only (ours, against our tar+qcow2 of the same tree).
    const w4 = median(results[4].ours.map((r) => r.seconds))
    const w2 = results[2]?.ours.length ? median(results[2].ours.map((r) => r.seconds)) : undefined
    if (w2 !== undefined) lines.push('', `Workload 4 / workload 2, ours (target ≤ 1.5): **${(w4 / w2).toFixed(2)}**.`)
  }
  lines.push(
    '',
    `Original runs retried after its device race (\`mount point is not a directory\`): ${retries.count}.`,
    '',
  )
  if (results[2]?.ours.length) {
    const peaks = results[2].ours.map((r) => r.peak)
    lines.push(
      `Peak RSS of our own process (not qemu) during workload 2: ${(Math.max(...peaks) / 2 ** 20).toFixed(0)} MiB (max of ${peaks.length} runs).`,
      '',
    )
  }
  for (const w of WORKLOADS) {
    lines.push(
      `## Where our time goes: workload ${w}`,
      '',
      '| step or phase | median s |',
      '|---|---|',
      ...breakdown(results[w].ours),
      '',
    )
    if (results[w].original.length === 0) continue
    lines.push(
      `## Where the original's time goes: workload ${w} (from its progress lines)`,
      '',
      '| step (until its next progress line) | median s |',
      '|---|---|',
      ...originalBreakdown(results[w].original),
      '',
    )
  }
  writeFileSync(RESULTS, lines.join('\n'))
  console.log(`bench: wrote ${RESULTS}`)
}

main().catch((e) => {
  console.error(`bench: ${e.message}`)
  process.exit(1)
})
