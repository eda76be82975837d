import ArgumentParser
import FoundationEssentials
import MasqAccounting
import MasqEncoding
import MasqKernel
import MasqMesh
#if canImport(Glibc)
    import Glibc
#endif

/// A wallet plugin as the mesh sees it.
final class PluginWallet: MeshWallet, @unchecked Sendable {
    let engine: WalletPluginInstance
    let address: String

    init(_ engine: WalletPluginInstance) throws {
        self.engine = engine
        address = try guarded { () throws(MasqError) in try engine.address() }
    }

    func pay(to: String, amount: UInt128) throws -> String { try engine.pay(to: to, amount: String(amount)) }
    func sign(_ message: [UInt8]) throws -> [UInt8] { try engine.sign(message) }
    func verify(address: String, message: [UInt8], signature: [UInt8]) -> Bool {
        engine.verify(address: address, message: message, signature: signature)
    }
    func payments(after cursor: UInt64) throws -> (payments: [(from: String, amount: UInt128)], cursor: UInt64) {
        let (list, next) = try engine.payments(after: cursor)
        return (list.compactMap { p in UInt128(p.amount).map { (p.from, $0) } }, next)
    }
}

/// Parse a wallet plugin reference given as JSON on the command line
/// (`{"plugin": "ledger", "options": {...}}`), with the config's own rules.
func walletReference(_ json: String, option: String) throws -> (PluginReference, MasqConfig) {
    do {
        let config = try MasqConfig.parse(
            "{\"wallet\": \(json)}", baseDir: FileSystem.currentDirectory(), source: option)
        guard let wallet = config.wallet else {
            throw CLIError("\(option): a wallet plugin object is required", code: 64)
        }
        return (wallet, config)
    } catch let error as MasqError {
        throw CLIError(error.message, code: 64)
    }
}

func openWallet(_ json: String, option: String, dataDirectory: String) throws -> WalletPluginInstance {
    let (reference, config) = try walletReference(json, option: option)
    return try guarded { () throws(MasqError) in
        try WalletPluginInstance.open(reference, config: config, dataDirectory: dataDirectory)
    }
}

/// `masq wallet`: a wallet's address and balance, and payments.
struct Wallet: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A wallet plugin's address, balance and payments.",
        subcommands: [Address.self, Balance.self, Pay.self, Sign.self, Verify.self, Payments.self, VerifyPayment.self])

    struct Choice: ParsableArguments {
        @Option(
            help: ArgumentHelp(
                "The wallet plugin, as JSON: {\"plugin\": \"ledger\", \"options\": {...}} (default: the store config's \"wallet\").",
                valueName: "json"))
        var wallet: String?
        @Option(help: ArgumentHelp("Directory for the wallet's files (keys).", valueName: "dir")) var dataDir: String?
        @OptionGroup var store: StoreOptions

        func open() throws -> WalletPluginInstance {
            if let wallet {
                return try openWallet(
                    wallet, option: "--wallet", dataDirectory: dataDir ?? FileSystem.currentDirectory())
            }
            let config = try guarded { () throws(MasqError) in try MasqConfig.load(path: store.configPath) }
            guard let reference = config.wallet else {
                throw CLIError("no wallet: pass --wallet JSON or add \"wallet\" to the config", code: 64)
            }
            return try guarded { () throws(MasqError) in
                try WalletPluginInstance.open(reference, config: config, dataDirectory: dataDir)
            }
        }
    }

    struct Address: MasqSubcommand {
        static let configuration = CommandConfiguration(abstract: "Print the wallet's receiving address.")
        @OptionGroup var choice: Choice
        func execute() throws {
            let engine = try choice.open()
            print(try guarded { () throws(MasqError) in try engine.address() })
        }
    }

    struct Balance: MasqSubcommand {
        static let configuration = CommandConfiguration(abstract: "Print the wallet's balance (smallest unit).")
        @OptionGroup var choice: Choice
        @Option(help: "Asset (default: the wallet's).") var asset: String?
        func execute() throws {
            let engine = try choice.open()
            print(try guarded { () throws(MasqError) in try engine.balance(asset: asset) })
        }
    }

    struct Pay: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Pay an amount (smallest unit) to an address; prints the transaction id.")
        @OptionGroup var choice: Choice
        @Argument(help: "The receiving address.") var to: String
        @Argument(help: "The amount, a decimal integer.") var amount: String
        func execute() throws {
            guard UInt128(amount) != nil else { throw CLIError("the amount must be a decimal integer", code: 64) }
            let engine = try choice.open()
            print(try guarded { () throws(MasqError) in try engine.pay(to: to, amount: amount) })
        }
    }
}

