// The JS sync engine and store between in-memory peers (a deterministic
// in-memory "transport", as NIOEmbedded is for the Swift side): the merge
// rules of docs/PROTOCOL.md — greatest (HLC, replica) wins, conflicts
// reported, tombstones, counters that sum, catch-up by version vectors,
// collection and snapshots for a replica behind the horizon.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryBackend } from "../../bindings/js/peer/backend.js";
import { PeerStore } from "../../bindings/js/peer/store.js";
import { SyncEngine } from "../../bindings/js/peer/engine.js";
import { utf8 } from "../../bindings/js/peer/bytes.js";

const k = (s) => utf8.encode(s);
const text = (b) => (b === undefined ? undefined : new TextDecoder().decode(b));

async function node(name) {
  const store = await new PeerStore(new MemoryBackend()).open();
  const engine = new SyncEngine(store);
  const changes = [];
  store.listeners.add((c) => changes.push(...c));
  return { name, store, engine, changes };
}

/** Deliver frames until both sides are quiet (optionally dropping some). */
async function converse(a, b, { drop = () => false } = {}) {
  const queue = [[a, b, await a.engine.connected(b.name)], [b, a, await b.engine.connected(a.name)]];
  let n = 0;
  while (queue.length) {
    const [from, to, frame] = queue.shift();
    if (drop(n++, frame)) continue;
    for (const reply of await to.engine.receive(frame, from.name)) queue.push([to, from, reply]);
    for (const [device, f] of await from.engine.pending()) if (device === to.name) queue.push([from, to, f]);
    for (const [device, f] of await to.engine.pending()) if (device === from.name) queue.push([to, from, f]);
    assert.ok(n < 10000, "converges");
  }
}

async function dump(x, ns = "app") {
  return (await x.store.list(ns)).map((e) => `${text(e.key)}=${text(e.value)}`).join(",");
}

test("writes, deletes and counters converge both ways", async () => {
  const a = await node("a"), b = await node("b");
  await a.store.put("app", k("x"), k("1"));
  await a.store.put("app", k("gone"), k("soon"));
  await a.store.del("app", k("gone"));
  await b.store.setAll("app", [[k("y"), k("2")], [k("z"), k("3")]]);
  await a.store.counterAdd("app", k("clicks"), 3n);
  await b.store.counterAdd("app", k("clicks"), 4n);
  await b.store.counterAdd("app", k("clicks"), -1n);
  await converse(a, b);
  assert.equal(await dump(a), await dump(b));
  assert.equal(await dump(a), "clicks=6,x=1,y=2,z=3");
  assert.equal(await a.store.counterGet("app", k("clicks")), 6n);
  assert.equal(await b.store.get("app", k("gone")), undefined);
  // Deleting a counter sets it to 0 through this replica's share; concurrent adds still count.
  await a.store.del("app", k("clicks"));
  await b.store.counterAdd("app", k("clicks"), 10n);
  await converse(a, b);
  assert.equal(await a.store.counterGet("app", k("clicks")), 10n);
  assert.equal(await b.store.counterGet("app", k("clicks")), 10n);
  await assert.rejects(a.store.put("app", k("clicks"), k("v")), /counter/);
});

test("concurrent writes: the greatest (HLC, replica) wins everywhere, the loser is told", async () => {
  const a = await node("a"), b = await node("b");
  await a.store.put("app", k("title"), k("from a"));
  await b.store.put("app", k("title"), k("from b"));
  await converse(a, b);
  assert.equal(text(await a.store.get("app", k("title"))), text(await b.store.get("app", k("title"))));
  const conflicts = [...a.changes, ...b.changes].filter((c) => c.kind === "conflict");
  assert.ok(conflicts.length >= 1, "a conflict is reported");
  assert.ok(conflicts.every((c) => ["from a", "from b"].includes(text(c.lostValue))));
  // A write that saw the other is no conflict.
  a.changes.length = 0;
  b.changes.length = 0;
  await b.store.put("app", k("title"), k("edited after both"));
  await converse(a, b);
  assert.equal(text(await a.store.get("app", k("title"))), "edited after both");
  assert.equal(a.changes.filter((c) => c.kind === "conflict").length, 0);
});

test("lost frames only cost retransmission", async () => {
  const a = await node("a"), b = await node("b");
  for (let i = 0; i < 50; i++) await a.store.put("app", k(`k${i}`), k(`v${i}`));
  await converse(a, b, { drop: (n) => n % 3 === 1 });
  a.engine.options.resendAfter = 0;
  a.engine.resendStalled();
  await converse(a, b);
  assert.equal((await b.store.list("app")).length, 50);
});

test("collected tombstones: a replica behind the horizon gets a snapshot", async () => {
  const a = await node("a"), b = await node("b");
  a.engine.members = () => ["b"];
  b.engine.members = () => ["a"];
  await a.store.put("app", k("keep"), k("1"));
  await a.store.put("app", k("drop"), k("2"));
  await converse(a, b);
  await a.store.del("app", k("drop"));
  await converse(a, b);
  assert.ok((await a.engine.collectGarbage()) >= 1);
  // A third replica, new: behind a's collection horizon.
  const c = await node("c");
  await c.store.put("app", k("mine"), k("3"));
  await converse(a, c);
  assert.equal(await dump(c), "keep=1,mine=3");
  assert.equal(await dump(a), "keep=1,mine=3");
});

test("a commit from a clock far ahead is refused once, with its reason", async () => {
  const a = await node("a"), b = await node("b");
  const realNow = a.store.now;
  a.store.now = () => realNow() + 3600_000;
  await a.store.put("app", k("future"), k("x"));
  a.store.now = realNow;
  const problems = [];
  a.engine.onProblem = (d, p) => problems.push(p);
  await converse(a, b);
  assert.equal(await b.store.get("app", k("future")), undefined);
  assert.match(problems.join(" "), /ahead/);
});
