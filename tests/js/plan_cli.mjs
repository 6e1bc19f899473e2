// Runs plans with the browser's interpreter (python/syft_mpc/net/static/plan.mjs) for
// tests/test_browser_plans.py: stdin is JSON {cases: [{plan, inputs: [base64 codec frames], steps}]}
// where `plan` is an encoded PlanDef; each case runs `steps` times, feeding outputs 2.. back in
// as the last inputs (a training loop), and stdout is the encoded outputs of every step, or
// "error: <type>: <message>".
import * as serde from "../../python/syft_mpc/net/static/serde.mjs";
import * as plan from "../../python/syft_mpc/net/static/plan.mjs";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const inp = JSON.parse(Buffer.concat(chunks).toString());
const b64 = (s) => new Uint8Array(Buffer.from(s, "base64"));
const out = inp.cases.map((c) => {
  try {
    const p = plan.accept(serde.decode(b64(c.plan)));
    const batches = c.inputs.map((frames) => frames.map((f) => serde.decode(b64(f))));
    let carried = null;
    const steps = [];
    for (const fixed of batches) {
      const args = carried ? [...fixed, ...carried] : fixed.concat(c.params.map((f) => serde.decode(b64(f))));
      const res = plan.run(p, args);
      carried = res.slice(c.carry_from);
      steps.push(res.map((t) => Buffer.from(serde.encode(t)).toString("base64")));
    }
    return steps;
  } catch (e) {
    return `error: ${e.type ?? e.constructor.name}: ${e.message}`;
  }
});
process.stdout.write(JSON.stringify(out));
