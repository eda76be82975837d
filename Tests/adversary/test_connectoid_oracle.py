"""A hostile mailbox service uses the kernel as a decryption oracle.

`check` returns a `question` the client must open with its mailbox key and
post back as `answer`. If the kernel opens whatever it is handed with the
same construction messages are sealed with, a service that hands out a
stored envelope of that mailbox as the "question" gets the envelope's
plaintext back as the answer: CLAIMs (with the link proof), RECORDS (the
namespace's keys and values), ACKs — everything Connectoid promises the
service never sees.

The hostile service (hostile_service.py) carries a real share between two
`masq sync` processes, then, for a while and for every mailbox, answers every
other `check` with one of the envelopes sent to that same mailbox while
Alice and Bob keep writing values that contain a recognisable secret. The
test then looks at everything the service received: every `answer` must be
32 bytes, and no request body may contain envelope plaintext (the envelope
header, its JSON body, the secret at any depth of base64url nesting).

The control shows the test is not vacuous: with genuine questions in the
domain-separated format, the service does get correct 32-byte answers.
"""
import base64
import json
import os
import re
import time

import pytest

from hostile_service import HostileService, mailbox_name, namespace_items, use_service
from support import Device, Processes, masq, start_sync, wait_for

TOKEN = re.compile(rb"[A-Za-z0-9_-]{22,}")


def unb64(text: bytes):
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except Exception:
        return None


def plaintext_markers(secret: bytes):
    """Patterns of an envelope's plaintext (its body is JSON, whatever the spacing)."""
    def field(name):
        return re.compile(rb'"' + name + rb'"\s*:\s*"')
    return {
        "the secret value": re.compile(re.escape(secret)),
        "an envelope's JSON \"type\"": field(b"type"),
        "an envelope's JSON \"share\"": field(b"share"),
        "an envelope's JSON \"inbox\"": field(b"inbox"),
        "a RECORDS body": field(b"records"),
        "a claim/welcome proof": field(b"proof"),
    }


def exposures(blob: bytes, markers, depth=0):
    """What of an envelope's plaintext `blob` reveals: markers found in it or in
    any base64url token inside it (recursively: the secret sits in a sync frame,
    base64url inside the envelope's JSON, base64url inside the request's JSON)."""
    found = {name for name, marker in markers.items() if marker.search(blob)}
    # The envelope itself: 0x01 ‖ 49 ‖ compressed signer key, padded (u32 length first) or not.
    for offset in (0, 4):
        if depth > 0 and blob[offset:offset + 2] == b"\x01\x31" and blob[offset + 2:offset + 3] in (b"\x02", b"\x03") \
                and len(blob) >= offset + 2 + 49 + 2:
            found.add("an envelope header (version 1, a 49-byte signer key)")
    if depth < 3:
        for token in TOKEN.findall(blob):
            decoded = unb64(token)
            if decoded:
                found |= exposures(decoded, markers, depth + 1)
    return found


def describe_leak(answer: bytes, secret: bytes):
    """What one leaked answer (a padded envelope plaintext) says, in a line."""
    n = int.from_bytes(answer[:4], "big")
    envelope = answer[4:4 + n] if 0 < n <= len(answer) - 4 else answer
    start = envelope.find(b"{")
    try:
        body = json.loads(envelope[start:])
    except ValueError:
        return None
    line = f"an answer of {len(answer)} bytes is the plaintext of a {body.get('type')!r} envelope (seq {body.get('seq')})"
    if body.get("records"):
        values = sorted(set(re.findall(re.escape(secret) + rb"[-\w]*", unb64(body["records"].encode()) or b"")))
        if values:
            line += f" whose records carry {b', '.join(values).decode()}"
    if body.get("proof"):
        line += f" with the link proof {body['proof']}"
    return line


def setup_share(procs, service, secret_value):
    """Alice shares "notes" (holding the secret) through `service` only; Bob accepts as "bobnotes"."""
    alice, bob = Device(procs.workdir, "alice"), Device(procs.workdir, "bob")
    for device in (alice, bob):
        use_service(device, service.url)
    bob.put("bobprivate", "mine", "not shared")          # Bob's own log is not empty
    alice.put("notes", "secret", secret_value)
    out = masq("share", "--config", alice.config, "notes", "--no-qr").stdout
    link = next(line for line in out.splitlines() if line.startswith("masq://share/"))
    start_sync(procs, alice)
    accepted = masq("accept", "--config", bob.config, link, "--as", "bobnotes", "--wait", "15", check=False, timeout=45)
    return alice, bob, link, accepted


@pytest.fixture
def procs(tmp_path):
    p = Processes(str(tmp_path))
    yield p
    p.stop_all()


