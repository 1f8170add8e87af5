// The parser imports its schema (a .json file) the way bundlers allow, without the import
// attribute Node.js asks for: these hooks load .json modules as JSON.
import { readFile } from "node:fs/promises";

export async function load(url, context, nextLoad) {
  if (url.endsWith(".json")) {
    return { format: "json", source: await readFile(new URL(url)), shortCircuit: true };
  }
  return nextLoad(url, context);
}
