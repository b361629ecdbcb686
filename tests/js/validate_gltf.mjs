// Run the Khronos glTF validator over .glb files and print one JSON report per file (one per line).
// Usage: node tests/js/validate_gltf.mjs FILE_OR_DIR...   (directories are searched recursively for .glb)
// Exit code 0 when every file was validated (whatever it contains), 2 on usage or I/O problems.
import { readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import validator from "gltf-validator";

async function collect(path, out) {
  const info = await stat(path);
  if (info.isDirectory()) {
    for (const entry of (await readdir(path)).sort()) await collect(join(path, entry), out);
  } else if (path.endsWith(".glb")) {
    out.push(path);
  }
}

const args = process.argv.slice(2);
if (args.length === 0) {
  console.error("usage: node validate_gltf.mjs FILE_OR_DIR...");
  process.exit(2);
}
const files = [];
for (const arg of args) await collect(arg, files);
for (const file of files) {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, { uri: file, maxIssues: 0 });
  const issues = report.issues;
  console.log(
    JSON.stringify({
      file,
      errors: issues.numErrors,
      warnings: issues.numWarnings,
      infos: issues.numInfos,
      hints: issues.numHints,
      // severity 0 = error, 1 = warning, 2 = information, 3 = hint
      messages: issues.messages.map((m) => ({ code: m.code, severity: m.severity, message: m.message, pointer: m.pointer })),
      extensionsUsed: report.info ? report.info.extensionsUsed : undefined,
    }),
  );
}
