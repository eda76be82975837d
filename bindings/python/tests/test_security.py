"""Sessions, pairing, encryption at rest and primitives through the Python
binding, and an independent cross-check with the `cryptography` package."""
import os
import pathlib

import pytest

import masq

cryptography = pytest.importorskip("cryptography", reason="pip install cryptography")
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402


def store_at(path, name, passphrase=None):
    config = {"data_dir": str(path), "security": {"scrypt_log_n": 10}}
    s = masq.Store.open_config(config)
    if passphrase:
        s.set_passphrase(None, passphrase)
    s.set_device_name(name)
    return s


# ---- independent cross-check ------------------------------------------------------------------

def test_x25519_matches_cryptography():
    for _ in range(20):
        a, b = os.urandom(32), X25519PrivateKey.generate()
        b_pub = b.public_key().public_bytes_raw()
        ours = masq.x25519(a, b_pub)
        theirs = b.exchange(X25519PublicKey.from_public_bytes(masq.x25519_public(a)))
        assert ours == theirs
        assert masq.x25519_public(a) == X25519PrivateKey.from_private_bytes(a).public_key().public_bytes_raw()


def test_hkdf_matches_cryptography():
    for length in (16, 32, 42, 100, 255 * 32):
        salt, ikm, info = os.urandom(16), os.urandom(40), os.urandom(10)
        theirs = HKDF(hashes.SHA256(), length, salt, info).derive(ikm)
        assert masq.hkdf_sha256(salt, ikm, info, length) == theirs


@pytest.mark.parametrize("algorithm, reference", [(masq.AEAD_CHACHA20_POLY1305, ChaCha20Poly1305),
                                                  (masq.AEAD_AES_256_GCM, AESGCM)])
def test_aead_matches_cryptography(algorithm, reference):
    for size in (0, 1, 64, 1000, 16384):
        key, nonce, ad, message = os.urandom(32), os.urandom(12), os.urandom(13), os.urandom(size)
        ours = masq.aead_seal(key, nonce, message, ad, algorithm)
        assert ours == reference(key).encrypt(nonce, message, ad)
        assert masq.aead_open(key, nonce, ours, ad, algorithm) == message
        with pytest.raises(masq.BadSignatureError):
            masq.aead_open(key, nonce, ours[:-1] + bytes([ours[-1] ^ 1]), ad, algorithm)


def test_ed25519_matches_cryptography():
    seed = os.urandom(32)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    signature = masq.ed25519_sign(seed, b"message")
    assert signature == key.sign(b"message")  # Ed25519 is deterministic
    key.public_key().verify(signature, b"message")
    public = key.public_key().public_bytes_raw()
    assert masq.ed25519_verify(public, b"message", signature)
    assert not masq.ed25519_verify(public, b"other", signature)


# ---- sessions ------------------------------------------------------------------------------------

def handshake(i, r, messages=3):
    sides = [(i, r), (r, i)]
    for k in range(messages):
        sender, receiver = sides[k % 2]
        assert receiver.read_handshake(sender.write_handshake(b"p%d" % k)) == b"p%d" % k


def test_session_kk_with_explicit_keys():
    a, b = os.urandom(32), os.urandom(32)
    i = masq.Session("KK", True, static_key=a, remote_static=masq.x25519_public(b))
    r = masq.Session("KK", False, static_key=b, remote_static=masq.x25519_public(a))
    assert i.state == "handshaking" and i.writes_next
    handshake(i, r, 2)
    assert i.state == r.state == "established"
    assert r.can_send and not i.can_send
    assert i.open(r.seal(b"first", b"ad"), b"ad") == b"first"
    m = i.seal(b"second")
    assert r.open(m) == b"second"
    with pytest.raises(masq.BadSignatureError):
        r.open(m)  # replay
    assert i.peer_key == masq.x25519_public(b)


def test_session_with_store_identity_save_and_load(tmp_path):
    s = store_at(tmp_path / "a", "a")
    psk, other = os.urandom(32), os.urandom(32)
    i = masq.Session("XXpsk3", True, store=s, psk=psk, prologue=b"demo")
    r = masq.Session("XXpsk3", False, static_key=other, psk=psk, prologue=b"demo")
    handshake(i, r)
    assert r.peer_fingerprint == s.device_info()["fingerprint"]
    i.open(r.seal(b"hello"))
    resumed = masq.Session.load(i.save())
    assert r.open(resumed.seal(b"after restart")) == b"after restart"
    with pytest.raises(masq.InvalidArgumentError):
        masq.Session.load(b"\x01garbage")
    s.close()


