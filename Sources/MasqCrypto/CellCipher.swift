import CMasqCrypto

/// ChaCha20 and ChaCha20-Poly1305 for work done per cell or per link message:
/// keys stay in their `SecureBytes`, nonces are the caller's (on its stack),
/// no array is allocated, and OpenSSL's per-thread context is reused (only
/// key and nonce are set per call). The same primitives as `ChaCha20` and
/// `AEAD` (OpenSSL's), with the tag apart from the text.
public enum CellCipher {
    /// `output` = `input` XOR ChaCha20(key, nonce, from block 0); one size, the same memory allowed.
    @inline(__always)
    public static func xor(
        key: SecureBytes, nonce: UnsafeRawPointer, from input: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(key.count == 32 && input.count == output.count)
        guard input.count > 0 else { return }
        let status = key.withUnsafeBytes { k in
            masqcrypto_chacha20(
                k.baseAddress!.assumingMemoryBound(to: UInt8.self), 0, nonce.assumingMemoryBound(to: UInt8.self),
                input.baseAddress!.assumingMemoryBound(to: UInt8.self),
                output.baseAddress!.assumingMemoryBound(to: UInt8.self), input.count)
        }
        precondition(status == 0, "ChaCha20 failed")
    }

    /// `output` = `input` XOR ChaCha20(`key`, nonce, from block 0), the key
    /// given as 32 bytes the caller holds (a per-cell key it wipes itself).
    @inline(__always)
    public static func xor(
        rawKey key: UnsafeRawPointer, nonce: UnsafeRawPointer, from input: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(input.count == output.count)
        guard input.count > 0 else { return }
        let status = masqcrypto_chacha20(
            key.assumingMemoryBound(to: UInt8.self), 0, nonce.assumingMemoryBound(to: UInt8.self),
            input.baseAddress!.assumingMemoryBound(to: UInt8.self),
            output.baseAddress!.assumingMemoryBound(to: UInt8.self), input.count)
        precondition(status == 0, "ChaCha20 failed")
    }

    /// `output` = ChaCha20(`key`, nonce, from block 0): the keystream alone.
    @inline(__always)
    public static func keystream(key: SecureBytes, nonce: UnsafeRawPointer, into output: UnsafeMutableRawBufferPointer)
    {
        precondition(key.count == 32)
        guard output.count > 0 else { return }
        let status = key.withUnsafeBytes { k in
            masqcrypto_chacha20(
                k.baseAddress!.assumingMemoryBound(to: UInt8.self), 0, nonce.assumingMemoryBound(to: UInt8.self), nil,
                output.baseAddress!.assumingMemoryBound(to: UInt8.self), output.count)
        }
        precondition(status == 0, "ChaCha20 failed")
    }

    /// ChaCha20-Poly1305: `output` = E(`plaintext`) (one size; the same memory
    /// allowed), the 16-byte tag into `tag`. False if OpenSSL refused.
    @inline(__always)
    public static func seal(
        key: SecureBytes, nonce: UnsafeRawPointer, ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer
    ) -> Bool {
        precondition(key.count == 32 && plaintext.count == output.count)
        return key.withUnsafeBytes { k in
            masqcrypto_chacha20_poly1305(
                1, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce.assumingMemoryBound(to: UInt8.self),
                ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), plaintext.count,
                output.baseAddress?.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self))
        } == 0
    }

    /// ChaCha20-Poly1305: checks `tag` (16 bytes) over `ad` and `ciphertext`,
    /// then `output` = D(`ciphertext`) (one size; the same memory allowed).
    /// False when the tag does not match (`output` is then wiped) or OpenSSL refused.
    @inline(__always)
    public static func open(
        key: SecureBytes, nonce: UnsafeRawPointer, ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
        tag: UnsafeRawPointer, into output: UnsafeMutableRawBufferPointer
    ) -> Bool {
        precondition(key.count == 32 && ciphertext.count == output.count)
        // OpenSSL takes the expected tag through a non-const parameter; it only reads it.
        return withUnsafeTemporaryAllocation(byteCount: 16, alignment: 8) { expected in
            expected.copyMemory(from: UnsafeRawBufferPointer(start: tag, count: 16))
            return key.withUnsafeBytes { k in
                masqcrypto_chacha20_poly1305(
                    0, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce.assumingMemoryBound(to: UInt8.self),
                    ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                    ciphertext.baseAddress?.assumingMemoryBound(to: UInt8.self), ciphertext.count,
                    output.baseAddress?.assumingMemoryBound(to: UInt8.self),
                    expected.baseAddress!.assumingMemoryBound(to: UInt8.self))
            } == 0
        }
    }
}
