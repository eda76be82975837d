/* OpenSSL 3 plumbing for the kernel's crypto (see masq_crypto_shim.h). */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY/EC_POINT: the simplest way to derive and (de)compress P-384 points */
#include "masq_crypto_shim.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

/* ---- algorithms fetched once (fetching per call is slow in OpenSSL 3) -- */

static EVP_CIPHER *chacha_cipher, *chacha_stream, *gcm128, *gcm192, *gcm256;
static EVP_MAC *hmac_mac;
static EVP_KDF *hkdf_kdf;
static EVP_MD *sha256_md, *sha384_md;
static pthread_once_t fetched = PTHREAD_ONCE_INIT;

static void fetch_all(void) {
    chacha_cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
    chacha_stream = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL);
    gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    gcm192 = EVP_CIPHER_fetch(NULL, "AES-192-GCM", NULL);
    gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    hkdf_kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    sha384_md = EVP_MD_fetch(NULL, "SHA384", NULL);
}

#define FETCH() pthread_once(&fetched, fetch_all)

/* Per-thread contexts, reused across calls: OpenSSL 3 spends more time
 * creating a context than encrypting a kilobyte. Freed at thread exit. */
typedef struct {
    EVP_CIPHER_CTX *chacha;
    EVP_CIPHER_CTX *stream;
    EVP_CIPHER_CTX *gcm256;
    EVP_MAC_CTX *hmac256;
    EVP_MAC_CTX *hmac512;
} thread_contexts;

static pthread_key_t contexts_key;
static pthread_once_t contexts_once = PTHREAD_ONCE_INIT;

static void free_contexts(void *p) {
    thread_contexts *t = p;
    EVP_CIPHER_CTX_free(t->chacha);
    EVP_CIPHER_CTX_free(t->stream);
    EVP_CIPHER_CTX_free(t->gcm256);
    EVP_MAC_CTX_free(t->hmac256);
    EVP_MAC_CTX_free(t->hmac512);
    OPENSSL_free(t);
}

static void make_contexts_key(void) { pthread_key_create(&contexts_key, free_contexts); }

static thread_contexts *contexts(void) {
    pthread_once(&contexts_once, make_contexts_key);
    thread_contexts *t = pthread_getspecific(contexts_key);
    if (t) return t;
    t = OPENSSL_zalloc(sizeof *t);
    if (t && pthread_setspecific(contexts_key, t) != 0) {
        OPENSSL_free(t);
        t = NULL;
    }
    return t;
}

static EVP_MAC_CTX *hmac_context(int bits) {
    FETCH();
    thread_contexts *t = contexts();
    if (!t) return NULL;
    EVP_MAC_CTX **slot = bits == 512 ? &t->hmac512 : &t->hmac256;
    if (!*slot) {
        EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_mac);
        OSSL_PARAM params[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)(bits == 512 ? "SHA512" : "SHA256"), 0),
                                OSSL_PARAM_construct_end()};
        if (!ctx || EVP_MAC_CTX_set_params(ctx, params) != 1) {
            EVP_MAC_CTX_free(ctx);
            return NULL;
        }
        *slot = ctx;
    }
    return *slot;
}

static int hmac(int bits, const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t *out) {
    static const uint8_t empty = 0;
    EVP_MAC_CTX *ctx = hmac_context(bits);
    size_t want = (size_t)bits / 8, out_len = 0;
    int ok = ctx && EVP_MAC_init(ctx, key_len ? key : &empty, key_len, NULL) == 1 &&
             EVP_MAC_update(ctx, data_len ? data : &empty, data_len) == 1 && EVP_MAC_final(ctx, out, &out_len, want) == 1 &&
             out_len == want;
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

int masqcrypto_random(uint8_t *out, size_t len) {
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(out, chunk) != 1) return MASQCRYPTO_ERR;
        out += chunk;
        len -= (size_t)chunk;
    }
    return MASQCRYPTO_OK;
}

void masqcrypto_wipe(void *ptr, size_t len) {
    if (ptr && len) OPENSSL_cleanse(ptr, len);
}

/* ---- hashes, HMAC, HKDF, scrypt ----------------------------------------- */

