// Z_2^64 arithmetic, additive secret sharing and fixed-point encoding, as the Rust core
// (rust/ring) does them. Elements are BigUint64Array entries: storing a BigInt into a
// BigUint64Array reduces it mod 2^64 (ECMAScript ToBigUint64), which is exactly the
// wrapping of Rust's u64 wrapping_add / wrapping_mul, so no limb arithmetic is needed.

export const DEFAULT_BASE = 2;
export const DEFAULT_PRECISION = 16; // syft_mpc.fixed_point.DEFAULT_PRECISION

function check(a, b) {
  if (!(a instanceof BigUint64Array) || !(b instanceof BigUint64Array)) throw new TypeError("ring operands must be BigUint64Array");
  if (a.length !== b.length) throw new RangeError(`ring operands of lengths ${a.length} and ${b.length}`);
}

export function add(a, b) {
  check(a, b);
  const out = new BigUint64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}

export function sub(a, b) {
  check(a, b);
  const out = new BigUint64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] - b[i];
  return out;
}

export function mul(a, b) {
  check(a, b);
  const out = new BigUint64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] * b[i];
  return out;
}

export function neg(a) {
  const out = new BigUint64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = -a[i];
  return out;
}

/** In place: acc += a (mod 2^64). */
export function addInto(acc, a) {
  check(acc, a);
  for (let i = 0; i < a.length; i++) acc[i] += a[i];
  return acc;
}

/** Uniform random ring elements from the platform CSPRNG (crypto.getRandomValues). */
export function random(n) {
  const out = new BigUint64Array(n);
  const chunk = 8192; // getRandomValues fills at most 65536 bytes per call
  for (let i = 0; i < n; i += chunk) crypto.getRandomValues(out.subarray(i, Math.min(n, i + chunk)));
  return out;
}

/** n additive shares of x: n-1 uniform, the last x - (their sum); they sum to x mod 2^64. */
export function share(x, n) {
  if (!(n >= 2)) throw new RangeError("at least 2 shares");
  const shares = [];
  const last = x.slice();
  for (let k = 0; k < n - 1; k++) {
    const r = random(x.length);
    for (let i = 0; i < x.length; i++) last[i] -= r[i];
    shares.push(r);
  }
  shares.push(last);
  return shares;
}

export function reconstruct(shares) {
  const acc = new BigUint64Array(shares[0].length);
  for (const s of shares) addInto(acc, s);
  return acc;
}

export function scaleOf(base = DEFAULT_BASE, precision = DEFAULT_PRECISION) {
  const ok = (base === 2 && precision <= 40) || (base === 10 && precision <= 12);
  if (!ok || precision < 0 || !Number.isInteger(precision)) throw new RangeError(`unsupported fixed point base ${base}, precision ${precision}`);
  return base ** precision;
}

const TWO63 = 2 ** 63;

/** round(x * scale) in two's complement, rounding half away from zero (Rust's f64::round). */
export function encode(xs, base = DEFAULT_BASE, precision = DEFAULT_PRECISION) {
  const scale = scaleOf(base, precision);
  const out = new BigUint64Array(xs.length);
  for (let i = 0; i < xs.length; i++) {
    const v = xs[i];
    if (!Number.isFinite(v)) throw new RangeError(`value at index ${i} is not finite`);
    const p = v * scale;
    const s = Math.sign(p) * Math.round(Math.abs(p)) + 0; // Math.round alone rounds -2.5 to -2
    if (Math.abs(s) >= TWO63) throw new RangeError(`value ${v} at index ${i} is out of range (|x| < ${TWO63 / scale})`);
    out[i] = BigInt(s);
  }
  return out;
}

/** The reals that ring elements encode (as the Rust decoder: exact division when |v| < 2^53,
 *  otherwise a Euclidean split so both parts convert exactly). */
export function decode(a, base = DEFAULT_BASE, precision = DEFAULT_PRECISION) {
  const scale = scaleOf(base, precision);
  const bscale = BigInt(scale);
  const signed = new BigInt64Array(a.buffer, a.byteOffset, a.length);
  const out = new Float64Array(a.length);
  const lim = 1n << 53n;
  for (let i = 0; i < a.length; i++) {
    const v = signed[i];
    if (v < lim && v > -lim) {
      out[i] = Number(v) / scale;
    } else {
      let q = v / bscale;
      let r = v % bscale;
      if (r < 0n) { r += bscale; q -= 1n; }
      out[i] = Number(q) + Number(r) / scale;
    }
  }
  return out;
}
