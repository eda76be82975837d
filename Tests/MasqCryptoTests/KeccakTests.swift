import Testing
@testable import MasqCrypto

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

/// Published Keccak-256 vectors (the Keccak team's, as Ethereum tooling uses them).
@Suite struct KeccakTests {
    @Test func knownAnswers() {
        #expect(hex(Keccak.hash256([])) == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
        #expect(
            hex(Keccak.hash256(Array("abc".utf8))) == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
        )
        #expect(
            hex(Keccak.hash256(Array("The quick brown fox jumps over the lazy dog".utf8)))
                == "4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15")
        #expect(hex(Keccak.hash256(Array("transfer(address,uint256)".utf8))).hasPrefix("a9059cbb"))
        // Exactly one block (136 bytes) and one byte more: padding edge cases.
        #expect(
            hex(Keccak.hash256([UInt8](repeating: 0x61, count: 135)))
                != hex(Keccak.hash256([UInt8](repeating: 0x61, count: 136))))
    }
}
