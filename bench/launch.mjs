// Where an appliance launch's time goes: launches the appliance as virt-dib does (its own supermin
// appliance, the same drives, backend settings and append string), N times per variant with the
// variants alternated, and splits each launch into parts from libguestfs's verbose messages
// (host arrival time of each line, and the guest kernel's own timestamps). Not a test.
//
//   flock /tmp/vdib-appliance.lock node bench/launch.mjs [--n 3] [--variants base,quiet] [--log DIR] [--net]
//
// DIST=<dir> takes the library from another build of src/ (default ../dist); a build outside the
// package root needs VIRT_DIB_ADDON=<build/Release/virt_dib.node>.
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

const dist = resolve(process.env.DIST ?? new URL('../dist', import.meta.url).pathname)
const { Guestfs } = await import(join(dist, 'guestfs/index.js'))
const { applianceCacheRoot, prepareAppliance } = await import(join(dist, 'host/appliance.js'))
const { makeAuxImage } = await import(join(dist, 'host/aux-image.js'))
const { applianceAppend, chooseBackendSettings } = await import(join(dist, 'host/kvm.js'))

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '3' },
    variants: { type: 'string', default: 'base' },
    log: { type: 'string' },
    // after each launch: does the guest resolve and reach the Debian mirror?
    net: { type: 'boolean', default: false },
    // libguestfs verbose mode (console-line milestones; the kernel is not `quiet` then and the
    // init script dumps debug output, so it is slower than virt-dib's default): off by default,
    // the parts then come from the guest's dmesg and uptime after the launch.
    verbose: { type: 'boolean', default: false },
    // after each launch: the guest's cost of one fork+exec of a dynamically linked program
    exec: { type: 'boolean', default: false },
  },
})

