import Foundation
import Testing
@testable import MasqCrypto

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

enum Vectors {
    /// ../shared/vectors next to the project root (or $MASQ_VECTORS).
    static let directory: String? = {
        if let env = ProcessInfo.processInfo.environment["MASQ_VECTORS"] { return env }
        var path = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { path.deleteLastPathComponent() }
        let candidate = path.deletingLastPathComponent().appendingPathComponent("shared/vectors").path
        return FileManager.default.fileExists(atPath: candidate) ? candidate : nil
    }()

    static var available: Bool { directory != nil }

    static func json(_ relative: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: directory! + "/" + relative))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
}
