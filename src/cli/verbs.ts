// The words that, as the first argument, are verbs rather than elements (`virt-dib cache list`);
// anywhere else they are element names (`virt-dib -B … cache` builds an element named cache).
import { VirtDibError } from '../errors.js'

/** The verbs to come, and what they will do (issue #19). */
const RESERVED: Readonly<Record<string, string>> = {
  boot: 'booting an image just built',
}

export const VERBS: readonly string[] = ['cache', 'batch', 'worker', 'submit', ...Object.keys(RESERVED)]

/** True if `word`, as the first argument, is a verb. */
export function isVerb(word: string | undefined): word is string {
  return word !== undefined && VERBS.includes(word)
}

/** The error for a verb this version does not have yet. */
export function notAvailable(verb: string): VirtDibError | undefined {
  const future = RESERVED[verb]
  return future === undefined ? undefined : new VirtDibError(`‘${verb}’ (${future}) is not available in this version`)
}