static int digest(const EVP_MD *md, const uint8_t *data, size_t len, uint8_t *out) {
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, md, NULL) == 1 ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

int masqcrypto_sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
    FETCH();
    return digest(sha256_md, data, len, out);
}

int masqcrypto_sha384(const uint8_t *data, size_t len, uint8_t out[48]) {
    FETCH();
    return digest(sha384_md, data, len, out);
}

int masqcrypto_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t out[32]) {
    return hmac(256, key, key_len, data, data_len, out);
}

int masqcrypto_hmac_sha512(const uint8_t *key, size_t key_len, const uint8_t *data, size_t data_len, uint8_t out[64]) {
    return hmac(512, key, key_len, data, data_len, out);
}

int masqcrypto_chacha20(const uint8_t key[32], uint32_t counter, const uint8_t nonce[12], const uint8_t *in,
                        uint8_t *out, size_t len) {
    static const uint8_t zeros[256];
    FETCH();
    thread_contexts *t = contexts();
    if (!t || !chacha_stream) return MASQCRYPTO_ERR;
    if (!t->stream) {
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        if (!ctx || EVP_EncryptInit_ex2(ctx, chacha_stream, NULL, NULL, NULL) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            return MASQCRYPTO_ERR;
        }
        t->stream = ctx;
    }
    /* OpenSSL's ChaCha20 IV is the 32-bit block counter (little-endian) then the 96-bit nonce (RFC 8439). */
    uint8_t iv[16] = {(uint8_t)counter, (uint8_t)(counter >> 8), (uint8_t)(counter >> 16), (uint8_t)(counter >> 24)};
    memcpy(iv + 4, nonce, 12);
    if (EVP_EncryptInit_ex2(t->stream, NULL, key, iv, NULL) != 1) return MASQCRYPTO_ERR;
    while (len > 0) {
        size_t chunk = in ? (len > INT_MAX ? INT_MAX : len) : (len > sizeof zeros ? sizeof zeros : len);
        int written = 0;
        if (EVP_EncryptUpdate(t->stream, out, &written, in ? in : zeros, (int)chunk) != 1 || (size_t)written != chunk) {
            OPENSSL_cleanse(iv, sizeof iv);
            return MASQCRYPTO_ERR;
        }
        out += chunk;
        if (in) in += chunk;
        len -= chunk;
    }
    return MASQCRYPTO_OK;
}

int masqcrypto_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                           const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len) {
    FETCH();
    if (out_len == 0 || out_len > 255 * 32) return MASQCRYPTO_ERR;
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(hkdf_kdf);
    if (!ctx) return MASQCRYPTO_ERR;
    static uint8_t empty[1];
    OSSL_PARAM params[5], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm_len ? (void *)ikm : empty, ikm_len);
    if (salt_len) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    if (info_len) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(ctx, out, out_len, params) == 1;
    EVP_KDF_CTX_free(ctx);
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

int masqcrypto_scrypt(const uint8_t *pass, size_t pass_len, const uint8_t *salt, size_t salt_len, uint64_t n,
                      uint64_t r, uint64_t p, uint64_t max_memory, uint8_t *out, size_t out_len) {
    static const char empty[1] = {0};
    return EVP_PBE_scrypt(pass_len ? (const char *)pass : empty, pass_len, salt_len ? salt : (const uint8_t *)empty,
                          salt_len, n, r, p, max_memory, out, out_len) == 1
               ? MASQCRYPTO_OK
               : MASQCRYPTO_ERR;
}

/* ---- X25519 and Ed25519 -------------------------------------------------- */

