"""The peer's store on IndexedDB applies synced commits exactly as the plain
one-record-at-a-time merge does (issue 18.7: batched reads must not change
the merge rules). In Chromium, the same random histories — commits of three
origins in frames with duplicates, gaps and keys named twice, local puts,
deletes and counters in between, snapshots — go to three stores: the
page's applyCommits on IndexedDB, the same on the in-memory backend, and a
reference that reads and merges one record at a time (the code before the
batching: `_merge` with one awaited read per record, which sees the
transaction's own writes). Results, changes reported to watchers and every
stored row (records, change log, vectors, clock) must be the same. And the
batched read itself (`getMany`: key listing, getAll, one get per key)
returns what one get per key returns, on every path it can take.

Run: python3 -m pytest Tests/browser/test_peer_store.py (needs chromium and chromedriver; no Masq binary).
"""
import functools
import http.server
import shutil
import threading

import pytest

from test_peer import ROOT, chromium


class Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def serve(directory):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"

SCRIPT = r"""
const done = arguments[arguments.length - 1];
const seed0 = arguments[0];
(async () => {
  const { PeerStore, rhex } = await import("/bindings/js/peer/store.js");
  const { MemoryBackend, IndexedDBBackend } = await import("/bindings/js/peer/backend.js");
  const { encodeCounter } = await import("/bindings/js/peer/frames.js");
  const { hex, utf8 } = await import("/bindings/js/peer/bytes.js");
  const { MasqError } = await import("/bindings/js/peer/errors.js");

  let seed = seed0 >>> 0;
  const rnd = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 4294967296; };
  const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
  const LOCAL = 0x0a0a0a0a0a0a0a0an;
  const ORIGINS = [0x1111111111111111n, 0x2222222222222222n, 0x0a0a0a0a0a0a0a0bn];
  let nowMs = 1_700_000_000_000;

  async function make(backend, name) {
    await backend.tx("readwrite", (t) => { t.put("meta", "replica", LOCAL); t.put("meta", "clock", { seq: 0, ts: 0n }); });
    const store = await new PeerStore(backend, { now: () => nowMs }).open();
    const changes = [];
    store.listeners.add((c) => changes.push(...c));
    return { name, store, changes };
  }

  /** applyCommits as it was before the batching: one awaited read per record. */
  async function referenceApply(store, commits) {
    const changes = [];
    const results = await store.backend.tx("readwrite", async (t) => {
      const stored = (await t.get("meta", "vector")) || {};
      const clock = (await t.get("meta", "clock")) || { seq: 0, ts: 0n };
      const observed = { value: (await t.get("meta", "observed")) || 0n };
      const out = [];
      for (const c of commits) {
        const o = rhex(c.origin);
        const applied = c.origin === store.replica ? BigInt(clock.seq) : stored[o] ? BigInt(stored[o].seq) : 0n;
        if (c.seq <= applied) { out.push("duplicate"); continue; }
        if (c.seq > applied + 1n) { out.push("gap"); continue; }
        if (c.origin === store.replica) throw new MasqError("corrupt", "never made");
        const keys = c.records.map((r) => [r.ns, hex(r.key)]);
        for (const r of c.records) {
          const change = await store._merge(t, r);
          if (change) changes.push(change);
        }
        t.put("log", [o, Number(c.seq)], { ts: c.ts, keys });
        stored[o] = { seq: Number(c.seq), ts: c.ts };
        store._observe(t, c.ts, observed);
        out.push("applied");
      }
      t.put("meta", "vector", stored);
      return out;
    });
    store._publish(changes);
    return results;
  }

  async function referenceSnapshot(store, records) {
    const changes = [];
    await store.backend.tx("readwrite", async (t) => {
      const observed = { value: (await t.get("meta", "observed")) || 0n };
      for (const r of records) {
        const change = await store._merge(t, r);
        if (change) changes.push(change);
        store._observe(t, r.ts, observed);
      }
    });
    store._publish(changes);
  }

  const show = (x) => JSON.stringify(x, (k, v) => typeof v === "bigint" ? "n" + v.toString()
    : v instanceof Uint8Array ? "b" + hex(v) : v);
  async function dump(s) {
    return s.store.backend.tx("readonly", async (t) => show({
      records: await t.range("records", undefined, undefined), log: await t.range("log", undefined, undefined),
      meta: await t.range("meta", undefined, undefined) }));
  }

  // ---- a random history --------------------------------------------------
  const NS = ["app", "other"];
  const key = (i) => utf8.encode(`k/${String(i).padStart(4, "0")}`);
  const next = new Map(ORIGINS.map((o) => [o, 1n]));
  const seen = new Map();          // generator's idea of a key's version, for prevTs
  const made = new Map(ORIGINS.map((o) => [o, []]));
  function commit(origin, nkeys, span) {
    const seq = next.get(origin);
    next.set(origin, seq + 1n);
    const ts = (BigInt(nowMs - Math.floor(rnd() * 5000)) << 16n) + BigInt(Math.floor(rnd() * 4));
    const records = [];
    for (let j = 0; j < nkeys; j++) {
      const ns = rnd() < 0.85 ? "app" : "other";
      const i = Math.floor(rnd() * span);
      const id = ns + "/" + i;
      const kind = rnd();
      const prev = seen.get(id);
      const knows = prev && rnd() < 0.6;
      const rts = rnd() < 0.1 && prev ? prev[0] : ts + BigInt(j % 3);
      const r = { ns, key: key(i), tombstone: false, counter: false, ts: rts, replica: origin, seq,
        prevTs: knows ? prev[0] : 0n, prevReplica: knows ? prev[1] : 0n, value: utf8.encode(`v${seed % 1000}-${j}`) };
      if (kind < 0.15) { r.tombstone = true; r.value = new Uint8Array(0); }
      else if (kind < 0.3) {
        r.counter = true;
        const m = new Map();
        for (const o of [origin, pick(ORIGINS), LOCAL]) if (rnd() < 0.8) m.set(o, { added: BigInt(Math.floor(rnd() * 50)), removed: BigInt(Math.floor(rnd() * 10)) });
        r.value = encodeCounter(m);
      }
      seen.set(id, [r.ts, r.replica]);
      records.push(r);
      if (rnd() < 0.05) records.push({ ...r, value: utf8.encode("again"), tombstone: false, counter: false });   // a key named twice
    }
    const c = { origin, seq, ts, records };
    made.get(origin).push(c);
    return c;
  }

  const stores = [await make(await IndexedDBBackend.open("store-diff-" + seed0), "indexeddb"),
                  await make(new MemoryBackend(), "memory"), await make(new MemoryBackend(), "reference")];
  const log = [], kinds = {};
  async function all(step, fn) {
    const got = [];
    for (const s of stores) {
      s.changes.length = 0;
      let r;
      try { r = await fn(s); } catch (e) { r = "error " + (e.code || e.name); }
      got.push(show([r, s.changes]));
    }
    for (const c of stores[2].changes) kinds[c.kind] = (kinds[c.kind] || 0) + 1;
    if (got[0] !== got[2] || got[1] !== got[2]) {
      throw new Error(`step ${step} differs:\n indexeddb ${got[0].slice(0, 3000)}\n memory    ${got[1].slice(0, 3000)}\n reference ${got[2].slice(0, 3000)}`);
    }
    log.push(step);
  }

  // Local keys first, so remote ones meet values, tombstones and counters of this replica.
  for (let i = 0; i < 120; i++) {
    nowMs += 3;
    const k = key(Math.floor(rnd() * 300));
    const ns = pick(NS);
    const op = rnd(), delta = BigInt(Math.floor(rnd() * 20) - 5);
    await all(`local ${i}`, (s) => op < 0.5 ? s.store.put(ns, k, utf8.encode("local " + i))
      : op < 0.7 ? s.store.del(ns, k) : s.store.counterAdd(ns, k, delta));
  }
  for (let step = 0; step < 60; step++) {
    nowMs += 7;
    const frame = [];
    const n = 1 + Math.floor(rnd() * 6);
    for (let i = 0; i < n; i++) {
      const origin = pick(ORIGINS);
      const big = rnd() < 0.2;
      frame.push(commit(origin, big ? 40 + Math.floor(rnd() * 200) : 1 + Math.floor(rnd() * 12), big && rnd() < 0.5 ? 2000 : 300));
    }
    // Resent (duplicates) and reordered (gaps) commits, as a lossy relay delivers them.
    if (rnd() < 0.3) { const o = pick(ORIGINS); if (made.get(o).length) frame.unshift(pick(made.get(o))); }
    if (rnd() < 0.2 && frame.length > 1) frame.reverse();
    const withheld = rnd() < 0.15 ? frame.splice(0, 1) : [];
    const fresh = stores.map(() => frame.map((c) => ({ ...c, records: c.records.map((r) => ({ ...r })) })));
    let i = 0;
    await all(`frame ${step}`, (s) => s.name === "reference" ? referenceApply(s.store, fresh[i++]) : s.store.applyCommits(fresh[i++]));
    const deliver = (label, commits) => all(label, (s) => s.name === "reference" ? referenceApply(s.store, commits) : s.store.applyCommits(commits));
    if (withheld.length) {
      await deliver(`late ${step}`, withheld);
      await deliver(`again ${step}`, frame);     // what was a gap applies now
    }
    if (rnd() < 0.3) {
      const k = key(Math.floor(rnd() * 300));
      const ns = pick(NS);
      await all(`local after ${step}`, (s) => s.store.put(ns, k, utf8.encode("late local")));
    }
  }
  // A snapshot's records: some new, most present (batched), a key twice.
  const snap = [];
  for (let i = 0; i < 400; i++) {
    const o = pick(ORIGINS);
    snap.push({ ns: pick(NS), key: key(Math.floor(rnd() * 2500)), tombstone: rnd() < 0.1, counter: false,
      ts: (BigInt(nowMs) << 16n) + BigInt(i), replica: o, seq: 1n, prevTs: 0n, prevReplica: 0n, value: utf8.encode("snap " + i) });
  }
  snap.push({ ...snap[3], ts: snap[3].ts + 1n, value: utf8.encode("snap twice") });
  await all("snapshot", (s) => s.name === "reference" ? referenceSnapshot(s.store, snap) : s.store.applySnapshotRecords(snap));

  const dumps = await Promise.all(stores.map(dump));
  if (dumps[0] !== dumps[2] || dumps[1] !== dumps[2]) throw new Error("final stores differ");

  // ---- getMany against one get per key, on every path ---------------------
  const b = stores[0].store.backend;
  const present = await b.tx("readonly", (t) => t.range("records", undefined, undefined));
  const known = present.map(([k]) => k);
  const cases = {
    few: known.slice(0, 5),
    dense: known.slice(10, 200),
    denseWithMissing: known.slice(10, 200).map((k, i) => (i % 3 ? k : [k[0], k[1] + "00"])),
    sparse: known.filter((_, i) => i % 37 === 0),
    partial: known.filter((_, i) => i % 4 === 0).slice(0, 60),
    absent: Array.from({ length: 100 }, (_, i) => ["nowhere", hex(utf8.encode("x" + i))]),
    duplicates: [...known.slice(0, 30), ...known.slice(0, 30)],
    mixed: [...known.slice(0, 20), ["zz", "00"], ["", ""], ["app", ""]],
    reversed: known.slice(0, 120).reverse(),
    fewHits: [...known.slice(0, 150).filter((_, i) => i % 15 === 0), ...known.slice(0, 100).map((k) => [k[0], k[1] + "00"])],
  };
  const counts = {};
  for (const [name, keys] of Object.entries(cases)) {
    const [many, each] = await b.tx("readonly", async (t) => [await t.getMany("records", keys), await Promise.all(keys.map((k) => t.get("records", k)))]);
    if (show(many) !== show(each)) throw new Error(`getMany (${name}) differs from one get per key`);
    counts[name] = many.filter((v) => v !== undefined).length;
  }
  // Other key shapes (the meta store's strings): one get each.
  const metaKeys = ["replica", "clock", "vector", "observed", "nothing", ...Array.from({ length: 20 }, (_, i) => "ack:" + i)];
  const [m1, m2] = await b.tx("readonly", async (t) => [await t.getMany("meta", metaKeys), await Promise.all(metaKeys.map((k) => t.get("meta", k)))]);
  if (show(m1) !== show(m2)) throw new Error("getMany on string keys differs");
  // Inside a write transaction, after puts: they are seen.
  const after = await b.tx("readwrite", async (t) => {
    for (let i = 0; i < 40; i++) t.put("records", ["app", hex(utf8.encode("fresh" + i))], { n: i });
    return t.getMany("records", Array.from({ length: 40 }, (_, i) => ["app", hex(utf8.encode("fresh" + i))]));
  });
  if (!after.every((v, i) => v && v.n === i)) throw new Error("getMany misses the transaction's own writes");
  b.close();
  return { steps: log.length, records: present.length, counts, kinds };
})().then((v) => done({ ok: true, v }), (e) => done({ ok: false, e: String(e && e.stack || e) }));
"""


@pytest.fixture
def page(tmp_path):
    if not shutil.which("chromedriver") or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("apt-get install chromium chromium-driver")
    server, origin = serve(ROOT)
    driver = chromium(tmp_path / "browser")
    driver.set_script_timeout(240)
    driver.get(origin + "/Tests/browser/")
    yield driver
    driver.quit()
    server.shutdown()


@pytest.mark.parametrize("seed", [1, 18007, 424242])
def test_batched_apply_merges_exactly_as_one_record_at_a_time(page, seed):
    r = page.execute_async_script(SCRIPT, seed)
    assert r["ok"], r["e"]
    v = r["v"]
    assert v["steps"] > 180 and v["records"] > 300, v
    # Every path of getMany met keys that exist (and, for "absent", none).
    c = v["counts"]
    assert c["dense"] == 190 and c["duplicates"] == 60 and c["absent"] == 0 and 0 < c["denseWithMissing"] < 190, c
    assert c["fewHits"] == 10 and c["sparse"] > 0 and c["partial"] == 60, c
    # The histories met every kind of change (conflicts too).
    assert all(v["kinds"].get(k, 0) > 0 for k in ("put", "delete", "conflict")), v["kinds"]
