// The peer-mode app API (bindings/js/peer/index.js) is masq.js's: get, put,
// delete, list, getAll, setAll, clear, counterAdd, counter, watch — here on
// the in-memory backend (the browser tests run it on IndexedDB).
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, MasqError } from "../../bindings/js/masq.js";

test("the same API as daemon mode, on this device alone", async () => {
  const app = await connect({ mode: "peer", memory: true, namespace: "web:https://notes.example" });
  assert.equal(app.mode, "peer");
  const seen = [];
  const stop = await app.watch((c) => seen.push(`${c.kind}:${c.key}=${c.value}`), { prefix: "n" });
  await app.put("note", "héllo");
  await app.put("bin", new Uint8Array([0, 255]));
  assert.equal(await app.get("note"), "héllo");
  assert.deepEqual(await app.get("bin"), new Uint8Array([0, 255]));
  assert.equal(await app.get("absent"), undefined);
  await app.setAll({ a: "1", b: "2", note: null });
  assert.deepEqual(await app.getAll(), { a: "1", b: "2", bin: new Uint8Array([0, 255]) });
  assert.deepEqual((await app.list("", { limit: 2 })), { entries: [{ key: "a", value: "1" }, { key: "b", value: "2" }], more: true });
  await app.counterAdd("likes", 5);
  await app.counterAdd("likes", -2);
  assert.equal(await app.counter("likes"), 3);
  assert.equal(await app.get("likes"), "3");
  await assert.rejects(app.put("likes", "x"), (e) => e instanceof MasqError && e.code === "invalid");
  await assert.rejects(app.put("", "x"), (e) => e.code === "invalid");
  await assert.rejects(app.put("k", { not: "bytes" }), (e) => e.code === "bad_request");
  await app.setAll({ only: "this" }, { replace: true });
  // A deleted counter is reset to 0 (concurrent additions elsewhere still count), as in the kernel.
  assert.deepEqual(await app.getAll(), { likes: "0", only: "this" });
  await app.clear();
  assert.deepEqual(await app.getAll(), { likes: "0" });
  await stop();
  assert.deepEqual(seen, ["put:note=héllo", "delete:note=null"]);
  const me = await app.device();
  assert.match(me.deviceId, /^[0-9a-f]{20}$/);
  assert.match(me.fingerprint, /^\d{5}( \d{5}){5}$/);
  app.close();
  await assert.rejects(app.get("a"), (e) => e.code === "closed");
});

test("malformed pairing links are clear errors", async () => {
  const app = await connect({ mode: "peer", memory: true });
  for (const bad of ["", "hello", "https://x.example/#masq-pair=@@@", "https://x.example/#other", "masq://pair/abc", "masq://pair/abc#tooShort"]) {
    await assert.rejects(app.pair(bad), (e) => e instanceof MasqError && e.code === "invalid", bad);
  }
  app.close();
});
