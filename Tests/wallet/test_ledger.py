"""The ledger wallet plugin through the CLI: a shared SQLite ledger, atomic
transfers, insufficient funds refused without a trace, payments verified and
listed for the payee, signatures."""
import json
import os
import subprocess

MASQ = os.environ.get("MASQ_BIN", "masq")


def run(work, key, *args, initial=None, check=True, asset=None):
    options = {"ledger": os.path.join(work, "ledger.sqlite3"), "key_file": os.path.join(work, key)}
    if asset is not None:
        options["asset"] = asset
    if initial is not None:
        options["initial_balance"] = str(initial)
    r = subprocess.run([MASQ, "wallet", *args, "--wallet", json.dumps({"plugin": "ledger", "options": options}), "--data-dir", work],
                       capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_transfers_balances_and_history(tmp_path):
    work = str(tmp_path)
    alice = run(work, "a.key", "address", initial=1000).stdout.strip()
    bob = run(work, "b.key", "address").stdout.strip()
    assert run(work, "a.key", "balance").stdout.strip() == "1000"
    assert run(work, "b.key", "balance").stdout.strip() == "0"
    txid = run(work, "a.key", "pay", bob, "300").stdout.strip()
    assert run(work, "a.key", "balance").stdout.strip() == "700" and run(work, "b.key", "balance").stdout.strip() == "300"
    # Not enough: refused, nothing moves.
    short = run(work, "b.key", "pay", alice, "301", check=False)
    assert short.returncode == 1 and "does not cover" in short.stderr
    assert run(work, "b.key", "balance").stdout.strip() == "300"
    assert run(work, "b.key", "verify-payment", txid, alice, bob, "300").stdout.strip() == "ok"
    assert run(work, "b.key", "verify-payment", txid, alice, bob, "301", check=False).returncode == 1
    lines = run(work, "b.key", "payments").stdout.strip().splitlines()
    assert json.loads(lines[0])["txid"] == txid and json.loads(lines[0])["from"] == alice and lines[-1].startswith("cursor ")
    # Signatures: an address's own verify; another message or address fails.
    sig = run(work, "a.key", "sign", "68656c6c6f").stdout.strip()
    assert run(work, "b.key", "verify", alice, "68656c6c6f", sig).returncode == 0
    assert run(work, "b.key", "verify", alice, "68656c6c6e", sig, check=False).returncode == 1
    assert run(work, "b.key", "verify", bob, "68656c6c6f", sig, check=False).returncode == 1
    # Bad input.
    assert run(work, "a.key", "pay", "not-an-address", "1", check=False).returncode != 0
    assert run(work, "a.key", "pay", bob, "1.5", check=False).returncode != 0


def test_payments_are_listed_only_in_the_configured_asset(tmp_path):
    """A debtor paying in another asset (worth anything or nothing) is not credited."""
    work = str(tmp_path)
    bob = run(work, "b.key", "address").stdout.strip()
    run(work, "a.key", "address", initial=1000, asset="JUNK")
    junk = run(work, "a.key", "pay", bob, "500", asset="JUNK").stdout.strip()
    run(work, "c.key", "address", initial=1000)
    real = run(work, "c.key", "pay", bob, "7").stdout.strip()
    listed = [json.loads(line) for line in run(work, "b.key", "payments").stdout.strip().splitlines()[:-1]]
    assert [p["txid"] for p in listed] == [real] and listed[0]["asset"] == "MASQ", listed
    # The same wallet configured for the other asset sees that one only.
    listed = [json.loads(line) for line in run(work, "b.key", "payments", asset="JUNK").stdout.strip().splitlines()[:-1]]
    assert [p["txid"] for p in listed] == [junk], listed
