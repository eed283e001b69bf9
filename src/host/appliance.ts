// virt-dib's own build appliance: libguestfs's appliance plus the packages diskimage-builder's
// outside-chroot scripts need (the stock one lacks python3, perl, gpgv, keyrings, an `awk`
// name…). Prepared with supermin from the host's installed packages, kept in the user's cache
// folder under a key of the package set, and never touching system files. libguestfs then builds
// and caches the appliance itself (supermin --if-newer rebuilds it when host packages change).
// On x86_64 virt-dib builds it instead, as a fixed appliance whose kernel is the host kernel
// uncompressed (see pvh-kernel.ts): ~3 s less per launch under TCG.
import { createHash } from 'node:crypto'
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { mkdtemp, cp } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'

import { PrerequisiteError } from '../errors.js'
import { extractPvhKernel, pickHostKernel } from './pvh-kernel.js'
import { abortError, runProcessSync, runTool } from './spawn.js'
import { findExecutable } from './which.js'

/** Packages added to libguestfs's appliance for diskimage-builder's host-side scripts. */
export const DEFAULT_APPLIANCE_PACKAGES: readonly string[] = [
  'python3',
  'python3-yaml',
  'perl',
  'gpgv',
  'debian-archive-keyring',
  'ca-certificates',
  'wget',
  'git',
  'rsync',
  // --fs-type xfs (Debian ships it for libguestfs as the separate libguestfs-xfs)
  'xfsprogs',
  // LVM thin pools in block-device layouts (lvcreate checks a new pool with thin_check)
  'thin-provisioning-tools',
]

export interface PreparedAppliance {
  /** For guestfs set_path: a directory with supermin.d, or a fixed appliance (kernel, initrd, root). */
  path: string
  /** For guestfs set_cachedir: where libguestfs keeps the built appliance of this package set. */
  cachedir: string
  /** True if this call prepared it (first use of this package set). */
  fresh: boolean
}

export function applianceCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base = env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache')
  return join(base, 'virt-dib')
}

/** Packages (of `wanted`) not installed on the host: supermin copies installed packages only. */
export function missingHostPackages(wanted: readonly string[]): string[] {
  // Any exit status: dpkg-query -W exits 1 when a package is unknown, and still lists the others.
  const r = runProcessSync('dpkg-query', ['-W', '-f', '${Package} ${db:Status-Status}\\n', ...wanted])
  const installed = new Set(
    r.stdout
      .split('\n')
      .filter((l) => l.endsWith(' installed'))
      .map((l) => l.split(' ')[0]),
  )
  return wanted.filter((p) => !installed.has(p))
}

/** Bump when the files virt-dib adds to the appliance change. */
const EXTRA_VERSION = 2

function key(stockSupermin: string, packages: readonly string[]): string {
  const h = createHash('sha256')
  h.update(`extra:${EXTRA_VERSION}\n`)
  h.update(JSON.stringify([...packages].sort()))
  for (const f of readdirSync(stockSupermin).sort()) {
    const st = statSync(join(stockSupermin, f))
    h.update(`${f}:${st.size}:${st.mtimeMs}\n`)
  }
  return h.digest('hex').slice(0, 16)
}

/**
 * What the step cache keys on for the appliance a build's scripts run in: virt-dib's additions,
 * the package set with the installed version of every package in it (libguestfs's own list and
 * ours: supermin copies them from the host, so an upgrade changes what scripts see) and the kernel.
 * Not the appliance folder's key: that one follows mtimes, this one content.
 */
export function applianceCacheKey(o: { stockPath: string; extraPackages?: readonly string[]; stock: boolean }): string {
  const h = createHash('sha256')
  h.update(`virt-dib appliance extra:${EXTRA_VERSION} stock:${o.stock}\n`)
  let stockList: string[] = []
  try {
    stockList = readFileSync(join(o.stockPath, 'supermin.d', 'packages'), 'utf8')
      .split(/\s+/)
      .filter(Boolean)
  } catch {
    h.update('no stock package list\n')
  }
  const packages = [
    ...new Set([...stockList, ...(o.stock ? [] : [...DEFAULT_APPLIANCE_PACKAGES, ...(o.extraPackages ?? [])])]),
  ].sort()
  // Any exit status: dpkg-query exits 1 when a package is unknown and still lists the others.
  const r = runProcessSync('dpkg-query', ['-W', '-f', '${Package} ${Version}\\n', ...packages])
  h.update(r.stdout.split('\n').sort().join('\n'))
  h.update(`\nkernel:${pickHostKernel()?.version ?? 'none'}\n`)
  return h.digest('hex')
}

