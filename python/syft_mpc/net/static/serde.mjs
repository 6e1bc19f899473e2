// The control-plane codec of syft_mpc.remote.serde, in JavaScript: the same frames
// (b"SYMP", version 1, tagged values, little-endian), the same bounds (depth, rank, every
// length checked against what remains), so a malformed message ends in a SerdeError.
// Integers (tag 0x03) decode to BigInt and BigInt encodes as an integer; a Number
// encodes as a float (tag 0x04).

export const MAX_DEPTH = 64;
export const MAX_NDIM = 32;
export const MAX_STR_BYTES = 1 << 24;

export class SerdeError extends Error {}
export class Tuple { constructor(items) { this.items = items; } }
export class Size { constructor(dims) { this.dims = dims; } }
export class Dtype { constructor(code) { this.code = code; } }
export class ObjRef { constructor(id) { this.id = id; } }
export class Slice { constructor(start, stop, step) { this.start = start; this.stop = stop; this.step = step; } }
export class PointerDesc {
  constructor(location, id, shape, dtype, requiresGrad) {
    this.location = location; this.id = id; this.shape = shape; this.dtype = dtype; this.requiresGrad = requiresGrad;
  }
}
export class Struct { constructor(kind, fields) { this.kind = kind; this.fields = fields; } }
export const ELLIPSIS = Symbol("Ellipsis");

// Message kinds (syft_mpc.remote.messages)
export const KIND = { Envelope: 1, Ok: 2, Err: 3, Store: 10, Fetch: 11, Command: 12, GetAttr: 13, SetAttr: 14, Move: 15, RemoteGet: 16 };

// dtype code -> [name, TypedArray, bytes per element]
export const DTYPES = {
  1: ["float32", Float32Array, 4], 2: ["float64", Float64Array, 8], 5: ["uint8", Uint8Array, 1],
  6: ["int8", Int8Array, 1], 7: ["int16", Int16Array, 2], 8: ["int32", Int32Array, 4],
  9: ["int64", BigInt64Array, 8], 10: ["bool", Uint8Array, 1], 13: ["uint16", Uint16Array, 2],
  14: ["uint32", Uint32Array, 4], 15: ["uint64", BigUint64Array, 8],
};
export const DTYPE_CODE = Object.fromEntries(Object.entries(DTYPES).map(([c, [n]]) => [n, Number(c)]));

/** A dense tensor: dtype code, shape (Numbers), data (a TypedArray of the dtype). */
export class Tensor {
  constructor(dtype, shape, data, requiresGrad = false) {
    this.dtype = dtype; this.shape = shape; this.data = data; this.requiresGrad = requiresGrad;
  }
  get numel() { return this.shape.reduce((a, b) => a * b, 1); }
}

class Reader {
  constructor(buf) { this.b = buf; this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength); this.p = 0; }
  need(n) {
    if (n > this.b.length - this.p) throw new SerdeError(`truncated message: ${n} bytes needed at offset ${this.p}, ${this.b.length - this.p} left`);
  }
  u8() { this.need(1); return this.b[this.p++]; }
  u16() { this.need(2); const v = this.dv.getUint16(this.p, true); this.p += 2; return v; }
  u32() { this.need(4); const v = this.dv.getUint32(this.p, true); this.p += 4; return v; }
  u64() { this.need(8); const v = this.dv.getBigUint64(this.p, true); this.p += 8; return v; }
  i64() { this.need(8); const v = this.dv.getBigInt64(this.p, true); this.p += 8; return v; }
  f64() { this.need(8); const v = this.dv.getFloat64(this.p, true); this.p += 8; return v; }
  take(n) { this.need(n); const s = this.b.subarray(this.p, this.p + n); this.p += n; return s; }
  count() { const n = this.u32(); if (n > this.b.length - this.p) throw new SerdeError(`count ${n} exceeds the ${this.b.length - this.p} bytes left`); return n; }
  str() {
    const n = this.u32();
    if (n > MAX_STR_BYTES) throw new SerdeError(`string of ${n} bytes exceeds the limit`);
    return new TextDecoder("utf-8", { fatal: true }).decode(this.take(n));
  }
}

export function decode(buf) {
  if (!(buf instanceof Uint8Array)) buf = new Uint8Array(buf);
  if (buf.length < 6 || buf[0] !== 0x53 || buf[1] !== 0x59 || buf[2] !== 0x4d || buf[3] !== 0x50) throw new SerdeError("not a syft_mpc message (bad magic)");
  if (buf[4] !== 1) throw new SerdeError(`unsupported codec version ${buf[4]}`);
  const r = new Reader(buf);
  r.p = 5;
  const v = dec(r, 0);
  if (r.p !== buf.length) throw new SerdeError(`${buf.length - r.p} trailing bytes`);
  return v;
}

