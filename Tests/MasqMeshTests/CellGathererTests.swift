import NIOCore
import Testing
@testable import MasqMesh

/// A burst of reads goes out as whole cells, the part left at its end once, bytes in order.
struct CellGathererTests {
    @Test func burstsBecomeWholeCells() {
        let cellData = 100
        var gatherer = CellGatherer()
        var sent: [ByteBuffer] = []
        var all: [UInt8] = []
        for size in [250, 30, 20, 199, 1, 0, 300] {
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255) }
            all += bytes
            gatherer.add(ByteBuffer(bytes: bytes), cellData: cellData, allocator: ByteBufferAllocator()) {
                sent.append($0)
            }
        }
        gatherer.finish { sent.append($0) }
        gatherer.finish { sent.append($0) }
        #expect(sent.flatMap { Array($0.readableBytesView) } == all)
        // Only the last cell's worth may be short: 800 bytes in 8 cells.
        let cells = sent.reduce(0) { $0 + ($1.readableBytes + cellData - 1) / cellData }
        #expect(cells == (all.count + cellData - 1) / cellData)
        #expect(sent.dropLast().allSatisfy { $0.readableBytes % cellData == 0 })
    }
}
