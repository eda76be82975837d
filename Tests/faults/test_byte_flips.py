"""Scenario 5: bytes flipped in a stopped store.

A and B are paired and synced (a few thousand keys written on A); both stop.
One of them (at random) gets bytes of its SQLite file flipped, in one of
three ways (one test each):

- values: 1–4 bytes inside 12 records' values, headers or checksums (what
  the per-record CRC-32 covers);
- keys: 1–2 bytes inside 12 records' keys (the record now sits under another
  key, out of order in the b-tree);
- cells: 1 byte of SQLite's cell header (payload size, serial types) just
  before 12 records' keys — the file format around the records;
- pages: 32 bytes at 12 random points of the file past its first page, as
  the issue's campaign did (b-tree structure and metadata included).

Then, as the issue requires: `masq check` reports the damage (exit status 1;
for random page flips it may also find none, if every key still reads back
right); reads never answer wrong data — `ls --values` fails or lists
exactly what was written, and `get` of each damaged key and of a sample of
others answers the right value or fails (exit status 2, "absent", for a key
that was written counts as a wrong answer); `masq check --repair` succeeds
and leaves a store `masq check` finds clean; a sync with the paired device
brings every key back, and `masq check` is still clean.
"""
import os
import re

import pytest

import faults
from faults import (await_convergence, copy_tree, flip, import_keys, masq, paired_devices, Relay, report,
                    sync_service, trials)

NS = "flips"


def damage(path, mode, rnd):
    """Flip bytes of the file at `path`; returns (offsets, indexes of keys known to be hit)."""
    data = open(path, "rb").read()
    hit = set()
    offsets = []
    if mode == "values":
        # In the record's header, value or CRC-32 trailer (the 4 bytes after the value).
        width = rnd.randint(1, 4)
        spots = rnd.sample(list(re.finditer(rb"value-(\d{5})-[a-z]+", data)), 12)
        for m in spots:
            offsets.append(rnd.randrange(m.start() - 18, m.end() + 4 - width + 1))
            hit.add(int(m.group(1)))
        flip(path, offsets, rnd, width=width)
    elif mode == "cells":
        # SQLite's own cell header just before the record's key: payload size and serial types.
        spots = rnd.sample(list(re.finditer(rb"R.key-(\d{5})\x01", data, re.S)), 12)
        for m in spots:
            offsets.append(rnd.randrange(m.start() - 3, m.start()))
            hit.add(int(m.group(1)))
        flip(path, offsets, rnd, width=1)
    elif mode == "keys":
        spots = rnd.sample(list(re.finditer(rb"R.key-(\d{5})\x01", data, re.S)), 12)
        for m in spots:
            offsets.append(rnd.randrange(m.start() + 2, m.end() - 1))
            hit.add(int(m.group(1)))
        flip(path, offsets, rnd, width=rnd.randint(1, 2))
    else:
        offsets = [rnd.randrange(4096, len(data) - 32) for _ in range(12)]
        flip(path, offsets, rnd, width=32)
    return offsets, hit


