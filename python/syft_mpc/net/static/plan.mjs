// A Plan interpreter in plain JavaScript: runs the aten graphs of syft_mpc.plans (docs/PLANS.md,
// "The wire format") on serde.mjs tensors, with torch's semantics for the ops in OPS
// (broadcasting, type promotion, the *_backward ops' argument lists of native_functions.yaml).
// The reference is syft_mpc/plans/graph.py `run`. Arithmetic is done in float64 and each
// result is rounded to its dtype (float32 tensors stay float32), so a float32 plan agrees with
// torch to float32 rounding. A plan naming an op outside OPS is refused before it is kept.
import { Struct, Tuple, Tensor, Dtype } from "./serde.mjs";

export const KIND_VAR = 60, KIND_PLANDEF = 61;
const F32 = 1, F64 = 2, I64 = 9, BOOL = 10;
const ARR = { 1: Float32Array, 2: Float64Array, 5: Uint8Array, 6: Int8Array, 7: Int16Array, 8: Int32Array, 9: BigInt64Array, 10: Uint8Array, 13: Uint16Array, 14: Uint32Array, 15: BigUint64Array };
const isFloat = (d) => d === F32 || d === F64;
const cat = (d) => (isFloat(d) ? 2 : d === BOOL ? 0 : 1);

export class PlanError extends Error {
  constructor(message, type = "RuntimeError") { super(message); this.type = type; }
}
const fail = (msg, type = "RuntimeError") => { throw new PlanError(msg, type); };

// ---------------------------------------------------------------- tensors

const numel = (shape) => shape.reduce((a, b) => a * b, 1);

/** The values of a tensor as Numbers (a view for float/small-int arrays, a copy for 64-bit ints). */
function nums(t) {
  return t.data instanceof BigInt64Array || t.data instanceof BigUint64Array ? Float64Array.from(t.data, Number) : t.data;
}

/** The largest tensor a plan may make in a tab (elements): a graph that would allocate more (a
 *  huge `expand`, `view` sizes from a hostile driver) fails instead of exhausting the tab's memory. */
export const MAX_ELEMENTS = 1 << 26;

/** A new tensor of `dtype` from Numbers (rounded to the dtype). */
function make(dtype, shape, vals) {
  const A = ARR[dtype] ?? fail(`dtype code ${dtype} is not supported by the browser plan interpreter`, "TypeError");
  let data;
  if (dtype === I64 || dtype === 15) data = A.from(vals, (v) => BigInt(Math.trunc(v)));
  else if (dtype === BOOL) data = Uint8Array.from(vals, (v) => (v ? 1 : 0));
  else data = A.from(vals);
  return new Tensor(dtype, shape.slice(), data);
}

const T = (v, what) => (v instanceof Tensor ? v : fail(`${what}: expected a tensor, got ${typeof v}`, "TypeError"));
const int = (v) => Number(v);
const normDim = (d, nd) => { d = int(d); const r = d < 0 ? d + nd : d; if (r < 0 || r >= Math.max(nd, 1)) fail(`dimension ${d} out of range for a ${nd}-d tensor`, "IndexError"); return r; };

