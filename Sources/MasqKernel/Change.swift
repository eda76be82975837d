/// One committed change to one key, as watchers see it.
public struct Change: Sendable, Equatable {
    public enum Kind: Int32, Sendable { case put = 1, delete = 2 }
    public enum Origin: Int32, Sendable { case local = 1, remote = 2 }

    public var kind: Kind
    public var origin: Origin
    public var namespace: String
    public var key: [UInt8]
    /// nil for a delete.
    public var value: [UInt8]?
    public var version: Version
}
