// A browser tab as a syft_mpc worker: authenticates to the gateway (the HMAC handshake of
// syft_mpc/net/ws_transport.py, with WebCrypto), then answers the driver's requests (the
// Envelope messages every worker answers) from an object store kept in this tab.
import * as serde from "./serde.mjs";
import * as ring from "./ring.mjs";
import * as secagg from "./secagg.mjs";
import * as plans from "./plan.mjs";

const { Struct, Tuple, Size, Tensor, ObjRef, PointerDesc, KIND, SerdeError } = serde;
const $ = (id) => document.getElementById(id);
const te = new TextEncoder();
const MAGIC = te.encode("SMWS\x01");
const KEY_LABEL = te.encode("syft-mpc session key v1\0");
const PROOF_LABEL = te.encode("syft-mpc websocket v1 handshake proof\0");
const SESSION = "syft-mpc-gateway-tab";
const F32 = 1, F64 = 2, I64 = 9, U64 = 15;
const KIND_PLAN_STORE = 62, KIND_PLAN_RUN = 63; // syft_mpc.remote.messages.PlanStore / PlanRun

const state = { id: null, ws: null, objects: new Map(), plans: new Map(), datasets: new Map(), nreq: 0, nout: 0, secagg: new Map() };
window.syftTab = state; // for a person poking around in the console (and for tests)

// ---------------------------------------------------------------- the page

function log(kind, text) {
  const line = document.createElement("div");
  line.className = kind;
  line.textContent = `${new Date().toISOString().slice(11, 19)} ${text}`;
  const el = $("log");
  el.appendChild(line);
  while (el.childNodes.length > 500) el.removeChild(el.firstChild);
  el.scrollTop = el.scrollHeight;
}

function setStatus(text, ok) {
  $("status").textContent = text;
  $("status").className = ok ? "ok" : "bad";
  document.title = `${ok ? "●" : "○"} ${state.id ?? ""} syft_mpc worker`;
}

function showObjects() {
  const rows = [];
  for (const [id, t] of state.objects) {
    const tr = document.createElement("tr");
    for (const v of [String(id).slice(0, 10) + "…", serde.DTYPES[t.dtype]?.[0] ?? t.dtype, `[${t.shape}]`, t.private ? "yes" : "no"]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    rows.push(tr);
  }
  $("objects").replaceChildren(...rows);
  const prow = [];
  for (const [id, p] of state.plans) {
    const tr = document.createElement("tr");
    for (const v of [String(id).slice(0, 10) + "…", p.name, p.nodes.length, p.runs]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
    }
    prow.push(tr);
  }
  $("plans").replaceChildren(...prow);
  $("nreq").textContent = state.nreq;
  $("nout").textContent = state.nout;
}

function describe(v) {
  if (v instanceof Tensor) return `${serde.DTYPES[v.dtype]?.[0]}[${v.shape}]`;
  if (v instanceof ObjRef) return `#${String(v.id).slice(0, 6)}`;
  if (v instanceof Tuple) return `(${v.items.map(describe).join(", ")})`;
  if (Array.isArray(v)) return `[${v.map(describe).join(", ")}]`;
  if (v instanceof Map) return `{${[...v.keys()].join(", ")}}`;
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  return String(v);
}

// ---------------------------------------------------------------- handshake (WebCrypto HMAC-SHA256)

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
const lp = (b) => concat(new Uint8Array([b.length & 255, b.length >> 8]), b);

async function hmacKey(token) {
  const k = new Uint8Array(await crypto.subtle.digest("SHA-256", concat(KEY_LABEL, te.encode(token))));
  return crypto.subtle.importKey("raw", k, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

function proofMsg(dir, id, receiverNonce, senderNonce) {
  return concat(PROOF_LABEL, te.encode(dir), lp(te.encode(SESSION)), lp(te.encode(id)), receiverNonce, senderNonce);
}

function nextMessage(ws) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("the gateway did not answer the handshake in 30 s")), 30000);
    ws.onmessage = (ev) => { clearTimeout(t); resolve(new Uint8Array(ev.data)); };
    ws.onclose = () => { clearTimeout(t); reject(new Error("the gateway closed the connection during the handshake")); };
  });
}

