/// One committed change to one key, as watchers see it.
public struct Change: Sendable, Equatable {
    /// `conflict`: a concurrent write lost to this one (see `lostValue`).
    public enum Kind: Int32, Sendable { case put = 1, delete = 2, conflict = 3 }
    public enum Origin: Int32, Sendable { case local = 1, remote = 2 }

    public var kind: Kind
    public var origin: Origin
    public var namespace: String
    public var key: [UInt8]
    /// nil for a delete.
    public var value: [UInt8]?
    public var version: Version
    /// For conflicts: the value that lost (nil if the loser was a delete).
    public var lostValue: [UInt8]? = nil
    public var lostWasDeleted = false
}
