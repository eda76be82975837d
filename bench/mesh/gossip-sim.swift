// A model of the mesh's gossip at sizes no box here can run as processes:
// N nodes in rounds of one gossip interval, each sending one frame a round to
// each neighbour and taking frames with the same budgets as `MeshNode`
// (credit per link, allowance per turn, read cost, table cap, TTL, maximum age,
// tombstones). No crypto and no JSON: a record is (key, version); what a
// verification costs is counted, not done. Two policies side by side:
//
//   old: a frame carries the 255 records heard most recently; updates of held
//        keys are decoded (one verification's credit) before a version that is
//        not newer is skipped, and all updates go before new keys;
//   new: a frame carries the records taken most recently (news, up to half)
//        and then the next ones of a rotation over the whole table; a version
//        not newer is skipped at read cost (read off the bytes); updates and
//        new keys take turns.
//
// What the model leaves out (a review's list): frames are counted in
// records of one size, not bytes; each frame gets a turn's whole allowance to
// itself (in a node, frames read in one turn share it: optimistic); no churn,
// no frames rebuilt within a round, no adversary. Run it for several TTLs
// (bench/mesh/gossip.sh: 1,000 rounds) so that expiry is exercised.
//
// Built and run by bench/mesh/gossip.sh. Prints, per size, the share of live
// records every node holds (mean and worst node), how long a record held has been
// stale (a newer version exists), and how long a stopped node's record lives on.

import Foundation

struct Options {
    var nodes = 1_000
    var rounds = 240
    var policy = "new"
    var perFrame = 255
    var newsShare = 0.5
    var perTurn = 64.0
    var perSecond = 256.0
    var ttl = 15
    var maxAge = 3_600
    var versionEvery = 5
    var maxRecords = 4_096
    var degree = 3
    var maxDegree = 5
    var seed: UInt64 = 1
    var stopAt = 0  // round at which 5% of nodes stop (0: none)
    var newsRounds = 3  // news: records taken within this many rounds
}

var options = Options()
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let name = arguments.next() {
    guard let value = arguments.next() else { fatalError("\(name) needs a value") }
    switch name {
    case "--nodes": options.nodes = Int(value)!
    case "--rounds": options.rounds = Int(value)!
    case "--policy": options.policy = value
    case "--per-frame": options.perFrame = Int(value)!
    case "--news-share": options.newsShare = Double(value)!
    case "--per-turn": options.perTurn = Double(value)!
    case "--ttl": options.ttl = Int(value)!
    case "--max-age": options.maxAge = Int(value)!
    case "--version-every": options.versionEvery = Int(value)!
    case "--max-records": options.maxRecords = Int(value)!
    case "--seed": options.seed = UInt64(value)!
    case "--stop-at": options.stopAt = Int(value)!
    case "--news-rounds": options.newsRounds = Int(value)!
    default: fatalError("unknown option \(name)")
    }
}

/// SplitMix64: a seeded generator, so runs repeat. The same as the tests'
/// `SeededRandom` (Tests/MasqKernelTests/SyncTests.swift): this model is
/// one file built alone by swiftc, outside the package, so it keeps its own.
struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
var random = Generator(state: options.seed)

let n = options.nodes
let newPolicy = options.policy == "new"

// The graph: every node links to `degree` others, no node beyond `maxDegree`.
var links = [[Int]](repeating: [], count: n)
for a in 0..<n {
    var tries = 0
    while links[a].count < options.degree && tries < 100 {
        tries += 1
        let b = Int.random(in: 0..<n, using: &random)
        guard b != a, !links[a].contains(b), links[b].count < options.maxDegree else { continue }
        links[a].append(b)
        links[b].append(a)
    }
}

