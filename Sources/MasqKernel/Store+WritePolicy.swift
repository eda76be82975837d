import FoundationEssentials
import MasqCrypto

/// Who may write a namespace here. The kernel keeps each namespace's policy
/// in its own record and checks it in every local commit, so a policy holds
/// whoever opens the store (an embedder that never starts the feature that
/// set it) and across restarts. Records arriving by sync are not local
/// writes: a read-only namespace still takes its owner's changes.
package enum WritePolicy: Equatable, Sendable {
    /// Local writes are refused with MASQ_E_DENIED: "namespace "NAME" is
    /// `reason`" (so the reason reads as the rest of that sentence).
    case readOnly(reason: String)
}

/// The write-policy record.
///
/// Stored at 'H' 0, the key where sharing (its only user so far) always kept
/// its list of namespaces shared with this store read-only: keeping the key
/// leaves stores written before readable without a migration, and the entry
/// is sealed, re-sealed and backed up with the 'H' secret family as before.
/// Its value is a JSON array, one element per namespace: an object
/// {"namespace": NAME, "reason": TEXT}, or — as versions before this one
/// wrote it — a bare NAME, read-only for `legacyReadOnlyReason`. Names are
/// compared by their exact bytes (a Swift String would merge canonically
/// equivalent names).
extension Store {
    static let writePolicyKey: [UInt8] = [RecordFormat.share, 0]

    /// The reason of a bare name in the record: what sharing meant by it.
    static let legacyReadOnlyReason = "shared with you read-only; its owner's changes arrive by sync"

    private struct PolicyEntry: Codable {
        var namespace: String
        var reason: String
    }

    /// Every namespace's policy. Caller holds the lock.
    func writePoliciesLocked() throws(MasqError) -> [[UInt8]: WritePolicy] {
        guard var bytes = try getSecret(Store.writePolicyKey) else { return [:] }
        defer { wipe(&bytes) }
        var policies: [[UInt8]: WritePolicy] = [:]
        if let entries = try? JSONDecoder().decode([PolicyEntry].self, from: Data(bytes)) {
            for entry in entries { policies[Array(entry.namespace.utf8)] = .readOnly(reason: entry.reason) }
        } else if let names = try? JSONDecoder().decode([String].self, from: Data(bytes)) {
            for name in names { policies[Array(name.utf8)] = .readOnly(reason: Store.legacyReadOnlyReason) }
        } else {
            throw .corrupt("malformed namespace write-policy record")
        }
        return policies
    }

    /// Set or clear one namespace's policy, writing the record. Caller holds
    /// the lock inside a transaction.
    func setWritePolicyLocked(_ policy: WritePolicy?, for namespace: [UInt8]) throws(MasqError) {
        var policies = try writePoliciesLocked()
        policies[namespace] = policy
        var entries: [PolicyEntry] = []
        for (name, policy) in policies.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            guard case .readOnly(let reason) = policy else { continue }
            entries.append(PolicyEntry(namespace: String(decoding: name, as: UTF8.self), reason: reason))
        }
        var encoded: [UInt8]
        do { encoded = Array(try JSONEncoder().encode(entries)) } catch {
            throw MasqError(.internal, "cannot encode the write policies")
        }
        defer { wipe(&encoded) }
        try Store.putMeta(engine, Store.writePolicyKey, try sealSecret(Store.writePolicyKey, encoded))
    }
}