def test_session_wrong_psk_fails():
    a, b = os.urandom(32), os.urandom(32)
    i = masq.Session("XXpsk3", True, static_key=a, psk=os.urandom(32))
    r = masq.Session("XXpsk3", False, static_key=b, psk=os.urandom(32))
    r.read_handshake(i.write_handshake())
    i.read_handshake(r.write_handshake())
    with pytest.raises(masq.BadSignatureError):
        r.read_handshake(i.write_handshake())
    assert r.state == "failed"
    with pytest.raises(masq.InvalidArgumentError):
        masq.Session("NOPE", True, static_key=a)


# ---- pairing, devices, encryption at rest ------------------------------------------------------------

def run_pairing(offerer, joiner):
    offer = offerer.pairing_offer(via="tcp:127.0.0.1:9")
    assert offer.link.startswith("masq://pair/") and "#" in offer.link
    join = joiner.pairing_join(offer.link)
    frame = join.start()
    while True:
        reply, done_o = offer.receive(frame)
        frame, done_j = join.receive(reply)
        if done_o and done_j:
            return offer, join


def test_pairing_devices_and_messages(tmp_path):
    a = store_at(tmp_path / "a", "laptop", passphrase="pw")
    b = store_at(tmp_path / "b", "phone")
    offer, join = run_pairing(a, b)
    a_id, b_id = a.device_info()["device_id"], b.device_info()["device_id"]
    assert offer.peer["device_id"] == b_id and join.peer["name"] == "laptop"
    assert [d["device_id"] for d in a.devices()] == [b_id]
    assert b.devices()[0]["fingerprint"] == a.device_info()["fingerprint"]
    message = a.seal_for_device(b_id, b"synced value", b"room")
    assert b.open_from_device(a_id, message, b"room") == b"synced value"
    reply = b.seal_for_device(a_id, b"ack")
    assert a.open_from_device(b_id, reply) == b"ack"
    # Reopened (as a copy restored from a backup would be), a store renews before it seals.
    a.close()
    a = masq.Store.open_config({"data_dir": str(tmp_path / "a"), "security": {"scrypt_log_n": 10}})
    a.unlock("pw")
    with pytest.raises(masq.DeniedError) as e:
        a.seal_for_device(b_id, b"x")
    assert "renew" in str(e.value)
    a.renew_complete(b_id, b.renew_answer(a_id, a.renew_begin(b_id)))
    assert a.open_from_device(b_id, b.seal_for_device(a_id, b"first on the new session")) == b"first on the new session"
    assert b.open_from_device(a_id, a.seal_for_device(b_id, b"and back")) == b"and back"
    a.remove_device(b_id)
    with pytest.raises(masq.NotFoundError):
        a.seal_for_device(b_id, b"x")
    a.close()
    b.close()


def test_wrong_link_is_refused_and_stores_nothing(tmp_path):
    a, b = store_at(tmp_path / "a", "a"), store_at(tmp_path / "b", "b")
    offer = a.pairing_offer()
    stranger = store_at(tmp_path / "c", "c").pairing_offer()  # a valid link to someone else
    join = b.pairing_join(stranger.link)
    with pytest.raises(masq.DeniedError) as info:
        offer.receive(join.start())
    assert info.value.reply is not None
    with pytest.raises(masq.DeniedError):
        join.receive(info.value.reply)
    assert a.devices() == [] and b.devices() == []
    with pytest.raises(masq.InvalidArgumentError):
        b.pairing_join("masq://pair/abc")


def test_encryption_at_rest(tmp_path):
    path = tmp_path / "vault"
    s = store_at(path, "v", passphrase="correct horse")
    s.put("diary", "day1", "a private thought")
    assert s.protected and not s.locked
    s.close()
    raw = b"".join(p.read_bytes() for p in pathlib.Path(path).iterdir() if p.is_file())
    assert b"a private thought" not in raw and b"diary" not in raw
    s = masq.Store.open_config({"data_dir": str(path)})
    assert s.locked
    with pytest.raises(masq.DeniedError):
        s.get("diary", "day1")
    with pytest.raises(masq.DeniedError):
        s.unlock("wrong horse")
    s.unlock("correct horse")
    assert s.get("diary", "day1") == b"a private thought"
    s.set_passphrase("correct horse", "battery staple")
    s.lock()
    s.unlock("battery staple")
    s.close()


def test_qr_code_image():
    image = masq.qr_pgm("masq://pair/x#y", 4)
    assert image.startswith(b"P5\n")
