// JavaScript ring throughput (docs/BENCHMARKS.md, "Browser workers"): node benches/js/ring_throughput.mjs
import * as ring from "../../python/syft_mpc/net/static/ring.mjs";
const n = 1 << 20;
const a = ring.random(n), b = ring.random(n);
for (const [name, f] of [["add", () => ring.add(a, b)], ["mul", () => ring.mul(a, b)], ["share3", () => ring.share(a, 3)]]) {
  f();
  const t0 = performance.now(); let k = 0;
  while (performance.now() - t0 < 1500) { f(); k++; }
  const dt = (performance.now() - t0) / k;
  console.log(name, (n / dt / 1e3).toFixed(1), "M elem/s");
}
