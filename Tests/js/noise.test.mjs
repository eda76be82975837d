// The JS Noise (bindings/js/peer/noise.js, WebCrypto only) against every
// published cacophony vector of Noise_*_25519_AESGCM_SHA256, byte for byte.
// Run: node --test Tests/js
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Handshake } from "../../bindings/js/peer/noise.js";
import { x25519Import } from "../../bindings/js/peer/crypto.js";
import { hex, unhex } from "../../bindings/js/peer/bytes.js";

const here = dirname(fileURLToPath(import.meta.url));
const vectorsDir = process.env.MASQ_VECTORS || join(here, "../../../shared/vectors");
const file = join(vectorsDir, "noise/cacophony-25519-aesgcm-sha256.json");

test("every published AESGCM vector", { skip: !existsSync(file) && "no ../shared/vectors" }, async () => {
  const { vectors } = JSON.parse(readFileSync(file, "utf8"));
  assert.equal(vectors.length, 9);
  const covered = new Set();
  for (const v of vectors) {
    const pattern = v.protocol_name.split("_")[1];
    covered.add(pattern);
    const side = async (role, p) => Handshake.create({
      pattern, role, prologue: unhex(v[`${p}_prologue`]),
      staticKey: v[`${p}_static`] ? await x25519Import(unhex(v[`${p}_static`])) : undefined,
      remoteStatic: v[`${p}_remote_static`] ? unhex(v[`${p}_remote_static`]) : undefined,
      psks: (v[`${p}_psks`] || []).map(unhex),
      ephemeral: v[`${p}_ephemeral`] ? unhex(v[`${p}_ephemeral`]) : undefined,
    });
    const i = await side("initiator", "init"), r = await side("responder", "resp");
    let ri, rr;
    for (const [n, m] of v.messages.entries()) {
      const initiatorSends = n % 2 === 0;
      const [sender, receiver] = initiatorSends ? [i, r] : [r, i];
      const payload = unhex(m.payload);
      if (!sender.complete) {
        const written = await sender.writeMessage(payload);
        assert.equal(hex(written), m.ciphertext, `${v.protocol_name} handshake message ${n}`);
        assert.equal(hex(await receiver.readMessage(written)), m.payload);
        if (i.complete && r.complete) {
          ri = await i.result();
          rr = await r.result();
          assert.equal(hex(ri.handshakeHash), v.handshake_hash, `${v.protocol_name} hash`);
        }
      } else {
        const [send, receive] = initiatorSends ? [ri.send, rr.receive] : [rr.send, ri.receive];
        const written = await send.encrypt(new Uint8Array(0), payload);
        assert.equal(hex(written), m.ciphertext, `${v.protocol_name} transport message ${n}`);
        assert.equal(hex(await receive.decrypt(new Uint8Array(0), written)), m.payload);
      }
    }
    assert.ok(ri, `${v.protocol_name} completed`);
  }
  assert.deepEqual([...covered].sort(), ["IK", "IKpsk2", "KK", "KKpsk0", "KKpsk2", "NKpsk0", "NNpsk0", "XX", "XXpsk3"]);
});

test("a wrong PSK fails XXpsk3 at message 3", async () => {
  const { x25519Generate, randomBytes } = await import("../../bindings/js/peer/crypto.js");
  const i = await Handshake.create({ pattern: "XXpsk3", role: "initiator", staticKey: await x25519Generate(), psks: [randomBytes(32)] });
  const r = await Handshake.create({ pattern: "XXpsk3", role: "responder", staticKey: await x25519Generate(), psks: [randomBytes(32)] });
  await r.readMessage(await i.writeMessage());
  await i.readMessage(await r.writeMessage());
  await assert.rejects(r.readMessage(await i.writeMessage()));
});
