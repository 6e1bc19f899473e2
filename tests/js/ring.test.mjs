// node --test tests/js/ : the browser ring and codec on their own (no packages).
import test from "node:test";
import assert from "node:assert/strict";
import * as ring from "../../python/syft_mpc/net/static/ring.mjs";
import * as serde from "../../python/syft_mpc/net/static/serde.mjs";

const M = 1n << 64n;

test("ring ops wrap mod 2^64", () => {
  const a = BigUint64Array.from([0n, 1n, M - 1n, 1n << 63n, 0x123456789abcdefn]);
  const b = BigUint64Array.from([M - 1n, M - 1n, M - 1n, 1n << 63n, 0xfedcba987654321n]);
  const big = (x) => Array.from(x, BigInt);
  assert.deepEqual(big(ring.add(a, b)), big(a).map((x, i) => (x + b[i]) % M));
  assert.deepEqual(big(ring.sub(a, b)), big(a).map((x, i) => (((x - b[i]) % M) + M) % M));
  assert.deepEqual(big(ring.mul(a, b)), big(a).map((x, i) => (x * b[i]) % M));
  assert.deepEqual(big(ring.neg(a)), big(a).map((x) => (M - x) % M));
  assert.throws(() => ring.add(a, b.subarray(1)), RangeError);
});

test("shares reconstruct and each share alone is not the secret", () => {
  const x = ring.encode([1.5, -2.25, 0, 1e6]);
  const s = ring.share(x, 3);
  assert.deepEqual(Array.from(ring.reconstruct(s)), Array.from(x));
  assert.notDeepEqual(Array.from(s[0]), Array.from(x));
  assert.deepEqual(Array.from(ring.decode(ring.reconstruct(s))), [1.5, -2.25, 0, 1e6]);
});

test("fixed point rounds half away from zero and rejects what does not fit", () => {
  const scale = 2 ** 16;
  assert.deepEqual(Array.from(ring.decode(ring.encode([2.5 / scale, -2.5 / scale]))), [3 / scale, -3 / scale]);
  assert.throws(() => ring.encode([NaN]), RangeError);
  assert.throws(() => ring.encode([2 ** 48]), RangeError);
});

test("codec round trip and hostile input", () => {
  const t = new serde.Tensor(1, [2, 2], Float32Array.from([1, 2, 3, 4]));
  const msg = serde.envelope("me", [5n], new serde.Struct(serde.KIND.Store, [7n, t]));
  const back = serde.decode(serde.encode(msg));
  assert.equal(back.kind, serde.KIND.Envelope);
  assert.deepEqual(Array.from(back.fields[2].fields[1].data), [1, 2, 3, 4]);
  const enc = serde.encode(msg);
  for (let cut = 0; cut < enc.length; cut++) assert.throws(() => serde.decode(enc.subarray(0, cut)), serde.SerdeError);
  // a list claiming 2^32-1 items in a short message fails without allocating
  assert.throws(() => serde.decode(Uint8Array.from([0x53, 0x59, 0x4d, 0x50, 1, 0x08, 255, 255, 255, 255])), serde.SerdeError);
  let deep = [];
  for (let i = 0; i < 100; i++) deep = [deep];
  assert.throws(() => serde.encode(deep), serde.SerdeError);
});

test("pairwise masks cancel in the sum, and a masked vector is not the input", async () => {
  const secagg = await import("../../python/syft_mpc/net/static/secagg.mjs");
  const ids = ["a", "b", "c"];
  const kps = Object.fromEntries(await Promise.all(ids.map(async (i) => [i, await secagg.newKeyPair()])));
  const peers = new Map(ids.map((i) => [i, kps[i].publicRaw]));
  const xs = ids.map((_, k) => ring.encode([k + 0.5, -k, 1e3 * k]));
  const masked = await Promise.all(ids.map((i, k) => secagg.mask(xs[k], i, kps[i].privateKey, peers, "round 1|a,b,c")));
  assert.deepEqual(Array.from(ring.decode(ring.reconstruct(masked))), [0.5 + 1.5 + 2.5, -3, 3000]);
  for (let k = 0; k < 3; k++) assert.notDeepEqual(Array.from(masked[k]), Array.from(xs[k]));
  // another context (round) gives other masks
  const other = await secagg.mask(xs[0], "a", kps.a.privateKey, peers, "round 2|a,b,c");
  assert.notDeepEqual(Array.from(other), Array.from(masked[0]));
});