static int raw_public(int type, const uint8_t private_key[32], uint8_t public_key[32]) {
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(type, NULL, private_key, 32);
    size_t len = 32;
    int ok = key && EVP_PKEY_get_raw_public_key(key, public_key, &len) == 1 && len == 32;
    EVP_PKEY_free(key);
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

static int raw_keypair(int type, uint8_t private_key[32], uint8_t public_key[32]) {
    if (masqcrypto_random(private_key, 32) != 0) return MASQCRYPTO_ERR;
    return raw_public(type, private_key, public_key);
}

int masqcrypto_x25519_keypair(uint8_t private_key[32], uint8_t public_key[32]) {
    return raw_keypair(EVP_PKEY_X25519, private_key, public_key);
}

int masqcrypto_x25519_public(const uint8_t private_key[32], uint8_t public_key[32]) {
    return raw_public(EVP_PKEY_X25519, private_key, public_key);
}

static int derive(EVP_PKEY *mine, EVP_PKEY *peer, uint8_t *shared, size_t expected) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(mine, NULL);
    size_t len = expected;
    int ok = ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer_ex(ctx, peer, 0) == 1 &&
             EVP_PKEY_derive(ctx, shared, &len) == 1 && len == expected;
    EVP_PKEY_CTX_free(ctx);
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

/* Derive with `mine` (consumed) and reject an all-zero result: a low-order
 * peer point contributes nothing (RFC 7748 6.1). */
static int x25519_derive(EVP_PKEY *mine, const uint8_t peer_public[32], uint8_t shared[32]) {
    EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_public, 32);
    int rc = mine && peer ? derive(mine, peer, shared, 32) : MASQCRYPTO_ERR;
    EVP_PKEY_free(mine);
    EVP_PKEY_free(peer);
    if (rc == MASQCRYPTO_OK) {
        uint8_t acc = 0;
        for (int i = 0; i < 32; i++) acc |= shared[i];
        if (acc == 0) rc = MASQCRYPTO_ERR;
    }
    if (rc != MASQCRYPTO_OK) OPENSSL_cleanse(shared, 32);
    return rc;
}

int masqcrypto_x25519(const uint8_t private_key[32], const uint8_t peer_public[32], uint8_t shared[32]) {
    return x25519_derive(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, private_key, 32), peer_public, shared);
}

/* Importing a raw private key makes OpenSSL derive its public key (a full
 * scalar multiplication); when we already know it, import both instead. */
static EVP_PKEY *x25519_with_public(const uint8_t private_key[32], const uint8_t public_key[32]) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
    EVP_PKEY *key = NULL;
    OSSL_PARAM params[3] = {
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)private_key, 32),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)public_key, 32),
        OSSL_PARAM_construct_end(),
    };
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params) != 1) key = NULL;
    EVP_PKEY_CTX_free(ctx);
    return key;
}

int masqcrypto_x25519_known(const uint8_t private_key[32], const uint8_t public_key[32], const uint8_t peer_public[32],
                            uint8_t shared[32]) {
    return x25519_derive(x25519_with_public(private_key, public_key), peer_public, shared);
}

int masqcrypto_ed25519_keypair(uint8_t private_key[32], uint8_t public_key[32]) {
    return raw_keypair(EVP_PKEY_ED25519, private_key, public_key);
}

int masqcrypto_ed25519_public(const uint8_t private_key[32], uint8_t public_key[32]) {
    return raw_public(EVP_PKEY_ED25519, private_key, public_key);
}

int masqcrypto_ed25519_sign(const uint8_t private_key[32], const uint8_t *msg, size_t msg_len, uint8_t sig[64]) {
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, private_key, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t len = 64;
    static const uint8_t empty = 0;
    int ok = key && ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(ctx, sig, &len, msg_len ? msg : &empty, msg_len) == 1 && len == 64;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

int masqcrypto_ed25519_verify(const uint8_t public_key[32], const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                              size_t sig_len) {
    if (sig_len != 64) return MASQCRYPTO_AUTH;
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, public_key, 32);
    if (!key) return MASQCRYPTO_ERR;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    static const uint8_t empty = 0;
    int rc = MASQCRYPTO_ERR;
    if (ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1)
        rc = EVP_DigestVerify(ctx, sig, sig_len, msg_len ? msg : &empty, msg_len) == 1 ? MASQCRYPTO_OK : MASQCRYPTO_AUTH;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return rc;
}

/* ---- AEAD ------------------------------------------------------------------ */

static const EVP_CIPHER *aead_cipher(int algorithm, size_t key_len, size_t nonce_len, size_t tag_len) {
    FETCH();
    if (algorithm == MASQCRYPTO_CHACHA20_POLY1305)
        return key_len == 32 && nonce_len == 12 && tag_len == 16 ? chacha_cipher : NULL;
    if (algorithm == MASQCRYPTO_AES_GCM) {
        /* OpenSSL 3's GCM accepts nonces of 1..128 bytes; we use 12. */
        if (nonce_len == 0 || nonce_len > 128 || tag_len < 4 || tag_len > 16) return NULL;
        return key_len == 16 ? gcm128 : key_len == 24 ? gcm192 : key_len == 32 ? gcm256 : NULL;
    }
    return NULL;
}

