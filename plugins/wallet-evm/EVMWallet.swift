// The EVM wallet plugin: an Ethereum-compatible wallet. Keys are secp256k1
// (OpenSSL), addresses the last 20 bytes of Keccak-256 of the public key;
// payments are EIP-1559 (type 2) transactions calling the ERC-20 token's
// transfer(address,uint256) (or plain value transfers for asset "ETH"),
// signed here and submitted through a configured JSON-RPC endpoint; sign and
// verify use EIP-191 personal messages (payer proofs). It sees nothing of
// Masq but include/masq_plugin.h.
import CMasqPlugin
import MasqPluginSupport
import FoundationEssentials
import MasqCrypto
import MasqHTTPClient
import NIOCore
import NIOPosix
import NIOSSL
#if canImport(Glibc)
    import Glibc
#endif

private let pluginName: StaticString = "evm"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString =
    "Ethereum-compatible wallet: secp256k1, EIP-1559 ERC-20 transfers over JSON-RPC, EIP-191 signatures"

// MARK: - encodings

/// Big-endian bytes of an unsigned integer, minimal (zero is empty), as RLP and JSON-RPC want.
func minimalBytes(_ n: UInt128) -> [UInt8] {
    var out: [UInt8] = []
    var v = n
    while v > 0 { out.insert(UInt8(truncatingIfNeeded: v), at: 0); v >>= 8 }
    return out
}

func quantity(_ n: UInt128) -> String { n == 0 ? "0x0" : "0x" + String(n, radix: 16) }

func parseQuantity(_ text: String) -> UInt128? {
    guard text.hasPrefix("0x") else { return nil }
    let digits = text.dropFirst(2)
    if digits.isEmpty { return 0 }
    // Values beyond 128 bits (never a balance this wallet handles) are refused.
    let trimmed = digits.drop { $0 == "0" }
    guard trimmed.count <= 32 else { return nil }
    return trimmed.isEmpty ? 0 : UInt128(trimmed, radix: 16)
}

/// Recursive length prefix (Ethereum yellow paper, appendix B).
indirect enum RLP {
    case bytes([UInt8])
    case list([RLP])

    var encoded: [UInt8] {
        switch self {
        case .bytes(let b):
            if b.count == 1 && b[0] < 0x80 { return b }
            return RLP.header(b.count, short: 0x80, long: 0xb7) + b
        case .list(let items):
            let payload = items.flatMap(\.encoded)
            return RLP.header(payload.count, short: 0xc0, long: 0xf7) + payload
        }
    }

    private static func header(_ length: Int, short: UInt8, long: UInt8) -> [UInt8] {
        if length <= 55 { return [short + UInt8(length)] }
        let len = minimalBytes(UInt128(length))
        return [long + UInt8(len.count)] + len
    }
}

/// A parsed JSON value (JSON-RPC answers).
enum JSON: Decodable {
    case string(String), number(Double), bool(Bool), null, array([JSON]), object([String: JSON])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSON].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSON].self))
        }
    }

    subscript(key: String) -> JSON? { if case .object(let o) = self { o[key] } else { nil } }
    var string: String? { if case .string(let s) = self { s } else { nil } }
    var array: [JSON]? { if case .array(let a) = self { a } else { nil } }
}

// MARK: - the wallet

final class EVMWallet: PluginWallet, @unchecked Sendable {
    struct Options {
        var rpc: String?
        var chainID: UInt128?
        var token: [UInt8]?
        var keyFile: String = ""
        var gasLimit: UInt128 = 100_000
        var maxFeeGwei: UInt128?
        var priorityFeeGwei: UInt128?
        var timeoutMilliseconds: Int64 = 10_000
        var asset = "TOKEN"
        /// The most this wallet pays per unit of gas, whatever the endpoint suggests.
        var feeCapGwei: UInt128 = 500
    }

    let host: UnsafePointer<masq_host>
    let options: Options
    let privateKey: SecureBytes
    let addressBytes: [UInt8]
    var address: String { "0x" + Hex.encode(addressBytes) }
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let tls = try? NIOSSLContext(configuration: .makeClientConfiguration())
    private let lock = PluginLock()
    /// The endpoint answered eth_chainId with the configured chain once.
    private var chainChecked = false
    private let chainLock = PluginLock()

    static let transferSelector = Array(Keccak.hash256(Array("transfer(address,uint256)".utf8)).prefix(4))
    static let balanceOfSelector = Array(Keccak.hash256(Array("balanceOf(address)".utf8)).prefix(4))
    static let transferTopic = "0x" + Hex.encode(Keccak.hash256(Array("Transfer(address,address,uint256)".utf8)))

