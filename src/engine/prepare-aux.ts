// Prepares, on the host, everything virt-dib brings into the image: the merged hooks tree,
// diskimage-builder's lib, the runner and one control file per phase, fake sudo/awk, and the
// out directory. It goes into the appliance as one disk image (src/host/aux-image.ts).
import { chmodSync, cpSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { planValues } from '../blockdev/devices.js'
import { DIB_BLOCK_DEVICE_SCRIPT, getvalFiles, paramsYaml } from '../blockdev/getval.js'
import { phaseEnvironment, shellQuote, type EnvInputs, type Where } from '../elements/environment.js'
import { prepareHooksTree } from '../elements/hooks.js'
import * as L from '../elements/layout.js'
import { VirtDibError } from '../errors.js'
import { formatControlFile, type ControlOptions } from '../phases/control-file.js'
import { PHASES } from '../phases/registry.js'
import { FAKE_AWK, FAKE_SUDO, RUNNER_SCRIPT } from '../phases/runner-script.js'
import type { Phase } from '../phases/types.js'
import type { BuildContext } from './context.js'

const EXTRA_PACKAGES: Phase = { hook: 'extra-packages', where: 'chroot' }

function writeExecutable(path: string, content: string): void {
  writeFileSync(path, content)
  chmodSync(path, 0o755)
}

/** Paths as a runner at `where` sees them. */
function view(where: Where, path: string): string {
  return where === 'appliance' ? L.inAppliance(path) : path
}

/**
 * What get_image_element_array prints: `[name]='dir' …`, which elements `eval` into an array
 * (as the original, the directory is quoted: element paths may hold blanks or `$`; names are
 * plain, planBuild checks them).
 */
export function elementArray(ctx: Pick<BuildContext, 'plan'>): string {
  return ctx.plan.resolution.elements.map((e) => `[${e.name}]=${shellQuote(e.dir)}`).join(' ') + ' '
}

export function logFileName(start: Date): string {
  const p = (n: number) => String(n).padStart(2, '0')
  const d = start
  return `virt-dib-${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}.log`
}

function controlFor(ctx: BuildContext, phase: Phase, inputs: EnvInputs, logName: string): ControlOptions {
  const where = phase.where
  const envHook = phase.hook === 'extra-packages' ? 'install.d' : phase.hook
  const { vars } = phaseEnvironment(inputs, envHook, where)
  const afterBlockDevice = ['pre-finalise.d', 'finalise.d', 'cleanup.d'].includes(phase.hook)
  return {
    hook: phase.hook,
    hooksDir: view(where, L.HOOKS),
    token: ctx.token,
    console: '/dev/ttyS0',
    log: view(where, `${L.PERM}/logs/${logName}`),
    cwd: phase.cwd === 'out' ? view(where, L.outDir(ctx.plan.imageName)) : '/',
    exclude: ctx.plan.options.excludeScripts ?? [],
    trace: (ctx.plan.options.debug ?? 0) > 0,
    extraEnv: afterBlockDevice ? view(where, `${L.RUNNERS}/block-device.env`) : '',
    vars,
    elementArray: elementArray(ctx),
    where,
    ...(phase.hook === 'extra-packages' ? { scriptsDir: view(where, `${L.RUNNERS}/extra-packages`) } : {}),
  }
}

/**
 * The environment file diskimage-builder writes before extra-data.d (so root.d does not see it);
 * it replaces an element's file of the same name.
 */
export function installTypeFile(ctx: BuildContext): { path: string; content: string } {
  const type = shellQuote(ctx.plan.options.installType ?? 'source')
  return {
    path: `${L.HOOKS}/environment.d/11-dib-install-type.bash`,
    content: `export DIB_DEFAULT_INSTALLTYPE=\${DIB_DEFAULT_INSTALLTYPE:-${type}}\n`,
  }
}

/**
 * compat: the original creates the host image cache (mkdir -p, 0755) while it prepares the aux
 * data, before launch; it is a cache, so it stays. --dry-run prepares nothing and creates nothing.
 */
export function prepareImageCache(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 })
  } catch (e) {
    throw new VirtDibError(
      `cannot create the image cache ‘${dir}’: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      {
        cause: e,
        hint: 'choose another directory with --image-cache',
      },
    )
  }
}

/** Writes the aux tree into the workspace; returns its directory. */
export function prepareAuxTree(ctx: BuildContext): string {
  const { plan } = ctx
  prepareImageCache(plan.envInputs.imageCache)
  const aux = join(ctx.workspace, 'aux')
  const hooks = join(aux, 'hooks')
  prepareHooksTree(plan.hooks, hooks)
  mkdirSync(join(hooks, 'environment.d'), { recursive: true })
  cpSync(plan.options.libPath, join(aux, 'lib'), { recursive: true, dereference: true })
  const fakeBin = join(aux, 'fake-bin')
  mkdirSync(fakeBin, { recursive: true })
  writeExecutable(join(fakeBin, 'sudo'), FAKE_SUDO)
  writeExecutable(join(fakeBin, 'awk'), FAKE_AWK)
  writeExecutable(join(fakeBin, 'dib-block-device'), DIB_BLOCK_DEVICE_SCRIPT)
  writeBlockDeviceState(ctx, join(aux, 'blockdev'))
  const runParts = join(plan.options.libPath, 'dib-run-parts')
  if (existsSync(runParts)) {
    cpSync(runParts, join(fakeBin, 'dib-run-parts'), { dereference: true })
    cpSync(runParts, join(hooks, 'dib-run-parts'), { dereference: true })
  }
  mkdirSync(join(aux, 'out', `${plan.imageName}.d`), { recursive: true })
  if (!plan.options.drive) mkdirSync(join(aux, 'perm'), { recursive: true })

  const run = join(aux, 'run')
  mkdirSync(run, { recursive: true })
  writeExecutable(join(run, 'run-phase'), RUNNER_SCRIPT)
  const logName = logFileName(new Date(ctx.t0))
  // Without --drive the helper drive is a scratch disk: its log is gone after the build.
  if (plan.options.drive) ctx.logPath = `${L.PERM}/logs/${logName} on the helper drive ${plan.options.drive}`
  const warnings = new Set<string>()
  for (const phase of [...PHASES, EXTRA_PACKAGES]) {
    if (phase.where === 'host') continue
    const control = controlFor(ctx, phase, plan.envInputs, logName)
    writeFileSync(join(run, `${phase.hook}.ctl`), formatControlFile(control))
    const envHook = phase.hook === 'extra-packages' ? 'install.d' : phase.hook
    for (const w of phaseEnvironment(plan.envInputs, envHook, phase.where).warnings) warnings.add(w)
  }
  for (const w of warnings) ctx.emit({ kind: 'warning', text: w })
  const pkgs = plan.options.extraPackages ?? []
  if (pkgs.length > 0) {
    mkdirSync(join(run, 'extra-packages'), { recursive: true })
    writeExecutable(
      join(run, 'extra-packages', '00-install-packages'),
      `#!/bin/bash\nset -eu\ninstall-packages ${pkgs.map(shellQuote).join(' ')}\n`,
    )
  }
  // The host side of extra-data.d.
  writeExecutable(join(ctx.workspace, 'run-phase.bash'), RUNNER_SCRIPT)
  const hostBin = join(ctx.workspace, 'host-bin')
  mkdirSync(hostBin, { recursive: true })
  writeExecutable(join(hostBin, 'sudo'), FAKE_SUDO)
  return aux
}

