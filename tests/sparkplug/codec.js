// Sparkplug B payloads for tests/sparkplug.rs, encoded and decoded by Eclipse Tahu's own JavaScript
// library (sparkplug-payload, built on the official sparkplug_b.proto), independent of edgewatch.
//   node codec.js encode  < [payload objects, Tahu's shape]  > [hex strings]
//   node codec.js decode  < [hex strings]                 > [payload objects]
"use strict";
const sparkplug = require("sparkplug-payload").get("spBv1.0");

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
let out;
if (process.argv[2] === "encode") {
  out = input.map((p) => Buffer.from(sparkplug.encodePayload(p)).toString("hex"));
} else if (process.argv[2] === "decode") {
  out = input.map((b) => sparkplug.decodePayload(Buffer.from(b, "hex")));
} else {
  throw new Error("usage: node codec.js encode|decode < json");
}
// 64-bit fields decode as Long objects: printed as numbers.
const plain = (_k, v) => (v && typeof v.toNumber === "function" ? v.toNumber() : v);
process.stdout.write(JSON.stringify(out, plain));