extension Wallet {
    struct Sign: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign a message (hex) with the wallet's key; prints the signature (hex).")
        @OptionGroup var choice: Choice
        @Argument(help: "The message, hex.") var message: String
        func execute() throws {
            guard let bytes = Hex.decode(message) else { throw CLIError("the message must be hex", code: 64) }
            let engine = try choice.open()
            print(Hex.encode(try guarded { () throws(MasqError) in try engine.sign(bytes) }))
        }
    }

    struct Verify: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Check an address's signature over a message (hex); exit 1 if it does not verify.")
        @OptionGroup var choice: Choice
        @Argument(help: "The signer's address.") var address: String
        @Argument(help: "The message, hex.") var message: String
        @Argument(help: "The signature, hex.") var signature: String
        func execute() throws {
            guard let m = Hex.decode(message), let s = Hex.decode(signature) else {
                throw CLIError("message and signature must be hex", code: 64)
            }
            let engine = try choice.open()
            guard engine.verify(address: address, message: m, signature: s) else {
                throw CLIError("the signature does not verify")
            }
            print("ok")
        }
    }
}

extension Wallet {
    struct Payments: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "List payments the wallet received after a cursor (JSON lines, then the next cursor).")
        @OptionGroup var choice: Choice
        @Option(help: "Cursor from an earlier call (0: from the start).") var after: UInt64 = 0
        func execute() throws {
            let engine = try choice.open()
            let (payments, cursor) = try guarded { () throws(MasqError) in try engine.payments(after: after) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for p in payments { print(String(decoding: try encoder.encode(p), as: UTF8.self)) }
            print("cursor \(cursor)")
        }
    }

    struct VerifyPayment: MasqSubcommand {
        static let configuration = CommandConfiguration(
            commandName: "verify-payment",
            abstract: "Check that a transaction paid at least an amount from one address to another; exit 1 if not.")
        @OptionGroup var choice: Choice
        @Argument(help: "The transaction id.") var txid: String
        @Argument(help: "The payer's address.") var from: String
        @Argument(help: "The payee's address.") var to: String
        @Argument(help: "The amount, a decimal integer.") var amount: String
        func execute() throws {
            let engine = try choice.open()
            try guarded { () throws(MasqError) in
                try engine.verifyPayment(txid: txid, from: from, to: to, amount: amount)
            }
            print("ok")
        }
    }
}

/// `masq accounts`: a node's payables, receivables and bans.
struct Accounts: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "A mesh node's payables, receivables and bans (from the store in its data directory).")
    @Option(help: ArgumentHelp("The node's data directory.", valueName: "dir")) var dataDir = "."
    @Flag(help: "Print the JSON as stored.") var json = false

    func execute() throws {
        guard let store = try nodeStore(dataDir, create: false),
            let book = try guarded({ () throws(MasqError) in try Accountant.book(in: store) })
        else {
            throw CLIError("no accounts in \(dataDir) (is it the data directory of a node with wallets?)", code: 2)
        }
        defer { try? store.close() }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(book), as: UTF8.self))
            return
        }
        print("payables (what this node owes, by earning wallet):")
        for (wallet, a) in book.payables.sorted(by: { $0.key < $1.key }) {
            print("  \(wallet)  owed \(a.balance)  total \(a.total)  paid \(a.paid)")
        }
        print("receivables (what consumers owe this node, by consuming wallet):")
        for (wallet, a) in book.receivables.sorted(by: { $0.key < $1.key }) {
            print(
                "  \(wallet)  owed \(a.balance)  total \(a.total)  paid \(a.paid)\(book.banned.contains(wallet) ? "  BANNED" : "")"
            )
        }
        print("banned: \(book.banned.isEmpty ? "none" : book.banned.joined(separator: ", "))")
        print("payer proofs refused: \(book.proofsRejected)")
    }
}