/**
 * Returns the appliance for `packages` (DEFAULT + extra), preparing it on first use. Concurrent
 * builds are safe: each prepares in a private directory and the first rename wins.
 */
export async function prepareAppliance(o: {
  stockPath: string
  extraPackages?: readonly string[]
  cacheRoot?: string
  /** Ctrl-C during a first-time prepare: supermin's whole process group is stopped, its private dir removed. */
  signal?: AbortSignal
  /** For VIRT_DIB_APPLIANCE_BZIMAGE and SUPERMIN_KERNEL (default: the process environment). */
  env?: NodeJS.ProcessEnv
}): Promise<PreparedAppliance> {
  const stockSupermin = join(o.stockPath, 'supermin.d')
  if (!existsSync(stockSupermin)) {
    throw new PrerequisiteError(`libguestfs appliance not found in ‘${o.stockPath}’ (no supermin.d)`)
  }
  const packages = [...new Set([...DEFAULT_APPLIANCE_PACKAGES, ...(o.extraPackages ?? [])])]
  const root = o.cacheRoot ?? applianceCacheRoot()
  const dir = join(root, `appliance-${key(stockSupermin, packages)}`)
  const env = o.env ?? process.env
  const ready = async (fresh = false): Promise<PreparedAppliance> => {
    const fixed = await buildFixedAppliance(dir, env, o.signal)
    return { path: fixed ?? dir, cachedir: join(dir, 'cache'), fresh }
  }
  if (existsSync(join(dir, '.complete'))) return ready()

  if (!findExecutable('supermin')) throw new PrerequisiteError('supermin needed but not found')
  const missing = missingHostPackages(packages)
  if (missing.length > 0) {
    throw new PrerequisiteError(
      `the build appliance needs host packages that are not installed: ${missing.join(' ')}`,
      {
        hint: `apt-get install ${missing.join(' ')}`,
      },
    )
  }
  mkdirSync(root, { recursive: true })
  const tmp = await mkdtemp(join(root, '.prepare-'))
  try {
    const smd = join(tmp, 'supermin.d')
    await cp(stockSupermin, smd, { recursive: true })
    const prep = join(tmp, 'prepare')
    // supermin runs helpers of its own (dpkg-query, tar…): stop them all on abort. Its temp
    // folder goes inside ours: killed, it leaves its own behind.
    const scratch = join(tmp, 'tmp')
    mkdirSync(scratch)
    const run = {
      processGroup: true,
      env: { ...process.env, TMPDIR: scratch },
      ...(o.signal ? { signal: o.signal } : {}),
    }
    await runTool('supermin', ['--prepare', '--use-installed', '-o', prep, ...packages], run)
    renameSync(join(prep, 'packages'), join(smd, 'zz-virt-dib-packages'))
    if (existsSync(join(prep, 'base.tar.gz')))
      renameSync(join(prep, 'base.tar.gz'), join(smd, 'zz-virt-dib-base.tar.gz'))
    // Files the appliance lacks and scripts expect: `awk` by that name (only gawk exists), and a
    // user database (`chown root:root` fails without one: the manifests element does it).
    const extra = join(tmp, 'extra-root')
    mkdirSync(join(extra, 'usr', 'bin'), { recursive: true })
    mkdirSync(join(extra, 'etc'), { recursive: true })
    symlinkSync('gawk', join(extra, 'usr', 'bin', 'awk'))
    writeFileSync(
      join(extra, 'etc', 'passwd'),
      'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
    )
    writeFileSync(join(extra, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n')
    await runTool(
      'tar',
      ['-C', extra, '--owner=0', '--group=0', '-czf', join(smd, 'zz-virt-dib-extra.tar.gz'), '.'],
      run,
    )
    rmSync(prep, { recursive: true, force: true })
    rmSync(extra, { recursive: true, force: true })
    rmSync(scratch, { recursive: true, force: true })
    mkdirSync(join(tmp, 'cache'), { recursive: true })
    // Built here (what libguestfs did at the first launch), so an abort leaves nothing behind.
    await buildFixedAppliance(tmp, env, o.signal)
    if (o.signal?.aborted) throw abortError(o.signal)
    // Outside supermin.d: supermin reads every file there.
    writeFileSync(join(tmp, '.complete'), `${packages.join(' ')}\n`)
    try {
      renameSync(tmp, dir)
    } catch {
      // Another build prepared the same package set meanwhile: use theirs.
      rmSync(tmp, { recursive: true, force: true })
      return ready()
    }
    return ready(true)
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true })
    throw e
  }
}

