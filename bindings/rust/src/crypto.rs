//! The library's primitives (OpenSSL 3 underneath): randomness, X25519,
//! Ed25519, HKDF-SHA256 and AEAD. All thread-safe.

use crate::error::{check, Error, Result};
use crate::sys;

/// AEAD algorithms (`MASQ_AEAD_*`); both take a 32-byte key and a 12-byte
/// nonce and add a 16-byte tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// ChaCha20-Poly1305 (RFC 8439).
    ChaCha20Poly1305,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl Aead {
    fn code(self) -> i32 {
        match self {
            Aead::ChaCha20Poly1305 => sys::MASQ_AEAD_CHACHA20_POLY1305,
            Aead::Aes256Gcm => sys::MASQ_AEAD_AES_256_GCM,
        }
    }
}

/// Length of the AEAD tag appended to every ciphertext.
pub const AEAD_TAG_LEN: usize = 16;

/// Fill `out` with cryptographically secure random bytes.
pub fn fill_random(out: &mut [u8]) -> Result<()> {
    // SAFETY: out.len() writable bytes.
    check(unsafe { sys::masq_crypto_random(out.as_mut_ptr(), out.len()) })
}

/// `len` cryptographically secure random bytes.
pub fn random_bytes(len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    fill_random(&mut out)?;
    Ok(out)
}

/// The X25519 public key of a private key.
pub fn x25519_public(private_key: &[u8; 32]) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    // SAFETY: 32 readable and 32 writable bytes.
    check(unsafe { sys::masq_crypto_x25519_public(private_key.as_ptr(), out.as_mut_ptr()) })?;
    Ok(out)
}

/// The X25519 shared secret; `ErrorKind::Invalid` for a low-order peer key.
pub fn x25519(private_key: &[u8; 32], peer_public: &[u8; 32]) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    // SAFETY: 32-byte inputs and output.
    check(unsafe { sys::masq_crypto_x25519(private_key.as_ptr(), peer_public.as_ptr(), out.as_mut_ptr()) })?;
    Ok(out)
}

/// The Ed25519 signature of `message` by the key whose 32-byte seed is `private_key`.
pub fn ed25519_sign(private_key: &[u8; 32], message: &[u8]) -> Result<[u8; 64]> {
    let mut out = [0u8; 64];
    // SAFETY: valid buffers; 64 writable bytes.
    check(unsafe {
        sys::masq_crypto_ed25519_sign(private_key.as_ptr(), message.as_ptr(), message.len(), out.as_mut_ptr())
    })?;
    Ok(out)
}

/// Whether `signature` is `public_key`'s Ed25519 signature over `message`.
pub fn ed25519_verify(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<bool> {
    // SAFETY: valid buffers.
    let status = unsafe {
        sys::masq_crypto_ed25519_verify(
            public_key.as_ptr(),
            message.as_ptr(),
            message.len(),
            signature.as_ptr(),
            signature.len(),
        )
    };
    if status == sys::MASQ_E_BAD_SIGNATURE {
        return Ok(false);
    }
    check(status)?;
    Ok(true)
}

/// HKDF-SHA256 (RFC 5869): `len` (1..=8160) bytes.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    // SAFETY: valid buffers; len writable bytes (a 0 length is refused by the library).
    check(unsafe {
        sys::masq_crypto_hkdf_sha256(
            salt.as_ptr(),
            salt.len(),
            ikm.as_ptr(),
            ikm.len(),
            info.as_ptr(),
            info.len(),
            out.as_mut_ptr(),
            len,
        )
    })?;
    Ok(out)
}

/// AEAD seal: ciphertext || 16-byte tag.
pub fn aead_seal(algorithm: Aead, key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; plaintext.len() + AEAD_TAG_LEN];
    // SAFETY: fixed-size key and nonce; out holds plaintext_len + 16 bytes.
    check(unsafe {
        sys::masq_crypto_aead_seal(
            algorithm.code(),
            key.as_ptr(),
            nonce.as_ptr(),
            ad.as_ptr(),
            ad.len(),
            plaintext.as_ptr(),
            plaintext.len(),
            out.as_mut_ptr(),
        )
    })?;
    Ok(out)
}

/// AEAD open of ciphertext || tag. `ErrorKind::BadSignature` if the tag does
/// not verify; `ErrorKind::Invalid` for input shorter than the tag.
pub fn aead_open(algorithm: Aead, key: &[u8; 32], nonce: &[u8; 12], ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < AEAD_TAG_LEN {
        return Err(Error::invalid(format!("sealed input is {} bytes, shorter than the 16-byte tag", sealed.len())));
    }
    let mut out = vec![0u8; sealed.len() - AEAD_TAG_LEN];
    // SAFETY: fixed-size key and nonce; out holds in_len - 16 bytes.
    check(unsafe {
        sys::masq_crypto_aead_open(
            algorithm.code(),
            key.as_ptr(),
            nonce.as_ptr(),
            ad.as_ptr(),
            ad.len(),
            sealed.as_ptr(),
            sealed.len(),
            out.as_mut_ptr(),
        )
    })?;
    Ok(out)
}