function strides(shape) {
  const s = new Array(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
  return s;
}

function broadcastShape(a, b) {
  const n = Math.max(a.length, b.length), out = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) fail(`shapes [${a}] and [${b}] cannot be broadcast`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** For each element of `out` shape, the flat index into a tensor of shape `shape` broadcast to it. */
function broadcastIndex(shape, out) {
  const n = numel(out);
  if (n > MAX_ELEMENTS) fail(`a tensor of shape [${out}] exceeds the ${MAX_ELEMENTS} elements a plan may make in a browser tab`);
  const idx = new Int32Array(n);
  if (shape.join() === out.join()) { for (let i = 0; i < n; i++) idx[i] = i; return idx; }
  const st = strides(shape), off = out.length - shape.length;
  const bst = out.map((d, i) => (i < off || shape[i - off] === 1 ? 0 : st[i - off]));
  const c = new Array(out.length).fill(0);
  let p = 0;
  for (let i = 0; i < n; i++) {
    idx[i] = p;
    for (let k = out.length - 1; k >= 0; k--) {
      c[k]++; p += bst[k];
      if (c[k] < out[k]) break;
      p -= bst[k] * c[k]; c[k] = 0;
    }
  }
  return idx;
}

/** torch's result type: the highest category (bool < int < float) wins; within it, tensors with
 *  dimensions before 0-d tensors before Python scalars. */
function resultType(operands) {
  let best = -1;
  const ranked = [];
  for (const o of operands) {
    if (o instanceof Tensor) ranked.push([cat(o.dtype), o.shape.length > 0 ? 2 : 1, o.dtype]);
    else if (typeof o === "number") ranked.push([2, 0, F32]);
    else if (typeof o === "bigint") ranked.push([1, 0, I64]);
    else if (typeof o === "boolean") ranked.push([0, 0, BOOL]);
  }
  for (const r of ranked) best = Math.max(best, r[0]);
  let dt = null, pri = -1;
  for (const [c, p, d] of ranked) {
    if (c !== best) continue;
    if (p > pri) { pri = p; dt = d; } else if (p === pri && c === 2 && d === F64) dt = F64;
  }
  return dt;
}

const scalarNum = (v) => (typeof v === "bigint" ? Number(v) : typeof v === "boolean" ? (v ? 1 : 0) : v);

function binary(name, a, b, f, outDtype) {
  if (!(a instanceof Tensor) && !(b instanceof Tensor)) fail(`${name}: needs a tensor operand`, "TypeError");
  const dt = outDtype ?? resultType([a, b]);
  const sa = a instanceof Tensor ? a.shape : [], sb = b instanceof Tensor ? b.shape : [];
  const shape = broadcastShape(sa, sb);
  const n = numel(shape), out = new Float64Array(n);
  const av = a instanceof Tensor ? nums(a) : null, bv = b instanceof Tensor ? nums(b) : null;
  const ia = av && broadcastIndex(sa, shape), ib = bv && broadcastIndex(sb, shape);
  const as = av ? 0 : scalarNum(a), bs = bv ? 0 : scalarNum(b);
  for (let i = 0; i < n; i++) out[i] = f(av ? av[ia[i]] : as, bv ? bv[ib[i]] : bs);
  return make(dt, shape, out);
}

function unary(a, f, dtype) {
  a = T(a, "unary op");
  const dt = dtype ?? (isFloat(a.dtype) ? a.dtype : F32);
  const v = nums(a), out = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = f(v[i]);
  return make(dt, a.shape, out);
}

/** Sums (or applies `combine`) over `dims`; returns [shape, Float64Array] of the reduction. */
function reduce(a, dims, keepdim) {
  const nd = a.shape.length;
  const red = new Set((dims === null || dims === undefined || dims.length === 0 ? a.shape.map((_, i) => i) : dims.map((d) => normDim(d, nd))));
  const keepShape = a.shape.map((d, i) => (red.has(i) ? 1 : d));
  const outShape = keepdim ? keepShape : a.shape.filter((_, i) => !red.has(i));
  const out = new Float64Array(numel(keepShape));
  const ost = strides(keepShape).map((s, i) => (red.has(i) ? 0 : s));
  const v = nums(a), c = new Array(nd).fill(0);
  let p = 0;
  for (let i = 0; i < v.length; i++) {
    out[p] += v[i];
    for (let k = nd - 1; k >= 0; k--) {
      c[k]++; p += ost[k];
      if (c[k] < a.shape[k]) break;
      p -= ost[k] * c[k]; c[k] = 0;
    }
  }
  return [outShape, out, keepShape];
}

const dtypeArg = (v) => (v instanceof Dtype ? v.code : v === null || v === undefined ? null : fail(`expected a dtype, got ${v}`, "TypeError"));
const sumDtype = (a, dt) => dt ?? (isFloat(a.dtype) ? a.dtype : I64);

function reshape(a, size) {
  a = T(a, "view");
  const dims = size.map(int);
  const neg = dims.indexOf(-1);
  if (neg >= 0) { const rest = numel(dims.filter((_, i) => i !== neg)); dims[neg] = rest ? a.data.length / rest : 0; }
  if (numel(dims) !== a.data.length) fail(`shape [${size}] is invalid for input of size ${a.data.length}`);
  return new Tensor(a.dtype, dims, a.data.slice());
}

function transpose2(a) {
  if (a.shape.length < 2) return new Tensor(a.dtype, a.shape.slice(), a.data.slice());
  if (a.shape.length !== 2) fail(`t() expects a tensor with <= 2 dimensions, got ${a.shape.length}`);
  const [r, c] = a.shape, out = new ARR[a.dtype](r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = a.data[i * c + j];
  return new Tensor(a.dtype, [c, r], out);
}

function matmul(a, b, name) {
  a = T(a, name); b = T(b, name);
  if (a.shape.length !== 2 || b.shape.length !== 2) fail(`${name}: expects 2-d tensors, got [${a.shape}] and [${b.shape}]`);
  const [n, k] = a.shape, [k2, m] = b.shape;
  if (k !== k2) fail(`${name}: shapes [${a.shape}] and [${b.shape}] cannot be multiplied`);
  if (n * m > MAX_ELEMENTS) fail(`${name}: the [${n}, ${m}] result exceeds the ${MAX_ELEMENTS} elements a plan may make in a browser tab`);
  const av = nums(a), bv = nums(b), out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < k; p++) {
      const x = av[i * k + p];
      if (x === 0) continue;
      const ro = i * m, bo = p * m;
      for (let j = 0; j < m; j++) out[ro + j] += x * bv[bo + j];
    }
  }
  return [[n, m], out, resultType([a, b])];
}

/** (outer, size, inner) of a tensor seen along dimension `dim`. */
function along(shape, dim) {
  const d = normDim(dim, shape.length);
  return [numel(shape.slice(0, d)), shape.length ? shape[d] : 1, numel(shape.slice(d + 1))];
}

function logSoftmax(x, dim) {
  const [o, s, inn] = along(x.shape, dim), v = nums(x), out = new Float64Array(v.length);
  for (let a = 0; a < o; a++) for (let c = 0; c < inn; c++) {
    const base = a * s * inn + c;
    let mx = -Infinity;
    for (let i = 0; i < s; i++) mx = Math.max(mx, v[base + i * inn]);
    let z = 0;
    for (let i = 0; i < s; i++) z += Math.exp(v[base + i * inn] - mx);
    const lz = Math.log(z) + mx;
    for (let i = 0; i < s; i++) out[base + i * inn] = v[base + i * inn] - lz;
  }
  return out;
}

function alongSum(v, shape, dim, f) {
  const [o, s, inn] = along(shape, dim), sums = new Float64Array(o * inn);
  for (let a = 0; a < o; a++) for (let c = 0; c < inn; c++) {
    let z = 0;
    for (let i = 0; i < s; i++) z += f(a * s * inn + c + i * inn);
    sums[a * inn + c] = z;
  }
  return (flat) => { const a = Math.floor(flat / (s * inn)), c = flat % inn; return sums[a * inn + c]; };
}

function nllSetup(self, target, weight, ignoreIndex) {
  self = T(self, "nll_loss"); target = T(target, "nll_loss");
  const twoD = self.shape.length === 2, N = twoD ? self.shape[0] : 1, C = twoD ? self.shape[1] : self.shape[0];
  const tv = nums(target), wv = weight instanceof Tensor ? nums(weight) : null, ign = int(ignoreIndex);
  for (let i = 0; i < N; i++) if (tv[i] !== ign && (tv[i] < 0 || tv[i] >= C)) fail(`nll_loss: target ${tv[i]} is out of bounds for ${C} classes`, "IndexError");
  const w = (i) => (tv[i] === ign ? 0 : wv ? wv[tv[i]] : 1);
  return { self, N, C, tv, w, twoD };
}

const scalarOut = (dtype, x) => make(dtype, [], [x]);
const reduction = (r) => int(r); // 0 none, 1 mean, 2 sum (torch's Reduction enum)

function likeDtype(a, kw) { return dtypeArg(kw.get("dtype")) ?? a.dtype; }

// ---------------------------------------------------------------- the op table

/** op name -> (args: Array, kwargs: Map) -> Tensor | Tensor[] */
export const OPS = {
  "aten.t.default": ([a]) => transpose2(T(a, "t")),
  "aten.mm.default": ([a, b]) => { const [s, v, d] = matmul(a, b, "mm"); return make(d, s, v); },
  "aten.addmm.default": ([bias, a, b], kw) => {
    const [s, v, d] = matmul(a, b, "addmm");
    const beta = scalarNum(kw.get("beta") ?? 1), alpha = scalarNum(kw.get("alpha") ?? 1);
    const bv = nums(T(bias, "addmm")), bi = broadcastIndex(bias.shape, s);
    for (let i = 0; i < v.length; i++) v[i] = beta * bv[bi[i]] + alpha * v[i];
    return make(d, s, v);
  },
  "aten.relu.default": ([a]) => unary(a, (x) => (x > 0 ? x : 0), T(a, "relu").dtype),
  "aten.threshold_backward.default": ([g, self, th]) => binary("threshold_backward", g, self, (gv, sv) => (sv <= scalarNum(th) ? 0 : gv), g.dtype),
  "aten._log_softmax.default": ([x, dim]) => make(T(x, "_log_softmax").dtype, x.shape, logSoftmax(x, dim)),
  "aten._softmax.default": ([x, dim]) => make(T(x, "_softmax").dtype, x.shape, logSoftmax(x, dim).map(Math.exp)),
  "aten._log_softmax_backward_data.default": ([g, out, dim, dt]) => {
    const gv = nums(T(g, "_log_softmax_backward_data")), ov = nums(T(out, "_log_softmax_backward_data"));
    const s = alongSum(gv, g.shape, dim, (i) => gv[i]);
    return make(dtypeArg(dt) ?? g.dtype, g.shape, gv.map((x, i) => x - Math.exp(ov[i]) * s(i)));
  },
  "aten._softmax_backward_data.default": ([g, out, dim, dt]) => {
    const gv = nums(T(g, "_softmax_backward_data")), ov = nums(T(out, "_softmax_backward_data"));
    const s = alongSum(gv, g.shape, dim, (i) => gv[i] * ov[i]);
    return make(dtypeArg(dt) ?? g.dtype, g.shape, gv.map((x, i) => ov[i] * (x - s(i))));
  },
  "aten.nll_loss_forward.default": ([self, target, weight, red, ign]) => {
    const { N, C, tv, w, twoD } = nllSetup(self, target, weight, ign);
    const v = nums(self), r = reduction(red), losses = new Float64Array(N);
    let total = 0, sum = 0;
    for (let i = 0; i < N; i++) {
      const wi = w(i);
      losses[i] = wi === 0 ? 0 : -wi * v[(twoD ? i * C : 0) + tv[i]];
      total += wi; sum += losses[i];
    }
    if (r === 0 && twoD) return [make(self.dtype, [N], losses), scalarOut(self.dtype, 0)];
    return [scalarOut(self.dtype, r === 1 ? sum / total : sum), scalarOut(self.dtype, total)];
  },
  "aten.nll_loss_backward.default": ([go, self, target, weight, red, ign, total]) => {
    const { N, C, tv, w, twoD } = nllSetup(self, target, weight, ign);
    const gv = nums(T(go, "nll_loss_backward")), r = reduction(red), tw = nums(T(total, "nll_loss_backward"))[0];
    const out = new Float64Array(self.data.length);
    for (let i = 0; i < N; i++) {
      const g = r === 0 && twoD ? gv[i] : gv[0];
      out[(twoD ? i * C : 0) + tv[i]] = -w(i) * g / (r === 1 ? tw : 1);
    }
    return make(self.dtype, self.shape, out);
  },
  "aten.mse_loss.default": ([a, b, red]) => {
    const d = binary("mse_loss", a, b, (x, y) => (x - y) * (x - y)), r = reduction(red ?? 1n);
    if (r === 0) return d;
    const s = nums(d).reduce((x, y) => x + y, 0);
    return scalarOut(d.dtype, r === 1 ? s / d.data.length : s);
  },
  "aten.mse_loss_backward.default": ([g, a, b, red]) => {
    const r = reduction(red), n = T(a, "mse_loss_backward").data.length;
    const diff = binary("mse_loss_backward", a, b, (x, y) => 2 * (x - y) / (r === 1 ? n : 1));
    return binary("mse_loss_backward", diff, g, (x, y) => x * y);
  },
  "aten.ones_like.default": ([a], kw) => make(likeDtype(T(a, "ones_like"), kw), a.shape, new Float64Array(a.data.length).fill(1)),
  "aten.zeros_like.default": ([a], kw) => make(likeDtype(T(a, "zeros_like"), kw), a.shape, new Float64Array(a.data.length)),
  "aten.full_like.default": ([a, v], kw) => make(likeDtype(T(a, "full_like"), kw), a.shape, new Float64Array(a.data.length).fill(scalarNum(v))),
  "aten.sum.default": ([a], kw) => { const [s, v] = reduce(T(a, "sum"), null, false); return make(sumDtype(a, dtypeArg(kw.get("dtype"))), s, v); },
  "aten.sum.dim_IntList": ([a, dims, keep], kw) => {
    const [s, v] = reduce(T(a, "sum"), dims, keep ?? kw.get("keepdim") ?? false);
    return make(sumDtype(a, dtypeArg(kw.get("dtype"))), s, v);
  },
  "aten.mean.default": ([a]) => { const [s, v] = reduce(T(a, "mean"), null, false); return make(a.dtype, s, v.map((x) => x / a.data.length)); },
  "aten.mean.dim": ([a, dims, keep], kw) => {
    const [s, v, ks] = reduce(T(a, "mean"), dims, keep ?? kw.get("keepdim") ?? false);
    const k = a.data.length / Math.max(numel(ks), 1);
    return make(a.dtype, s, v.map((x) => x / k));
  },
  "aten.view.default": ([a, size]) => reshape(a, size),
  "aten._unsafe_view.default": ([a, size]) => reshape(a, size),
  "aten.reshape.default": ([a, size]) => reshape(a, size),
  "aten.unsqueeze.default": ([a, d]) => { const s = T(a, "unsqueeze").shape.slice(); s.splice(normDim(d, s.length + 1), 0, 1); return reshape(a, s); },
  "aten.squeeze.dim": ([a, d]) => { const s = T(a, "squeeze").shape.slice(), k = normDim(d, s.length); if (s[k] === 1) s.splice(k, 1); return reshape(a, s); },
  "aten.expand.default": ([a, size]) => {
    a = T(a, "expand");
    const off = size.length - a.shape.length;
    const shape = size.map((d, i) => (int(d) === -1 ? a.shape[i - off] : int(d)));
    const idx = broadcastIndex(a.shape, broadcastShape(a.shape, shape)), v = nums(a);
    return make(a.dtype, shape, Float64Array.from(idx, (i) => v[i]));
  },
  "aten.clone.default": ([a]) => new Tensor(T(a, "clone").dtype, a.shape.slice(), a.data.slice()),
  "aten.detach.default": ([a]) => new Tensor(T(a, "detach").dtype, a.shape.slice(), a.data.slice()),
  "aten.lift_fresh_copy.default": ([a]) => new Tensor(T(a, "lift_fresh_copy").dtype, a.shape.slice(), a.data.slice()),
  "aten._to_copy.default": ([a], kw) => make(likeDtype(T(a, "_to_copy"), kw), a.shape, nums(a)),
  "aten.argmax.default": ([a, dim, keep]) => {
    a = T(a, "argmax");
    const v = nums(a);
    if (dim === null || dim === undefined) {
      let best = 0;
      for (let i = 1; i < v.length; i++) if (v[i] > v[best] || (Number.isNaN(v[i]) && !Number.isNaN(v[best]))) best = i;
      return make(I64, keep ? a.shape.map(() => 1) : [], [best]);
    }
    const [o, s, inn] = along(a.shape, dim), out = new Float64Array(o * inn);
    for (let x = 0; x < o; x++) for (let c = 0; c < inn; c++) {
      const base = x * s * inn + c;
      let best = 0;
      for (let i = 1; i < s; i++) if (v[base + i * inn] > v[base + best * inn]) best = i;
      out[x * inn + c] = best;
    }
    const d = normDim(dim, a.shape.length);
    const shape = keep ? a.shape.map((n, i) => (i === d ? 1 : n)) : a.shape.filter((_, i) => i !== d);
    return make(I64, shape, out);
  },
};

const ALPHA = (kw) => scalarNum(kw.get("alpha") ?? 1);
for (const kind of ["Tensor", "Scalar"]) {
  OPS[`aten.add.${kind}`] = ([a, b], kw) => { const al = ALPHA(kw); return binary("add", a, b, (x, y) => x + al * y); };
  OPS[`aten.sub.${kind}`] = ([a, b], kw) => { const al = ALPHA(kw); return binary("sub", a, b, (x, y) => x - al * y); };
  OPS[`aten.mul.${kind}`] = ([a, b]) => binary("mul", a, b, (x, y) => x * y);
  OPS[`aten.div.${kind}`] = ([a, b]) => {
    const dt = resultType([a, b]);
    return binary("div", a, b, (x, y) => x / y, isFloat(dt) ? dt : F32);
  };
  for (const [name, f] of [["eq", (x, y) => x === y], ["ne", (x, y) => x !== y], ["lt", (x, y) => x < y], ["le", (x, y) => x <= y], ["gt", (x, y) => x > y], ["ge", (x, y) => x >= y]]) {
    OPS[`aten.${name}.${kind}`] = ([a, b]) => binary(name, a, b, f, BOOL);
  }
}
OPS["aten.rsub.Scalar"] = ([a, b], kw) => { const al = ALPHA(kw); return binary("rsub", a, b, (x, y) => y - al * x); };
OPS["aten.maximum.default"] = ([a, b]) => binary("maximum", a, b, Math.max);
OPS["aten.minimum.default"] = ([a, b]) => binary("minimum", a, b, Math.min);
OPS["aten.pow.Tensor_Scalar"] = ([a, e]) => { const k = scalarNum(e); return binary("pow", a, e, (x) => x ** k, isFloat(a.dtype) || typeof e === "number" ? resultType([a, e]) : a.dtype); };
for (const [name, f] of [["exp", Math.exp], ["log", Math.log], ["sqrt", Math.sqrt], ["rsqrt", (x) => 1 / Math.sqrt(x)], ["tanh", Math.tanh],
  ["sigmoid", (x) => 1 / (1 + Math.exp(-x))], ["reciprocal", (x) => 1 / x]]) {
  OPS[`aten.${name}.default`] = ([a]) => unary(a, f);
}
OPS["aten.neg.default"] = ([a]) => unary(a, (x) => -x, T(a, "neg").dtype);
OPS["aten.abs.default"] = ([a]) => unary(a, Math.abs, T(a, "abs").dtype);
OPS["aten.sigmoid_backward.default"] = ([g, y]) => binary("sigmoid_backward", g, y, (gv, yv) => gv * yv * (1 - yv));
OPS["aten.tanh_backward.default"] = ([g, y]) => binary("tanh_backward", g, y, (gv, yv) => gv * (1 - yv * yv));


// ---------------------------------------------------------------- 2-d convolution and max pooling

const pair = (v, dflt) => { const a = (v ?? []).map(int); return a.length === 0 ? dflt : a.length === 1 ? [a[0], a[0]] : a; };

/** Geometry of a 2-d convolution (not transposed): input [N, C, H, W], weight [O, C/groups, KH, KW]. */
function convGeom(x, w, stride, padding, dilation, transposed, groups, name) {
  if (transposed) fail(`${name}: transposed convolution is not supported in the browser`);
  if (x.shape.length !== 4 || w.shape.length !== 4) fail(`${name}: the browser runs 2-d convolutions (4-d input and weight), got [${x.shape}] and [${w.shape}]`);
  const [N, C, H, W] = x.shape, [O, Cg, KH, KW] = w.shape, g = int(groups);
  if (C !== Cg * g || O % g !== 0) fail(`${name}: input [${x.shape}] and weight [${w.shape}] do not match for groups=${g}`);
  const [sh, sw] = pair(stride, [1, 1]), [ph, pw] = pair(padding, [0, 0]), [dh, dw] = pair(dilation, [1, 1]);
  const OH = Math.floor((H + 2 * ph - dh * (KH - 1) - 1) / sh) + 1, OW = Math.floor((W + 2 * pw - dw * (KW - 1) - 1) / sw) + 1;
  if (OH < 1 || OW < 1) fail(`${name}: the kernel is larger than the padded input`);
  return { N, C, H, W, O, Cg, KH, KW, g, sh, sw, ph, pw, dh, dw, OH, OW, Og: O / g };
}

/** Calls f(outIndex, inIndex, weightIndex) for every term of the convolution sum. */
function convEach(G, f) {
  const { N, C, H, W, O, Cg, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, Og } = G;
  for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) {
    const grp = Math.floor(o / Og);
    for (let oh = 0; oh < OH; oh++) for (let ow = 0; ow < OW; ow++) {
      const oi = ((n * O + o) * OH + oh) * OW + ow;
      for (let c = 0; c < Cg; c++) {
        const ci = grp * Cg + c;
        for (let kh = 0; kh < KH; kh++) {
          const ih = oh * sh - ph + kh * dh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < KW; kw++) {
            const iw = ow * sw - pw + kw * dw;
            if (iw < 0 || iw >= W) continue;
            f(oi, ((n * C + ci) * H + ih) * W + iw, ((o * Cg + c) * KH + kh) * KW + kw);
          }
        }
      }
    }
  }
}

