// Every command-line option, as data: the parser, --help and --long-options are built from
// this one table (names and help texts as the original virt-dib prints them). The output
// formats' own flags (-u, --qemu-img-options, --docker-target) come from their files.
import { UsageError } from '../errors.js'
import { OUTPUT_FLAGS, type OutputFormatOptions } from '../outputs/registry.js'

export interface CliFlags {
  libPath?: string
  elementPaths: string[]
  excludeElements: string[]
  excludeScripts: string[]
  envvars: string[]
  skipBase: boolean
  rootLabel?: string
  installType?: string
  imageCache?: string
  mkfsOptions?: string
  extraPackages: string[]
  checksum: boolean
  python?: string
  ramdisk: boolean
  ramdiskElement?: string
  name?: string
  fsType?: string
  size?: string
  formats?: string
  arch?: string
  drive?: string
  driveFormat?: string
  memsize?: string
  smp?: string
  network: boolean
  deleteOnFailure: boolean
  debug?: string
  /** What the output formats' flags set (their fields of BuildOptions). */
  outputOptions: OutputFormatOptions
  appliancePackages: string[]
  /** The step cache: --cache, --cache-dir (implies --cache), --no-cache (wins whatever the order). */
  cache: boolean
  noCache: boolean
  cacheDir?: string
  cacheMaxAge?: string
  cacheMaxSize?: string
  rebuildFrom?: string
  colors: boolean
  wrap: boolean
  quiet: boolean
  verbose: boolean
  trace: boolean
  machineReadable?: string | true
  dryRun?: 'text' | 'json'
  help: boolean
  version: boolean
  longOptions: boolean
  shortOptions: boolean
}

export function defaultFlags(): CliFlags {
  return {
    elementPaths: [],
    excludeElements: [],
    excludeScripts: [],
    envvars: [],
    skipBase: false,
    extraPackages: [],
    checksum: false,
    ramdisk: false,
    network: true,
    deleteOnFailure: true,
    outputOptions: {},
    appliancePackages: [],
    cache: false,
    noCache: false,
    colors: false,
    wrap: false,
    quiet: false,
    verbose: false,
    trace: false,
    help: false,
    version: false,
    longOptions: false,
    shortOptions: false,
  }
}

export interface FlagSpec {
  /** Spellings, short first (`-p`, `--element-path`). */
  keys: string[]
  /** Placeholder of a required value (`<path>`); absent for switches. */
  arg?: string
  /** The value is optional and only taken with `=` (`--machine-readable[=format]`). */
  optionalArg?: string
  help: string
  /** Sort key for --help when it is not the first key (as the original lists -p). */
  sortAs?: string
  /** Not listed by --help (kept for compatibility). */
  hidden?: boolean
  apply: (f: CliFlags, value: string) => void
}

const split = (v: string) => v.split(',')

