import Testing

@testable import MasqMesh

/// How a link message's records are split: DATA cells of one cell's size and
/// JUMBO cells of `jumboCells` cells' size, their payloads in the clear part.
@Suite struct LinkRecordsTests {
    static func record(_ circuit: UInt32, _ command: CellCommand) -> [UInt8] {
        [0, 6, FrameType.cell.rawValue] + Link.cellHeader(circuit, command)
    }

    @Test func dataAndJumboCellsTakeTheirSizesFromTheClearPart() throws {
        let cell = 64
        let records = Self.record(7, .data) + Self.record(8, .jumbo) + [0, 1, FrameType.ping.rawValue]
        let clear = 2..<(2 + cell + jumboCells * cell)
        let items = try LinkRecords.split(records, clear: clear, cellBytes: cell).get()
        #expect(
            items == [
                .dataCell(circuit: 7, payload: 2..<(2 + cell)),
                .dataCell(circuit: 8, payload: (2 + cell)..<(2 + cell + jumboCells * cell)),
                .frame(18..<19)
            ])
        // A JUMBO record with one cell's payload is refused whole, and so are clear bytes no cell claims.
        #expect(throws: MeshError.self) {
            try LinkRecords.split(Self.record(8, .jumbo), clear: 2..<(2 + cell), cellBytes: cell).get()
        }
        #expect(throws: MeshError.self) {
            try LinkRecords.split(Self.record(7, .data), clear: 2..<(2 + 2 * cell), cellBytes: cell).get()
        }
    }
}