function dec(r, depth) {
  if (depth > MAX_DEPTH) throw new SerdeError(`value nested deeper than ${MAX_DEPTH} levels`);
  const tag = r.u8();
  switch (tag) {
    case 0x00: return null;
    case 0x01: return false;
    case 0x02: return true;
    case 0x0d: return ELLIPSIS;
    case 0x03: return r.i64();
    case 0x04: return r.f64();
    case 0x05: return { re: r.f64(), im: r.f64() };
    case 0x06: return r.str();
    case 0x07: return new Uint8Array(r.take(r.count())); // a copy (also of a Node Buffer, whose slice() is a view)
    case 0x08: case 0x09: {
      const n = r.count();
      const items = [];
      for (let i = 0; i < n; i++) items.push(dec(r, depth + 1));
      return tag === 0x08 ? items : new Tuple(items);
    }
    case 0x0a: {
      const n = r.count();
      const m = new Map();
      for (let i = 0; i < n; i++) {
        const k = dec(r, depth + 1);
        if (typeof k !== "string" && typeof k !== "bigint") throw new SerdeError("dict keys must be str or int");
        m.set(k, dec(r, depth + 1));
      }
      return m;
    }
    case 0x0b: {
      const parts = [dec(r, depth + 1), dec(r, depth + 1), dec(r, depth + 1)];
      if (parts.some((x) => x !== null && typeof x !== "bigint")) throw new SerdeError("slice bounds must be None or int");
      return new Slice(...parts);
    }
    case 0x0c: return new Dtype(r.u8());
    case 0x0e: {
      const nd = r.u8();
      if (nd > MAX_NDIM) throw new SerdeError(`rank ${nd} exceeds ${MAX_NDIM}`);
      const dims = [];
      for (let i = 0; i < nd; i++) dims.push(Number(r.i64()));
      return new Size(dims);
    }
    case 0x0f: return { device: r.str() };
    case 0x10: return { memoryFormat: r.u8() };
    case 0x11: return decTensor(r, depth);
    case 0x12: return new ObjRef(r.u64());
    case 0x13: {
      const location = r.str();
      const id = r.u64();
      const shape = dec(r, depth + 1);
      if (shape !== null && !(shape instanceof Size)) throw new SerdeError("pointer shape must be None or Size");
      return new PointerDesc(location, id, shape, r.u8(), r.u8() === 1);
    }
    case 0x14: {
      const kind = r.u16();
      const n = r.u8();
      const fields = [];
      for (let i = 0; i < n; i++) fields.push(dec(r, depth + 1));
      return new Struct(kind, fields);
    }
    default: throw new SerdeError(`unknown value tag 0x${tag.toString(16)}`);
  }
}

function decTensor(r, depth) {
  const code = r.u8(), flags = r.u8(), nd = r.u8();
  if (nd > MAX_NDIM) throw new SerdeError(`tensor rank ${nd} exceeds ${MAX_NDIM}`);
  const shape = [];
  let numel = 1;
  for (let i = 0; i < nd; i++) {
    const d = r.u64();
    if (d > BigInt(r.b.length)) throw new SerdeError(`tensor dimension ${d} is larger than the message`);
    shape.push(Number(d));
    numel *= Number(d);
  }
  const nbytes = Number(r.u64());
  if (flags & 4) { const pad = r.u8(); r.take(pad); }
  const spec = DTYPES[code];
  if (!spec) throw new SerdeError(`tensors of dtype code ${code} are not supported in the browser`);
  if (nbytes !== numel * spec[2]) throw new SerdeError(`tensor payload of ${nbytes} bytes does not match shape [${shape}]`);
  const raw = new Uint8Array(r.take(nbytes)); // a copy at offset 0: aligned for the typed array
  const t = new Tensor(code, shape, new spec[1](raw.buffer, 0, numel), (flags & 1) !== 0);
  if (flags & 2) {
    if (depth >= MAX_DEPTH) throw new SerdeError("value nested too deep");
    if (r.u8() !== 0x11) throw new SerdeError("a tensor's grad must be a tensor");
    t.grad = decTensor(r, depth + 1);
  }
  return t;
}

