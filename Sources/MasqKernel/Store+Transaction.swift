/// The store's one way into an engine transaction, and the small interface
/// feature modules (MasqSharing, MasqAccounting) build on.
///
/// Every write path of the kernel runs its engine calls through
/// `StoragePluginInstance.transaction`, so begin, commit and rollback are
/// written once.
/// Feature modules see only `transaction`, whose body gets a
/// `LocalState`: their secret entries and the namespaces' write policies,
/// committed together or not at all; `readLocalState` reads the same
/// without an engine transaction (which, on SQLite, takes the write lock). Records themselves they
/// write through the public API (put, delete, ...), like any embedder.
extension Store {
    /// Run `body` in one transaction under the store's lock, the store open
    /// and unlocked: local state (secrets, policies, device records), never
    /// synced. `body` must not call back into the store (the lock is not
    /// recursive); what it needs, `LocalState` offers.
    package func transaction<T>(_ body: (LocalState) throws(MasqError) -> T) throws(MasqError) -> T {
        try lock.withLock { () throws(MasqError) -> T in
            try ensureUsable()
            return try engine.transaction { (_: inout Bool) throws(MasqError) -> T in
                try body(LocalState(store: self, writable: true))
            }
        }
    }

    /// Read local state under the store's lock, without a transaction:
    /// `body` may read but not write (writes throw MASQ_E_INTERNAL).
    package func readLocalState<T>(_ body: (LocalState) throws(MasqError) -> T) throws(MasqError) -> T {
        try lock.withLock { () throws(MasqError) -> T in
            try ensureUsable()
            return try body(LocalState(store: self, writable: false))
        }
    }
}

/// The kernel's families of secret entries that feature modules keep
/// (sealed when the store is protected, re-sealed when its passphrase
/// changes, carried by backups). One case per module that needs one.
package enum SecretFamily: Sendable {
    /// MasqSharing: one entry per share ('H' 1 + share id).
    case shares

    var prefix: [UInt8] {
        switch self {
        case .shares: [RecordFormat.share, 1]
        }
    }
}

/// What a feature module may read and write of the kernel's local state,
/// inside `Store.transaction` (or read inside `Store.readLocalState`).
/// Valid only inside the body it is passed to (the store's lock is held there).
package struct LocalState {
    let store: Store
    let writable: Bool

    private func checkWritable() throws(MasqError) {
        guard writable else { throw MasqError(.internal, "a write outside Store.transaction") }
    }

    /// The secret entry `name` of `family` (opened when the store is sealed), or nil.
    package func secret(_ family: SecretFamily, _ name: [UInt8]) throws(MasqError) -> [UInt8]? {
        try store.getSecret(family.prefix + name)
    }

    /// Write (sealed when the store is protected) or, with nil, delete a secret entry.
    package func putSecret(_ family: SecretFamily, _ name: [UInt8], _ value: [UInt8]?) throws(MasqError) {
        try checkWritable()
        let key = family.prefix + name
        if let value {
            try Store.putMeta(store.engine, key, try store.sealSecret(key, value))
        } else {
            try key.withBytes { (k) throws(MasqError) in try store.engine.delete(k) }
        }
    }

    /// The names of every entry of `family`, in key order.
    package func secretNames(_ family: SecretFamily) throws(MasqError) -> [[UInt8]] {
        let prefix = family.prefix
        var names: [[UInt8]] = []
        try store.engine.scan(from: prefix, to: RecordFormat.successor(ofPrefix: prefix)) {
            (key, _) throws(MasqError) -> Bool in
            names.append(Array(key[prefix.count...]))
            return true
        }
        return names
    }

    /// Every namespace's write policy (Store+WritePolicy.swift), by the name's exact bytes.
    package func writePolicies() throws(MasqError) -> [[UInt8]: WritePolicy] {
        try store.writePoliciesLocked()
    }

    /// Set (or, with nil, clear) the write policy of the namespace named by `namespace`'s exact bytes.
    package func setWritePolicy(_ policy: WritePolicy?, for namespace: [UInt8]) throws(MasqError) {
        try checkWritable()
        try store.setWritePolicyLocked(policy, for: namespace)
    }
}
