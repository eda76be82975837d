"""Scenario 2: the relay restarts in the middle of a sync.

A and B sync through a relay on a fixed port. Each trial: A imports a few
thousand keys (B is catching up), and at a random moment of that catch-up
the relay is killed (SIGKILL or SIGTERM), stays down for 0.5–3 s while both
devices keep writing, and starts again at the same address. Then: a write
on each device reaches the other (the devices reconnected: ~5 s is the
promise, 30 s the bound asserted here; the time taken is printed), and the
stores converge with every acknowledged write.
"""
import signal
import time

import faults
from faults import (TRIALS, Relay, Writer, await_convergence, count_records, import_keys, paired_devices, report,
                    sync_service, wait_for)

NS = "relay"
RECONNECT_BOUND = 30


def test_relay_restart_mid_sync(lab):
    rnd = faults.rng("relay")
    relay = Relay(lab).start()
    a, b = paired_devices(lab, relay)
    sync_service(lab, a).start()
    sync_service(lab, b).start()
    a.put(NS, "control", "before")
    wait_for(20, "a control write reaching B", lambda: b.get(NS, "control") == "before")
    expected = {"control": "before"}
    counts = dict(trials=0, converged=0, restarts_mid_catch_up=0, reconnected=0, slowest_reconnect_s=0.0,
                  acknowledged_writes=0, writes_lost=0, put_failures=0)
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
        relay.signal(rnd.choice([signal.SIGKILL, signal.SIGTERM]))
        relay.stop()
        if count_records(b, NS, f"t{trial}-bulk-") < n:
            counts["restarts_mid_catch_up"] += 1
        down = rnd.uniform(0.5, 3.0)
        writers = [Writer(a, NS, f"t{trial}-a-", seconds=down + 2).start(),
                   Writer(b, NS, f"t{trial}-b-", seconds=down + 2).start()]
        time.sleep(down)
        relay.start()
        restarted = time.monotonic()
        for w in writers:
            w.stop()
            expected.update(w.acked)
            counts["put_failures"] += len(w.failures)
            failures += w.failures
        # Reconnected: a write made now on each side reaches the other.
        a.put(NS, f"t{trial}-probe-a", "after restart")
        b.put(NS, f"t{trial}-probe-b", "after restart")
        expected.update({f"t{trial}-probe-a": "after restart", f"t{trial}-probe-b": "after restart"})
        try:
            wait_for(RECONNECT_BOUND, "writes made after the relay restarted reaching the other device",
                     lambda: b.get(NS, f"t{trial}-probe-a") == "after restart"
                     and a.get(NS, f"t{trial}-probe-b") == "after restart", interval=0.1)
            counts["reconnected"] += 1
            counts["slowest_reconnect_s"] = round(max(counts["slowest_reconnect_s"], time.monotonic() - restarted), 1)
        except AssertionError as e:
            failures.append(f"trial {trial}: {e}")
        outcome = await_convergence([a, b], NS, expected, seconds=60)
        counts["converged"] += bool(outcome.converged)
        counts["writes_lost"] = outcome.lost
        if not outcome.converged:
            failures.append(f"trial {trial}: no convergence {outcome.detail}")
            break
    counts["acknowledged_writes"] = len(expected)
    report("relay-restart", **counts)
    assert not failures and counts["converged"] == counts["trials"] and counts["reconnected"] == counts["trials"], \
        "; ".join(failures[:5])