OPS["aten.convolution.default"] = ([x, w, bias, stride, padding, dilation, transposed, _outPad, groups]) => {
  x = T(x, "convolution"); w = T(w, "convolution");
  const G = convGeom(x, w, stride, padding, dilation, transposed, groups, "convolution");
  if (G.N * G.O * G.OH * G.OW > MAX_ELEMENTS) fail(`convolution: the output exceeds the ${MAX_ELEMENTS} elements a plan may make in a browser tab`);
  const xv = nums(x), wv = nums(w), out = new Float64Array(G.N * G.O * G.OH * G.OW);
  convEach(G, (oi, ii, wi) => { out[oi] += xv[ii] * wv[wi]; });
  if (bias instanceof Tensor) {
    const bv = nums(bias), plane = G.OH * G.OW;
    for (let i = 0; i < out.length; i++) out[i] += bv[Math.floor(i / plane) % G.O];
  }
  return make(resultType([x, w]), [G.N, G.O, G.OH, G.OW], out);
};

OPS["aten.convolution_backward.default"] = ([go, x, w, _biasSizes, stride, padding, dilation, transposed, _outPad, groups, mask]) => {
  go = T(go, "convolution_backward"); x = T(x, "convolution_backward"); w = T(w, "convolution_backward");
  const G = convGeom(x, w, stride, padding, dilation, transposed, groups, "convolution_backward");
  const gv = nums(go), xv = nums(x), wv = nums(w);
  const [mi, mw, mb] = (mask ?? [true, true, true]).map(Boolean);
  const gi = mi ? new Float64Array(xv.length) : null, gw = mw ? new Float64Array(wv.length) : null;
  if (mi || mw) convEach(G, (oi, ii, wi) => { if (gi) gi[ii] += gv[oi] * wv[wi]; if (gw) gw[wi] += gv[oi] * xv[ii]; });
  let gb = null;
  if (mb) {
    gb = new Float64Array(G.O);
    const plane = G.OH * G.OW;
    for (let i = 0; i < gv.length; i++) gb[Math.floor(i / plane) % G.O] += gv[i];
  }
  return [gi && make(x.dtype, x.shape, gi), gw && make(w.dtype, w.shape, gw), gb && make(go.dtype, [G.O], gb)];
};

