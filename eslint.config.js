// ESLint for the TypeScript (type-aware, through tsconfig.json) and the .mjs scripts; prettier owns
// formatting, so no stylistic rules. The layering of src/ (README, Layout) is enforced here too.
import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'

const lower = ['engine', 'cache', 'outputs', 'phases', 'blockdev', 'elements', 'host', 'guestfs', 'util']

const rules = {
  lowerLayer: {
    regex: '(^|/)(api|cli)/',
    message: 'engine/cache/outputs/phases/blockdev/elements/host/guestfs/util never import src/api/ or src/cli/.',
  },
  // native.ts and the `bindings` package it loads the .node file with
  addon: {
    regex: '(^|/)guestfs/native(\\.js)?$|^bindings$',
    message: 'Only src/guestfs/ loads the addon; use src/guestfs/.',
  },
  spawn: { regex: '^(node:)?child_process$', message: 'Only src/host/spawn.ts spawns processes; use its helpers.' },
}

/** A ban on importing the given src/ folders (README, Layout: who may import whom). */
const folders = (group, names) => ({
  regex: `(^|/)(${names.join('|')})/`,
  message: `src/${group}/ must not import src/{${names.join(',')}}/ (see README, Layout).`,
})

/** Beyond api/ and cli/, what each lower folder must not import (STYLE.md 2.2). */
const sideways = {
  engine: [],
  // The step cache: keys read the plan's types; the store is files only. The engine drives it.
  cache: [folders('cache', ['phases', 'outputs', 'guestfs'])],
  phases: [folders('phases', ['engine', 'cache', 'outputs', 'blockdev'])],
  outputs: [folders('outputs', ['engine', 'cache', 'phases', 'blockdev'])],
  blockdev: [folders('blockdev', ['engine', 'cache', 'phases', 'outputs'])],
  elements: [folders('elements', ['engine', 'cache', 'phases', 'outputs', 'blockdev', 'host', 'guestfs'])],
  host: [folders('host', ['engine', 'cache', 'phases', 'outputs', 'blockdev', 'elements', 'guestfs'])],
  guestfs: [
    folders('guestfs', ['engine', 'cache', 'phases', 'outputs', 'blockdev', 'elements', 'host']),
    { regex: '^\\.\\./errors(\\.js)?$', message: 'src/guestfs/ binds libguestfs only: its errors are its own.' },
  ],
  util: [{ regex: '^\\.\\./', message: 'src/util/ imports nothing else from src/.' }],
}

/**
 * The import restrictions of one src/ file group, static and `await import(…)` alike (a later
 * config object replaces a rule's options, never merges them, so each group gets the whole list).
 */
function layering({ lowerLayer, addon, spawn, nothing = false, also = [] }) {
  const banned = [lowerLayer && rules.lowerLayer, !addon && rules.addon, !spawn && rules.spawn, ...also].filter(Boolean)
  const dynamic = banned.map(({ regex, message }) => ({
    selector: `ImportExpression[source.value=/${regex.replaceAll('/', '\\x2F')}/]`,
    message,
  }))
  if (nothing) {
    dynamic.push({
      selector: 'Program > :matches(ImportDeclaration, ExportAllDeclaration, ExportNamedDeclaration[source])',
      message: 'src/events.ts imports nothing.',
    })
  }
  return {
    'no-restricted-imports': ['error', { patterns: banned }],
    'no-restricted-syntax': ['error', ...dynamic],
  }
}

export default tseslint.config(
  {
    ignores: ['dist/', 'build/', 'build-*/', 'node_modules/', 'demo-out/', 'test/fixtures/', 'examples/', 'assets/'],
  },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
      globals: globals.node,
    },
    rules: {
      // The bugs worth a lint: promises nobody awaits or that land where a void callback is expected.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      // `async` without await is how a step or a fake turns a throw into a rejection; no bug to find there.
      '@typescript-eslint/require-await': 'off',
      // `_`-prefixed names are the house way to say "unused on purpose" (callback arity, destructuring).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // Passing a caught `unknown` on (`catch (e) { return Promise.reject(e) }`) is not a new non-Error rejection.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // Messages interpolate numbers, booleans and absent values on purpose; `any` and objects stay errors.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowNullish: true, allowAny: false, allowNever: true },
      ],
    },
  },
  {
    // Tests: the same type-aware set, but `any` may flow: they probe JSON.parse output and vitest's
    // asymmetric matchers (expect.stringMatching…) are typed any; a wrong shape fails the assertion.
    files: ['test/**/*.ts', 'vitest.config.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    files: ['**/*.mjs', '**/*.cjs', 'eslint.config.js'],
    extends: [js.configs.recommended],
    languageOptions: { globals: globals.node },
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  // Layering of src/ (issue #13): the last object a file matches gives its whole list.
  { files: ['src/**/*.ts'], rules: layering({ lowerLayer: false, addon: false, spawn: false }) },
  // Batch builds (issue #16) sit beside the API: they take its options, the CLI takes them.
  {
    files: ['src/batch/**/*.ts'],
    rules: layering({ lowerLayer: false, addon: false, spawn: false, also: [folders('batch', ['cli', 'guestfs'])] }),
  },
  // The build queue (issue #17) sits beside the batch runner it drives.
  {
    files: ['src/queue/**/*.ts'],
    rules: layering({ lowerLayer: false, addon: false, spawn: false, also: [folders('queue', ['cli', 'guestfs'])] }),
  },
  ...lower.map((d) => ({
    files: [`src/${d}/**/*.ts`],
    rules: layering({ lowerLayer: true, addon: d === 'guestfs', spawn: false, also: sideways[d] }),
  })),
  {
    files: ['src/host/spawn.ts'],
    rules: layering({ lowerLayer: true, addon: false, spawn: true, also: sideways.host }),
  },
  { files: ['src/events.ts'], rules: layering({ lowerLayer: false, addon: false, spawn: false, nothing: true }) },
)