/** The table. Order here does not matter: --help sorts like the original (by first key). */
const CLI_FLAGS: readonly FlagSpec[] = [
  { keys: ['--arch'], arg: '<arch>', help: 'Output architecture', apply: (f, v) => void (f.arch = v) },
  {
    keys: ['-B'],
    arg: '<path>',
    help: 'Base path of diskimage-builder library',
    apply: (f, v) => void (f.libPath = v),
  },
  { keys: ['--cache'], help: 'Reuse and keep a snapshot after each phase', apply: (f) => void (f.cache = true) },
  {
    keys: ['--cache-dir'],
    arg: '<directory>',
    help: 'Location of the step cache (implies --cache)',
    apply: (f, v) => void (f.cacheDir = v),
  },
  {
    keys: ['--cache-max-age'],
    arg: '<duration>',
    help: 'Don’t reuse older snapshots (30m, 2h, 7d, 1w)',
    apply: (f, v) => void (f.cacheMaxAge = v),
  },
  {
    keys: ['--cache-max-size'],
    arg: '<size>',
    help: 'Size cap of the step cache (default 20G)',
    apply: (f, v) => void (f.cacheMaxSize = v),
  },
  { keys: ['--checksum'], help: 'Generate MD5 and SHA256 checksum files', apply: (f) => void (f.checksum = true) },
  {
    keys: ['--color', '--colors', '--colour', '--colours'],
    help: 'Use ANSI colour sequences even if not tty',
    apply: (f) => void (f.colors = true),
  },
  { keys: ['--debug'], arg: '<level>', help: 'Set debug level', apply: (f, v) => void (f.debug = v) },
  { keys: ['--drive'], arg: '<path>', help: 'Optional drive for caches', apply: (f, v) => void (f.drive = v) },
  {
    keys: ['--drive-format'],
    arg: '<format>',
    help: 'Format of optional drive',
    apply: (f, v) => void (f.driveFormat = v),
  },
  {
    keys: ['--dry-run'],
    optionalArg: 'json',
    help: 'Print elements, phases, scripts and environment; build nothing',
    apply: (f, v) => {
      // `--dry-run=` with anything but json was silently text: a typo must not go unnoticed.
      if (v !== '' && v !== 'json') throw new UsageError(`--dry-run takes no value or ‘json’, not ‘${v}’`)
      f.dryRun = v === 'json' ? 'json' : 'text'
    },
  },
  {
    keys: ['-p', '--element-path'],
    sortAs: 'element-path',
    arg: '<path>',
    help: 'Add new a elements location',
    apply: (f, v) => void f.elementPaths.push(v),
  },
  {
    keys: ['--envvar'],
    arg: '<envvar[=value]>',
    help: 'Carry/set this environment variable',
    apply: (f, v) => void f.envvars.push(v),
  },
  {
    keys: ['--exclude-element'],
    arg: '<element>',
    help: 'Exclude the specified element',
    apply: (f, v) => void f.excludeElements.push(v),
  },
  {
    keys: ['--exclude-script'],
    arg: '<script>',
    help: 'Exclude the specified script',
    apply: (f, v) => void f.excludeScripts.push(v),
  },
  {
    keys: ['--extra-packages'],
    arg: '<pkg,...>',
    help: 'Add extra packages to install',
    apply: (f, v) => void f.extraPackages.push(...split(v).filter((p) => p !== '')),
  },
  {
    keys: ['--appliance-packages'],
    arg: '<pkg,...>',
    help: 'Add Debian packages to the build appliance',
    apply: (f, v) => void f.appliancePackages.push(...split(v).filter((p) => p !== '')),
  },
  { keys: ['--formats'], arg: '<qcow2,tgz,...>', help: 'Output formats', apply: (f, v) => void (f.formats = v) },
  { keys: ['--fs-type'], arg: '<fs>', help: 'Filesystem for the image', apply: (f, v) => void (f.fsType = v) },
  { keys: ['--help'], help: 'Display brief help', apply: (f) => void (f.help = true) },
  {
    keys: ['--image-cache'],
    arg: '<directory>',
    help: 'Location for cached images',
    apply: (f, v) => void (f.imageCache = v),
  },
  { keys: ['--install-type'], arg: '<type>', help: 'Installation type', apply: (f, v) => void (f.installType = v) },
  { keys: ['-m', '--memsize'], arg: '<mb>', help: 'Set memory size', apply: (f, v) => void (f.memsize = v) },
  {
    keys: ['--machine-readable'],
    optionalArg: 'format',
    help: 'Make output machine readable',
    apply: (f, v) => void (f.machineReadable = v === '' ? true : v),
  },
  { keys: ['--mkfs-options'], arg: '<option>', help: 'Add mkfs options', apply: (f, v) => void (f.mkfsOptions = v) },
  { keys: ['--name'], arg: '<name>', help: 'Name of the image', apply: (f, v) => void (f.name = v) },
  { keys: ['--network'], help: 'Enable appliance network (default)', apply: (f) => void (f.network = true) },
  {
    keys: ['--no-delete-on-failure'],
    help: 'Don’t delete output file on failure',
    apply: (f) => void (f.deleteOnFailure = false),
  },
  {
    keys: ['--no-cache'],
    help: 'Don’t use the step cache (wins over --cache)',
    apply: (f) => void (f.noCache = true),
  },
  { keys: ['--no-network'], help: 'Disable appliance network', apply: (f) => void (f.network = false) },
  { keys: ['--python'], arg: '<python>', help: 'Set Python interpreter', apply: (f, v) => void (f.python = v) },
  { keys: ['-q', '--quiet'], help: 'Don’t print progress messages', apply: (f) => void (f.quiet = true) },
  { keys: ['--ramdisk'], help: 'Switch to a ramdisk build', apply: (f) => void (f.ramdisk = true) },
  {
    keys: ['--ramdisk-element'],
    arg: '<name>',
    help: 'Main element for building ramdisks',
    apply: (f, v) => void (f.ramdiskElement = v),
  },
  {
    keys: ['--rebuild-from'],
    arg: '<phase>',
    help: 'Reuse no snapshot from this phase on',
    apply: (f, v) => void (f.rebuildFrom = v),
  },
  { keys: ['--root-label'], arg: '<label>', help: 'Label for the root fs', apply: (f, v) => void (f.rootLabel = v) },
  { keys: ['--size'], arg: '<size>', help: 'Set output disk size', apply: (f, v) => void (f.size = v) },
  { keys: ['--skip-base'], help: 'Skip the inclusion of the ‘base’ element', apply: (f) => void (f.skipBase = true) },
  { keys: ['--smp'], arg: '<vcpus>', help: 'Set number of vCPUs', apply: (f, v) => void (f.smp = v) },
  { keys: ['-V', '--version'], help: 'Display version and exit', apply: (f) => void (f.version = true) },
  { keys: ['-v', '--verbose'], help: 'Enable libguestfs debugging messages', apply: (f) => void (f.verbose = true) },
  { keys: ['--wrap'], help: 'Wrap log messages even if not tty', apply: (f) => void (f.wrap = true) },
  { keys: ['-x'], help: 'Enable tracing of libguestfs calls', apply: (f) => void (f.trace = true) },
  { keys: ['--long-options'], help: 'List long options', hidden: true, apply: (f) => void (f.longOptions = true) },
  { keys: ['--short-options'], help: 'List short options', hidden: true, apply: (f) => void (f.shortOptions = true) },
  { keys: ['--debug-gc'], help: 'Debug GC and memory allocations', hidden: true, apply: () => undefined },
]

/** Every flag: virt-dib's own and the output formats'. */
export const FLAGS: readonly FlagSpec[] = [
  ...CLI_FLAGS,
  ...OUTPUT_FLAGS.map((flag): FlagSpec => ({
    keys: [...flag.keys],
    ...(flag.arg !== undefined ? { arg: flag.arg } : {}),
    help: flag.help,
    apply: (f, v) => flag.apply(f.outputOptions, v),
  })),
]
