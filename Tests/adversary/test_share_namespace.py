"""The owner of a share must not choose the guest's local namespace.

Attack: Alice (the owner, hostile) names her shared namespace `passwords`.
When Bob accepts her link without `--as`, his store adopts the name from
Alice's WELCOME, so the share lands on Bob's EXISTING `passwords`: Bob's
secrets flow to Alice (read-write), Alice's records merge into them, and with
a read-only share Bob can no longer write his own `passwords`.

Decided behaviour: the guest alone chooses the local name. Without `--as` the
share lands in a NEW namespace Bob did not have (found here by diffing
`masq ls` before and after); `--as NAME` naming an existing namespace is
refused unless `--merge` is also given (explicit consent); a read-only mark
applies only to a namespace the share created.

Real processes on 127.0.0.1: a `masq connectoid serve` and each side's
`masq sync` (sharing only: no relay is configured).
"""
import re
import time

import pytest

from support import MASQ, Device, Processes, masq, wait_for

BOB_PASSWORDS = {
    "bank-pin": "bob-secret-4711",
    "email": "bob-mail-hunter2",
    "vault": "bob-vault-correct-horse",
}
ALICE_PASSWORDS = {
    "alice-bait": "from-alice-1",
    "alice-decoy": "from-alice-2",
    "email": "alice-overwrites-bob",   # the same key as one of Bob's
}


@pytest.fixture
def procs(tmp_path):
    p = Processes(str(tmp_path))
    yield p
    p.stop_all()


def start_service(procs):
    log = "connectoid.out"
    procs.start([MASQ, "connectoid", "serve", "--port", "0", "--db", f"{procs.workdir}/connectoid.sqlite3"], log)
    path = f"{procs.workdir}/{log}"
    return wait_for(10, "the Connectoid service's URL",
                    lambda: re.search(r"http://[^\s]+", open(path).read())).group(0)


def sharing_device(workdir, name, url):
    d = Device(workdir, name)

    def change(config):
        config["sharing"] = {"services": [url], "resend_ms": 2000,
                             "transport": {"plugin": "connectoid", "options": {"interval_ms": 200, "timeout_ms": 3000}}}
    d.edit_config(change)
    return d


def namespaces(device):
    return [line.strip() for line in masq("ls", "--config", device.config).stdout.splitlines() if line.strip()]


def contents(device, ns):
    r = masq("ls", "--config", device.config, ns, "--values", check=False)
    if r.returncode != 0:
        return {}
    out = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("\t")
        out[key] = value
    return out


def everything(device):
    return {ns: contents(device, ns) for ns in namespaces(device)}


def share_link(alice, ns, *extra):
    out = masq("share", "--config", alice.config, ns, "--no-qr", *extra).stdout
    return re.search(r"^masq://share/\S+", out, re.M).group(0)


def bob_leaks(alice):
    """Bob's pre-existing secrets found anywhere in Alice's store."""
    leaks = []
    for ns, kv in everything(alice).items():
        for key, value in kv.items():
            if key in ("bank-pin", "vault") or value in BOB_PASSWORDS.values():
                leaks.append(f"{ns}/{key}={value}")
    return leaks


def holding(device, key, value):
    """The namespaces of `device` where `key` holds `value`."""
    return [ns for ns, kv in everything(device).items() if kv.get(key) == value]


def setup(procs, access=()):
    url = start_service(procs)
    alice = sharing_device(procs.workdir, "alice", url)
    bob = sharing_device(procs.workdir, "bob", url)
    for k, v in BOB_PASSWORDS.items():
        bob.put("passwords", k, v)
    for k, v in ALICE_PASSWORDS.items():
        alice.put("passwords", k, v)
    link = share_link(alice, "passwords", *access)
    procs.start([MASQ, "sync", "--config", alice.config, "--quiet"], "sync-alice.log")
    return alice, bob, link


def accept(bob, link, *extra):
    return masq("accept", "--config", bob.config, link, "--wait", "20", *extra, check=False, timeout=35)


def test_accept_without_as_never_lands_on_an_existing_namespace(procs):
    """(a) Read-write share named like Bob's `passwords`: nothing of Bob's reaches Alice,
    Bob's `passwords` stays as it was, Alice's keys land in a new namespace."""
    alice, bob, link = setup(procs)
    before = set(namespaces(bob))
    r = accept(bob, link)
    assert r.returncode == 0, f"accept failed: {r.stdout}{r.stderr}"
    procs.start([MASQ, "sync", "--config", bob.config, "--quiet"], "sync-bob.log")

    # Settle both directions: a fresh key of Alice's reaches Bob (wherever the share
    # lives), and a fresh key Bob writes there reaches Alice; Bob's snapshot is sent
    # before his later changes, so anything it carried has arrived by then.
    alice.put("passwords", "alice-marker", "m1")
    share_ns = wait_for(15, "Alice's new key reaching Bob", lambda: holding(bob, "alice-marker", "m1"))[0]
    bob.put(share_ns, "bob-marker", "m2")
    wait_for(15, "Bob's key in the shared namespace reaching Alice",
             lambda: contents(alice, "passwords").get("bob-marker") == "m2")
    time.sleep(2)

    leaks = bob_leaks(alice)
    assert not leaks, f"ATTACK WORKED: Bob's pre-existing passwords reached Alice: {leaks}"
    assert contents(bob, "passwords") == BOB_PASSWORDS, \
        f"ATTACK WORKED: Bob's own passwords changed: {contents(bob, 'passwords')} (was {BOB_PASSWORDS})"
    new = set(namespaces(bob)) - before
    assert share_ns in new, f"the share landed in {share_ns!r}, which Bob already had (new namespaces: {sorted(new)})"
    got = contents(bob, share_ns)
    assert all(got.get(k) == v for k, v in ALICE_PASSWORDS.items()), f"Alice's keys did not all reach Bob's {share_ns!r}: {got}"


