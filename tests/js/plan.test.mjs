// node --test tests/js/ : ops of the browser's plan interpreter on their own, with torch's
// semantics (tests/test_browser_plans.py checks whole traced plans against plans.graph.run).
import test from "node:test";
import assert from "node:assert/strict";
import { Tensor, Struct, Tuple } from "../../python/syft_mpc/net/static/serde.mjs";
import * as plan from "../../python/syft_mpc/net/static/plan.mjs";

const f32 = (shape, xs) => new Tensor(1, shape, Float32Array.from(xs));
const i64 = (shape, xs) => new Tensor(9, shape, BigInt64Array.from(xs, BigInt));
const vals = (t) => Array.from(t.data, Number);
const op = (name, args, kw = new Map()) => plan.OPS[name](args, kw);

test("broadcasting, alpha and type promotion", () => {
  const a = f32([2, 3], [1, 2, 3, 4, 5, 6]), b = f32([3], [10, 20, 30]);
  assert.deepEqual(vals(op("aten.add.Tensor", [a, b], new Map([["alpha", 2n]]))), [21, 42, 63, 24, 45, 66]);
  assert.deepEqual(op("aten.sub.Tensor", [b, f32([2, 1], [1, 2])]).shape, [2, 3]);
  const ints = i64([3], [1, 2, 3]);
  assert.equal(op("aten.mul.Tensor", [ints, 2n]).dtype, 9); // int64 * int stays int64
  assert.equal(op("aten.mul.Tensor", [ints, 0.5]).dtype, 1); // int64 * float is float32
  assert.equal(op("aten.div.Tensor", [ints, 2n]).dtype, 1); // true division
  assert.equal(op("aten.mul.Tensor", [f32([3], [1, 2, 3]), new Tensor(2, [], Float64Array.from([2]))]).dtype, 1); // a 0-d f64 does not promote f32
  assert.deepEqual(vals(op("aten.eq.Tensor", [ints, i64([3], [1, 0, 3])])), [1, 0, 1]);
  assert.throws(() => op("aten.add.Tensor", [a, f32([2], [1, 2])]), /cannot be broadcast/);
});

test("reductions, argmax and views", () => {
  const a = f32([2, 3], [1, 5, 3, 4, 2, 6]);
  assert.deepEqual(vals(op("aten.sum.dim_IntList", [a, [0n], true])), [5, 7, 9]);
  assert.deepEqual(op("aten.sum.dim_IntList", [a, [-1n], false]).shape, [2]);
  assert.deepEqual(vals(op("aten.argmax.default", [a, 1n])), [1, 2]);
  assert.equal(op("aten.sum.default", [op("aten.gt.Scalar", [a, 2.5])]).dtype, 9); // sum of bools is int64
  assert.deepEqual(op("aten.view.default", [a, [-1n]]).shape, [6]);
  assert.deepEqual(vals(op("aten.t.default", [a])), [1, 4, 5, 2, 3, 6]);
  assert.throws(() => op("aten.view.default", [a, [4n]]), /invalid for input of size 6/);
  assert.throws(() => op("aten.expand.default", [f32([1], [1]), [1n << 40n]]), /exceeds the \d+ elements/); // no huge allocation
  assert.deepEqual(vals(op("aten.expand.default", [f32([2, 1], [1, 2]), [2n, 3n]])), [1, 1, 1, 2, 2, 2]);
});

test("a plan naming an op outside the table is refused with the op's name", () => {
  const v = (i) => new Struct(plan.KIND_VAR, [BigInt(i)]);
  const def = (op) => new Struct(plan.KIND_PLANDEF, [1n, "p", new Tuple([v(0)]), 1n, [], [new Tuple([op, new Tuple([v(0)]), new Map()])], v(1)]);
  assert.throws(() => plan.accept(def("aten.avg_pool2d.default")), (e) => e.type === "UnsupportedOperationError" && /aten\.avg_pool2d\.default/.test(e.message));
  assert.throws(() => plan.accept(def("constructor")), (e) => e.type === "UnsupportedOperationError"); // not an own property of OPS
  const p = plan.accept(def("aten.relu.default"));
  assert.deepEqual(vals(plan.run(p, [f32([3], [-1, 0, 2])])[0]), [0, 0, 2]);
  assert.throws(() => plan.run(p, []), /takes 1 tensors/);
});
