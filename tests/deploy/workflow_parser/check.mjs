// GitHub's own workflow parser (@actions/workflow-parser, the one the Actions service and
// the VS Code extension use): parse each file given, convert it to a workflow template, and
// print {file: [errors]} as JSON. Exit 0 either way; the test reads the errors.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import {
  NoOperationTraceWriter,
  convertWorkflowTemplate,
  parseWorkflow,
} from "@actions/workflow-parser";

const found = {};
for (const path of process.argv.slice(2)) {
  const file = { name: basename(path), content: readFileSync(path, "utf8") };
  const parsed = parseWorkflow(file, new NoOperationTraceWriter());
  const errors = parsed.context.errors.getErrors().map((e) => e.message);
  if (errors.length === 0 && parsed.value !== undefined) {
    const template = await convertWorkflowTemplate(parsed.context, parsed.value);
    for (const e of template.errors ?? []) errors.push(e.Message ?? e.message ?? String(e));
    if (!template.jobs || template.jobs.length === 0) errors.push("no jobs after conversion");
  }
  found[path] = errors;
}
console.log(JSON.stringify(found));