// divergence: the original let libguestfs build and boot its bzImage appliance.
/**
 * Builds the appliance of the prepared `dir` as a fixed appliance (`dir`/fixed: kernel, initrd,
 * root, README.fixed) booting the host kernel as an uncompressed vmlinux, and returns its path; or
 * undefined to leave the build to libguestfs (bzImage) as before: not x86_64, the user picked the
 * kernel (SUPERMIN_KERNEL), VIRT_DIB_APPLIANCE_BZIMAGE=1, or a kernel without an xz payload or a
 * PVH entry. Each call runs `supermin --build --if-newer` as libguestfs would at launch (~0.05 s):
 * it rebuilds when host packages change, and `--lock` serialises concurrent builds.
 */
async function buildFixedAppliance(
  dir: string,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  if (process.arch !== 'x64' || env['VIRT_DIB_APPLIANCE_BZIMAGE'] === '1' || env['SUPERMIN_KERNEL']) return undefined
  const kernel = pickHostKernel()
  if (!kernel || !findExecutable('supermin')) return undefined
  const kernels = join(dir, 'kernels')
  mkdirSync(kernels, { recursive: true })
  const vmlinux = join(kernels, `vmlinux-${kernel.version}`)
  // Remembers a kernel that cannot be extracted, so later builds do not read it again.
  const unusable = `${vmlinux}.unusable`
  if (existsSync(unusable)) return undefined
  if (!existsSync(vmlinux) && !(await extractPvhKernel(kernel.path, vmlinux, signal))) {
    writeFileSync(unusable, `${kernel.path}\n`)
    return undefined
  }
  const out = join(dir, 'fixed')
  // prettier-ignore
  await runTool('supermin', [
    '--build', '--if-newer', '--lock', join(dir, 'fixed.lock'),
    '-f', 'ext2', '--host-cpu', 'x86_64', join(dir, 'supermin.d'), '-o', out,
  ], {
    processGroup: true,
    env: {
      ...env,
      SUPERMIN_KERNEL: vmlinux,
      SUPERMIN_KERNEL_VERSION: kernel.version,
      SUPERMIN_MODULES: join('/lib/modules', kernel.version),
    },
    ...(signal ? { signal } : {}),
  })
  // supermin links the kernel by its absolute path: relative, it survives the first prepare's rename.
  const link = join(out, 'kernel')
  const target = join('..', 'kernels', `vmlinux-${kernel.version}`)
  if (readLink(link) !== target) {
    // Atomically: builds running at once may fix the same link.
    const tmpLink = `${link}.${process.pid}`
    rmSync(tmpLink, { force: true })
    symlinkSync(target, tmpLink)
    renameSync(tmpLink, link)
  }
  // A rebuild replaces the directory: the marker libguestfs looks for goes in after every build.
  const marker = join(out, 'README.fixed')
  if (!existsSync(marker)) writeFileSync(marker, 'virt-dib: fixed appliance, kernel booted at its PVH entry\n')
  return out
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path)
  } catch {
    return undefined
  }
}
