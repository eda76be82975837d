import CQREncode

/// QR codes (libqrencode), rendered for a terminal or as a PGM image, so a
/// pairing link can be scanned by a phone camera or a decoder such as zbarimg.
public struct QRCode: Sendable {
    public let size: Int
    /// Row-major modules, true = dark.
    public let modules: [Bool]

    /// Encode UTF-8 text with error correction level M.
    public init(_ text: String) throws(MasqError) {
        guard let code = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1) else {
            throw MasqError(.invalid, "text too long for a QR code")
        }
        defer { QRcode_free(code) }
        size = Int(code.pointee.width)
        modules = (0..<(size * size)).map { code.pointee.data[$0] & 1 == 1 }
    }

    public func isDark(_ x: Int, _ y: Int) -> Bool {
        x >= 0 && y >= 0 && x < size && y < size && modules[y * size + x]
    }

    /// Two rows per text line with half blocks, dark modules drawn dark on a
    /// light background, with the 4-module quiet zone scanners need.
    public func terminalText(quietZone: Int = 4) -> String {
        var lines: [String] = []
        let range = -quietZone..<(size + quietZone)
        for y in stride(from: -quietZone, to: size + quietZone, by: 2) {
            var line = ""
            for x in range {
                switch (isDark(x, y), isDark(x, y + 1)) {
                case (false, false): line += "█"
                case (true, false): line += "▄"
                case (false, true): line += "▀"
                case (true, true): line += " "
                }
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// A binary PGM (P5) image, `scale` pixels per module, with a quiet zone.
    public func pgm(scale: Int = 8, quietZone: Int = 4) -> [UInt8] {
        let side = (size + 2 * quietZone) * scale
        var pixels = [UInt8](repeating: 255, count: side * side)
        for y in 0..<size {
            for x in 0..<size where isDark(x, y) {
                for dy in 0..<scale {
                    let row = ((y + quietZone) * scale + dy) * side
                    for dx in 0..<scale { pixels[row + (x + quietZone) * scale + dx] = 0 }
                }
            }
        }
        return Array("P5\n\(side) \(side)\n255\n".utf8) + pixels
    }

    /// An SVG image (one path of unit squares, crisp at any size): what a
    /// web page shows.
    public func svg(quietZone: Int = 4) -> String {
        let side = size + 2 * quietZone
        var path = ""
        for y in 0..<size {
            for x in 0..<size where isDark(x, y) { path += "M\(x + quietZone) \(y + quietZone)h1v1h-1z" }
        }
        return
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(side) \(side)\" shape-rendering=\"crispEdges\">"
            + "<rect width=\"\(side)\" height=\"\(side)\" fill=\"#fff\"/><path fill=\"#000\" d=\"\(path)\"/></svg>"
    }
}