async function handshake(ws, id, token) {
  const key = await hmacKey(token);
  const nc = crypto.getRandomValues(new Uint8Array(32));
  ws.send(concat(MAGIC, nc, te.encode(id)));
  const hello = await nextMessage(ws);
  if (hello.length !== 37 || !MAGIC.every((b, i) => hello[i] === b)) throw new Error("the server is not a syft_mpc gateway");
  const ns = hello.slice(5);
  ws.send(new Uint8Array(await crypto.subtle.sign("HMAC", key, proofMsg("C", id, ns, nc))));
  const verdict = await nextMessage(ws);
  if (verdict[0] !== 0) throw new Error("rejected by the gateway: " + new TextDecoder().decode(verdict.slice(1, 200)));
  const ok = await crypto.subtle.verify("HMAC", key, verdict.slice(1), proofMsg("S", id, nc, ns));
  if (!ok) throw new Error("the gateway could not prove it knows the token");
}

// ---------------------------------------------------------------- object store and operations

class Refused extends Error {}

function get(ref) {
  const t = state.objects.get(ref.id);
  if (!t) throw Object.assign(new Error(`object ${ref.id} is not on worker ${state.id}`), { type: "ObjectNotFoundError" });
  return t;
}

function resolve(v) {
  if (v instanceof ObjRef) return get(v);
  if (v instanceof Tuple) return v.items.map(resolve);
  return v;
}

const isFloat = (d) => d === F32 || d === F64;
const ARR = { [F32]: Float32Array, [F64]: Float64Array, [I64]: BigInt64Array, [U64]: BigUint64Array };