    init(host: UnsafePointer<masq_host>, options: Options) throws(PluginFailure) {
        self.host = host
        self.options = options
        privateKey = try Self.loadOrCreateKey(options.keyFile)
        guard let publicKey = try? Secp256k1.publicKey(of: privateKey) else {
            throw .init(MASQ_E_INVALID, "bad key in \(options.keyFile)")
        }
        addressBytes = Self.address(of: publicKey)
    }

    deinit {
        try? group.syncShutdownGracefully()
    }

    static func address(of publicKey: [UInt8]) -> [UInt8] {
        Array(Keccak.hash256(Array(publicKey.dropFirst())).suffix(20))
    }

    static func loadOrCreateKey(_ path: String) throws(PluginFailure) -> SecureBytes {
        if let file = fopen(path, "rb") {
            defer { fclose(file) }
            var text = [UInt8](repeating: 0, count: 130)
            let n = fread(&text, 1, 130, file)
            defer { for i in text.indices { text[i] = 0 } }
            let trimmed = String(decoding: text[0..<n].filter { Hex.nibble($0) != nil || $0 == 0x78 }, as: UTF8.self)
            guard var key = Hex.decode(trimmed), key.count == 32 else {
                throw .init(MASQ_E_INVALID, "\(path): expected a 32-byte hex private key")
            }
            defer { for i in key.indices { key[i] = 0 } }
            return SecureBytes(key)
        }
        let (key, _) = Secp256k1.keyPair()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw .init(MASQ_E_IO, "cannot create the wallet key \(path)") }
        defer { close(fd) }
        let text = Array((Hex.encode(key.bytes) + "\n").utf8)
        guard text.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == text.count else {
            throw .init(MASQ_E_IO, "cannot write \(path)")
        }
        return key
    }

    // MARK: JSON-RPC

    func rpc(_ method: String, _ params: String) throws(PluginFailure) -> JSON {
        guard let url = options.rpc, let endpoint = HTTPEndpoint(url) else {
            throw .init(MASQ_E_CONFIG, "option rpc (the JSON-RPC endpoint URL) is required")
        }
        let body = Array("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\(method)\",\"params\":\(params)}".utf8)
        let result: HTTPResult
        do {
            result = try HTTPClient.post(
                endpoint, body: body, group: group, tls: tls, timeout: .milliseconds(options.timeoutMilliseconds),
                maxResponseBytes: 8 << 20
            ).wait()
        } catch { throw .init(MASQ_E_UNAVAILABLE, "JSON-RPC \(method): \(error)") }
        guard result.status == 200, let answer = try? JSONDecoder().decode(JSON.self, from: Data(result.body)) else {
            throw .init(MASQ_E_UNAVAILABLE, "JSON-RPC \(method): HTTP \(result.status)")
        }
        if let error = answer["error"] {
            throw .init(MASQ_E_UNAVAILABLE, "JSON-RPC \(method): \(error["message"]?.string ?? "error")")
        }
        guard let value = answer["result"] else { throw .init(MASQ_E_UNAVAILABLE, "JSON-RPC \(method): no result") }
        return value
    }

    private func rpcQuantity(_ method: String, _ params: String) throws(PluginFailure) -> UInt128 {
        guard let text = try rpc(method, params).string, let n = parseQuantity(text) else {
            throw .init(MASQ_E_UNAVAILABLE, "JSON-RPC \(method): not a quantity")
        }
        return n
    }

    /// The endpoint must serve the configured chain: a transaction signed for
    /// one chain is valid on no other (EIP-155), and balances, receipts and
    /// logs of another chain say nothing about this one. Checked before every
    /// payment, and before the first read.
    private func checkChain(always: Bool) throws(PluginFailure) {
        if !always {
            if chainLock.withLock({ chainChecked }) { return }
        }
        guard let configured = options.chainID else { throw .init(MASQ_E_CONFIG, "option chain_id is required") }
        let served = try rpcQuantity("eth_chainId", "[]")
        guard served == configured else {
            throw .init(
                MASQ_E_DENIED, "the endpoint serves chain \(served), not the configured chain \(configured): refused")
        }
        chainLock.withLock { chainChecked = true }
    }

    /// Wei from gwei, refusing what does not fit.
    static func wei(gwei: UInt128) throws(PluginFailure) -> UInt128 {
        let (wei, overflow) = gwei.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { throw .init(MASQ_E_INVALID, "a fee of \(gwei) gwei overflows") }
        return wei
    }

    /// The fees of a payment: the endpoint's suggestion (or the configured
    /// fees), refused above the cap, every step overflow-checked (an endpoint
    /// may answer anything).
    func fees(gas: UInt128) throws(PluginFailure) -> (priority: UInt128, maxFee: UInt128) {
        let cap = try Self.wei(gwei: options.feeCapGwei)
        let priority: UInt128
        if let gwei = options.priorityFeeGwei {
            priority = try Self.wei(gwei: gwei)
        } else {
            priority = try rpcQuantity("eth_maxPriorityFeePerGas", "[]")
        }
        var maxFee: UInt128
        if let gwei = options.maxFeeGwei {
            maxFee = try Self.wei(gwei: gwei)
        } else {
            let price = try rpcQuantity("eth_gasPrice", "[]")
            let (doubled, o1) = price.multipliedReportingOverflow(by: 2)
            let (sum, o2) = doubled.addingReportingOverflow(priority)
            guard !o1, !o2 else { throw .init(MASQ_E_DENIED, "the endpoint's gas price \(price) overflows: refused") }
            maxFee = sum
        }
        guard priority <= cap, maxFee <= cap else {
            throw .init(
                MASQ_E_DENIED,
                "a fee of \(max(priority, maxFee)) wei per gas is above the cap of \(options.feeCapGwei) gwei (fee_cap_gwei): refused"
            )
        }
        maxFee = max(maxFee, priority)
        guard !maxFee.multipliedReportingOverflow(by: gas).overflow else {
            throw .init(MASQ_E_INVALID, "the fee overflows")
        }
        return (priority, maxFee)
    }

    // MARK: operations

    func balance(_ asset: String?) throws(PluginFailure) -> String {
        try checkChain(always: false)
        if asset == "ETH" { return String(try rpcQuantity("eth_getBalance", "[\"\(address)\",\"latest\"]")) }
        guard let token = options.token else {
            throw .init(MASQ_E_CONFIG, "option token (the ERC-20 contract) is required")
        }
        let data = "0x" + Hex.encode(Self.balanceOfSelector + [UInt8](repeating: 0, count: 12) + addressBytes)
        return String(
            try rpcQuantity("eth_call", "[{\"to\":\"0x\(Hex.encode(token))\",\"data\":\"\(data)\"},\"latest\"]"))
    }

    /// An EIP-1559 transaction, signed: (raw bytes, hash).
    func transaction(
        to: [UInt8], value: UInt128, data: [UInt8], nonce: UInt128, chainID: UInt128, maxPriority: UInt128,
        maxFee: UInt128, gas: UInt128
    )
        throws(PluginFailure) -> (raw: [UInt8], hash: [UInt8])
    {
        let fields: [RLP] = [
            .bytes(minimalBytes(chainID)), .bytes(minimalBytes(nonce)), .bytes(minimalBytes(maxPriority)),
            .bytes(minimalBytes(maxFee)),
            .bytes(minimalBytes(gas)), .bytes(to), .bytes(minimalBytes(value)), .bytes(data), .list([])
        ]
        let digest = Keccak.hash256([0x02] + RLP.list(fields).encoded)
        guard let (r, s, v) = try? Secp256k1.sign(digest: digest, privateKey: privateKey) else {
            throw .init(MASQ_E_INTERNAL, "signing failed")
        }
        let strip: ([UInt8]) -> [UInt8] = { Array($0.drop { $0 == 0 }) }
        let raw = [0x02] + RLP.list(fields + [.bytes(v == 0 ? [] : [v]), .bytes(strip(r)), .bytes(strip(s))]).encoded
        return (raw, Keccak.hash256(raw))
    }

    /// An ERC-20 transfer carries no memo: `memo` is not sent.
    func pay(to text: String, asset: String?, amount: String, memo: [UInt8]) throws(PluginFailure) -> String {
        guard let amount = UInt128(amount), amount > 0 else {
            throw .init(MASQ_E_INVALID, "amount must be a positive decimal integer below 2^128")
        }
        guard let to = Hex.decode(text), to.count == 20, text.hasPrefix("0x") else {
            throw .init(MASQ_E_INVALID, "not an address: \(text.prefix(80))")
        }
        // One payment at a time: each takes the next nonce.
        return try lock.withLock { () throws(PluginFailure) -> String in
            try payLocked(to: to, asset: asset, amount: amount)
        }
    }

    private func payLocked(to: [UInt8], asset: String?, amount: UInt128) throws(PluginFailure) -> String {
        try checkChain(always: true)
        guard let chainID = options.chainID else { throw .init(MASQ_E_CONFIG, "option chain_id is required") }
        let nonce = try rpcQuantity("eth_getTransactionCount", "[\"\(address)\",\"pending\"]")
        let (priority, maxFee) = try fees(gas: asset == "ETH" ? 21_000 : options.gasLimit)
        let tx: (raw: [UInt8], hash: [UInt8])
        if asset == "ETH" {
            tx = try transaction(
                to: to, value: amount, data: [], nonce: nonce, chainID: chainID, maxPriority: priority, maxFee: maxFee,
                gas: 21_000)
        } else {
            guard let token = options.token else {
                throw .init(MASQ_E_CONFIG, "option token (the ERC-20 contract) is required")
            }
            if let balance = UInt128(try balance(nil)), balance < amount {
                throw .init(MASQ_E_FUNDS, "token balance \(balance) does not cover \(amount)")
            }
            let data =
                Self.transferSelector + [UInt8](repeating: 0, count: 12) + to + [UInt8](repeating: 0, count: 16)
                + Self.pad16(amount)
            tx = try transaction(
                to: token, value: 0, data: data, nonce: nonce, chainID: chainID, maxPriority: priority, maxFee: maxFee,
                gas: options.gasLimit)
        }
        let sent = try rpc("eth_sendRawTransaction", "[\"0x\(Hex.encode(tx.raw))\"]").string ?? ""
        let hash = "0x" + Hex.encode(tx.hash)
        guard sent.lowercased() == hash else {
            throw .init(MASQ_E_UNAVAILABLE, "the node answered with another transaction hash")
        }
        return hash
    }

    static func pad16(_ n: UInt128) -> [UInt8] {
        let bytes = minimalBytes(n)
        return [UInt8](repeating: 0, count: 16 - bytes.count) + bytes
    }

    /// EIP-191 personal message digest.
    static func personalDigest(_ message: [UInt8]) -> [UInt8] {
        Keccak.hash256(Array("\u{19}Ethereum Signed Message:\n\(message.count)".utf8) + message)
    }

    func sign(_ message: [UInt8]) throws(PluginFailure) -> [UInt8] {
        guard let (r, s, v) = try? Secp256k1.sign(digest: Self.personalDigest(message), privateKey: privateKey) else {
            throw .init(MASQ_E_INTERNAL, "signing failed")
        }
        return r + s + [27 + v]
    }

    static func verify(_ address: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool {
        guard signature.count == 65, let expected = Hex.decode(address), expected.count == 20 else { return false }
        let v = signature[64] >= 27 ? signature[64] - 27 : signature[64]
        guard v <= 1,
            let key = Secp256k1.recover(
                digest: personalDigest(message), r: Array(signature[0..<32]), s: Array(signature[32..<64]), recovery: v)
        else { return false }
        return Self.address(of: key) == expected
    }

    /// The asset is the configured token (`asset` is not consulted).
    func verifyPayment(txid: String, from: String, to: String, asset: String?, amount text: String)
        throws(PluginFailure) -> Int32
    {
        guard let amount = UInt128(text) else { throw .init(MASQ_E_INVALID, "amount must be a decimal integer") }
        try checkChain(always: false)
        let receipt = try rpc("eth_getTransactionReceipt", "[\"\(txid)\"]")
        guard case .object = receipt else { return MASQ_E_NOT_FOUND }
        guard receipt["status"]?.string == "0x1" else { return MASQ_E_DENIED }
        for log in receipt["logs"]?.array ?? [] {
            guard let topics = log["topics"]?.array?.compactMap(\.string), topics.count == 3,
                topics[0] == Self.transferTopic,
                Hex.decode(topics[1]).map({ Array($0.suffix(20)) }) == Hex.decode(from),
                Hex.decode(topics[2]).map({ Array($0.suffix(20)) }) == Hex.decode(to),
                let value = log["data"]?.string.flatMap(parseQuantity), value >= amount
            else { continue }
            if let token = options.token, Hex.decode(log["address"]?.string ?? "") != token { continue }
            return MASQ_OK
        }
        return MASQ_E_DENIED
    }

    /// Token transfers to this wallet from block `cursor` on (eth_getLogs).
    func payments(after cursor: UInt64, limit: UInt32) throws(PluginFailure) -> String {
        guard let token = options.token else { throw .init(MASQ_E_CONFIG, "option token is required") }
        try checkChain(always: false)
        let me = "0x" + String(repeating: "0", count: 24) + Hex.encode(addressBytes)
        let logs = try rpc(
            "eth_getLogs",
            "[{\"fromBlock\":\"\(quantity(UInt128(cursor)))\",\"toBlock\":\"latest\",\"address\":\"0x\(Hex.encode(token))\",\"topics\":[\"\(Self.transferTopic)\",null,\"\(me)\"]}]"
        )
        var items: [String] = []
        var next = cursor
        for log in (logs.array ?? []).prefix(Int(limit)) {
            guard let topics = log["topics"]?.array?.compactMap(\.string), topics.count == 3,
                topics[0] == Self.transferTopic,
                let from = Hex.decode(topics[1]), Hex.decode(topics[2]).map({ Array($0.suffix(20)) }) == addressBytes,
                Hex.decode(log["address"]?.string ?? "") == token,
                let value = log["data"]?.string.flatMap(parseQuantity),
                let block = log["blockNumber"]?.string.flatMap(parseQuantity),
                block < UInt128(UInt64.max)
            else { continue }
            next = max(next, UInt64(block) + 1)
            items.append(
                "{\"txid\": \"\(log["transactionHash"]?.string ?? "")\", \"from\": \"0x\(Hex.encode(Array(from.suffix(20))))\", \"asset\": \"\(options.asset)\", \"amount\": \"\(value)\"}"
            )
        }
        return "{\"payments\": [" + items.joined(separator: ", ") + "], \"cursor\": \(next)}"
    }
}

