// Cross-implementation vectors (issue 18.5). Tests/js/vectors/swift.json was
// written by the Swift kernel (Tests/MasqKernelTests/CrossImplementationVectors.swift):
// every sync frame decodes here to what Swift says it holds and encodes back
// to the same bytes; the AESGCM session (XXpsk3 handshake + a scripted
// Double Ratchet conversation with fixed keys) replays here byte for byte.
// This side writes js.json the same way (MASQ_WRITE_VECTORS=1), which the
// Swift test checks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as frames from "../../bindings/js/peer/frames.js";
import { Session } from "../../bindings/js/peer/session.js";
import { x25519Import, sha256 } from "../../bindings/js/peer/crypto.js";
import { hex, unhex, utf8, concat } from "../../bindings/js/peer/bytes.js";

const here = dirname(fileURLToPath(import.meta.url));
const swift = JSON.parse(readFileSync(join(here, "vectors/swift.json"), "utf8"));

const vec = (v) => Object.fromEntries([...v.entries()].map(([k, s]) => [String(k), String(s)]));
const rec = (r) => ({
  ns: r.ns, key: hex(r.key), tombstone: r.tombstone, counter: r.counter, ts: String(r.ts), replica: String(r.replica),
  seq: String(r.seq), prevTs: String(r.prevTs), prevReplica: String(r.prevReplica), value: hex(r.value),
});
/** The same description the Swift test writes. */
export function describe(f) {
  switch (f.type) {
    case "hello":
      return { type: "hello", replica: String(f.replica), applied: vec(f.applied), collected: vec(f.collected), tips: vec(f.tips), wantsSnapshot: f.wantsSnapshot };
    case "commits":
      return { type: "commits", commits: f.commits.map((c) => ({ origin: String(c.origin), seq: String(c.seq), ts: String(c.ts), records: c.records.map(rec) })) };
    case "ack":
      return { type: "ack", applied: vec(f.applied) };
    case "snapshot":
      return f.final ? { type: "snapshot", records: f.records.map(rec), final: vec(f.final) } : { type: "snapshot", records: f.records.map(rec) };
    case "refused":
      return { type: "refused", reason: f.reason, origin: String(f.origin), seq: String(f.seq), ts: String(f.ts), receiverTime: String(f.receiverTime) };
  }
}

test("Swift's sync frames decode and re-encode byte for byte", () => {
  assert.ok(swift.syncFrames.length >= 8);
  for (const v of swift.syncFrames) {
    const f = frames.decode(unhex(v.hex));
    assert.deepEqual(describe(f), v.frame, v.name);
    assert.equal(hex(frames.encode(f)), v.hex, `${v.name} re-encodes`);
  }
});

test("malformed frames are refused, never half-read", () => {
  const good = unhex(swift.syncFrames.find((v) => v.name === "commits").hex);
  for (let cut = 0; cut < good.length; cut += 3) assert.throws(() => frames.decode(good.subarray(0, cut)));
  assert.throws(() => frames.decode(concat(good, [0])), /trailing/);
  assert.throws(() => frames.decode(concat([2], good.subarray(1))), /version/);
  assert.throws(() => frames.decode(new Uint8Array([1, 99])), /unknown/);
});

const script = [
  ["send", "responder", 0], ["send", "responder", 1], ["receive", "initiator", 1], ["receive", "initiator", 0],
  ["send", "initiator", 2], ["receive", "responder", 2], ["send", "responder", 3], ["send", "initiator", 4],
  ["receive", "responder", 4], ["receive", "initiator", 3], ["send", "initiator", 5], ["receive", "responder", 5],
];

const key = (label) => sha256(utf8.encode(`masq vector ${label}`));

/** The scripted session, as the Swift test runs it. */
async function runSession(label) {
  const room = (await key(`${label} room`)).slice(0, 16);
  const prologue = concat(utf8.encode("masq pairing v1"), room, [1, 2]);
  const psk = await key(`${label} psk`);
  const ratchetKeys = async (side) => Promise.all([...Array(8).keys()].map((i) => key(`${label} ${side} ratchet ${i}`)));
  const make = async (role) => Session.create({
    pattern: "XXpsk3", role, prologue, psks: [psk],
    staticKey: await x25519Import(await key(`${label} ${role} static`)),
    ephemeral: await key(`${label} ${role} ephemeral`),
    fixedRatchetKeys: await ratchetKeys(role),
  });
  const i = await make("initiator"), r = await make("responder");
  const handshake = [];
  let m = await i.writeHandshake(); handshake.push(hex(m)); await r.readHandshake(m);
  m = await r.writeHandshake(utf8.encode("two")); handshake.push(hex(m)); assert.equal(new TextDecoder().decode(await i.readHandshake(m)), "two");
  m = await i.writeHandshake(utf8.encode("three")); handshake.push(hex(m)); await r.readHandshake(m);
  const messages = new Map();
  const steps = [];
  for (const [op, by, index] of script) {
    const me = by === "initiator" ? i : r;
    const ad = utf8.encode(`ad ${index}`);
    const plaintext = concat(utf8.encode(`message ${index} from ${by}`), new Uint8Array(index * 7).fill(index));
    if (op === "send") {
      messages.set(index, await me.seal(plaintext, ad));
      steps.push({ op, by, index, ad: hex(ad), plaintext: hex(plaintext), message: hex(messages.get(index)) });
    } else {
      const sender = by === "initiator" ? "responder" : "initiator";
      const opened = await me.open(messages.get(index), ad);
      assert.equal(hex(opened), hex(concat(utf8.encode(`message ${index} from ${sender}`), new Uint8Array(index * 7).fill(index))));
      steps.push({ op, by, index });
    }
  }
  return { label, handshake, handshakeHash: hex(i.handshakeHash), steps };
}

