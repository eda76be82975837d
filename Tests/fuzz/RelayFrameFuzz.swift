// libFuzzer target for the relay's frame decoder (Sources/MasqRelayProtocol):
// any input must decode or be refused with an error — never crash, hang or
// read out of bounds — and whatever decodes must re-encode to a frame that
// decodes to the same value.
//
// Built by Tests/fuzz/run.sh with: swiftc -sanitize=fuzzer,address -parse-as-library
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let frame = try? RelayFrame.decode(bytes) else { return 0 }
    let again = try? RelayFrame.decode(frame.encoded())
    if case .error = frame { return 0 }    // error text may be re-encoded lossily (invalid UTF-8)
    precondition(again == frame, "decode(encode(x)) != x for \(frame)")
    return 0
}
