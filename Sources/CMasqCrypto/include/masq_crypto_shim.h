/*
 * Thin C layer over OpenSSL 3 (libcrypto) for the kernel's crypto. Every
 * primitive is OpenSSL's; this file only turns EVP/OSSL_PARAM plumbing into
 * flat functions Swift can call. Prefixed masqcrypto_ so libmasq.so's export
 * list (masq_*) keeps them private.
 *
 * Return values: 0 success; -1 failure (bad input or OpenSSL error);
 * -2 authentication failure (AEAD tag, signature) where noted.
 */
#ifndef MASQ_CRYPTO_SHIM_H
#define MASQ_CRYPTO_SHIM_H

#include <stddef.h>
#include <stdint.h>

#define MASQCRYPTO_OK 0
#define MASQCRYPTO_ERR (-1)
#define MASQCRYPTO_AUTH (-2)

#define MASQCRYPTO_CHACHA20_POLY1305 1
#define MASQCRYPTO_AES_GCM 2

int masqcrypto_random(uint8_t *out, size_t len);
void masqcrypto_wipe(void *ptr, size_t len);

int masqcrypto_sha256(const uint8_t *data, size_t len, uint8_t out[32]);
int masqcrypto_sha384(const uint8_t *data, size_t len, uint8_t out[48]);
int masqcrypto_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t out[32]);
int masqcrypto_hmac_sha512(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t out[64]);
/* ChaCha20 (RFC 8439) from block `counter`: out = in XOR keystream, or the
 * keystream itself when in is NULL. */
int masqcrypto_chacha20(const uint8_t key[32], uint32_t counter, const uint8_t nonce[12], const uint8_t *in,
                        uint8_t *out, size_t len);
/* HKDF-SHA256 extract-then-expand (RFC 5869). out_len <= 255 * 32. */
int masqcrypto_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                           const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);
/* scrypt (RFC 7914); max_memory 0 means OpenSSL's default cap. */
int masqcrypto_scrypt(const uint8_t *pass, size_t pass_len, const uint8_t *salt, size_t salt_len,
                      uint64_t n, uint64_t r, uint64_t p, uint64_t max_memory, uint8_t *out, size_t out_len);

int masqcrypto_x25519_keypair(uint8_t private_key[32], uint8_t public_key[32]);
int masqcrypto_x25519_public(const uint8_t private_key[32], uint8_t public_key[32]);
/* Fails on an all-zero result (a low-order peer key), as RFC 7748 6.1 advises. */
int masqcrypto_x25519(const uint8_t private_key[32], const uint8_t peer_public[32], uint8_t shared[32]);

/* The same with this side's public key known (saves OpenSSL re-deriving it).
 * The caller guarantees public_key matches private_key. */
int masqcrypto_x25519_known(const uint8_t private_key[32], const uint8_t public_key[32], const uint8_t peer_public[32],
                            uint8_t shared[32]);

int masqcrypto_ed25519_keypair(uint8_t private_key[32], uint8_t public_key[32]);
int masqcrypto_ed25519_public(const uint8_t private_key[32], uint8_t public_key[32]);
int masqcrypto_ed25519_sign(const uint8_t private_key[32], const uint8_t *msg, size_t msg_len, uint8_t sig[64]);
/* 0 valid, -2 invalid signature, -1 bad key. */
int masqcrypto_ed25519_verify(const uint8_t public_key[32], const uint8_t *msg, size_t msg_len,
                              const uint8_t *sig, size_t sig_len);

/* AEAD: out receives ciphertext followed by a tag_len-byte tag. ChaCha20-Poly1305
 * takes a 32-byte key and 12-byte nonce; AES-GCM 16/24/32-byte keys and any
 * non-empty nonce. */
int masqcrypto_aead_seal(int algorithm, const uint8_t *key, size_t key_len, const uint8_t *nonce, size_t nonce_len,
                         const uint8_t *ad, size_t ad_len, const uint8_t *plaintext, size_t plaintext_len,
                         size_t tag_len, uint8_t *out);
/* in = ciphertext || tag; out receives in_len - tag_len bytes. -2 on a bad tag. */
int masqcrypto_aead_open(int algorithm, const uint8_t *key, size_t key_len, const uint8_t *nonce, size_t nonce_len,
                         const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t in_len, size_t tag_len,
                         uint8_t *out);
/* ChaCha20-Poly1305 (32-byte key, 12-byte nonce, 16-byte tag) for per-cell work: this
 * thread's reused context, the tag apart from the text. encrypt 1: out = E(in) (in_len
 * bytes; in == out allowed), tag receives the tag. encrypt 0: checks tag against in and ad
 * (-2 when it does not match), out = D(in). in_len 0 authenticates ad alone. */
int masqcrypto_chacha20_poly1305(int encrypt, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                                 size_t ad_len, const uint8_t *in, size_t in_len, uint8_t *out, uint8_t tag[16]);
/* 1 if this CPU has AES instructions OpenSSL uses (AES-NI / ARMv8 AES). */
int masqcrypto_has_aes_hardware(void);

/* P-384. Private keys are 48-byte big-endian scalars; public keys SEC1 points
 * (97 bytes uncompressed or 49 compressed) unless *_spki (DER SubjectPublicKeyInfo). */
int masqcrypto_p384_keypair(uint8_t private_key[48], uint8_t public_uncompressed[97]);
/* private_len may be shorter (leading zeros dropped) or 49 with a leading zero. */
int masqcrypto_p384_public(const uint8_t *private_key, size_t private_len, uint8_t public_uncompressed[97]);
int masqcrypto_p384_compress(const uint8_t *point, size_t point_len, uint8_t compressed[49]);
int masqcrypto_p384_decompress(const uint8_t *point, size_t point_len, uint8_t uncompressed[97]);
int masqcrypto_p384_ecdh(const uint8_t *private_key, size_t private_len, const uint8_t *peer, size_t peer_len,
                         uint8_t shared[48]);
int masqcrypto_p384_ecdh_spki(const uint8_t *private_key, size_t private_len, const uint8_t *spki, size_t spki_len,
                              uint8_t shared[48]);
/* ECDSA with SHA-384; signatures DER-encoded (at most 104 bytes). */
int masqcrypto_p384_sign(const uint8_t private_key[48], const uint8_t *msg, size_t msg_len, uint8_t *sig,
                         size_t *sig_len);
int masqcrypto_p384_verify(const uint8_t *public_key, size_t public_len, const uint8_t *msg, size_t msg_len,
                           const uint8_t *sig, size_t sig_len);

/* secp256k1 (Ethereum): 32-byte private keys, 65-byte uncompressed public keys,
 * ECDSA over a 32-byte digest with low s and a recovery id (0 or 1). */
int masqcrypto_secp256k1_keypair(uint8_t private_key[32], uint8_t public_uncompressed[65]);
int masqcrypto_secp256k1_public(const uint8_t private_key[32], uint8_t public_uncompressed[65]);
int masqcrypto_secp256k1_sign(const uint8_t private_key[32], const uint8_t digest[32], uint8_t r[32], uint8_t s[32],
                              uint8_t *recovery);
int masqcrypto_secp256k1_recover(const uint8_t digest[32], const uint8_t r[32], const uint8_t s[32], uint8_t recovery,
                                 uint8_t public_uncompressed[65]);

#endif
