"""Scenario 3: one device's sync process is suspended (SIGSTOP, like Ctrl-Z)
for a while — a partition its peer cannot tell from a slow network.

Each trial: A imports a few thousand keys, and at a random point of B's
catch-up the `masq sync` of one device (A or B, at random) is stopped for
2–8 s while both devices write with `masq put` (a put beside a process
suspended in the middle of a write waits for it: writes wait up to 30 s, so
none may fail), then continued (SIGCONT). Then: the stores converge with
every acknowledged write, and no put failed.
"""
import time

import faults
from faults import (TRIALS, Relay, Writer, await_convergence, count_records, import_keys, paired_devices, report,
                    sync_service, wait_for)

NS = "partition"


def test_sigstop_partition_then_converge(lab):
    rnd = faults.rng("partition")
    relay = Relay(lab).start()
    a, b = paired_devices(lab, relay)
    syncs = {"a": sync_service(lab, a).start(), "b": sync_service(lab, b).start()}
    a.put(NS, "control", "before")
    wait_for(20, "a control write reaching B", lambda: b.get(NS, "control") == "before")
    expected = {"control": "before"}
    counts = dict(trials=0, converged=0, stopped_mid_catch_up=0, seconds_stopped=0.0, acknowledged_writes=0,
                  writes_lost=0, put_failures=0)
    failures = []
    for trial in range(TRIALS):
        counts["trials"] += 1
        n = rnd.randint(3000, 6000)
        bulk = {f"t{trial}-bulk-{i:05d}": f"bulk-{trial}-{i}" for i in range(n)}
        assert import_keys(a, NS, bulk).returncode == 0
        expected.update(bulk)
        target = max(1, int(n * rnd.uniform(0.0, 0.9)))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and count_records(b, NS, f"t{trial}-bulk-") < target:
            time.sleep(0.005)
        victim = syncs[rnd.choice("ab")]
        victim.suspend()
        if count_records(b, NS, f"t{trial}-bulk-") < n:
            counts["stopped_mid_catch_up"] += 1
        pause = rnd.uniform(2.0, 8.0)
        writers = [Writer(a, NS, f"t{trial}-a-", seconds=pause).start(), Writer(b, NS, f"t{trial}-b-", seconds=pause).start()]
        time.sleep(pause)
        victim.resume()
        counts["seconds_stopped"] = round(counts["seconds_stopped"] + pause, 1)
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
    report("partition", **counts)
    assert not failures and counts["converged"] == counts["trials"], "; ".join(failures[:5])
