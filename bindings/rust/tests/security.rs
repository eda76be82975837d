//! Primitives (checked against RFC and NIST vectors), crypto sessions,
//! pairing by frames, devices and encryption at rest.

mod common;

use std::time::Duration;

use common::{run_pairing, TempDir};
use masq::crypto::{self, Aead};
use masq::{Config, ErrorKind, Role, Session, SessionOptions, SessionState, Store};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn array<const N: usize>(s: &str) -> [u8; N] {
    let v = hex(s);
    let mut out = [0u8; N];
    out.copy_from_slice(&v);
    out
}

fn store_at(dir: &std::path::Path, name: &str, passphrase: Option<&str>) -> Store {
    let store = Store::open_with(&Config::new().data_dir(dir).scrypt_log_n(10)).unwrap();
    if let Some(p) = passphrase {
        store.set_passphrase(p).unwrap();
    }
    store.set_device_name(name).unwrap();
    store
}

// ---- primitives: known answers ------------------------------------------------------------------

#[test]
fn x25519_rfc7748() {
    let alice: [u8; 32] = array("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob: [u8; 32] = array("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let alice_public = crypto::x25519_public(&alice).unwrap();
    let bob_public = crypto::x25519_public(&bob).unwrap();
    assert_eq!(alice_public.to_vec(), hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
    assert_eq!(bob_public.to_vec(), hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
    let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(crypto::x25519(&alice, &bob_public).unwrap().to_vec(), shared);
    assert_eq!(crypto::x25519(&bob, &alice_public).unwrap().to_vec(), shared);
    // A low-order point gives the all-zero secret, which is refused.
    assert_eq!(crypto::x25519(&alice, &[0u8; 32]).unwrap_err().kind(), ErrorKind::Invalid);
}

#[test]
fn ed25519_rfc8032() {
    let seed: [u8; 32] = array("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let public: [u8; 32] = array("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let signature = crypto::ed25519_sign(&seed, b"").unwrap();
    assert_eq!(
        signature.to_vec(),
        hex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    );
    assert!(crypto::ed25519_verify(&public, b"", &signature).unwrap());
    assert!(!crypto::ed25519_verify(&public, b"x", &signature).unwrap());
    assert!(!crypto::ed25519_verify(&public, b"", &signature[..63]).unwrap_or(false));
}

#[test]
fn hkdf_rfc5869() {
    let salt: Vec<u8> = (0u8..=0x0c).collect();
    let info: Vec<u8> = (0xf0u8..=0xf9).collect();
    let okm = crypto::hkdf_sha256(&salt, &[0x0b; 22], &info, 42).unwrap();
    assert_eq!(okm, hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
    assert_eq!(crypto::hkdf_sha256(&salt, b"k", b"", 8160).unwrap().len(), 8160);
    assert_eq!(crypto::hkdf_sha256(&salt, b"k", b"", 8161).unwrap_err().kind(), ErrorKind::Invalid);
    assert_eq!(crypto::hkdf_sha256(&salt, b"k", b"", 0).unwrap_err().kind(), ErrorKind::Invalid);
}

#[test]
fn chacha20_poly1305_rfc8439() {
    let key: [u8; 32] = array("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 12] = array("070000004041424344454647");
    let ad = hex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let sealed = crypto::aead_seal(Aead::ChaCha20Poly1305, &key, &nonce, &ad, plaintext).unwrap();
    let expected = hex(concat!(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b",
        "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc",
        "3ff4def08e4b7a9de576d26586cec64b6116",
        "1ae10b594f09e26a7e902ecbd0600691"
    ));
    assert_eq!(sealed, expected);
    assert_eq!(crypto::aead_open(Aead::ChaCha20Poly1305, &key, &nonce, &ad, &sealed).unwrap(), plaintext.to_vec());
    let mut tampered = sealed.clone();
    tampered[0] ^= 1;
    assert_eq!(
        crypto::aead_open(Aead::ChaCha20Poly1305, &key, &nonce, &ad, &tampered).unwrap_err().kind(),
        ErrorKind::BadSignature
    );
    assert_eq!(
        crypto::aead_open(Aead::ChaCha20Poly1305, &key, &nonce, &ad, &sealed[..15]).unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn aes_256_gcm_test_case_16() {
    let key: [u8; 32] = array("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let nonce: [u8; 12] = array("cafebabefacedbaddecaf888");
    let plaintext = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
    let ad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let sealed = crypto::aead_seal(Aead::Aes256Gcm, &key, &nonce, &ad, &plaintext).unwrap();
    let expected = hex(concat!(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b"
    ));
    assert_eq!(sealed, expected);
    assert_eq!(crypto::aead_open(Aead::Aes256Gcm, &key, &nonce, &ad, &sealed).unwrap(), plaintext);
    assert_eq!(
        crypto::aead_open(Aead::Aes256Gcm, &key, &nonce, b"other ad", &sealed).unwrap_err().kind(),
        ErrorKind::BadSignature
    );
    // Empty plaintext: just the tag.
    assert_eq!(crypto::aead_seal(Aead::Aes256Gcm, &key, &nonce, b"", b"").unwrap().len(), 16);
}

#[test]
fn randomness() {
    let a = crypto::random_bytes(32).unwrap();
    let b = crypto::random_bytes(32).unwrap();
    assert_ne!(a, b);
    let mut buffer = [0u8; 0];
    crypto::fill_random(&mut buffer).unwrap();
}

// ---- sessions -----------------------------------------------------------------------------------

fn handshake(i: &mut Session, r: &mut Session, messages: usize) {
    for k in 0..messages {
        let payload = format!("p{}", k).into_bytes();
        let (sender, receiver) = if k % 2 == 0 { (&mut *i, &mut *r) } else { (&mut *r, &mut *i) };
        let message = sender.write_handshake(&payload).unwrap();
        assert_eq!(receiver.read_handshake(&message).unwrap(), payload);
    }
}

#[test]
fn session_kk_with_explicit_keys() {
    let a: [u8; 32] = crypto::random_bytes(32).unwrap().try_into().unwrap();
    let b: [u8; 32] = crypto::random_bytes(32).unwrap().try_into().unwrap();
    let a_public = crypto::x25519_public(&a).unwrap();
    let b_public = crypto::x25519_public(&b).unwrap();
    let mut i = Session::new(None, &SessionOptions::new("KK", Role::Initiator).static_key(&a).remote_static(&b_public))
        .unwrap();
    let mut r = Session::new(None, &SessionOptions::new("KK", Role::Responder).static_key(&b).remote_static(&a_public))
        .unwrap();
    let status = i.status().unwrap();
    assert_eq!(status.state, SessionState::Handshaking);
    assert!(status.write_next);
    handshake(&mut i, &mut r, 2);
    assert_eq!(i.status().unwrap().state, SessionState::Established);
    assert!(r.status().unwrap().can_send && !i.status().unwrap().can_send, "the responder sends first");
    let first = r.seal(b"first", b"ad").unwrap();
    assert_eq!(i.open(&first, b"ad").unwrap(), b"first");
    let second = i.seal(b"second", b"").unwrap();
    assert_eq!(r.open(&second, b"").unwrap(), b"second");
    assert_eq!(r.open(&second, b"").unwrap_err().kind(), ErrorKind::BadSignature, "a replay");
    assert_eq!(i.peer_key().unwrap(), b_public);
}

#[test]
fn session_with_the_store_identity_saved_and_loaded() {
    let dir = TempDir::new("session");
    let store = store_at(dir.path(), "a", None);
    let psk = crypto::random_bytes(32).unwrap();
    let other: [u8; 32] = crypto::random_bytes(32).unwrap().try_into().unwrap();
    let mut i = Session::new(Some(&store), &SessionOptions::new("XXpsk3", Role::Initiator).psk(&psk).prologue(b"demo"))
        .unwrap();
    let mut r = Session::new(
        None,
        &SessionOptions::new("XXpsk3", Role::Responder).static_key(&other).psk(&psk).prologue(b"demo"),
    )
    .unwrap();
    handshake(&mut i, &mut r, 3);
    assert_eq!(r.peer_fingerprint().unwrap(), store.device_info().unwrap().fingerprint);
    let hello = r.seal(b"hello", b"").unwrap();
    i.open(&hello, b"").unwrap();
    let state = i.save().unwrap();
    drop(i);
    let mut resumed = Session::load(&state).unwrap();
    let after = resumed.seal(b"after restart", b"").unwrap();
    assert_eq!(r.open(&after, b"").unwrap(), b"after restart");
    assert_eq!(Session::load(b"\x01garbage").unwrap_err().kind(), ErrorKind::Invalid);
    // The session does not keep the store.
    store.close().unwrap();
    assert_eq!(resumed.open(&r.seal(b"still", b"").unwrap(), b"").unwrap(), b"still");
}

#[test]
fn session_wrong_psk_and_bad_options() {
    let a: [u8; 32] = crypto::random_bytes(32).unwrap().try_into().unwrap();
    let b: [u8; 32] = crypto::random_bytes(32).unwrap().try_into().unwrap();
    let (p1, p2) = (crypto::random_bytes(32).unwrap(), crypto::random_bytes(32).unwrap());
    let mut i = Session::new(None, &SessionOptions::new("XXpsk3", Role::Initiator).static_key(&a).psk(&p1)).unwrap();
    let mut r = Session::new(None, &SessionOptions::new("XXpsk3", Role::Responder).static_key(&b).psk(&p2)).unwrap();
    r.read_handshake(&i.write_handshake(b"").unwrap()).unwrap();
    i.read_handshake(&r.write_handshake(b"").unwrap()).unwrap();
    let third = i.write_handshake(b"").unwrap();
    assert_eq!(r.read_handshake(&third).unwrap_err().kind(), ErrorKind::BadSignature);
    assert_eq!(r.status().unwrap().state, SessionState::Failed);

    let e = Session::new(None, &SessionOptions::new("NOPE", Role::Initiator).static_key(&a)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains("NOPE"), "{}", e);
    assert_eq!(
        Session::new(None, &SessionOptions::new("XX\0", Role::Initiator)).unwrap_err().kind(),
        ErrorKind::Invalid
    );
    // No static key and no store: refused.
    assert!(Session::new(None, &SessionOptions::new("NN", Role::Initiator).remote_static(&[1u8; 5])).is_err());
}

// ---- pairing, devices, encryption at rest ---------------------------------------------------------

#[test]
fn pairing_devices_and_messages() {
    let dir = TempDir::new("pairing");
    let a = store_at(&dir.join("a"), "laptop", Some("pw"));
    let b = store_at(&dir.join("b"), "phone", None);
    let (a_id, b_id) = (a.device_info().unwrap().device_id, b.device_info().unwrap().device_id);
    {
        let (offer, join) = run_pairing(&a, &b);
        assert!(offer.is_paired() && join.is_paired());
        assert_eq!(offer.peer().unwrap().device_id, b_id);
        assert_eq!(join.peer().unwrap().name, "laptop");
    }
    let devices = a.devices().unwrap();
    assert_eq!(devices.iter().map(|d| d.device_id.clone()).collect::<Vec<_>>(), vec![b_id.clone()]);
    assert!(devices[0].paired_at.unwrap() > 0);
    assert_eq!(b.devices().unwrap()[0].fingerprint, a.device_info().unwrap().fingerprint);
    assert!(a.device_info().unwrap().paired_at.is_none());
    assert!(a.devices_json().unwrap().starts_with('['));

    let message = a.seal_for_device(&b_id, b"synced value", b"room").unwrap();
    assert_eq!(b.open_from_device(&a_id, &message, b"room").unwrap(), b"synced value");
    assert_eq!(b.open_from_device(&a_id, &message, b"room").unwrap_err().kind(), ErrorKind::BadSignature);
    let reply = b.seal_for_device(&a_id, b"ack", b"").unwrap();
    assert_eq!(a.open_from_device(&b_id, &reply, b"").unwrap(), b"ack");

    // Reopened (as a copy restored from a backup would be), a store renews before it seals.
    a.close().unwrap();
    let a = Store::open_with(&Config::new().data_dir(dir.join("a")).scrypt_log_n(10)).unwrap();
    a.unlock("pw").unwrap();
    let e = a.seal_for_device(&b_id, b"x", b"").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied);
    assert!(e.message().contains("renew"), "{}", e);
    let begin = a.renew_begin(&b_id).unwrap();
    let answer = b.renew_answer(&a_id, &begin).unwrap();
    a.renew_complete(&b_id, &answer).unwrap();
    let first = b.seal_for_device(&a_id, b"first on the new session", b"").unwrap();
    assert_eq!(a.open_from_device(&b_id, &first, b"").unwrap(), b"first on the new session");
    let back = a.seal_for_device(&b_id, b"and back", b"").unwrap();
    assert_eq!(b.open_from_device(&a_id, &back, b"").unwrap(), b"and back");
    a.remove_device(&b_id).unwrap();
    assert_eq!(a.seal_for_device(&b_id, b"x", b"").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(a.remove_device(&b_id).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_wrong_link_is_refused_and_stores_nothing() {
    let dir = TempDir::new("wrong-link");
    let a = store_at(&dir.join("a"), "a", None);
    let b = store_at(&dir.join("b"), "b", None);
    let c = store_at(&dir.join("c"), "c", None);
    let mut offer = a.pairing_offer(None, Duration::from_secs(60)).unwrap();
    let stranger = c.pairing_offer(None, Duration::from_secs(60)).unwrap(); // a valid link to someone else
    let mut join = b.pairing_join(stranger.link().unwrap()).unwrap();
    let refusal = offer.receive(&join.start().unwrap()).unwrap_err();
    assert_eq!(refusal.error.kind(), ErrorKind::Denied);
    let reply = refusal.reply.expect("a refusal frame for the other side");
    let told = join.receive(&reply).unwrap_err();
    assert_eq!(told.error.kind(), ErrorKind::Denied);
    assert!(a.devices().unwrap().is_empty() && b.devices().unwrap().is_empty());
    assert_eq!(b.pairing_join("masq://pair/abc").unwrap_err().kind(), ErrorKind::Invalid);
    // A refusal converts into the crate's Error with `?`.
    fn convert(r: Result<masq::Received, masq::Refusal>) -> masq::Result<masq::Received> {
        Ok(r?)
    }
    let e: masq::Error = convert(offer.receive(b"junk")).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Invalid | ErrorKind::Denied | ErrorKind::BadSignature), "{}", e);
}

#[test]
fn encryption_at_rest() {
    let dir = TempDir::new("vault");
    let path = dir.join("vault");
    let store = store_at(&path, "v", Some("correct horse"));
    store.put("diary", "day1", "a private thought").unwrap();
    let p = store.protection().unwrap();
    assert!(p.protected && !p.locked);
    store.close().unwrap();
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            raw.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"a private thought") && !contains(b"diary"), "nothing in clear on disk");

    let store = Store::open_with(&Config::new().data_dir(&path)).unwrap();
    assert!(store.protection().unwrap().locked);
    assert_eq!(store.get("diary", "day1").unwrap_err().kind(), ErrorKind::Denied);
    assert_eq!(store.device_info().unwrap_err().kind(), ErrorKind::Denied);
    assert_eq!(store.unlock("wrong horse").unwrap_err().kind(), ErrorKind::Denied);
    store.unlock("correct horse").unwrap();
    assert_eq!(store.get("diary", "day1").unwrap().unwrap(), b"a private thought");
    assert_eq!(store.change_passphrase("not it", "x").unwrap_err().kind(), ErrorKind::Denied);
    store.change_passphrase("correct horse", "battery staple").unwrap();
    store.lock().unwrap();
    assert_eq!(store.get("diary", "day1").unwrap_err().kind(), ErrorKind::Denied);
    store.unlock("battery staple").unwrap();
    store.remove_passphrase("battery staple").unwrap();
    assert!(!store.protection().unwrap().protected);
    assert_eq!(store.unlock("anything").unwrap_err().kind(), ErrorKind::Invalid, "no passphrase to check");
    store.lock().unwrap(); // no-op on an unprotected store
    assert_eq!(store.get("diary", "day1").unwrap().unwrap(), b"a private thought");
}

#[test]
fn qr_code_image() {
    let image = masq::qr_pgm("masq://pair/x#y", 4).unwrap();
    assert!(image.starts_with(b"P5\n"));
    assert_eq!(masq::qr_pgm("a\0b", 4).unwrap_err().kind(), ErrorKind::Invalid);
}
