// Shell single-quoting, the one spelling every generated script and command line uses.

/** Shell single-quoting: any value, including quotes, newlines and `$(...)`, stays literal. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`
}