// Per node, per key: the version held (0: none), when heard, when taken.
var version = [[Int32]](repeating: [Int32](repeating: 0, count: n), count: n)
var heard = [[Int32]](repeating: [Int32](repeating: 0, count: n), count: n)
var taken = [[Int32]](repeating: [Int32](repeating: 0, count: n), count: n)
var heldCount = [Int](repeating: 0, count: n)
// Tombstones: (key, version) refused until a round.
var tombstones = [[Int: (Int32, Int)]](repeating: [:], count: n)
var cursor = [Int](repeating: 0, count: n)
var recent = [[(key: Int, version: Int32, round: Int)]](repeating: [], count: n)
var credit = [[Double]](repeating: [], count: n)
for a in 0..<n { credit[a] = [Double](repeating: 2 * options.perSecond, count: links[a].count) }
var ownVersion = [Int32](repeating: 1, count: n)
// When each version of each node was signed (index: version - 1).
var signedRounds = [[Int]](repeating: [0], count: n)
let offset = (0..<n).map { _ in Int.random(in: 0..<options.versionEvery, using: &random) }
var stopped = [Bool](repeating: false, count: n)
var salt = (0..<n).map { _ in UInt32.random(in: 0...UInt32.max, using: &random) }

var counters = (verifications: 0, overBudget: 0, refused: 0, framesDropped: 0)
var lagSamples: [Double] = []
var heldShares: [Double] = []
var worstShares: [Double] = []
var deadLeft: [(Int, Double)] = []

func frame(of a: Int, now: Int) -> [(Int, Int32)] {
    var list: [(Int, Int32)] = [(a, ownVersion[a])]
    if !newPolicy {
        var keys: [Int] = []
        keys.reserveCapacity(heldCount[a])
        for k in 0..<n where version[a][k] != 0 { keys.append(k) }
        // Heard most recently; ties in a node's own fixed order (a hash table's).
        let s = salt[a]
        keys.sort {
            heard[a][$0] != heard[a][$1]
                ? heard[a][$0] > heard[a][$1] : (UInt32($0) &* 2_654_435_761 ^ s) < (UInt32($1) &* 2_654_435_761 ^ s)
        }
        for k in keys.prefix(options.perFrame) { list.append((k, version[a][k])) }
        return list
    }
    let news = Int(Double(options.perFrame) * options.newsShare)
    var picked = Set<Int>()
    // News: the records taken in the last rounds, the most recent first.
    recent[a].removeAll { $0.round < now - options.newsRounds || version[a][$0.key] != $0.version }
    for entry in recent[a].reversed() where list.count <= news && !picked.contains(entry.key) {
        picked.insert(entry.key)
        list.append((entry.key, entry.version))
    }
    // The rotation: held keys in order from the cursor on, wrapping.
    var k = cursor[a], seen = 0
    while list.count < options.perFrame + 1 && seen < n {
        if version[a][k] != 0 && !picked.contains(k) { list.append((k, version[a][k])) }
        k = (k + 1) % n
        seen += 1
    }
    cursor[a] = k
    return list
}

func take(_ a: Int, _ k: Int, _ v: Int32, now: Int) {
    if version[a][k] == 0 { heldCount[a] += 1 }
    version[a][k] = v
    heard[a][k] = Int32(now)
    taken[a][k] = Int32(now)
    recent[a].append((k, v, now))
}

func receive(_ a: Int, link l: Int, _ list: [(Int, Int32)], now: Int) {
    var allowance = options.perTurn  // one frame a turn
    guard credit[a][l] > 0 else { counters.framesDropped += 1; return }
    let reading = Double(list.count) / 16
    credit[a][l] -= reading
    allowance -= reading
    var updates: [(Int, Int32)] = [], fresh: [(Int, Int32)] = []
    let full = heldCount[a] >= options.maxRecords
    for (k, v) in list {
        if k == a { continue }
        if version[a][k] == v { heard[a][k] = Int32(now); continue }
        if let t = tombstones[a][k], t.0 == v, t.1 > now { continue }
        if version[a][k] != 0 {
            if newPolicy && v <= version[a][k] { continue }
            updates.append((k, v))
        } else if full {
            counters.refused += 1
        } else {
            fresh.append((k, v))
        }
    }
    var order: [(Int, Int32)] = []
    if newPolicy {
        var i = 0
        while i < max(updates.count, fresh.count) {
            if i < updates.count { order.append(updates[i]) }
            if i < fresh.count { order.append(fresh[i]) }
            i += 1
        }
    } else {
        order = updates + fresh
    }
    for (k, v) in order {
        guard credit[a][l] >= 1, allowance >= 1 else { counters.overBudget += 1; continue }
        credit[a][l] -= 1
        allowance -= 1
        if version[a][k] >= v { continue }
        if version[a][k] == 0 && heldCount[a] >= options.maxRecords { continue }
        counters.verifications += 1
        take(a, k, v, now: now)
    }
}

