import CMasqCrypto

/// Secret bytes (private keys, chain keys, message keys): kept in memory this
/// type owns and wiped (OPENSSL_cleanse) when the last reference goes away,
/// so secrets do not linger in freed heap memory. Compared in constant time.
public final class SecureBytes: @unchecked Sendable, Equatable {
    private let storage: UnsafeMutableRawBufferPointer
    public let count: Int

    public init(count: Int) {
        self.count = count
        storage = .allocate(byteCount: max(count, 1), alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
    }

    public convenience init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        self.init(count: bytes.count)
        var i = 0
        for b in bytes { storage[i] = b; i += 1 }
    }

    /// Fresh random bytes from OpenSSL's CSPRNG.
    public static func random(count: Int) -> SecureBytes {
        let bytes = SecureBytes(count: count)
        bytes.withUnsafeMutableBytes {
            precondition(
                masqcrypto_random($0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count) == 0,
                "RAND_bytes failed")
        }
        return bytes
    }

    deinit {
        masqcrypto_wipe(storage.baseAddress, storage.count)
        storage.deallocate()
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// withUnsafeBytes for closures with typed throws.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(CryptoError) -> R) throws(CryptoError) -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// withUnsafeMutableBytes for closures with typed throws.
    public func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(CryptoError) -> R)
        throws(CryptoError) -> R
    {
        try body(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// A copy as a plain array, for serialization into encrypted state only.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    public static func == (a: SecureBytes, b: SecureBytes) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in constantTimeEqual(x, y) } }
    }
}

extension Array where Element == UInt8 {
    /// withUnsafeBytes for closures that throw CryptoError.
    public func withCryptoBytes<R>(_ body: (UnsafeRawBufferPointer) throws(CryptoError) -> R) throws(CryptoError) -> R {
        let result: Result<R, CryptoError> = withUnsafeBytes { raw in
            do throws(CryptoError) { return .success(try body(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

/// Overwrite an array's bytes with zeros (OPENSSL_cleanse) and empty it: for
/// secrets that had to pass through a plain array (a decoded passphrase, a
/// serialized key). Best effort: copies Swift made earlier are not reached.
public func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { masqcrypto_wipe($0.baseAddress, $0.count) }
    bytes.removeAll()
}

/// Compare without an early exit, so timing does not reveal where bytes differ.
public func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<a.count { difference |= a[i] ^ b[i] }
    return difference == 0
}

public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.withUnsafeBytes { x in b.withUnsafeBytes { y in constantTimeEqual(x, y) } }
}

/// Wipe memory that held secrets (OPENSSL_cleanse: not optimized away).
public func masqWipe(_ buffer: UnsafeMutableRawBufferPointer) {
    masqcrypto_wipe(buffer.baseAddress, buffer.count)
}
