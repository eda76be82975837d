"""Scenario 7: several writers on one store at once.

A and B sync. Each trial: 6–10 `masq put` processes write to A at once,
each a series of unique keys, while B imports rounds of a few thousand keys
(A's `masq sync` applies that catch-up) and A imports rounds of 5,000–10,000
keys, each in one transaction. No put may fail — in particular none with
"database is locked" (a write waits up to 30 s for another process's
transaction) — and every acknowledged write reaches B.
"""
import subprocess
import threading

import faults
from faults import MASQ, TRIALS, Relay, Writer, await_convergence, paired_devices, report, sync_service, wait_for

NS = "concurrent"


def test_concurrent_puts_beside_sync_and_import(lab):
    rnd = faults.rng("concurrent")
    relay = Relay(lab).start()
    a, b = paired_devices(lab, relay)
    sync_service(lab, a).start()
    sync_service(lab, b).start()
    a.put(NS, "control", "before")
    wait_for(20, "a control write reaching B", lambda: b.get(NS, "control") == "before")
    expected = {"control": "before"}
    counts = dict(trials=0, converged=0, writers=0, puts=0, put_failures=0, database_locked=0, imports_failed=0,
                  acknowledged_writes=0, writes_lost=0)
    failures = []
    for trial in range(TRIALS):
        counts["trials"] += 1
        # Imports keep the write lock busy while the puts run: B's arrive through
        # A's sync (catch-up), A's are each one long transaction.
        rounds = rnd.randint(3, 5)
        from_b = [{f"t{trial}-from-b{r}-{i:05d}": f"b-{r}-{i}" for i in range(rnd.randint(2000, 5000))} for r in range(rounds)]
        big = [{f"t{trial}-import{r}-{i:05d}": f"imp-{r}-{i}" for i in range(rnd.randint(5000, 10000))} for r in range(rounds)]

        def run_imports(name, device, batches):
            for r, items in enumerate(batches):
                result = subprocess.run([MASQ, "import", "--config", device.config, NS, "--batch", str(len(items))],
                                        input="".join(f"{k}\t{v}\n" for k, v in items.items()), text=True,
                                        capture_output=True, timeout=120)
                if result.returncode == 0:
                    expected.update(items)
                else:
                    counts["imports_failed"] += 1
                    failures.append(f"trial {trial}: import {r} on {name} failed: {result.stderr.strip()}")

        imports = [threading.Thread(target=run_imports, args=("B", b, from_b)),
                   threading.Thread(target=run_imports, args=("A", a, big))]
        n_writers = rnd.randint(6, 10)
        writers = [Writer(a, NS, f"t{trial}-w{w}-", limit=rnd.randint(15, 30), seconds=90) for w in range(n_writers)]
        for t in imports:
            t.start()
        for w in writers:
            w.start()
        for t in imports:
            t.join(timeout=300)
        for w in writers:
            w.join()
            expected.update(w.acked)
            counts["writers"] += 1
            counts["puts"] += len(w.acked) + len(w.failures)
            counts["put_failures"] += len(w.failures)
            counts["database_locked"] += sum("locked" in f for f in w.failures)
            failures += [f"trial {trial}: masq put failed: {f}" for f in w.failures[:2]]
        outcome = await_convergence([a, b], NS, expected, seconds=60)
        counts["converged"] += bool(outcome.converged)
        counts["writes_lost"] = outcome.lost
        if not outcome.converged:
            failures.append(f"trial {trial}: {outcome.detail}")
            break
    counts["acknowledged_writes"] = len(expected)
    report("concurrent-writers", **counts)
    assert not failures, "; ".join(failures[:6])