@pytest.mark.parametrize("mode", ["values", "keys", "cells", "pages"])
def test_byte_flips_are_caught_and_repaired(lab, mode):
    rnd = faults.rng(f"flips-{mode}")
    relay = Relay(lab).start()
    counts = dict(trials=0, damage_reported=0, ls_wrong=0, gets=0, gets_failed=0, gets_absent=0, gets_wrong=0,
                  repaired=0, keys_back=0, keys_not_back=0)
    failures = []
    for trial in range(trials(0.5)):
        counts["trials"] += 1
        a, b = paired_devices(lab, relay, (f"a{trial}", f"b{trial}"))
        n = rnd.randint(3000, 6000)
        pad = "abcdefghijklmnopqrstuvwxyz"
        written = {f"key-{i:05d}": f"value-{i:05d}-{pad[:rnd.randint(4, 26)]}" for i in range(n)}
        assert import_keys(a, NS, written).returncode == 0
        syncs = [sync_service(lab, a).start(), sync_service(lab, b).start()]
        assert await_convergence([a, b], NS, written, seconds=60), "the pair did not sync before the flips"
        for s in syncs:
            s.stop()
        victim = rnd.choice([a, b])
        db = os.path.join(victim.data, "masq.db")
        masq("status", "--config", victim.config)      # a `masq sync` ended by SIGTERM leaves its WAL: fold it in
        assert not os.path.exists(db + "-wal") or os.path.getsize(db + "-wal") == 0, "the WAL outlived the store's close"
        copy_tree(victim.data, victim.data + ".before-flips")      # kept for a failing run
        offsets, hit = damage(db, mode, rnd)
        copy_tree(victim.data, victim.data + ".damaged")           # likewise

        # masq check
        checked = masq("check", "--config", victim.config, check=False)
        listing = masq("ls", "--config", victim.config, NS, "--values", check=False, timeout=120)
        listed = dict(line.partition("\t")[::2] for line in listing.stdout.splitlines()) if listing.returncode == 0 else None
        if checked.returncode == 1:
            counts["damage_reported"] += 1
        elif not (mode == "pages" and checked.returncode == 0 and listed == written):
            failures.append(f"trial {trial} ({mode}, {victim.name}): `masq check` exited {checked.returncode} after flips "
                            f"at {offsets}: {checked.stdout[-300:]}{checked.stderr[-300:]}")
        # reads: never a wrong answer
        if listed is not None and listed != written:
            counts["ls_wrong"] += 1
            wrong = [k for k in set(written) | set(listed) if listed.get(k) != written.get(k)]
            failures.append(f"trial {trial} ({mode}): `ls --values` exited 0 with {len(listed)} keys of {n}, "
                            f"{len(wrong)} wrong, e.g. {wrong[:3]}")
        sample = sorted({f"key-{i:05d}" for i in hit} | set(rnd.sample(sorted(written), 40)))
        for key in sample:
            counts["gets"] += 1
            r = masq("get", "--config", victim.config, NS, key, check=False)
            if r.returncode == 0 and r.stdout == written[key]:
                continue
            if r.returncode == 0:
                counts["gets_wrong"] += 1
                failures.append(f"trial {trial} ({mode}): get {key} answered {r.stdout!r}, written {written[key]!r}")
            elif r.returncode == 2:
                counts["gets_absent"] += 1
                failures.append(f"trial {trial} ({mode}): get {key} answered 'absent' (exit 2) for a written key "
                                f"whose record was damaged: {r.stderr.strip()}")
            else:
                counts["gets_failed"] += 1

        # repair, then a sync with the paired device brings everything back
        repaired = masq("check", "--config", victim.config, "--repair", check=False)
        if repaired.returncode != 0:
            failures.append(f"trial {trial} ({mode}, {victim.name}): `masq check --repair` exited {repaired.returncode}: "
                            f"{repaired.stdout[-300:]}{repaired.stderr[-300:]} (flips at {offsets})")
            continue
        after = masq("check", "--config", victim.config, check=False)
        if after.returncode != 0:
            failures.append(f"trial {trial} ({mode}, {victim.name}): `masq check --repair` succeeded ({repaired.stdout.splitlines()[-1:]}) "
                            f"but the store is still damaged: {after.stdout[-400:]}{after.stderr[-200:]}")
            counts["keys_not_back"] += n
            continue
        counts["repaired"] += 1
        syncs = [sync_service(lab, a).start(), sync_service(lab, b).start()]
        outcome = await_convergence([a, b], NS, written, seconds=20)
        held = faults.contents(victim, NS) or {}
        back = sum(1 for k, v in written.items() if held.get(k) == v)
        counts["keys_back"] += back
        counts["keys_not_back"] += n - back
        if not outcome:
            failures.append(f"trial {trial} ({mode}, {victim.name}): after repair and sync: {outcome.detail}")
        clean = masq("check", "--config", victim.config, check=False)
        if clean.returncode != 0:
            failures.append(f"trial {trial} ({mode}): `masq check` after repair and sync: {clean.stdout[-300:]}{clean.stderr[-300:]}")
        for s in syncs:
            s.stop()
    report(f"byte-flips[{mode}]", **counts)
    assert not failures, "; ".join(failures[:6])
