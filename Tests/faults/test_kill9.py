"""Scenario 1: kill -9 at random points during sync.

A and B are paired through a real relay, both running `masq sync`. Each
trial: B's sync is killed (-9), A imports a few thousand keys, both devices
start writing (`masq put`, one process per write), B's sync starts again
(catch-up) and then 1–3 times, at a random moment, A's sync, B's sync or
both are killed -9 and started again after a random pause. Then: the two
stores converge, every acknowledged write (a put or import that exited 0)
is on both devices with its value, no put failed, and `masq check` finds
no damage on either device.
"""
import faults
import time

from faults import (TRIALS, Relay, Writer, await_convergence, count_records, import_keys, masq, paired_devices, report,
                    sync_service)

NS = "crash"


def test_kill9_during_sync_loses_no_acknowledged_write(lab):
    rnd = faults.rng("kill9")
    relay = Relay(lab).start()
    a, b = paired_devices(lab, relay)
    syncs = {"a": sync_service(lab, a).start(), "b": sync_service(lab, b).start()}
    expected = {}
    counts = dict(trials=0, converged=0, kills=0, kills_mid_catch_up=0, acknowledged_writes=0, writes_lost=0,
                  put_failures=0, damaged_stores=0)
    failures = []
    for trial in range(TRIALS):
        counts["trials"] += 1
        syncs["b"].kill()
        counts["kills"] += 1
        n = rnd.randint(2000, 5000)
        bulk = {f"t{trial}-bulk-{i:05d}": f"bulk-{trial}-{i}" for i in range(n)}
        imported = import_keys(a, NS, bulk)
        assert imported.returncode == 0, f"import on A failed: {imported.stderr}"
        expected.update(bulk)
        writers = [Writer(a, NS, f"t{trial}-a-", seconds=30).start(), Writer(b, NS, f"t{trial}-b-", seconds=30).start()]
        syncs["b"].start()
        for _ in range(rnd.randint(1, 3)):
            if rnd.random() < 0.7:
                # At a random point of B's catch-up: once B holds a random share of the bulk.
                target = max(1, int(n * rnd.uniform(0.02, 0.95)))
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and count_records(b, NS, f"t{trial}-bulk-") < target:
                    time.sleep(0.005)
            else:
                time.sleep(rnd.uniform(0.0, 1.2))
            victims = rnd.choice([["a"], ["b"], ["a", "b"]])
            for v in victims:
                syncs[v].kill()
                counts["kills"] += 1
            if 0 < count_records(b, NS, f"t{trial}-bulk-") < n:
                counts["kills_mid_catch_up"] += 1
            time.sleep(rnd.uniform(0.0, 1.0))
            for v in victims:
                syncs[v].start()
        time.sleep(rnd.uniform(0.0, 1.0))
        for w in writers:
            w.stop()
            expected.update(w.acked)
            counts["put_failures"] += len(w.failures)
            failures += w.failures
        outcome = await_convergence([a, b], NS, expected, seconds=60)
        counts["converged"] += bool(outcome.converged)
        counts["writes_lost"] = outcome.lost
        if not outcome.converged:
            failures.append(f"trial {trial}: no convergence {outcome.detail}")
            break
    counts["acknowledged_writes"] = len(expected)
    for d in (a, b):
        syncs[d.name].stop()
        checked = masq("check", "--config", d.config, check=False)
        if checked.returncode != 0:
            counts["damaged_stores"] += 1
            failures.append(f"masq check on {d.name} after kill -9: {checked.stdout}{checked.stderr}")
    report("kill9", **counts)
    assert counts["converged"] == counts["trials"] and counts["writes_lost"] == 0 and counts["put_failures"] == 0 \
        and counts["damaged_stores"] == 0, "; ".join(failures[:5])