test("Swift's AESGCM session replays here byte for byte", async () => {
  const mine = await runSession("swift");
  assert.deepEqual(mine.handshake, swift.session.handshake);
  assert.equal(mine.handshakeHash, swift.session.handshakeHash);
  assert.deepEqual(mine.steps, swift.session.steps);
});

test("a tampered, replayed or misaddressed ratchet message is refused and changes nothing", async () => {
  const psk = new Uint8Array(32).fill(3);
  const { x25519Generate } = await import("../../bindings/js/peer/crypto.js");
  const i = await Session.create({ pattern: "XXpsk3", role: "initiator", staticKey: await x25519Generate(), psks: [psk] });
  const r = await Session.create({ pattern: "XXpsk3", role: "responder", staticKey: await x25519Generate(), psks: [psk] });
  await r.readHandshake(await i.writeHandshake());
  await i.readHandshake(await r.writeHandshake());
  await r.readHandshake(await i.writeHandshake());
  const ad = utf8.encode("room");
  const m = await r.seal(utf8.encode("hi"), ad);
  const bad = m.slice();
  bad[bad.length - 1] ^= 1;
  await assert.rejects(i.open(bad, ad));
  await assert.rejects(i.open(m, utf8.encode("other room")));
  assert.equal(new TextDecoder().decode(await i.open(m, ad)), "hi");
  await assert.rejects(i.open(m, ad), /replayed/);
  assert.equal(new TextDecoder().decode(await r.open(await i.seal(utf8.encode("back"), ad), ad)), "back");
});

test("js.json: what this side writes for Swift to check", async () => {
  const session = await runSession("js");
  const a = 0x0102030405060708n, b = 0xfedcba9876543210n, t = 1765000000123n << 16n;
  const counter = frames.encodeCounter(new Map([[a, { added: 3n, removed: 0n }], [b, { added: 10n, removed: 4n }]]));
  const r1 = { ns: "web:http://127.0.0.1:8000", key: utf8.encode("note/1"), tombstone: false, counter: false, ts: t, replica: a, seq: 7n, prevTs: 0n, prevReplica: 0n, value: utf8.encode("ünïcödé ✓") };
  const r2 = { ns: "web:http://127.0.0.1:8000", key: new Uint8Array([0, 1, 255]), tombstone: true, counter: false, ts: t, replica: a, seq: 7n, prevTs: t - 99n, prevReplica: b, value: new Uint8Array(0) };
  const r3 = { ns: "counters", key: utf8.encode("likes"), tombstone: false, counter: true, ts: t - 5n, replica: b, seq: 2n, prevTs: t - 10n, prevReplica: a, value: counter };
  const list = [
    ["hello", { type: "hello", replica: a, applied: new Map([[a, 7n], [b, 2n]]), collected: new Map([[b, 1n]]), tips: new Map([[a, t], [b, t - 5n]]), wantsSnapshot: false }],
    ["hello-empty", { type: "hello", replica: a, applied: new Map(), collected: new Map(), tips: new Map(), wantsSnapshot: false }],
    ["commits", { type: "commits", commits: [{ origin: a, seq: 7n, ts: t, records: [r1, r2, r3] }, { origin: a, seq: 8n, ts: t + 1n, records: [] }] }],
    ["ack", { type: "ack", applied: new Map([[a, 8n]]) }],
    ["snapshot-chunk", { type: "snapshot", records: [r1, r3], final: null }],
    ["snapshot-final", { type: "snapshot", records: [r2], final: new Map([[a, 8n], [b, 2n]]) }],
    ["refused", { type: "refused", reason: 2, origin: b, seq: 3n, ts: t, receiverTime: 1765000000123n }],
  ];
  const syncFrames = list.map(([name, f]) => {
    const bytes = frames.encode(f);
    assert.equal(hex(frames.encode(frames.decode(bytes))), hex(bytes));
    return { name, hex: hex(bytes), frame: describe(frames.decode(bytes)) };
  });
  const out = { about: "Generated by Tests/js/vectors.test.mjs; checked by Tests/MasqKernelTests/CrossImplementationVectors.swift", syncFrames, session };
  const path = join(here, "vectors/js.json");
  if (process.env.MASQ_WRITE_VECTORS === "1") writeFileSync(path, JSON.stringify(out, null, 2) + "\n");
  assert.deepEqual(JSON.parse(readFileSync(path, "utf8")), JSON.parse(JSON.stringify(out)), "Tests/js/vectors/js.json is stale: MASQ_WRITE_VECTORS=1 node --test Tests/js");
});
