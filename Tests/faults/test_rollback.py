"""Scenario 6: a store goes back in time — its data directory restored from
a copy, or the tail of its write-ahead log lost after kill -9.

Each trial, on a fresh pair A–B (both syncing):
1. Both write (phase 0) and converge.
2. A copy of A's store is taken: with A's sync stopped and the store closed
   ("copy"), or — "wal-tail" — with A's sync frozen (SIGSTOP) mid-run, the
   database and its WAL copied as they are on disk (what kill -9 leaves).
3. A writes more (phase 1, including an overwrite of a shared key), syncs,
   and B receives it; B writes too.
4. A's sync stops (SIGTERM for "copy", kill -9 for "wal-tail"); A's files are
   replaced by the copy. A writes again (phase 2, reusing commit numbers its
   peer already holds), before or while its sync runs again.
5. Within 60 s both stores hold everything: phase 0, A's phase-1 writes
   taken back from B, A's phase-2 writes (which must not be taken for
   duplicates), B's writes; the shared key holds A's last value. A continues
   under a new replica id; `masq check` is clean on both; neither status
   keeps a problem once they agree.
"""
import shutil

import pytest

import faults
from faults import (await_convergence, import_keys, masq, paired_devices, problems, Relay, replica_id, report,
                    sync_service, trials, wait_for, Writer)

NS = "rollback"


def put_all(device, items):
    for k, v in items.items():
        device.put(NS, k, v)


@pytest.mark.parametrize("variant", ["copy", "wal-tail"])
def test_store_restored_from_a_copy_takes_back_and_loses_nothing(lab, variant):
    rnd = faults.rng(f"rollback-{variant}")
    relay = Relay(lab).start()
    counts = dict(trials=0, converged=0, new_replica_id=0, writes_after_restore=0, taken_back_from_peer=0,
                  acknowledged_writes=0, writes_lost=0, damaged_stores=0, stale_problems=0)
    failures = []
    for trial in range(trials(0.5)):
        counts["trials"] += 1
        a, b = paired_devices(lab, relay, (f"a{trial}", f"b{trial}"))
        sync_a, sync_b = sync_service(lab, a).start(), sync_service(lab, b).start()
        # 1. phase 0
        expected = {f"p0-bulk-{i:04d}": f"p0-{i}" for i in range(rnd.randint(500, 2000))}
        assert import_keys(a, NS, expected).returncode == 0
        phase0 = {f"p0-a-{i}": f"a0-{i}" for i in range(rnd.randint(3, 8))}
        phase0["shared"] = "phase 0"
        put_all(a, phase0)
        expected.update(phase0)
        b0 = {f"p0-b-{i}": f"b0-{i}" for i in range(rnd.randint(3, 8))}
        put_all(b, b0)
        expected.update(b0)
        assert await_convergence([a, b], NS, expected, seconds=60), "phase 0 did not sync"

        # 2. the copy
        copy = a.data + ".copy"
        if variant == "copy":
            sync_a.stop()
            masq("status", "--config", a.config)        # closes the store cleanly (folds the WAL in)
            shutil.copytree(a.data, copy)
            sync_a.start()
        else:
            sync_a.suspend()
            shutil.copytree(a.data, copy, ignore=shutil.ignore_patterns("*-shm"))
            sync_a.resume()
        before = replica_id(a)

        # 3. phase 1: A writes, B receives; B writes.
        phase1 = {f"p1-a-{i}": f"a1-{i}" for i in range(rnd.randint(5, 15))}
        phase1["shared"] = "phase 1"
        bulk1 = {f"p1-bulk-{i:04d}": f"p1-{i}" for i in range(rnd.randint(100, 1000))}
        assert import_keys(a, NS, bulk1).returncode == 0
        put_all(a, phase1)
        wait_for(30, "B receiving A's phase-1 writes",
                 lambda: all(v == (faults.contents(b, NS) or {}).get(k) for k, v in list(phase1.items())[-1:])
                 and (faults.contents(b, NS) or {}).keys() >= set(phase1) | set(bulk1), interval=0.3)
        expected.update(bulk1)
        expected.update(phase1)
        b1 = {f"p1-b-{i}": f"b1-{i}" for i in range(rnd.randint(3, 8))}
        put_all(b, b1)
        expected.update(b1)

        # 4. A goes back in time, then writes again.
        if variant == "copy":
            sync_a.stop()
        else:
            sync_a.kill()
        shutil.rmtree(a.data)
        shutil.copytree(copy, a.data)
        sync_first = rnd.random() < 0.5
        if sync_first:
            sync_a.start()
        phase2 = {f"p2-a-{i}": f"a2-{i}" for i in range(rnd.randint(5, 15))}
        phase2["shared"] = "phase 2 (after the restore)"
        writer = Writer(a, NS, "p2-w-", limit=rnd.randint(5, 20), seconds=20).start()
        put_all(a, phase2)
        writer.stop()
        expected.update(phase2)
        expected.update(writer.acked)
        counts["writes_after_restore"] += len(phase2) + len(writer.acked)
        if writer.failures:
            failures.append(f"trial {trial}: puts after the restore failed: {writer.failures[:2]}")
        if not sync_first:
            sync_a.start()

        # 5. everything everywhere
        outcome = await_convergence([a, b], NS, expected, seconds=60)
        counts["converged"] += bool(outcome.converged)
        counts["writes_lost"] += outcome.lost
        held = faults.contents(a, NS) or {}
        counts["taken_back_from_peer"] += sum(1 for k in list(bulk1) + list(phase1) + list(b1)
                                              if k != "shared" and held.get(k) == expected[k])
        counts["acknowledged_writes"] += len(expected)
        if not outcome.converged:
            failures.append(f"trial {trial} ({variant}, A's sync {'before' if sync_first else 'after'} its new writes): "
                            f"{outcome.detail}; A: {faults.status(a)} B: {faults.status(b)}")
        after = replica_id(a)
        if after and after != before:
            counts["new_replica_id"] += 1
        else:
            failures.append(f"trial {trial} ({variant}): A still writes as replica {after} after going back in time")
        for d in (a, b):
            checked = masq("check", "--config", d.config, check=False)
            if checked.returncode != 0:
                counts["damaged_stores"] += 1
                failures.append(f"trial {trial} ({variant}): masq check on {d.name}: {checked.stdout[-300:]}{checked.stderr[-200:]}")
        if outcome.converged:
            try:
                wait_for(10, "no problem left in either status", lambda: not problems(a) and not problems(b), interval=0.5)
            except AssertionError:
                counts["stale_problems"] += 1
                failures.append(f"trial {trial} ({variant}): converged, yet status still reports A {problems(a)}, B {problems(b)}")
        sync_a.stop()
        sync_b.stop()
    report(f"rollback[{variant}]", **counts)
    assert not failures, "; ".join(failures[:6])