/** The layout's config, params.yaml and the getval answers known before the build. */
function writeBlockDeviceState(ctx: BuildContext, dir: string): void {
  const { plan } = ctx
  mkdirSync(join(dir, 'plan'), { recursive: true })
  mkdirSync(join(dir, 'created'), { recursive: true })
  for (const [p, c] of getvalFiles(planValues(plan.layout), 'plan')) writeFileSync(join(dir, p), c)
  writeFileSync(join(dir, 'config.yaml'), plan.layoutSource.yaml)
  const at = (p: string) => L.inAppliance(p)
  writeFileSync(
    join(dir, 'params.yaml'),
    paramsYaml(plan.layout, {
      configPath: at(`${L.BLOCKDEV}/config.yaml`),
      imageDir: at(L.AUX),
      buildDir: at(L.AUX),
      mountBase: L.SYSROOT,
      fsType: plan.fsType,
      rootLabel: plan.options.rootLabel,
      mkfsOptions: plan.options.mkfsOptions,
    }),
  )
}

/** The control file and environment of extra-data.d, for a FUSE mount at `mountpoint`. */
export function prepareHostPhase(ctx: BuildContext, phase: Phase, mountpoint: string): NodeJS.ProcessEnv {
  const inputs: EnvInputs = {
    ...ctx.plan.envInputs,
    hostMount: mountpoint,
    hostFakeBin: join(ctx.workspace, 'host-bin'),
  }
  const { vars } = phaseEnvironment(inputs, phase.hook as 'extra-data.d', 'host')
  const control: ControlOptions = {
    hook: phase.hook,
    hooksDir: `${mountpoint}${L.HOOKS}`,
    token: ctx.token,
    console: '',
    log: '',
    cwd: process.cwd(),
    exclude: ctx.plan.options.excludeScripts ?? [],
    trace: (ctx.plan.options.debug ?? 0) > 0,
    extraEnv: '',
    vars,
    elementArray: elementArray(ctx),
    where: 'host',
  }
  writeFileSync(ctx.controlFile(phase), formatControlFile(control))
  const env: NodeJS.ProcessEnv = { ...ctx.plan.env }
  for (const v of vars) env[v.name] = v.value
  return env
}
