// --mkfs-options is one string the original virt-dib spliced unquoted into an appliance shell
// command, so the shell split it into words: the same split here (blanks, '…', "…", \), with
// every word then passed as data. divergence: $, `, globs and ; stay literal characters (the
// original's shell would have expanded or run them).
import { UsageError } from '../errors.js'

/** POSIX shell word splitting with quote removal; throws on an unclosed quote. */
export function splitShellWords(text: string, what: string): string[] {
  const words: string[] = []
  let word: string | undefined
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (c === ' ' || c === '\t' || c === '\n') {
      if (word !== undefined) words.push(word)
      word = undefined
    } else if (c === "'") {
      const end = text.indexOf("'", i + 1)
      if (end === -1) throw new UsageError(`${what} ‘${text}’: a single quote is not closed`)
      word = (word ?? '') + text.slice(i + 1, end)
      i = end
    } else if (c === '"') {
      let s = ''
      let j = i + 1
      for (; j < text.length && text[j] !== '"'; j++) {
        // Inside double quotes a backslash only escapes $ ` " \ and newline.
        if (text[j] === '\\' && j + 1 < text.length && '$`"\\\n'.includes(text[j + 1]!)) {
          j++
          if (text[j] !== '\n') s += text[j]
        } else s += text[j]
      }
      if (j >= text.length) throw new UsageError(`${what} ‘${text}’: a double quote is not closed`)
      word = (word ?? '') + s
      i = j
    } else if (c === '\\') {
      if (i + 1 >= text.length) throw new UsageError(`${what} ‘${text}’: it ends with a backslash`)
      i++
      // Backslash-newline joins lines; any other escaped character is itself.
      if (text[i] !== '\n') word = (word ?? '') + text[i]
    } else word = (word ?? '') + c
  }
  if (word !== undefined) words.push(word)
  return words
}