function elementwise(name, a, b, f) {
  if (!(a instanceof Tensor)) throw Object.assign(new Error(`${name}: the first operand must be a tensor`), { type: "TypeError" });
  if (!ARR[a.dtype]) throw Object.assign(new Error(`${name}: dtype ${serde.DTYPES[a.dtype]?.[0]} is not supported in the browser`), { type: "TypeError" });
  const big = !isFloat(a.dtype);
  let get2;
  if (b instanceof Tensor) {
    if (b.dtype !== a.dtype) throw Object.assign(new Error(`${name}: dtypes differ (${serde.DTYPES[a.dtype][0]} and ${serde.DTYPES[b.dtype][0]})`), { type: "TypeError" });
    if (b.numel === 1) { const s = b.data[0]; get2 = () => s; }
    else if (b.shape.join() === a.shape.join()) get2 = (i) => b.data[i];
    else throw Object.assign(new Error(`${name}: shapes [${a.shape}] and [${b.shape}] differ (the browser broadcasts scalars only)`), { type: "RuntimeError" });
  } else if (b === undefined) {
    get2 = () => undefined;
  } else {
    if (big && typeof b !== "bigint") throw Object.assign(new Error(`${name}: an integer tensor needs an integer operand`), { type: "TypeError" });
    const s = big ? b : Number(b);
    get2 = () => s;
  }
  const out = new ARR[a.dtype](a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f(a.data[i], get2(i));
  const t = new Tensor(a.dtype, a.shape.slice(), out);
  t.private = a.private || (b instanceof Tensor && b.private);
  return t;
}

const OPS = {
  add: (a, b, alpha) => elementwise("add", a, b, alpha === undefined ? (x, y) => x + y : (x, y) => x + alpha * y),
  sub: (a, b) => elementwise("sub", a, b, (x, y) => x - y),
  mul: (a, b) => elementwise("mul", a, b, (x, y) => x * y),
  neg: (a) => elementwise("neg", a, undefined, (x) => -x),
  div: (a, b) => {
    if (!isFloat(a.dtype)) throw Object.assign(new Error("div: the browser divides float tensors only"), { type: "TypeError" });
    return elementwise("div", a, b, (x, y) => x / y);
  },
  sum: (a) => {
    const t = new Tensor(a.dtype, [], new ARR[a.dtype](1));
    let s = isFloat(a.dtype) ? 0 : 0n;
    for (const v of a.data) s += v;
    t.data[0] = s;
    t.private = a.private;
    return t;
  },
};
const ALIASES = {
  "Tensor.add": "add", "torch.add": "add", "op.add": "add", "op.radd": "add", "Tensor.sub": "sub", "torch.sub": "sub",
  "op.sub": "sub", "Tensor.mul": "mul", "torch.mul": "mul", "op.mul": "mul", "op.rmul": "mul", "Tensor.neg": "neg",
  "torch.neg": "neg", "op.neg": "neg", "Tensor.div": "div", "torch.div": "div", "op.truediv": "div", "Tensor.sum": "sum",
  "torch.sum": "sum",
};

function randomId() {
  const b = crypto.getRandomValues(new BigUint64Array(1));
  return b[0] >> 1n; // 63 bits, as syft_mpc.remote.messages.new_id
}

function store(id, t) {
  state.objects.set(id, t);
  return new PointerDesc(state.id, id, new Size(t.shape), t.dtype, false);
}

async function runCommand(op, args, kwargs, returnId) {
  const name = ALIASES[op];
  if (name) {
    const a = args.items.map(resolve);
    const alpha = kwargs.get("alpha");
    for (const k of kwargs.keys()) if (k !== "alpha" || name !== "add") throw Object.assign(new Error(`${op}: keyword ${k} is not supported in the browser`), { type: "TypeError" });
    return store(returnId, OPS[name](...a, ...(alpha === undefined ? [] : [Number(alpha)])));
  }
  const routine = ROUTINES[op];
  if (!routine) throw Object.assign(new Error(`operation ${op} is not supported by browser worker ${state.id}`), { type: "UnsupportedOperationError" });
  return routine(args.items, returnId);
}

// ---------------------------------------------------------------- tab routines: data, training, secure aggregation

function datasetOf(key) {
  const ds = state.datasets.get(key);
  if (!ds) throw Object.assign(new Error(`no data set ${key} in this tab (the person loads it on the page)`), { type: "ValueError" });
  return ds;
}

/** Softmax regression, plain SGD on minibatches in file order: a hand-written routine kept next
 *  to Plans (a training Plan run on tab.dataset_batches does the same in the graph the driver
 *  traced; see plan.mjs). */
function trainSoftmax(W0, b0, ds, lr, epochs, batch) {
  const C = W0.shape[0], D = W0.shape[1];
  if (D !== ds.d) throw Object.assign(new Error(`weight has ${D} features, the data set ${ds.d}`), { type: "ValueError" });
  const W = Float64Array.from(W0.data), b = Float64Array.from(b0.data);
  const logits = new Float64Array(C), gW = new Float64Array(C * D), gb = new Float64Array(C);
  for (let e = 0; e < epochs; e++) {
    for (let s = 0; s < ds.n; s += batch) {
      const end = Math.min(ds.n, s + batch), m = end - s;
      gW.fill(0); gb.fill(0);
      for (let r = s; r < end; r++) {
        const x = ds.x.subarray(r * D, r * D + D);
        let mx = -Infinity;
        for (let c = 0; c < C; c++) {
          let z = b[c];
          for (let j = 0; j < D; j++) z += W[c * D + j] * x[j];
          logits[c] = z; if (z > mx) mx = z;
        }
        let den = 0;
        for (let c = 0; c < C; c++) { logits[c] = Math.exp(logits[c] - mx); den += logits[c]; }
        for (let c = 0; c < C; c++) {
          const g = (logits[c] / den - (ds.y[r] === c ? 1 : 0)) / m;
          gb[c] += g;
          for (let j = 0; j < D; j++) gW[c * D + j] += g * x[j];
        }
      }
      for (let i = 0; i < W.length; i++) W[i] -= lr * gW[i];
      for (let c = 0; c < C; c++) b[c] -= lr * gb[c];
    }
  }
  const tw = new Tensor(F32, [C, D], Float32Array.from(W)), tb = new Tensor(F32, [C], Float32Array.from(b));
  tw.private = tb.private = true;
  return [tw, tb];
}

const ROUTINES = {
  "tab.dataset_info": ([key]) => {
    const ds = datasetOf(key);
    return new Map([["rows", BigInt(ds.n)], ["features", BigInt(ds.d)], ["classes", BigInt(ds.classes)]]);
  },
  "tab.dataset_batches": ([key, batch]) => {
    // the data set as private tensors, in minibatches in file order: X float32 [m, d], y int64 [m]
    const ds = datasetOf(key), bs = Number(batch);
    if (!(bs >= 1)) throw Object.assign(new Error("batch size must be at least 1"), { type: "ValueError" });
    const out = [];
    for (let s = 0; s < ds.n; s += bs) {
      const m = Math.min(ds.n, s + bs) - s;
      const X = new Tensor(F32, [m, ds.d], Float32Array.from(ds.x.subarray(s * ds.d, (s + m) * ds.d)));
      const y = new Tensor(I64, [m], BigInt64Array.from(ds.y.subarray(s, s + m), (v) => BigInt(v)));
      X.private = y.private = true;
      out.push(store(randomId(), X), store(randomId(), y));
    }
    log("in", `made ${out.length / 2} batches of my data set ${key} for plans; they stay here`);
    return new Tuple(out);
  },
  "tab.train_softmax": ([wr, br, key, lr, epochs, batch]) => {
    const W = get(wr), b = get(br), ds = datasetOf(key);
    if (W.dtype !== F32 || b.dtype !== F32) throw Object.assign(new Error("weight and bias must be float32"), { type: "TypeError" });
    const [tw, tb] = trainSoftmax(W, b, ds, Number(lr), Number(epochs), Number(batch));
    log("in", `trained on my data set ${key} (${ds.n} rows, ${epochs} epoch(s)); the result stays here`);
    return new Tuple([store(randomId(), tw), store(randomId(), tb)]);
  },
  "tab.secagg_key": async ([rnd]) => {
    const kp = await secagg.newKeyPair();
    state.secagg.set(String(rnd), kp);
    return kp.publicRaw;
  },
  "tab.secagg_masked": async ([refs, keys, rnd, precision]) => {
    const kp = state.secagg.get(String(rnd));
    if (!kp) throw Object.assign(new Error("no key for this aggregation round (ask tab.secagg_key first)"), { type: "ValueError" });
    state.secagg.delete(String(rnd)); // a key masks one vector only
    if (!(keys instanceof Map) || keys.size < 2 || !keys.has(state.id)) throw Object.assign(new Error("the round must name this tab and at least one other"), { type: "ValueError" });
    const vals = [];
    for (const r of refs.items) { const t = get(r); if (!isFloat(t.dtype)) throw Object.assign(new Error("secure aggregation sums float tensors"), { type: "TypeError" }); vals.push(...t.data); }
    const x = ring.encode(vals, 2, Number(precision));
    const ids = [...keys.keys()].sort();
    const masked = await secagg.mask(x, state.id, kp.privateKey, keys, `${rnd}|${ids.join(",")}`);
    log("out", `secure aggregation: sent ${masked.length} masked values (each alone is uniformly random)`);
    return new Tensor(I64, [masked.length], new BigInt64Array(masked.buffer));
  },
};

// ---------------------------------------------------------------- requests

async function handleEnvelope(env) {
  if (!(env instanceof Struct) || env.kind !== KIND.Envelope || env.fields.length !== 3) throw new SerdeError("expected an Envelope");
  const [sender, deletes, body] = env.fields;
  for (const d of deletes) { state.objects.delete(d); state.plans.delete(d); }
  if (body === null) return null;
  if (!(body instanceof Struct)) throw new SerdeError("malformed request body");
  const f = body.fields;
  switch (body.kind) {
    case KIND.Store: {
      if (!(f[1] instanceof Tensor)) throw Object.assign(new Error("a browser worker stores tensors only (no pointers)"), { type: "TypeError" });
      f[1].private = false;
      state.objects.set(f[0], f[1]);
      log("in", `${sender} sent a tensor ${describe(f[1])}`);
      return null;
    }
    case KIND.Fetch: {
      const p = state.plans.get(f[0]);
      if (p) { // a plan comes back as it came (PointerPlan.get())
        if (f[1]) state.plans.delete(f[0]);
        log("out", `${sender} got plan ${p.name} back`);
        return p.def;
      }
      const t = get(new ObjRef(f[0]));
      if (t.private && !$("allowget").checked) {
        log("err", `${sender} asked for a tensor computed from my data: refused`);
        throw Object.assign(new Error(`browser worker ${state.id} does not let tensors computed from its data leave (the person has not allowed it)`), { type: "PermissionError" });
      }
      if (f[1]) state.objects.delete(f[0]);
      log("out", `${sender} got a tensor ${describe(t)}`);
      return t;
    }
    case KIND.Command: {
      const [op, args, kwargs, returnId] = f;
      log("in", `${sender} asks ${op}${describe(args)}`);
      return runCommand(op, args, kwargs, returnId);
    }
    case KIND_PLAN_STORE: {
      const p = plans.accept(f[1]); // refuses a plan naming an op this tab does not run; nothing is kept
      p.def = f[1];
      p.runs = 0;
      state.plans.set(f[0], p);
      log("in", `${sender} sent plan ${p.name} (${p.nodes.length} ops)`);
      return null;
    }
    case KIND_PLAN_RUN: {
      const [pid, args, rids] = f;
      const p = state.plans.get(pid);
      if (!p) throw Object.assign(new Error(`plan ${pid} is not on worker ${state.id}`), { type: "ObjectNotFoundError" });
      if (!(args instanceof Tuple) || !Array.isArray(rids)) throw new SerdeError("malformed PlanRun");
      const inputs = args.items.map((a) => {
        const t = a instanceof ObjRef ? get(a) : a;
        if (!(t instanceof Tensor)) throw Object.assign(new Error(`a plan on worker ${state.id} runs on tensors, not on ${describe(t)}`), { type: "TypeError" });
        return t;
      });
      const t0 = performance.now();
      const out = plans.run(p, inputs);
      if (out.length !== rids.length || new Set(rids).size !== rids.length) {
        throw Object.assign(new Error(`plan ${p.name} has ${out.length} outputs, the request named ${rids.length} distinct ids`), { type: "PlanError" });
      }
      for (const r of rids) if (state.objects.has(r) || state.plans.has(r)) throw Object.assign(new Error(`object id ${r} is already in use on worker ${state.id}`), { type: "ValueError" });
      const priv = inputs.some((t) => t.private); // computed from my data: stays private
      p.runs++;
      const ms = (performance.now() - t0).toFixed(1);
      log("in", `${sender} ran plan ${p.name} (run ${p.runs}, ${p.nodes.length} ops, ${ms} ms) on ${describe(args)}${priv ? "; computed from my data, the results stay here" : ""}`);
      return out.map((t, i) => { t.private = priv; return store(rids[i], t); });
    }
    default:
      throw Object.assign(new Error(`a browser worker cannot handle request kind ${body.kind}`), { type: "UnsupportedOperationError" });
  }
}

async function onRequest(data) {
  const seq = data.subarray(1, 5);
  let reply;
  try {
    const value = await handleEnvelope(serde.decode(data.subarray(5)));
    reply = serde.encode(serde.ok(value));
  } catch (e) {
    const type = e instanceof SerdeError ? "SerializationError" : e.type ?? (e instanceof RangeError ? "ValueError" : "RuntimeError");
    log("err", `${type}: ${e.message}`);
    reply = serde.encode(serde.err(type, e.message));
  }
  state.ws.send(concat(new Uint8Array([0x72]), seq, reply));
  state.nreq++;
  state.nout += reply.length;
  showObjects();
}

// ---------------------------------------------------------------- connecting

async function connect(id, token) {
  if (!globalThis.crypto?.subtle) throw new Error("this page needs a secure context: open it over https (gateway --tls-cert/--tls-key) or on localhost");
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(id)) throw new Error("a worker id is 1-64 letters, digits, _ . - (starting with a letter or digit)");
  state.id = id;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/tab`;
  $("gateway").textContent = location.host;
  setStatus("connecting…", false);
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error(`cannot reach ${url}`)); });
  await handshake(ws, id, token);
  state.ws = ws;
  setStatus(`connected to the gateway at ${location.host} as worker ${id}`, true);
  log("in", `authenticated as ${id}; waiting for requests`);
  let chain = Promise.resolve(); // requests run one at a time, in the order received
  ws.onmessage = (ev) => {
    const data = new Uint8Array(ev.data);
    if (data[0] === 0x52 && data.length >= 5) chain = chain.then(() => onRequest(data));
    else if (data[0] === 0x45) log("err", new TextDecoder().decode(data.subarray(1)));
    else log("err", "the gateway sent a malformed message");
  };
  ws.onclose = (ev) => setStatus(`disconnected (${ev.code})`, false);
}

function loadCsv(key, text) {
  const rows = text.trim().split(/\r?\n/).map((l) => l.split(",").map(Number));
  const d = rows[0].length - 1;
  if (d < 1 || rows.some((r) => r.length !== d + 1 || r.some((v) => !Number.isFinite(v)))) throw new Error("every row must be: label, then the same number of numeric features");
  const x = new Float64Array(rows.length * d), y = new Int32Array(rows.length);
  rows.forEach((r, i) => { y[i] = r[0]; x.set(r.slice(1), i * d); });
  state.datasets.set(key, { n: rows.length, d, x, y, classes: Math.max(...y) + 1 });
  $("datasets").textContent = [...state.datasets].map(([k, v]) => `${k}: ${v.n} rows × ${v.d} features`).join("; ");
  log("in", `loaded my data set ${key}: ${rows.length} rows (it stays in this tab)`);
}

$("file").addEventListener("change", async () => {
  const f = $("file").files[0];
  if (!f) return;
  try { loadCsv($("dskey").value || "data", await f.text()); } catch (e) { log("err", `${f.name}: ${e.message}`); }
});

$("connect").addEventListener("click", () => {
  connect($("wid").value.trim(), $("token").value.trim()).catch((e) => { setStatus(e.message, false); log("err", e.message); });
});

// id and token from the link's fragment (never sent to a server); removed from the address bar
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get("id") && frag.get("token")) {
  $("wid").value = frag.get("id");
  const token = frag.get("token");
  history.replaceState(null, "", location.pathname);
  connect(frag.get("id"), token).catch((e) => { setStatus(e.message, false); log("err", e.message); });
}