class Writer {
  constructor() { this.buf = new Uint8Array(256); this.n = 0; }
  grow(k) {
    if (this.n + k <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.n + k) cap *= 2;
    const nb = new Uint8Array(cap); nb.set(this.buf.subarray(0, this.n)); this.buf = nb;
  }
  bytes(b) { this.grow(b.length); this.buf.set(b, this.n); this.n += b.length; }
  u8(v) { this.grow(1); this.buf[this.n++] = v; }
  num(setter, size, v) { this.grow(size); new DataView(this.buf.buffer)[setter](this.n, v, true); this.n += size; }
  u16(v) { this.num("setUint16", 2, v); }
  u32(v) { this.num("setUint32", 4, v); }
  u64(v) { this.num("setBigUint64", 8, BigInt(v)); }
  i64(v) { this.num("setBigInt64", 8, v); }
  f64(v) { this.num("setFloat64", 8, v); }
  str(s) { const b = new TextEncoder().encode(s); this.u32(b.length); this.bytes(b); }
}

export function encode(v) {
  const w = new Writer();
  w.bytes([0x53, 0x59, 0x4d, 0x50, 1]);
  enc(w, v, 0);
  return w.buf.slice(0, w.n);
}

const I64_MIN = -(1n << 63n), I64_MAX = (1n << 63n) - 1n;

function enc(w, v, depth) {
  if (depth > MAX_DEPTH) throw new SerdeError(`value nested deeper than ${MAX_DEPTH} levels`);
  if (v === null || v === undefined) return w.u8(0x00);
  if (v === false) return w.u8(0x01);
  if (v === true) return w.u8(0x02);
  if (v === ELLIPSIS) return w.u8(0x0d);
  if (typeof v === "bigint") {
    if (v < I64_MIN || v > I64_MAX) throw new SerdeError(`integer ${v} does not fit in 64 bits`);
    w.u8(0x03); return w.i64(v);
  }
  if (typeof v === "number") { w.u8(0x04); return w.f64(v); }
  if (typeof v === "string") { w.u8(0x06); return w.str(v); }
  if (v instanceof Uint8Array) { w.u8(0x07); w.u32(v.length); return w.bytes(v); }
  if (Array.isArray(v) || v instanceof Tuple) {
    const items = Array.isArray(v) ? v : v.items;
    w.u8(Array.isArray(v) ? 0x08 : 0x09); w.u32(items.length);
    for (const x of items) enc(w, x, depth + 1);
    return;
  }
  if (v instanceof Map) {
    w.u8(0x0a); w.u32(v.size);
    for (const [k, x] of v) { enc(w, k, depth + 1); enc(w, x, depth + 1); }
    return;
  }
  if (v instanceof Dtype) { w.u8(0x0c); return w.u8(v.code); }
  if (v instanceof Size) { w.u8(0x0e); w.u8(v.dims.length); for (const d of v.dims) w.i64(BigInt(d)); return; }
  if (v instanceof Tensor) return encTensor(w, v, depth);
  if (v instanceof ObjRef) { w.u8(0x12); return w.u64(v.id); }
  if (v instanceof PointerDesc) {
    w.u8(0x13); w.str(v.location); w.u64(v.id); enc(w, v.shape, depth + 1); w.u8(v.dtype); return w.u8(v.requiresGrad ? 1 : 0);
  }
  if (v instanceof Struct) {
    w.u8(0x14); w.u16(v.kind); w.u8(v.fields.length);
    for (const f of v.fields) enc(w, f, depth + 1);
    return;
  }
  if (v instanceof Slice) { w.u8(0x0b); enc(w, v.start, depth + 1); enc(w, v.stop, depth + 1); return enc(w, v.step, depth + 1); }
  // the plain objects decode() makes for a device and a memory format (they occur in plans)
  if (v?.constructor === Object && typeof v.device === "string") { w.u8(0x0f); return w.str(v.device); }
  if (v?.constructor === Object && typeof v.memoryFormat === "number") { w.u8(0x10); return w.u8(v.memoryFormat); }
  throw new SerdeError(`cannot encode a ${v?.constructor?.name ?? typeof v}`);
}

function encTensor(w, t, depth) {
  const spec = DTYPES[t.dtype];
  if (!spec) throw new SerdeError(`dtype code ${t.dtype} cannot be sent`);
  w.u8(0x11); w.u8(t.dtype); w.u8(t.requiresGrad ? 1 : 0); w.u8(t.shape.length);
  for (const d of t.shape) w.u64(d);
  const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  w.u64(raw.length);
  w.bytes(raw);
}

// Messages
export const envelope = (sender, deletes, body) => new Struct(KIND.Envelope, [sender, deletes, body]);
export const ok = (value) => new Struct(KIND.Ok, [value]);
export const err = (type, message) => new Struct(KIND.Err, [type, message]);