const GiB = 1024 ** 3
const now = () => performance.now()
const median = (a) => {
  const s = a.filter((x) => x !== undefined && !Number.isNaN(x)).sort((x, y) => x - y)
  if (s.length === 0) return NaN
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Variants: what virt-dib controls. `append` adds to virt-dib's own append string. */
const VARIANTS = {
  base: {},
  // the appliance as before the PVH kernel: built by libguestfs, the bzImage booted by SeaBIOS
  bzimage: { env: { VIRT_DIB_APPLIANCE_BZIMAGE: '1' } },
  nonet: { network: false },
  stock: { stock: true },
  quiet: { append: 'quiet' },
  loglevel: { append: 'loglevel=3' },
  mitig: { append: 'mitigations=off' },
  udevq: { append: 'udev.children_max=2' },
  udevq1: { append: 'udev.children_max=1' },
  nokaslr: { append: 'nokaslr' },
  fast: { append: 'mitigations=off nokaslr' },
  // a fixed appliance (kernel, initrd, root) at BENCH_FIXED, e.g. an uncompressed vmlinux (PVH entry)
  fixed: { fixed: process.env.BENCH_FIXED },
  smp2: { smp: 2 },
  // workload 2's aux tree (bench/elements, ~520 MB): mke2fs -d before the launch, as virt-dib does,
  bigaux: { bigAux: true },
  // …or while the appliance boots (the guest drops its cached blocks of the drive before mounting)
  overlap: { bigAux: true, overlap: true },
  mem2g: { memsize: 2048 },
}

/** A representative aux tree: diskimage-builder's lib and its elements (what a Debian build copies). */
function makeAuxTree(dir) {
  const dib = '/usr/lib/python3/dist-packages/diskimage_builder'
  cpSync(join(dib, 'lib'), join(dir, 'lib'), { recursive: true })
  cpSync(join(dib, 'elements'), join(dir, 'hooks'), { recursive: true })
  mkdirSync(join(dir, 'out'))
}

/**
 * Milestones, by the first line (library or console) matching each; a launch's parts are the
 * differences of consecutive ones that were seen.
 */
const MILESTONES = [
  ['supermin-start', /begin building supermin appliance/],
  ['supermin-done', /finished building supermin appliance/],
  ['qemu-features-done', /finished testing qemu features/],
  ['qemu-run', /^-- |^\/usr\/bin\/qemu-system|^qemu-system/],
  ['firmware', /SeaBIOS/],
  ['firmware-done', /Booting from ROM/],
  ['kernel', /Linux version/],
  ['initrd', /supermin: ext2 mini initrd starting/],
  ['chroot', /supermin: chroot/],
  ['init', /Starting \/init script|^\+ .*mount -t proc|init: /],
  ['udev', /udevd|systemd-udevd/],
  ['udev-settled', /udevadm settle|^\+ .*settle/],
  ['net', /dhcp|dhclient|ip addr add|ip link set/],
  ['daemon', /guestfsd|^verbose daemon enabled/],
  ['up', /appliance is up/],
]

async function launchOnce(name, v, auxDir, workRoot) {
  const t = {}
  const lines = [] // [ms since launch call, source, text]
  const work = mkdtempSync(join(workRoot, `${name}.`))
  const env = { ...process.env, ...v.env }
  const backendSettings = chooseBackendSettings(env)
  const append = [applianceAppend(env), v.append].filter(Boolean).join(' ') || undefined
  let t0 = now()
  const g = await Guestfs.create({
    abortPolicy: 'kill-appliance',
    program: 'virt-dib',
    ...(backendSettings ? { backendSettings } : {}),
    ...(append ? { append } : {}),
    ...(v.memsize !== undefined ? { memsize: v.memsize } : {}),
    ...(v.smp !== undefined ? { smp: v.smp } : {}),
    network: v.network ?? true,
    verbose: args.verbose,
  })
  t.create = now() - t0
  let tl = NaN
  let partial = ''
  g.on('library', (s) => {
    const at = now() - tl
    for (const l of s.split('\n')) if (l.trim()) lines.push([at, 'lib', l.trimEnd()])
  })
  g.on('appliance', (s) => {
    const at = now() - tl
    const parts = (partial + s).split(/\r?\n/)
    partial = parts.pop()
    for (const l of parts) if (l.trim()) lines.push([at, 'app', l.trimEnd()])
  })
  try {
    t0 = now()
    if (!v.stock) {
      const a = await prepareAppliance({ stockPath: await g.getPath(), cacheRoot: applianceCacheRoot(env), env })
      await g.setPath(v.fixed ?? a.path)
      await g.setCachedir(a.cachedir)
    }
    t.prepare = now() - t0

    t0 = now()
    const size = GiB
    const disk = join(work, 'disk.raw')
    await g.diskCreate(disk, 'raw', size, { preallocation: 'sparse' })
    await g.addDrive(disk, { format: 'raw', label: 'out', cachemode: 'unsafe' })
    await g.addDriveScratch(size + GiB, { label: 'build' })
    const exp = join(work, 'export.raw')
    await g.diskCreate(exp, 'raw', 4 * size + GiB, { preallocation: 'sparse' })
    await g.addDrive(exp, { format: 'raw', label: 'export', cachemode: 'unsafe' })
    t.drives = now() - t0

    t0 = now()
    const aux = join(work, 'aux.img')
    const tree = v.bigAux ? new URL('./elements', import.meta.url).pathname : auxDir
    let making
    if (v.overlap) {
      // An empty drive now; its file system is written while the guest boots.
      writeFileSync(aux, '')
      truncateSync(aux, 16 * GiB)
    } else await makeAuxImage(tree, aux, 16 * GiB)
    await g.addDrive(aux, { format: 'raw', label: 'aux', cachemode: 'unsafe' })
    t.aux = now() - t0

    tl = now()
    if (v.overlap) {
      const tm = now()
      making = makeAuxImage(tree, aux, 16 * GiB).then(() => (t.auxDuring = now() - tm))
    }
    await g.launch()
    t.launch = now() - tl
    if (partial.trim()) lines.push([t.launch, 'app', partial])
    // Guest clock at the end of launch, and the kernel's own log (kept even when `quiet`).
    const tq = now() - tl
    const out = await g.shOutside('cat /proc/uptime; dmesg')
    const tr = now() - tl
    const [uptimeLine, ...dmesg] = out.split('\n')
    const uptime = Number(uptimeLine.split(' ')[0]) * 1000
    // Host time of guest time 0 (the kernel's first instruction, roughly): the uptime was read
    // between tq and tr.
    const zero = (tq + tr) / 2 - uptime
    t.preKernel = zero
    const at = (re) => {
      const l = dmesg.find((x) => re.test(x))
      const m = l && /^\[\s*(\d+\.\d+)\]/.exec(l)
      return m ? Number(m[1]) * 1000 : undefined
    }
    const kEnd = at(/Run \/init as init process|Freeing unused kernel image/)
    const rootMounted = at(/EXT4-fs \(\w+\): mounted filesystem|EXT4-fs \(\w+\): mounting ext2/)
    const dm = at(/device-mapper: uevent/)
    t.kernel = kEnd
    t.miniInitrd = rootMounted !== undefined && kEnd !== undefined ? rootMounted - kEnd : undefined
    t.udevNet = dm !== undefined && rootMounted !== undefined ? dm - rootMounted : undefined
    t.lvmDaemon = dm !== undefined ? uptime - dm - (tr - tq) / 2 : undefined
    // What the overlapped mke2fs adds to the launch (0 when it finished during the boot).
    if (making) {
      await making
      t.auxWait = Math.max(0, now() - tl - tr)
    }
    if (v.bigAux) {
      // The guest sees the tree exactly (after dropping what it read of the drive during boot).
      const tc = now()
      const sum = await g.shOutside(
        'blockdev --flushbufs /dev/disk/guestfs/aux; mkdir -p /tmp/auxc; mount -o ro /dev/disk/guestfs/aux /tmp/auxc; ' +
          'md5sum /tmp/auxc/bench-data/bench-data.tar | cut -d" " -f1; umount /tmp/auxc',
      )
      t.auxCheck = now() - tc
      const host = execFileSync('md5sum', [join(tree, 'bench-data/bench-data.tar')], { encoding: 'utf8' }).split(' ')[0]
      t.auxOk = sum.trim() === host ? 'ok' : `MISMATCH ${sum.trim()} != ${host}`
    }

    if (args.exec) {
      const us = await g.shOutside(
        's=$(date +%s%N); for i in $(seq 200); do /bin/true; done; e=$(date +%s%N); echo $(( (e - s) / 200000 ))',
      )
      t.execUs = Number(us.trim())
    }
    if (args.net) {
      t0 = now()
      const out = await g.shOutside(
        'getent hosts deb.debian.org | head -1; (curl -sSI http://deb.debian.org/debian/ || wget -S --spider http://deb.debian.org/debian/) 2>&1 | grep -m1 HTTP; true',
      )
      t.net = now() - t0
      t.netOut = out.trim().replace(/\s+/g, ' ')
    }
  } finally {
    t0 = now()
    await g.close().catch(() => undefined)
    t.close = now() - t0
    rmSync(work, { recursive: true, force: true })
  }

  // Milestones by host arrival time.
  const ms = {}
  for (const [key, re] of MILESTONES) {
    const hit = lines.find(([, , l]) => re.test(l))
    if (hit) ms[key] = hit[0]
  }
  // Kernel's own clock: the last `[  s.us]` stamp before the mini initrd starts = kernel boot.
  const stamps = lines.map(([, , l]) => /^\[\s*(\d+\.\d+)\]/.exec(l)).filter(Boolean)
  const kernelEnd = lines.findIndex(([, , l]) => /supermin: ext2 mini initrd/.test(l))
  let kernelSelf
  for (let i = kernelEnd - 1; i >= 0; i--) {
    const m = /^\[\s*(\d+\.\d+)\]/.exec(lines[i][2])
    if (m) {
      kernelSelf = Number(m[1]) * 1000
      break
    }
  }
  if (args.verbose) t.kernelSelf = kernelSelf
  t.lastStamp = stamps.length ? Number(stamps[stamps.length - 1][1]) * 1000 : undefined
  t.consoleLines = lines.filter(([, s]) => s === 'app').length
  const seq = [['launch-start', 0], ...Object.entries(ms).sort((a, b) => a[1] - b[1]), ['launch-end', t.launch]]
  const parts = {}
  for (let i = 1; i < seq.length; i++) parts[`${seq[i - 1][0]}→${seq[i][0]}`] = seq[i][1] - seq[i - 1][1]
  return { t, ms, parts, lines }
}

const n = Number(args.n)
const names = args.variants.split(',')
for (const nm of names) if (!VARIANTS[nm]) throw new Error(`unknown variant ${nm}`)
const workRoot = mkdtempSync(join(tmpdir(), 'vdib-launch.'))
const auxDir = join(workRoot, 'aux-tree')
mkdirSync(auxDir)
makeAuxTree(auxDir)
if (args.log) mkdirSync(args.log, { recursive: true })
const results = Object.fromEntries(names.map((nm) => [nm, []]))
try {
  for (let i = 0; i < n; i++) {
    for (const nm of names) {
      const r = await launchOnce(nm, VARIANTS[nm], auxDir, workRoot)
      results[nm].push(r)
      const f = (x) => (x === undefined ? '-' : (x / 1000).toFixed(2))
      console.log(
        `${nm} #${i + 1}: create ${f(r.t.create)} prepare ${f(r.t.prepare)} drives ${f(r.t.drives)} aux ${f(r.t.aux)} ` +
          `launch ${f(r.t.launch)} [pre-kernel ${f(r.t.preKernel)} kernel ${f(r.t.kernel)} mini-initrd ${f(r.t.miniInitrd)} ` +
          `init+udev+net ${f(r.t.udevNet)} lvm+daemon ${f(r.t.lvmDaemon)}]` +
          `${r.t.auxOk ? ` aux-during-boot ${f(r.t.auxDuring)} aux-wait ${f(r.t.auxWait)} aux-check ${r.t.auxOk}` : ''} close ${f(r.t.close)} lines ${r.t.consoleLines}${r.t.execUs !== undefined ? ` exec ${r.t.execUs} µs` : ''}${r.t.netOut !== undefined ? ` net ${f(r.t.net)} [${r.t.netOut}]` : ''}`,
      )
      if (args.log) {
        writeFileSync(
          join(args.log, `${nm}-${i + 1}.log`),
          r.lines.map(([at, s, l]) => `${(at / 1000).toFixed(3).padStart(8)} ${s} ${l}`).join('\n') + '\n',
        )
      }
    }
  }
} finally {
  rmSync(workRoot, { recursive: true, force: true })
}

// Medians per variant: the wall parts, then the milestone-to-milestone parts seen in every launch.
const f = (x) => (Number.isNaN(x) ? '-' : (x / 1000).toFixed(2))
console.log(`\nmedians (s), n=${n} per variant`)
const wall = [
  'create',
  'prepare',
  'drives',
  'aux',
  'launch',
  'auxDuring',
  'auxWait',
  'preKernel',
  'kernel',
  'miniInitrd',
  'udevNet',
  'lvmDaemon',
  'close',
  'net',
]
console.log(['part', ...names].join('\t'))
for (const k of wall) {
  // execUs is in µs per exec, every other row in seconds
  const fmt = k === 'execUs' ? (x) => (Number.isNaN(x) ? '-' : x.toFixed(0)) : f
  console.log([k, ...names.map((nm) => fmt(median(results[nm].map((r) => r.t[k]))))].join('\t'))
}
const msKeys = ['launch-start', ...MILESTONES.map(([k]) => k), 'launch-end']
for (const k of msKeys.slice(1)) {
  const row = names.map((nm) => f(median(results[nm].map((r) => (k === 'launch-end' ? r.t.launch : r.ms[k])))))
  if (args.verbose && row.some((x) => x !== '-')) console.log([`@${k}`, ...row].join('\t'))
}