static int aead(int encrypt, int algorithm, const uint8_t *key, size_t key_len, const uint8_t *nonce,
                size_t nonce_len, const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t in_len, size_t tag_len,
                uint8_t *out, uint8_t *tag) {
    const EVP_CIPHER *cipher = aead_cipher(algorithm, key_len, nonce_len, tag_len);
    if (!cipher || in_len > INT_MAX || ad_len > INT_MAX) return MASQCRYPTO_ERR;
    /* The common cases (ChaCha20-Poly1305, AES-256-GCM with 12-byte nonces)
     * reuse this thread's context; anything else gets a fresh one. */
    thread_contexts *t = nonce_len == 12 && (cipher == chacha_cipher || cipher == gcm256) ? contexts() : NULL;
    EVP_CIPHER_CTX **slot = t ? (cipher == chacha_cipher ? &t->chacha : &t->gcm256) : NULL;
    EVP_CIPHER_CTX *ctx = slot && *slot ? *slot : EVP_CIPHER_CTX_new();
    if (!ctx) return MASQCRYPTO_ERR;
    int len = 0, rc = MASQCRYPTO_ERR;
    size_t ivlen = nonce_len;
    OSSL_PARAM params[2] = {OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &ivlen), OSSL_PARAM_construct_end()};
    if (slot && *slot == ctx) {
        /* Reused: same cipher and nonce length; only direction, key and nonce change. */
    } else if (EVP_CipherInit_ex2(ctx, cipher, NULL, NULL, encrypt, params) != 1) {
        goto done;
    } else if (slot) {
        *slot = ctx;
    }
    if (EVP_CipherInit_ex2(ctx, NULL, key, nonce, encrypt, NULL) != 1) goto done;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, (int)tag_len, tag) != 1) goto done;
    if (ad_len && EVP_CipherUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1) goto done;
    if (in_len && EVP_CipherUpdate(ctx, out, &len, in, (int)in_len) != 1) goto done;
    if (EVP_CipherFinal_ex(ctx, out + (in_len ? len : 0), &len) != 1) {
        rc = encrypt ? MASQCRYPTO_ERR : MASQCRYPTO_AUTH;
        goto done;
    }
    if (encrypt && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, (int)tag_len, tag) != 1) goto done;
    rc = MASQCRYPTO_OK;
done:
    if (!slot || *slot != ctx) EVP_CIPHER_CTX_free(ctx);
    if (rc != MASQCRYPTO_OK && in_len) OPENSSL_cleanse(out, in_len);
    return rc;
}

int masqcrypto_aead_seal(int algorithm, const uint8_t *key, size_t key_len, const uint8_t *nonce, size_t nonce_len,
                         const uint8_t *ad, size_t ad_len, const uint8_t *plaintext, size_t plaintext_len,
                         size_t tag_len, uint8_t *out) {
    return aead(1, algorithm, key, key_len, nonce, nonce_len, ad, ad_len, plaintext, plaintext_len, tag_len, out,
                out + plaintext_len);
}

int masqcrypto_aead_open(int algorithm, const uint8_t *key, size_t key_len, const uint8_t *nonce, size_t nonce_len,
                         const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t in_len, size_t tag_len,
                         uint8_t *out) {
    if (in_len < tag_len) return MASQCRYPTO_AUTH;
    uint8_t tag[16];
    if (tag_len > sizeof tag) return MASQCRYPTO_ERR;
    memcpy(tag, in + in_len - tag_len, tag_len);
    return aead(0, algorithm, key, key_len, nonce, nonce_len, ad, ad_len, in, in_len - tag_len, tag_len, out, tag);
}