def test_service_cannot_read_envelopes_by_handing_them_out_as_questions(procs):
    service = HostileService("auto")                     # genuine questions in whichever format the client answers
    try:
        secret = "oracle-secret-" + os.urandom(8).hex()
        markers = plaintext_markers(secret.encode())
        # The detector finds what a leaked answer would carry (a self-check, so a pass means something).
        frame = b"\x01\x04" + secret.encode()
        body = json.dumps({"type": "records", "share": "S", "seq": 3, "inbox": "I",
                           "records": base64.urlsafe_b64encode(frame).rstrip(b"=").decode()}).encode()
        sample = len(body).to_bytes(4, "big") + b"\x01\x31\x02" + b"\x00" * 48 + b"\x00\x46" + b"\x00" * 70 + body
        sample_request = json.dumps({"action": "receive", "answer": base64.urlsafe_b64encode(sample).rstrip(b"=").decode()}).encode()
        assert {"the secret value", "a RECORDS body", "an envelope header (version 1, a 49-byte signer key)"} <= exposures(sample_request, markers)

        alice, bob, link, accepted = setup_share(procs, service, secret + "-initial")
        assert accepted.returncode == 0, f"Bob could not accept through the hostile service: {accepted.stdout}{accepted.stderr}"
        start_sync(procs, bob)
        bob.put("bobnotes", "hello", "from bob")
        wait_for(20, "Bob's write reaching Alice", lambda: alice.get("notes", "hello") == "from bob")
        alice.put("notes", "hello-back", "from alice")
        wait_for(20, "Alice's write reaching Bob", lambda: bob.get("bobnotes", "hello-back") == "from alice")

        # The attack: for a while, every other check of every mailbox gets one of its envelopes as the question.
        attack = time.monotonic()
        service.oracle = True
        for i in range(8):
            alice.put("notes", f"a{i}", f"{secret}-alice-{i}")
            bob.put("bobnotes", f"b{i}", f"{secret}-bob-{i}")
            time.sleep(1)
        service.oracle = False
        ended = time.monotonic()

        # The attack was real: envelopes handed out as questions in the mailboxes both
        # sides poll (the link's, holding Bob's CLAIM; the rotated ones, RECORDS and ACKs).
        handed = service.questions_since(attack, kind="envelope")
        asked = {q["mailbox"] for q in handed if q["t"] < ended}
        assert len(asked) >= 2, f"the service could hand out envelopes as questions only in {[mailbox_name(m) for m in asked]}"
        # Sharing went on (the last writes of the attack window arrive once it ends).
        wait_for(25, "the attack window's writes converging",
                 lambda: bob.get("bobnotes", "a7") == f"{secret}-alice-7" and alice.get("notes", "b7") == f"{secret}-bob-7")
        procs.stop_all()

        # Everything the service ever received.
        answers = service.answers_since(0)
        odd = [a for a in answers if a["answer"] is None or len(a["answer"]) != 32]
        leaked = []
        for r in service.requests_since(0):
            found = exposures(r["raw"], markers)
            if found:
                leaked.append((r, found))
        summary = {}
        for _, found in leaked:
            for name in found:
                summary[name] = summary.get(name, 0) + 1
        described = [d for d in (describe_leak(a["answer"] or b"", secret.encode()) for a in odd) if d]
        described.sort(key=lambda d: " carry " not in d)            # one that carries the secret first
        example = "; e.g. " + described[0] if described else ""
        if odd or leaked:
            pytest.fail(
                f"the service read envelope plaintext through the challenge answers: {len(odd)} of {len(answers)} answers are not "
                f"32 bytes (sizes {sorted({len(a['answer'] or b'') for a in odd})[:8]}, "
                f"{sum(1 for a in odd if a['kind'] == 'envelope')} of them answering envelopes handed out as questions); "
                f"{len(leaked)} request bodies reveal plaintext: {summary}{example}")
    finally:
        service.stop()


def test_control_genuine_new_format_questions_get_correct_32_byte_answers(procs):
    """Not vacuous: questions in the new, domain-separated format are answered,
    correctly, with 32 bytes (and a share works on them alone)."""
    service = HostileService("new")
    try:
        alice, bob, link, accepted = setup_share(procs, service, "control-" + os.urandom(4).hex())
        wait_for(5, "a correct 32-byte answer to a genuine new-format question",
                 lambda: any(a["correct"] and a["kind"] == "new" and len(a["answer"]) == 32 for a in service.answers_since(0)))
        assert accepted.returncode == 0, f"accept through new-format questions failed: {accepted.stdout}{accepted.stderr}"
        items = namespace_items(bob, "bobnotes")
        assert items and items.get("secret", "").startswith("control-"), f"Bob did not receive the share: {items}"
        wrong = [a for a in service.answers_since(0) if not a["correct"]]
        assert not wrong, f"{len(wrong)} answers to genuine questions were wrong"
    finally:
        service.stop()