function poolGeom(x, kernel, stride, padding, dilation, ceilMode) {
  if (x.shape.length !== 4 && x.shape.length !== 3) fail(`max_pool2d: expects a 3-d or 4-d input, got [${x.shape}]`);
  if (ceilMode) fail("max_pool2d: ceil_mode=True is not supported in the browser");
  const [H, W] = x.shape.slice(-2), planes = numel(x.shape.slice(0, -2));
  const [kh, kw] = pair(kernel), [sh, sw] = pair(stride, [kh, kw]), [ph, pw] = pair(padding, [0, 0]), [dh, dw] = pair(dilation, [1, 1]);
  const OH = Math.floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1, OW = Math.floor((W + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (OH < 1 || OW < 1) fail("max_pool2d: the kernel is larger than the padded input");
  return { H, W, planes, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW };
}

OPS["aten.max_pool2d_with_indices.default"] = ([x, kernel, stride, padding, dilation, ceilMode]) => {
  x = T(x, "max_pool2d_with_indices");
  const P = poolGeom(x, kernel, stride, padding, dilation, ceilMode), xv = nums(x);
  const n = P.planes * P.OH * P.OW, vals = new Float64Array(n), idx = new Float64Array(n);
  for (let p = 0; p < P.planes; p++) for (let oh = 0; oh < P.OH; oh++) for (let ow = 0; ow < P.OW; ow++) {
    let best = -Infinity, at = -1;
    for (let i = 0; i < P.kh; i++) {
      const h = oh * P.sh - P.ph + i * P.dh;
      if (h < 0 || h >= P.H) continue;
      for (let j = 0; j < P.kw; j++) {
        const w = ow * P.sw - P.pw + j * P.dw;
        if (w < 0 || w >= P.W) continue;
        const v = xv[(p * P.H + h) * P.W + w];
        if (v > best || Number.isNaN(v) || at < 0) { best = v; at = h * P.W + w; if (Number.isNaN(v)) break; }
      }
    }
    const o = (p * P.OH + oh) * P.OW + ow;
    vals[o] = best; idx[o] = at;
  }
  const shape = [...x.shape.slice(0, -2), P.OH, P.OW];
  return [make(x.dtype, shape, vals), make(I64, shape, idx)];
};

OPS["aten.max_pool2d_with_indices_backward.default"] = ([go, x, kernel, stride, padding, dilation, ceilMode, indices]) => {
  go = T(go, "max_pool2d_with_indices_backward"); x = T(x, "max_pool2d_with_indices_backward");
  const P = poolGeom(x, kernel, stride, padding, dilation, ceilMode), gv = nums(go), iv = nums(T(indices, "max_pool2d_with_indices_backward"));
  const out = new Float64Array(x.data.length), per = P.OH * P.OW, plane = P.H * P.W;
  for (let i = 0; i < gv.length; i++) out[Math.floor(i / per) * plane + iv[i]] += gv[i];
  return make(x.dtype, x.shape, out);
};

export const GETITEM = "prim.getitem";

// ---------------------------------------------------------------- plans

const isVar = (v) => v instanceof Struct && v.kind === KIND_VAR;

/** A decoded PlanDef struct as {id, name, inTree, nInputs, state, nodes: [[op, args, kwargs]], outputs}.
 *  Refuses (UnsupportedOperationError) a plan naming an op this interpreter lacks, naming the node. */
export function accept(def) {
  if (!(def instanceof Struct) || def.kind !== KIND_PLANDEF || def.fields.length !== 7) fail("expected a PlanDef", "SerializationError");
  const [id, name, inTree, nInputs, state, nodes, outputs] = def.fields;
  if (typeof name !== "string" || typeof nInputs !== "bigint" || !Array.isArray(state) || !Array.isArray(nodes)) fail("malformed PlanDef", "SerializationError");
  const plain = [];
  let defined = Number(nInputs) + state.length;
  const checkVars = (v, where) => {
    if (isVar(v)) { if (!(Number(v.fields[0]) >= 0 && Number(v.fields[0]) < defined)) fail(`${where} refers to value ${v.fields[0]}, which is not defined before it`, "SerializationError"); return; }
    if (Array.isArray(v)) v.forEach((x) => checkVars(x, where));
    else if (v instanceof Tuple) v.items.forEach((x) => checkVars(x, where));
    else if (v instanceof Map) v.forEach((x) => checkVars(x, where));
  };
  for (const t of state) if (!(t instanceof Tensor)) fail("a plan's state holds tensors only", "SerializationError");
  nodes.forEach((n, k) => {
    if (!(n instanceof Tuple) || n.items.length !== 3 || typeof n.items[0] !== "string" || !(n.items[1] instanceof Tuple) || !(n.items[2] instanceof Map)) fail(`plan node ${k} is not (op, args, kwargs)`, "SerializationError");
    const [op, args, kwargs] = n.items;
    if (op !== GETITEM && !Object.hasOwn(OPS, op)) fail(`plan ${JSON.stringify(name)} node ${k} names operation ${op}, which this browser worker does not run`, "UnsupportedOperationError");
    checkVars(args, `plan node ${k}`); checkVars(kwargs, `plan node ${k}`);
    plain.push([op, args.items, kwargs]);
    defined++;
  });
  checkVars(outputs, "plan outputs");
  return { id, name, inTree, nInputs: Number(nInputs), state, nodes: plain, outputs };
}

function resolveArg(v, values) {
  if (isVar(v)) return values[Number(v.fields[0])];
  if (Array.isArray(v)) return v.map((x) => resolveArg(x, values));
  if (v instanceof Tuple) return v.items.map((x) => resolveArg(x, values));
  return v;
}

/** The outputs' leaves, in order (a flat list of tensors). */
export function flatOutputs(outputs, values) {
  if (isVar(outputs)) return [values[Number(outputs.fields[0])]];
  const items = Array.isArray(outputs) ? outputs : outputs instanceof Tuple ? outputs.items : null;
  if (!items) fail("plan outputs must be Vars", "SerializationError");
  return items.flatMap((x) => flatOutputs(x, values));
}

/** Runs an accepted plan on `inputs` (tensors); returns the flat list of output tensors. */
export function run(plan, inputs) {
  if (inputs.length !== plan.nInputs) fail(`plan ${JSON.stringify(plan.name)} takes ${plan.nInputs} tensors, got ${inputs.length}`, "TypeError");
  const values = [...inputs, ...plan.state];
  plan.nodes.forEach(([op, args, kwargs], k) => {
    const a = args.map((x) => resolveArg(x, values));
    const kw = new Map([...kwargs].map(([key, x]) => [key, resolveArg(x, values)]));
    if (op === GETITEM) {
      if (!Array.isArray(a[0]) || typeof a[1] !== "bigint") fail(`plan node ${k}: prim.getitem takes (a node with several results, int)`, "SerializationError");
      values.push(a[0][Number(a[1])]);
      return;
    }
    try {
      values.push(OPS[op](a, kw));
    } catch (e) {
      throw new PlanError(`plan ${JSON.stringify(plan.name)}, node ${k} (${op}): ${e.message}`, e.type ?? "RuntimeError");
    }
  });
  const out = flatOutputs(plan.outputs, values);
  for (const t of out) if (!(t instanceof Tensor)) fail(`plan ${JSON.stringify(plan.name)} returns a non-tensor`, "TypeError");
  return out;
}
