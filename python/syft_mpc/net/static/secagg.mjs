// Pairwise masks for secure aggregation (Bonawitz et al., "Practical Secure Aggregation for
// Privacy-Preserving Machine Learning", CCS 2017; the semi-honest variant without dropout
// recovery). Tab i and tab j derive one key from ECDH P-256 (WebCrypto), expand it with
// AES-CTR into n ring elements m_ij, and i adds m_ij where i < j, subtracts it where i > j:
// the masks cancel in the sum over tabs mod 2^64, and each masked vector alone is uniform.
import * as ring from "./ring.mjs";

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();

export async function newKeyPair() {
  const kp = await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  const pub = new Uint8Array(await subtle.exportKey("raw", kp.publicKey));
  return { privateKey: kp.privateKey, publicRaw: pub };
}

/** n ring elements from the key shared with a peer; both ends get the same ones. */
export async function pairMask(privateKey, peerRaw, context, n) {
  const peer = await subtle.importKey("raw", peerRaw, { name: "ECDH", namedCurve: "P-256" }, false, []);
  const secret = await subtle.deriveBits({ name: "ECDH", public: peer }, privateKey, 256);
  const hk = await subtle.importKey("raw", secret, "HKDF", false, ["deriveKey"]);
  const key = await subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: enc.encode("syft-mpc secagg mask v1|" + context) },
    hk, { name: "AES-CTR", length: 128 }, false, ["encrypt"]);
  const stream = await subtle.encrypt({ name: "AES-CTR", counter: new Uint8Array(16), length: 64 }, key, new Uint8Array(n * 8));
  return new BigUint64Array(stream);
}

/** x (ring elements) plus the masks shared with every peer: ids maps peer id -> public key. */
export async function mask(x, myId, privateKey, peers, context) {
  const out = x.slice();
  for (const [peerId, pub] of peers) {
    if (peerId === myId) continue;
    const m = await pairMask(privateKey, pub, context, x.length);
    if (myId < peerId) ring.addInto(out, m);
    else for (let i = 0; i < out.length; i++) out[i] -= m[i];
  }
  return out;
}