def test_read_only_share_does_not_lock_the_guests_namespace(procs):
    """(b) Read-only share named like Bob's `passwords`: Bob can still write his own
    `passwords`, nothing of it reaches Alice, Alice's keys land in a new namespace."""
    alice, bob, link = setup(procs, ("--read-only",))
    before = set(namespaces(bob))
    r = accept(bob, link)
    assert r.returncode == 0, f"accept failed: {r.stdout}{r.stderr}"
    procs.start([MASQ, "sync", "--config", bob.config, "--quiet"], "sync-bob.log")
    alice.put("passwords", "alice-marker", "m1")
    share_ns = wait_for(15, "Alice's new key reaching Bob", lambda: holding(bob, "alice-marker", "m1"))[0]

    put = masq("put", "--config", bob.config, "passwords", "bob-new", "bob-new-secret", check=False)
    assert put.returncode == 0, \
        f"ATTACK WORKED: Bob may no longer write his own passwords: {put.stdout}{put.stderr}".strip()

    # Give a leak time to happen (resends every 2 s, polling every 0.2 s).
    alice.put("passwords", "alice-marker-2", "m2")
    wait_for(15, "Alice's second key reaching Bob", lambda: contents(bob, share_ns).get("alice-marker-2") == "m2")
    time.sleep(3)
    leaks = bob_leaks(alice) + [f"{ns}/bob-new" for ns, kv in everything(alice).items() if "bob-new" in kv]
    assert not leaks, f"ATTACK WORKED: Bob's passwords reached Alice: {leaks}"
    assert contents(bob, "passwords") == {**BOB_PASSWORDS, "bob-new": "bob-new-secret"}, \
        f"ATTACK WORKED: Bob's own passwords changed: {contents(bob, 'passwords')}"
    new = set(namespaces(bob)) - before
    assert share_ns in new, f"the share landed in {share_ns!r}, which Bob already had (new namespaces: {sorted(new)})"
    got = contents(bob, share_ns)
    assert all(got.get(k) == v for k, v in ALICE_PASSWORDS.items()), f"Alice's keys did not all reach Bob's {share_ns!r}: {got}"


def test_as_existing_namespace_needs_merge(procs):
    """(c) `--as passwords` (existing) is refused without `--merge` and shares nothing;
    the same link with `--merge` (explicit consent) merges Alice's keys into it."""
    alice, bob, link = setup(procs)
    r = accept(bob, link, "--as", "passwords")
    assert r.returncode != 0, \
        f"ATTACK WORKED: accept --as an existing namespace without --merge was accepted: {r.stdout}{r.stderr}".strip()
    time.sleep(3)   # Alice's sync runs: nothing may flow
    assert contents(bob, "passwords") == BOB_PASSWORDS, f"Bob's passwords changed: {contents(bob, 'passwords')}"
    assert not bob_leaks(alice), f"Bob's passwords reached Alice: {bob_leaks(alice)}"

    # Nothing was claimed, so the link still works, now with consent to merge.
    r = accept(bob, link, "--as", "passwords", "--merge")
    assert r.returncode == 0, f"accept --as passwords --merge failed: {r.stdout}{r.stderr}"
    wait_for(15, "Alice's keys merging into Bob's passwords",
             lambda: contents(bob, "passwords") == {**BOB_PASSWORDS, **ALICE_PASSWORDS})


def test_read_only_merge_does_not_lock_the_guests_namespace(procs):
    """(d) A read-only share merged into an existing namespace (`--as passwords --merge`):
    the read-only mark applies only to namespaces a share created, so Bob still writes
    his `passwords`, and nothing of it reaches Alice."""
    alice, bob, link = setup(procs, ("--read-only",))
    r = accept(bob, link, "--as", "passwords", "--merge")
    assert r.returncode == 0, f"accept --as passwords --merge failed: {r.stdout}{r.stderr}"
    wait_for(15, "Alice's keys merging into Bob's passwords",
             lambda: all(contents(bob, "passwords").get(k) == v for k, v in ALICE_PASSWORDS.items()))
    put = masq("put", "--config", bob.config, "passwords", "bob-new", "bob-new-secret", check=False)
    assert put.returncode == 0, f"a read-only share locked Bob's own passwords: {put.stdout}{put.stderr}".strip()
    procs.start([MASQ, "sync", "--config", bob.config, "--quiet"], "sync-bob.log")
    time.sleep(4)
    assert not bob_leaks(alice), f"Bob's passwords reached Alice through a read-only share: {bob_leaks(alice)}"
