"""Scenario 9: the disk fills up.

Device F keeps its store on a small tmpfs (skipped, with the reason, where
this machine does not let the test mount one); it is paired with P, whose
store is on the ordinary disk, and both sync. Each trial:
1. F writes keys; they reach P.
2. A filler file takes all the space left on F's disk.
3. F's writes fail with an error that says the disk is full (or the write
   succeeds, when SQLite still had room: then it is acknowledged like any
   other) — at least one must fail, and none may fail silently or with a
   misleading reason. P writes meanwhile; F cannot store them: the status
   of both devices names the cause (issue 21.4), and `masq sync --once` on
   P fails saying why rather than "are the other devices online".
4. Nothing already stored is lost: F still reads every acknowledged key.
5. The filler is removed: F writes again, and both stores converge with
   every acknowledged write, `masq check` clean on F.
"""
import os
import re
import subprocess

import pytest

import faults
from faults import (MASQ, await_convergence, contents, masq, mount_tmpfs, pair, problems, Relay, report, sync_service,
                    trials, wait_for)
from support import Device

NS = "disk"
FULL = re.compile(r"full|space|ENOSPC|no room|cannot store", re.I)


def fill(path):
    """Write a file until the disk is full; returns its size."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        for _ in range(100_000):                    # bounded: 6 GB at most
            try:
                f.write(chunk)
                written += len(chunk)
            except OSError:
                break
        for _ in range(64):                         # the last partial chunk
            try:
                f.write(b"\0" * 1024)
                written += 1024
            except OSError:
                break
    return written


def test_full_disk(lab):
    rnd = faults.rng("disk")
    disk = os.path.join(lab.workdir, "small-disk")
    why = mount_tmpfs(lab, disk, "4m")
    if why:
        pytest.skip(f"cannot mount a small tmpfs here ({why}); the full-disk scenario needs one")
    relay = Relay(lab).start()
    f = Device.__new__(Device)
    f.name, f.config, f.data = "f", os.path.join(lab.workdir, "f.json"), os.path.join(disk, "f")
    masq("init", "--config", f.config, "--data-dir", f.data, "--name", "f")
    p = lab.device("p")
    pair(lab.procs, f, p, relay.url)
    sync_f, sync_p = sync_service(lab, f).start(), sync_service(lab, p).start()
    counts = dict(trials=0, puts_when_full=0, failed_clearly=0, failed_unclearly=0, acknowledged_when_full=0,
                  peer_status_named_it=0, own_status_named_it=0, once_named_it=0, acknowledged_writes=0, writes_lost=0, converged=0)
    failures = []
    expected = {}
    for trial in range(trials(0.3)):
        counts["trials"] += 1
        # 1.
        before = {f"t{trial}-before-{i}": f"stored before the disk filled {i}" for i in range(rnd.randint(20, 60))}
        data = "".join(f"{k}\t{v}\n" for k, v in before.items())
        assert subprocess.run([MASQ, "import", "--config", f.config, NS], input=data, text=True,
                              capture_output=True).returncode == 0
        expected.update(before)
        assert await_convergence([f, p], NS, expected, seconds=60), "F's writes did not reach P before the disk filled"
        # 2.
        filler = os.path.join(disk, "filler")
        fill(filler)
        # 3. F's writes fail, clearly.
        failed = 0
        for i in range(200):                        # bounded; stops after a few failures
            key, value = f"t{trial}-full-{i}", f"{i}-" + "x" * rnd.randint(1000, 20000)
            r = masq("put", "--config", f.config, NS, key, value, check=False)
            counts["puts_when_full"] += 1
            if r.returncode == 0:
                counts["acknowledged_when_full"] += 1
                expected[key] = value
                continue
            failed += 1
            if FULL.search(r.stderr + r.stdout):
                counts["failed_clearly"] += 1
            else:
                counts["failed_unclearly"] += 1
                failures.append(f"trial {trial}: a put on a full disk failed without saying so: {(r.stderr + r.stdout).strip()}")
            if failed >= 3:
                break
        if not failed:
            failures.append(f"trial {trial}: 200 puts on a full disk all succeeded (is the filler on F's disk?)")
        # P writes; F cannot store them: P's status and `sync --once` say why.
        from_p = {f"t{trial}-from-p-{i}": f"p-{i}-" + "y" * 2000 for i in range(rnd.randint(20, 40))}
        for k, v in from_p.items():
            p.put(NS, k, v)
        expected.update(from_p)
        try:
            wait_for(15, "P's status naming F's full disk", lambda: any(FULL.search(x) for x in problems(p)), interval=0.5)
            counts["peer_status_named_it"] += 1
        except AssertionError:
            failures.append(f"trial {trial}: 15 s after P wrote, P's status does not say F cannot store its changes: "
                            f"{faults.status(p)} (F's sync log: {sync_f.log_text()[-300:]})")
        if any(FULL.search(x) for x in problems(f)):
            counts["own_status_named_it"] += 1
        else:
            failures.append(f"trial {trial}: F's status does not say its disk is full: {faults.status(f)}")
        sync_p.stop()
        once = masq("sync", "--config", p.config, "--once", "--quiet", "--timeout", "10", check=False, timeout=60)
        sync_p.start()
        if once.returncode != 0 and FULL.search(once.stdout + once.stderr):
            counts["once_named_it"] += 1
        else:
            failures.append(f"trial {trial}: `masq sync --once` on P (F's disk full) exited {once.returncode}: "
                            f"{(once.stdout + once.stderr).strip()[-300:]}")
        # 4. nothing already stored is lost
        held = contents(f, NS)
        if held is None:
            failures.append(f"trial {trial}: F cannot list its keys while its disk is full")
        else:
            lost = [k for k, v in before.items() if held.get(k) != v]
            if lost:
                failures.append(f"trial {trial}: {len(lost)} key(s) stored before the disk filled are gone: {lost[:3]}")
        # 5. space again
        os.unlink(filler)
        r = masq("put", "--config", f.config, NS, f"t{trial}-after", "space again", check=False)
        if r.returncode == 0:
            expected[f"t{trial}-after"] = "space again"
        else:
            failures.append(f"trial {trial}: a put after space was freed failed: {r.stderr.strip()}")
        outcome = await_convergence([f, p], NS, expected, seconds=60)
        counts["converged"] += bool(outcome.converged)
        counts["writes_lost"] = outcome.lost
        if not outcome.converged:
            failures.append(f"trial {trial}: after space was freed: {outcome.detail}; F: {faults.status(f)} P: {faults.status(p)}")
            break
    counts["acknowledged_writes"] = len(expected)
    sync_f.stop()
    checked = masq("check", "--config", f.config, check=False)
    if checked.returncode != 0:
        failures.append(f"masq check on F: {checked.stdout[-300:]}{checked.stderr[-200:]}")
    report("full-disk", **counts)
    assert not failures, "; ".join(failures[:6])
