import FoundationEssentials
import MasqCrypto
import MasqKernel

/// Storage of shares with other people: each share's state is one secret
/// entry of the kernel's `.shares` family (the share id its name, sealed when
/// the store is protected). A guest's read-only share makes its namespace
/// read-only through the kernel's write policy, set in the same transaction
/// as the share, so local writes are refused even where sharing never runs
/// (docs/CONNECTOID.md).
extension Store {
    public func shares() throws(MasqError) -> [ShareState] {
        try readLocalState { (tx) throws(MasqError) -> [ShareState] in
            var out: [ShareState] = []
            for name in try tx.secretNames(.shares) {
                guard var bytes = try tx.secret(.shares, name) else { continue }
                defer { wipe(&bytes) }
                out.append(try ShareState.decode(bytes))
            }
            return out.sorted { $0.created < $1.created }
        }
    }

    public func share(_ id: String) throws(MasqError) -> ShareState? {
        try readLocalState { (tx) throws(MasqError) -> ShareState? in
            guard var bytes = try tx.secret(.shares, Array(id.utf8)) else { return nil }
            defer { wipe(&bytes) }
            return try ShareState.decode(bytes)
        }
    }

    /// Save (or, with nil, delete) a share, and bring the write policies in
    /// line with the shares in the same transaction.
    public func saveShare(_ id: String, _ state: ShareState?) throws(MasqError) {
        try transaction { (tx) throws(MasqError) in
            if let state {
                var encoded = try state.encoded()
                defer { wipe(&encoded) }
                try tx.putSecret(.shares, Array(id.utf8), encoded)
            } else {
                try tx.putSecret(.shares, Array(id.utf8), nil)
            }
            var readOnly: Set<[UInt8]> = []  // exact bytes (a Set<String> would merge equivalent names)
            for name in try tx.secretNames(.shares) {
                guard var bytes = try tx.secret(.shares, name) else { continue }
                defer { wipe(&bytes) }
                let share = try ShareState.decode(bytes)
                // Only a namespace the share created is marked: merging a read-only
                // share into the guest's own namespace never takes the guest's rights away.
                if share.role == .guest && share.access == .readOnly && share.status != .ended
                    && share.ownsNamespace == true
                {
                    readOnly.insert(Array(share.namespace.utf8))
                }
            }
            let policy = WritePolicy.readOnly(reason: ShareState.readOnlyReason)
            let current = try tx.writePolicies()
            for namespace in current.keys where !readOnly.contains(namespace) {
                try tx.setWritePolicy(nil, for: namespace)
            }
            for namespace in readOnly where current[namespace] != policy {
                try tx.setWritePolicy(policy, for: namespace)
            }
        }
    }
}