int masqcrypto_chacha20_poly1305(int encrypt, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *ad,
                                 size_t ad_len, const uint8_t *in, size_t in_len, uint8_t *out, uint8_t tag[16]) {
    FETCH();
    thread_contexts *t = contexts();
    if (!t || !chacha_cipher || in_len > INT_MAX || ad_len > INT_MAX) return MASQCRYPTO_ERR;
    if (!t->chacha) {
        /* The same context aead() keeps for ChaCha20-Poly1305 (cipher and nonce length set once). */
        size_t ivlen = 12;
        OSSL_PARAM params[2] = {OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &ivlen), OSSL_PARAM_construct_end()};
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        if (!ctx || EVP_CipherInit_ex2(ctx, chacha_cipher, NULL, NULL, encrypt, params) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            return MASQCRYPTO_ERR;
        }
        t->chacha = ctx;
    }
    EVP_CIPHER_CTX *ctx = t->chacha;
    int len = 0;
    if (EVP_CipherInit_ex2(ctx, NULL, key, nonce, encrypt, NULL) != 1) return MASQCRYPTO_ERR;
    if (!encrypt) {
        OSSL_PARAM set[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, 16), OSSL_PARAM_construct_end()};
        if (EVP_CIPHER_CTX_set_params(ctx, set) != 1) return MASQCRYPTO_ERR;
    }
    if (ad_len && EVP_CipherUpdate(ctx, NULL, &len, ad, (int)ad_len) != 1) return MASQCRYPTO_ERR;
    if (in_len && EVP_CipherUpdate(ctx, out, &len, in, (int)in_len) != 1) goto failed;
    if (EVP_CipherFinal_ex(ctx, out + (in_len ? len : 0), &len) != 1) {
        if (in_len) OPENSSL_cleanse(out, in_len);
        return encrypt ? MASQCRYPTO_ERR : MASQCRYPTO_AUTH;
    }
    if (encrypt) {
        OSSL_PARAM get[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, 16), OSSL_PARAM_construct_end()};
        if (EVP_CIPHER_CTX_get_params(ctx, get) != 1) goto failed;
    }
    return MASQCRYPTO_OK;
failed:
    if (in_len) OPENSSL_cleanse(out, in_len);
    return MASQCRYPTO_ERR;
}

int masqcrypto_has_aes_hardware(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned int eax = 1, ebx, ecx, edx;
    __asm__("cpuid" : "+a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx));
    return (ecx >> 25) & 1; /* AES-NI */
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRYPTO)
    return 1;
#else
    return 0;
#endif
}

/* ---- P-384 ----------------------------------------------------------------- */

static EC_KEY *p384_private(const uint8_t *private_key, size_t private_len) {
    if (private_len == 0 || private_len > 49 || (private_len == 49 && private_key[0] != 0)) return NULL;
    EC_KEY *key = EC_KEY_new_by_curve_name(NID_secp384r1);
    BIGNUM *d = BN_bin2bn(private_key, (int)private_len, NULL);
    EC_POINT *pub = key ? EC_POINT_new(EC_KEY_get0_group(key)) : NULL;
    int ok = key && d && pub && !BN_is_zero(d) && BN_cmp(d, EC_GROUP_get0_order(EC_KEY_get0_group(key))) < 0 &&
             EC_KEY_set_private_key(key, d) == 1 && EC_POINT_mul(EC_KEY_get0_group(key), pub, d, NULL, NULL, NULL) == 1 &&
             EC_KEY_set_public_key(key, pub) == 1;
    BN_clear_free(d);
    EC_POINT_free(pub);
    if (!ok) {
        EC_KEY_free(key);
        return NULL;
    }
    return key;
}

static EC_KEY *p384_public_key(const uint8_t *point, size_t point_len) {
    EC_KEY *key = EC_KEY_new_by_curve_name(NID_secp384r1);
    if (!key) return NULL;
    const unsigned char *p = point;
    /* o2i_ECPublicKey refuses points off the curve; P-384's cofactor is 1, so
     * an on-curve point other than infinity is in the prime-order group and
     * the order multiplication of EC_KEY_check_key (as costly as an ECDH)
     * adds nothing. */
    if (!o2i_ECPublicKey(&key, &p, (long)point_len) ||
        EC_POINT_is_at_infinity(EC_KEY_get0_group(key), EC_KEY_get0_public_key(key))) {
        EC_KEY_free(key);
        return NULL;
    }
    return key;
}

