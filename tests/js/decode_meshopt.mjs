// Decode EXT_meshopt_compression in .glb files with meshoptimizer's own decoder (the one CesiumJS uses) and write
// plain GLBs: every compressed bufferView replaced by its decoded bytes in the BIN chunk, the fallback buffer and
// the extension removed. Tests then read and validate exactly what a viewer would get.
// Usage: node tests/js/decode_meshopt.mjs IN OUT   (IN a .glb or a folder searched recursively; OUT the file or
// folder to write, same relative paths). Prints one JSON line per file: {file, out, decodedViews}.
import { mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { MeshoptDecoder } from "meshoptimizer";

const EXT = "EXT_meshopt_compression";

async function collect(path, out) {
  const info = await stat(path);
  if (info.isDirectory()) {
    for (const entry of (await readdir(path)).sort()) await collect(join(path, entry), out);
  } else if (path.endsWith(".glb")) {
    out.push(path);
  }
}

function parseGlb(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== 0x46546c67 || view.getUint32(4, true) !== 2) throw new Error("not a glTF 2.0 GLB");
  const jsonLength = view.getUint32(12, true);
  const doc = JSON.parse(new TextDecoder().decode(bytes.subarray(20, 20 + jsonLength)));
  const binAt = 20 + jsonLength;
  const bin = binAt < bytes.length ? bytes.subarray(binAt + 8, binAt + 8 + view.getUint32(binAt, true)) : new Uint8Array();
  return { doc, bin };
}

function writeGlb(doc, bin) {
  const text = new TextEncoder().encode(JSON.stringify(doc));
  // BIN data starts at 20 + json.length + 8: pad the JSON with spaces so that is 8-byte aligned, as the writer does.
  const json = new Uint8Array(text.length + ((((4 - text.length) % 8) + 8) % 8)).fill(0x20);
  json.set(text);
  const total = 12 + 8 + json.length + 8 + bin.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, 0x46546c67, true);
  view.setUint32(4, 2, true);
  view.setUint32(8, total, true);
  view.setUint32(12, json.length, true);
  view.setUint32(16, 0x4e4f534a, true);
  out.set(json, 20);
  view.setUint32(20 + json.length, bin.length, true);
  view.setUint32(24 + json.length, 0x004e4942, true);
  out.set(bin, 28 + json.length);
  return out;
}

function decode({ doc, bin }) {
  if (doc.buffers.length > 1 && doc.buffers.slice(1).some((b) => !b.extensions?.[EXT]?.fallback)) {
    throw new Error("only a GLB buffer plus meshopt fallback buffers are supported");
  }
  const parts = [];
  let length = 0;
  let decodedViews = 0;
  for (const bv of doc.bufferViews) {
    const ext = bv.extensions?.[EXT];
    let data;
    if (ext) {
      if (ext.buffer !== 0) throw new Error("compressed data must be in the GLB buffer");
      const source = bin.subarray(ext.byteOffset ?? 0, (ext.byteOffset ?? 0) + ext.byteLength);
      data = new Uint8Array(ext.count * ext.byteStride);
      MeshoptDecoder.decodeGltfBuffer(data, ext.count, ext.byteStride, source, ext.mode, ext.filter ?? "NONE");
      if (data.length !== bv.byteLength) throw new Error("decoded length differs from bufferView.byteLength");
      delete bv.extensions[EXT];
      if (Object.keys(bv.extensions).length === 0) delete bv.extensions;
      decodedViews += 1;
    } else {
      if (bv.buffer !== 0) throw new Error("an uncompressed bufferView outside the GLB buffer");
      data = bin.subarray(bv.byteOffset ?? 0, (bv.byteOffset ?? 0) + bv.byteLength);
    }
    const pad = (8 - (length % 8)) % 8;
    if (pad) parts.push(new Uint8Array(pad));
    length += pad;
    bv.buffer = 0;
    bv.byteOffset = length;
    parts.push(data);
    length += data.length;
  }
  const tail = (8 - (length % 8)) % 8;
  if (tail) parts.push(new Uint8Array(tail));
  length += tail;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  doc.buffers = [{ byteLength: length }];
  doc.extensionsUsed = (doc.extensionsUsed ?? []).filter((e) => e !== EXT);
  if (doc.extensionsRequired) doc.extensionsRequired = doc.extensionsRequired.filter((e) => e !== EXT);
  return { glb: writeGlb(doc, out), decodedViews };
}

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node decode_meshopt.mjs IN OUT");
  process.exit(2);
}
await MeshoptDecoder.ready;
const single = !(await stat(input)).isDirectory();
const files = [];
await collect(input, files);
for (const file of files) {
  const target = single ? output : join(output, relative(input, file));
  const { glb, decodedViews } = decode(parseGlb(new Uint8Array(await readFile(file))));
  await mkdir(dirname(target), { recursive: true });
  await writeFile(target, glb);
  console.log(JSON.stringify({ file, out: target, decodedViews }));
}
