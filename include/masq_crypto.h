/*
 * masq_crypto.h — Masq's cryptographic primitives (all OpenSSL 3), for
 * language bindings and tests that check Masq's wire formats against other
 * implementations.
 *
 * UNSTABLE: unlike masq.h, these declarations are not part of Masq's stable
 * ABI. They may change or go in any release; an application should use the
 * store, sessions and sync of masq.h, never these directly. (As SQLite keeps
 * its test hooks apart from sqlite3.h.) The functions live in libmasq.so and
 * return masq.h's status codes; every one is thread-safe.
 */
#ifndef MASQ_CRYPTO_H
#define MASQ_CRYPTO_H

#include "masq.h"

#ifdef __cplusplus
extern "C" {
#endif


#define MASQ_AEAD_CHACHA20_POLY1305 1
#define MASQ_AEAD_AES_256_GCM 2

/** len cryptographically secure random bytes. Thread-safe (all below too). */
int masq_crypto_random(uint8_t *out, size_t len);

/** X25519 public key of a 32-byte private key. */
int masq_crypto_x25519_public(const uint8_t private_key[32], uint8_t public_out[32]);

/** X25519 shared secret; MASQ_E_INVALID for a low-order peer key (all-zero result). */
int masq_crypto_x25519(const uint8_t private_key[32], const uint8_t peer_public[32], uint8_t shared_out[32]);

/** Ed25519 signature of msg (64 bytes into sig_out). */
int masq_crypto_ed25519_sign(const uint8_t private_key[32], const uint8_t *msg, size_t msg_len, uint8_t sig_out[64]);

/** MASQ_OK if sig is public_key's signature over msg, MASQ_E_BAD_SIGNATURE if not. */
int masq_crypto_ed25519_verify(const uint8_t public_key[32], const uint8_t *msg, size_t msg_len,
                               const uint8_t *sig, size_t sig_len);

/** HKDF-SHA256 (RFC 5869) into out (1..8160 bytes). */
int masq_crypto_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                            const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/** AEAD seal: out receives plaintext_len + 16 bytes (ciphertext || tag).
 *  32-byte key, 12-byte nonce. */
int masq_crypto_aead_seal(int algorithm, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                          size_t ad_len, const uint8_t *plaintext, size_t plaintext_len, uint8_t *out);

/** AEAD open of ciphertext || tag (in_len >= 16): out receives in_len - 16
 *  bytes. MASQ_E_BAD_SIGNATURE if the tag does not verify. */
int masq_crypto_aead_open(int algorithm, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                          size_t ad_len, const uint8_t *in, size_t in_len, uint8_t *out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MASQ_CRYPTO_H */