for now in 1...options.rounds {
    if options.stopAt > 0 && now == options.stopAt {
        for a in stride(from: 0, to: n, by: 20) { stopped[a] = true }
    }
    for a in 0..<n where !stopped[a] && (now + offset[a]) % options.versionEvery == 0 {
        ownVersion[a] += 1
        signedRounds[a].append(now)
    }
    // Expiry (the tick), then frames built from the state at the round's start.
    for a in 0..<n where !stopped[a] {
        for k in 0..<n where version[a][k] != 0 {
            if now - Int(heard[a][k]) > options.ttl || now - Int(taken[a][k]) > options.maxAge {
                tombstones[a][k] = (version[a][k], now + options.maxAge)
                version[a][k] = 0
                heldCount[a] -= 1
            }
        }
    }
    var frames = [[(Int, Int32)]](repeating: [], count: n)
    for a in 0..<n where !stopped[a] { frames[a] = frame(of: a, now: now) }
    for a in 0..<n where !stopped[a] {
        for l in 0..<links[a].count { credit[a][l] = min(2 * options.perSecond, credit[a][l] + options.perSecond) }
        for l in Array(0..<links[a].count).shuffled(using: &random) where !stopped[links[a][l]] {
            receive(a, link: l, frames[links[a][l]], now: now)
        }
    }
    // Measures, over the last third of the run (after the table has formed).
    guard now > options.rounds * 2 / 3 else { continue }
    let live = (0..<n).filter { !stopped[$0] }
    var sum = 0.0, worst = 1.0
    for a in live {
        var held = 0
        for k in live where k != a && version[a][k] != 0 { held += 1 }
        let share = Double(held) / Double(max(1, live.count - 1))
        sum += share
        worst = min(worst, share)
    }
    heldShares.append(sum / Double(live.count))
    worstShares.append(worst)
    // Spread: for versions signed 20 rounds ago, how many live nodes hold it (or newer).
    if options.stopAt > 0 && now > options.stopAt {
        var left = 0, total = 0
        for a in live {
            for k in stride(from: 0, to: n, by: 20) where version[a][k] != 0 { left += 1 }
            total += 1
        }
        deadLeft.append((now - options.stopAt, Double(left) / Double(total)))
    }
    // Freshness: for how many rounds a newer version than the one held has existed.
    var lag = 0, pairs = 0
    for a in stride(from: 0, to: n, by: 7) where !stopped[a] {
        for k in live where k != a && version[a][k] != 0 && version[a][k] < ownVersion[k] {
            lag += now - signedRounds[k][Int(version[a][k])]
            pairs += 1
        }
        pairs += live.filter { $0 != a && version[a][$0] == ownVersion[$0] }.count
    }
    lagSamples.append(Double(lag) / Double(max(1, pairs)))
}

let mean = heldShares.reduce(0, +) / Double(max(1, heldShares.count))
let worst = worstShares.min() ?? 0
let lagMean = lagSamples.reduce(0, +) / Double(max(1, lagSamples.count))
print(
    String(
        format:
            "policy=%@ nodes=%d rounds=%d held mean=%.3f worst=%.3f  stale for %.1f rounds on average  verifications/node/round=%.1f overBudget=%d refused=%d framesDropped=%d",
        options.policy, n, options.rounds, mean, worst, lagMean,
        Double(counters.verifications) / Double(n * options.rounds), counters.overBudget, counters.refused,
        counters.framesDropped))
if let last = deadLeft.last {
    print(String(format: "  stopped nodes' records: %.1f per live node %d rounds after they stopped", last.1, last.0))
}