// MARK: - the C face

private func parse(_ host: UnsafePointer<masq_host>, _ list: UnsafePointer<masq_plugin_option>?, _ count: Int)
    throws(PluginFailure) -> EVMWallet
{
    var options = EVMWallet.Options()
    var dataDirectory = "."
    var keyFile: String?
    let pairs = try pluginOptions(list, count)
    for (key, value) in pairs {
        func number() throws(PluginFailure) -> UInt128 {
            guard let n = UInt128(value) else { throw .init(MASQ_E_CONFIG, "option \(key) must be a decimal integer") }
            return n
        }
        switch key {
        case "data_dir": dataDirectory = value
        case "rpc":
            guard let endpoint = HTTPEndpoint(value) else {
                throw .init(MASQ_E_CONFIG, "option rpc must be an http(s) URL")
            }
            // Plain HTTP only to this machine: anyone on the path could change balances, fees and receipts.
            guard
                endpoint.tls || ["localhost", "::1"].contains(endpoint.host.lowercased())
                    || endpoint.host.hasPrefix("127.") && endpoint.host.split(separator: ".").count == 4
            else {
                throw .init(MASQ_E_CONFIG, "option rpc must be https (plain http only to a loopback address)")
            }
            options.rpc = value
        case "chain_id": options.chainID = try number()
        case "token":
            guard value.hasPrefix("0x"), let bytes = Hex.decode(value), bytes.count == 20 else {
                throw .init(MASQ_E_CONFIG, "option token must be a 0x address")
            }
            options.token = bytes
        case "key_file": keyFile = value
        case "gas_limit": options.gasLimit = try number()
        case "max_fee_gwei": options.maxFeeGwei = try number()
        case "priority_fee_gwei": options.priorityFeeGwei = try number()
        case "fee_cap_gwei": options.feeCapGwei = try number()
        case "asset": options.asset = value
        case "timeout_ms":
            guard let n = Int64(value), (100...600_000).contains(n) else {
                throw .init(MASQ_E_CONFIG, "option timeout_ms must be 100...600000")
            }
            options.timeoutMilliseconds = n
        default:
            throw .init(
                MASQ_E_CONFIG,
                "unknown option \"\(key)\" (known: rpc, chain_id, token, key_file, gas_limit, max_fee_gwei, priority_fee_gwei, fee_cap_gwei, asset, timeout_ms)"
            )
        }
    }
    guard options.chainID != nil else {
        throw .init(
            MASQ_E_CONFIG, "option chain_id is required (payments are refused when the endpoint serves another chain)")
    }
    options.keyFile = keyFile ?? dataDirectory + "/evm.key"
    return try EVMWallet(host: host, options: options)
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_wallet_vtable> = {
    let v = UnsafeMutablePointer<masq_wallet_vtable>.allocate(capacity: 1)
    var t = walletVTable()
    t.create = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        return handOver(host, out) { () throws(PluginFailure) in try parse(host, options, count) }
    }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor = pluginDescriptor(
    kind: MASQ_PLUGIN_WALLET, name: pluginName, version: pluginVersion,
    summary: pluginSummary, vtable: UnsafeRawPointer(vtable))

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
