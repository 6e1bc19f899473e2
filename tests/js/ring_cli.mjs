// Reads {a, b: hex u64 strings, xs: floats, enc: hex u64, frames: base64 serde frames} on stdin;
// writes what the browser ring and codec compute, for tests/test_browser_ring.py to compare
// with the Rust core and the Python codec.
import * as ring from "../../python/syft_mpc/net/static/ring.mjs";
import * as serde from "../../python/syft_mpc/net/static/serde.mjs";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const inp = JSON.parse(Buffer.concat(chunks).toString());
const u64 = (xs) => BigUint64Array.from(xs, (h) => BigInt("0x" + h));
const hex = (a) => Array.from(a, (v) => v.toString(16));
const a = u64(inp.a), b = u64(inp.b);
const shares = ring.share(a, 3);
const out = {
  add: hex(ring.add(a, b)), sub: hex(ring.sub(a, b)), mul: hex(ring.mul(a, b)), neg: hex(ring.neg(a)),
  reconstruct: hex(ring.reconstruct(shares)),
  encode: hex(ring.encode(inp.xs)), decode: Array.from(ring.decode(u64(inp.enc))),
  frames: inp.frames.map((f) => {
    try { return Buffer.from(serde.encode(serde.decode(Buffer.from(f, "base64")))).toString("base64"); }
    catch (e) { return "error: " + e.message; }
  }),
};
process.stdout.write(JSON.stringify(out));