static int export_point(const EC_KEY *key, point_conversion_form_t form, uint8_t *out, size_t expected) {
    size_t n = EC_POINT_point2oct(EC_KEY_get0_group(key), EC_KEY_get0_public_key(key), form, out, expected, NULL);
    return n == expected ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

/* The uncompressed public point of `key` (NULL: an invalid private key), which is freed. */
static int public_of(EC_KEY *key, uint8_t *out, size_t len) {
    int rc = key ? export_point(key, POINT_CONVERSION_UNCOMPRESSED, out, len) : MASQCRYPTO_ERR;
    EC_KEY_free(key);
    return rc;
}

/* A fresh key pair on curve `nid`: the private scalar (n bytes) and the uncompressed point (2n + 1). */
static int ec_keypair(int nid, uint8_t *private_key, size_t n, uint8_t *public_uncompressed) {
    EC_KEY *key = EC_KEY_new_by_curve_name(nid);
    int ok = key && EC_KEY_generate_key(key) == 1 && BN_bn2binpad(EC_KEY_get0_private_key(key), private_key, (int)n) == (int)n &&
             export_point(key, POINT_CONVERSION_UNCOMPRESSED, public_uncompressed, 2 * n + 1) == MASQCRYPTO_OK;
    EC_KEY_free(key);
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

int masqcrypto_p384_public(const uint8_t *private_key, size_t private_len, uint8_t public_uncompressed[97]) {
    return public_of(p384_private(private_key, private_len), public_uncompressed, 97);
}

int masqcrypto_p384_keypair(uint8_t private_key[48], uint8_t public_uncompressed[97]) {
    return ec_keypair(NID_secp384r1, private_key, 48, public_uncompressed);
}

int masqcrypto_p384_compress(const uint8_t *point, size_t point_len, uint8_t compressed[49]) {
    EC_KEY *key = p384_public_key(point, point_len);
    int rc = key ? export_point(key, POINT_CONVERSION_COMPRESSED, compressed, 49) : MASQCRYPTO_ERR;
    EC_KEY_free(key);
    return rc;
}

int masqcrypto_p384_decompress(const uint8_t *point, size_t point_len, uint8_t uncompressed[97]) {
    EC_KEY *key = p384_public_key(point, point_len);
    int rc = key ? export_point(key, POINT_CONVERSION_UNCOMPRESSED, uncompressed, 97) : MASQCRYPTO_ERR;
    EC_KEY_free(key);
    return rc;
}

static int p384_derive(const uint8_t *private_key, size_t private_len, EVP_PKEY *peer, uint8_t shared[48]) {
    EC_KEY *mine_ec = p384_private(private_key, private_len);
    EVP_PKEY *mine = mine_ec ? EVP_PKEY_new() : NULL;
    int rc = MASQCRYPTO_ERR;
    if (mine && EVP_PKEY_assign_EC_KEY(mine, mine_ec) == 1) {
        mine_ec = NULL;
        rc = derive(mine, peer, shared, 48);
    }
    EC_KEY_free(mine_ec);
    EVP_PKEY_free(mine);
    return rc;
}

int masqcrypto_p384_ecdh(const uint8_t *private_key, size_t private_len, const uint8_t *peer, size_t peer_len,
                         uint8_t shared[48]) {
    EC_KEY *peer_ec = p384_public_key(peer, peer_len);
    EVP_PKEY *peer_key = peer_ec ? EVP_PKEY_new() : NULL;
    int rc = MASQCRYPTO_ERR;
    if (peer_key && EVP_PKEY_assign_EC_KEY(peer_key, peer_ec) == 1) {
        peer_ec = NULL;
        rc = p384_derive(private_key, private_len, peer_key, shared);
    }
    EC_KEY_free(peer_ec);
    EVP_PKEY_free(peer_key);
    return rc;
}

int masqcrypto_p384_ecdh_spki(const uint8_t *private_key, size_t private_len, const uint8_t *spki, size_t spki_len,
                              uint8_t shared[48]) {
    const unsigned char *p = spki;
    EVP_PKEY *peer = d2i_PUBKEY(NULL, &p, (long)spki_len);
    int rc = MASQCRYPTO_ERR;
    /* The whole input must be the key, on our curve, and a valid point. */
    if (peer && p == spki + spki_len && EVP_PKEY_get_base_id(peer) == EVP_PKEY_EC) {
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(peer);
        /* Only the named curve: explicit parameters (even P-384's with another
         * cofactor) are a classic way to smuggle in a weak group. */
        const EC_GROUP *group = ec ? EC_KEY_get0_group(ec) : NULL;
        if (group && EC_GROUP_get_asn1_flag(group) == OPENSSL_EC_NAMED_CURVE &&
            EC_GROUP_get_curve_name(group) == NID_secp384r1 && EC_KEY_check_key(ec) == 1)
            rc = p384_derive(private_key, private_len, peer, shared);
    }
    EVP_PKEY_free(peer);
    return rc;
}

int masqcrypto_p384_sign(const uint8_t private_key[48], const uint8_t *msg, size_t msg_len, uint8_t *sig,
                         size_t *sig_len) {
    EC_KEY *key = p384_private(private_key, 48);
    uint8_t hash[48];
    unsigned int len = 0;
    int ok = key && masqcrypto_sha384(msg, msg_len, hash) == MASQCRYPTO_OK && ECDSA_size(key) <= 104 &&
             ECDSA_sign(0, hash, 48, sig, &len, key) == 1;
    EC_KEY_free(key);
    *sig_len = ok ? len : 0;
    return ok ? MASQCRYPTO_OK : MASQCRYPTO_ERR;
}

int masqcrypto_p384_verify(const uint8_t *public_key, size_t public_len, const uint8_t *msg, size_t msg_len,
                           const uint8_t *sig, size_t sig_len) {
    EC_KEY *key = p384_public_key(public_key, public_len);
    if (!key) return MASQCRYPTO_ERR;
    uint8_t hash[48];
    int rc = MASQCRYPTO_AUTH;
    if (masqcrypto_sha384(msg, msg_len, hash) == MASQCRYPTO_OK && sig_len <= INT_MAX) {
        /* Strict DER only: re-encode and compare, so malleable encodings fail. */
        const unsigned char *p = sig;
        ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
        unsigned char *der = NULL;
        int der_len = s ? i2d_ECDSA_SIG(s, &der) : -1;
        if (s && p == sig + sig_len && der_len == (int)sig_len && memcmp(der, sig, sig_len) == 0 &&
            ECDSA_do_verify(hash, 48, s, key) == 1)
            rc = MASQCRYPTO_OK;
        OPENSSL_free(der);
        ECDSA_SIG_free(s);
    }
    EC_KEY_free(key);
    return rc;
}

/* ---- secp256k1 (Ethereum wallets): keys, recoverable signatures, recovery ---- */

static EC_KEY *k1_private(const uint8_t private_key[32]) {
    EC_KEY *key = EC_KEY_new_by_curve_name(NID_secp256k1);
    BIGNUM *d = BN_bin2bn(private_key, 32, NULL);
    EC_POINT *pub = key ? EC_POINT_new(EC_KEY_get0_group(key)) : NULL;
    int ok = key && d && pub && !BN_is_zero(d) && BN_cmp(d, EC_GROUP_get0_order(EC_KEY_get0_group(key))) < 0 &&
             EC_KEY_set_private_key(key, d) == 1 && EC_POINT_mul(EC_KEY_get0_group(key), pub, d, NULL, NULL, NULL) == 1 &&
             EC_KEY_set_public_key(key, pub) == 1;
    BN_clear_free(d);
    EC_POINT_free(pub);
    if (!ok) { EC_KEY_free(key); return NULL; }
    return key;
}

int masqcrypto_secp256k1_public(const uint8_t private_key[32], uint8_t public_uncompressed[65]) {
    return public_of(k1_private(private_key), public_uncompressed, 65);
}

int masqcrypto_secp256k1_keypair(uint8_t private_key[32], uint8_t public_uncompressed[65]) {
    return ec_keypair(NID_secp256k1, private_key, 32, public_uncompressed);
}

/* Q = r^-1 (s R - e G), R the point with x = r and y parity `recovery`. */
int masqcrypto_secp256k1_recover(const uint8_t digest[32], const uint8_t r_bytes[32], const uint8_t s_bytes[32], uint8_t recovery,
                                 uint8_t public_uncompressed[65]) {
    if (recovery > 1) return MASQCRYPTO_ERR;
    EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_secp256k1);
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *r = BN_bin2bn(r_bytes, 32, NULL), *s = BN_bin2bn(s_bytes, 32, NULL), *e = BN_bin2bn(digest, 32, NULL);
    BIGNUM *rinv = BN_new(), *u1 = BN_new(), *u2 = BN_new();
    EC_POINT *R = group ? EC_POINT_new(group) : NULL, *Q = group ? EC_POINT_new(group) : NULL;
    int rc = MASQCRYPTO_ERR;
    if (group && ctx && r && s && e && rinv && u1 && u2 && R && Q) {
        const BIGNUM *n = EC_GROUP_get0_order(group);
        if (!BN_is_zero(r) && !BN_is_zero(s) && BN_cmp(r, n) < 0 && BN_cmp(s, n) < 0 &&
            EC_POINT_set_compressed_coordinates(group, R, r, recovery, ctx) == 1 &&
            BN_mod_inverse(rinv, r, n, ctx) && BN_mod(e, e, n, ctx) == 1 &&
            BN_mod_mul(u1, e, rinv, n, ctx) == 1 && BN_mod_sub(u1, n, u1, n, ctx) == 1 &&   /* u1 = -e/r */
            BN_mod_mul(u2, s, rinv, n, ctx) == 1 &&                                          /* u2 = s/r  */
            EC_POINT_mul(group, Q, u1, R, u2, ctx) == 1 && !EC_POINT_is_at_infinity(group, Q) &&
            EC_POINT_point2oct(group, Q, POINT_CONVERSION_UNCOMPRESSED, public_uncompressed, 65, ctx) == 65)
            rc = MASQCRYPTO_OK;
    }
    EC_POINT_free(R); EC_POINT_free(Q);
    BN_free(r); BN_free(s); BN_free(e); BN_free(rinv); BN_free(u1); BN_free(u2);
    BN_CTX_free(ctx);
    EC_GROUP_free(group);
    return rc;
}

/* ECDSA over a 32-byte digest with low s (EIP-2) and the recovery id. */
int masqcrypto_secp256k1_sign(const uint8_t private_key[32], const uint8_t digest[32], uint8_t r_out[32], uint8_t s_out[32],
                              uint8_t *recovery) {
    EC_KEY *key = k1_private(private_key);
    if (!key) return MASQCRYPTO_ERR;
    uint8_t mine[65];
    int rc = MASQCRYPTO_ERR;
    if (export_point(key, POINT_CONVERSION_UNCOMPRESSED, mine, 65) == MASQCRYPTO_OK) {
        for (int attempt = 0; attempt < 8 && rc != MASQCRYPTO_OK; attempt++) {
            ECDSA_SIG *sig = ECDSA_do_sign(digest, 32, key);
            if (!sig) break;
            const BIGNUM *r = NULL, *s = NULL;
            ECDSA_SIG_get0(sig, &r, &s);
            BIGNUM *low = BN_dup(s);
            const BIGNUM *n = EC_GROUP_get0_order(EC_KEY_get0_group(key));
            BIGNUM *half = BN_new();
            if (low && half && BN_rshift1(half, n) == 1) {
                if (BN_cmp(low, half) > 0) BN_sub(low, n, low);
                if (BN_bn2binpad(r, r_out, 32) == 32 && BN_bn2binpad(low, s_out, 32) == 32) {
                    for (uint8_t v = 0; v < 2; v++) {
                        uint8_t q[65];
                        if (masqcrypto_secp256k1_recover(digest, r_out, s_out, v, q) == MASQCRYPTO_OK && memcmp(q, mine, 65) == 0) {
                            *recovery = v;
                            rc = MASQCRYPTO_OK;
                            break;
                        }
                    }
                }
            }
            BN_free(half);
            BN_free(low);
            ECDSA_SIG_free(sig);
        }
    }
    OPENSSL_cleanse(mine, sizeof mine);
    EC_KEY_free(key);
    return rc;
}
