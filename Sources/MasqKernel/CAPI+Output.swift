#if canImport(Glibc)
    import Glibc
#endif

// What the C API hands back to its caller, in one place: every buffer and
// string is malloc'd for the caller to release with masq_free, never NULL on
// success (1 byte for empty bytes).

/// A malloc'd copy of `bytes` (masq_free).
func copyOut(_ bytes: UnsafeRawBufferPointer) throws(MasqError) -> UnsafeMutablePointer<UInt8> {
    guard let memory = malloc(max(bytes.count, 1)) else {
        throw MasqError(.noMemory, "out of memory copying \(bytes.count) bytes")
    }
    if bytes.count > 0 { memcpy(memory, bytes.baseAddress!, bytes.count) }
    return memory.assumingMemoryBound(to: UInt8.self)
}

/// Hand bytes to the caller as a malloc'd buffer and its length (masq_free).
func give(
    _ bytes: [UInt8], _ out: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ length: UnsafeMutablePointer<Int>
) throws(MasqError) {
    guard let memory = malloc(max(bytes.count, 1)) else {
        throw MasqError(.noMemory, "out of memory copying \(bytes.count) bytes")
    }
    bytes.withUnsafeBytes { if $0.count > 0 { memcpy(memory, $0.baseAddress!, $0.count) } }
    out.pointee = memory.assumingMemoryBound(to: UInt8.self)
    length.pointee = bytes.count
}

/// Hand text to the caller as a malloc'd NUL-terminated string (masq_free).
package func giveText(_ text: String, _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) throws(MasqError) {
    guard let copy = strdup(text) else { throw MasqError(.noMemory, "out of memory") }
    out.pointee = copy
}

/// `body` with a C string for `text`, or NULL for nil.
func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}
