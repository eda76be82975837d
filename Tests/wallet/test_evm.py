"""The EVM wallet plugin, checked by an independent implementation
(`eth-account`): addresses, EIP-1559 ERC-20 transfers (the sender recovered
from the raw transaction, every field decoded), EIP-191 signatures both
ways, balances and bad input, against a JSON-RPC
endpoint on 127.0.0.1 that records what it is sent."""
import json
import os
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_account import Account
try:
    from eth_account.typed_transactions import TypedTransaction
except ImportError:  # eth-account < 0.13
    from eth_account._utils.typed_transactions import TypedTransaction
from eth_account.messages import encode_defunct
from eth_utils import keccak
from hexbytes import HexBytes

MASQ = os.environ.get("MASQ_BIN", "masq")
TOKEN = "0x" + "ab" * 20
CHAIN = 1337
TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")


class Chain:
    """Just enough of an Ethereum node: nonces, raw transactions, receipts, logs."""

    def __init__(self):
        self.sent = []
        self.lock = threading.Lock()
        # What a hostile or misconfigured endpoint may answer (tests change these and put them back).
        self.chain_id = CHAIN
        self.gas_price = 2 * 10 ** 9

    def answer(self, method, params):
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_getTransactionCount":
            with self.lock:
                return hex(sum(1 for s in self.sent if s["from"] == params[0].lower()))
        if method == "eth_maxPriorityFeePerGas":
            return hex(10 ** 9)
        if method == "eth_gasPrice":
            return hex(self.gas_price)
        if method == "eth_call":
            assert params[0]["to"] == TOKEN and params[0]["data"].startswith("0x70a08231")
            return hex(10 ** 24)
        if method == "eth_sendRawTransaction":
            raw = HexBytes(params[0])
            sender = Account.recover_transaction(params[0]).lower()
            tx = TypedTransaction.from_bytes(raw).as_dict()
            with self.lock:
                self.sent.append({"raw": raw, "from": sender, "tx": tx, "hash": "0x" + keccak(raw).hex().removeprefix("0x")})
            return self.sent[-1]["hash"]
        if method == "eth_getTransactionReceipt":
            for s in self.sent:
                if s["hash"] == params[0]:
                    return {"status": "0x1", "logs": [self.log(s)]}
            return None
        if method == "eth_getLogs":
            me, start = params[0]["topics"][2], int(params[0]["fromBlock"], 16)
            return [self.log(s) for s in self.sent if self.log(s)["topics"][2] == me and int(self.log(s)["blockNumber"], 16) >= start]
        raise ValueError("unknown method " + method)

    def log(self, s):
        data = bytes(HexBytes(s["tx"]["data"])).hex()
        to, amount = data[8 + 24:8 + 64], int(data[8 + 64:], 16)
        return {"address": TOKEN, "topics": [TRANSFER, "0x" + "0" * 24 + s["from"][2:], "0x" + "0" * 24 + to],
                "data": hex(amount), "blockNumber": hex(10 + self.sent.index(s)), "transactionHash": s["hash"]}


@pytest.fixture(scope="module")
def rpc():
    chain = Chain()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                body = {"jsonrpc": "2.0", "id": request["id"], "result": chain.answer(request["method"], request["params"])}
            except Exception as e:  # noqa: BLE001 - reported to the client as a JSON-RPC error
                body = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32000, "message": str(e)}}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="masq-evm-")
    yield {"url": "http://127.0.0.1:%d/" % server.server_address[1], "chain": chain, "work": work}
    server.shutdown()


def evm(rpc_, name="me", **changes):
    rpc = rpc_
    options = {"rpc": rpc["url"], "token": TOKEN, "chain_id": CHAIN, "key_file": os.path.join(rpc["work"], name + ".key")}
    options.update(changes)
    return json.dumps({"plugin": "evm", "options": {k: v for k, v in options.items() if v is not None}})


def masq(rpc_, *args, name="me", check=True, **changes):
    rpc = rpc_
    r = subprocess.run([MASQ, "wallet", *args, "--wallet", evm(rpc, name, **changes), "--data-dir", rpc["work"]], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_address_matches_eth_account(rpc):
    address = masq(rpc, "address").stdout.strip()
    key = open(os.path.join(rpc["work"], "me.key")).read().strip()
    assert address == Account.from_key(bytes.fromhex(key)).address.lower()


def test_erc20_transfer_is_a_valid_signed_eip1559_transaction(rpc):
    me = masq(rpc, "address").stdout.strip()
    to = "0x" + "12" * 20
    for amount in (12345, 10 ** 18):
        txid = masq(rpc, "pay", to, str(amount)).stdout.strip()
        sent = rpc["chain"].sent[-1]
        assert sent["hash"] == txid
        assert sent["from"] == me                                   # eth-account recovers our address
        tx = sent["tx"]
        assert tx["type"] == 2 and tx["chainId"] == CHAIN and "0x" + bytes(HexBytes(tx["to"])).hex() == TOKEN and tx["value"] == 0
        data = bytes(HexBytes(tx["data"])).hex()
        assert data == "a9059cbb" + "0" * 24 + to[2:] + "%064x" % amount
        assert tx["maxPriorityFeePerGas"] == 10 ** 9 and tx["maxFeePerGas"] == 5 * 10 ** 9 and tx["gas"] == 100_000
    nonces = [s["tx"]["nonce"] for s in rpc["chain"].sent if s["from"] == me]
    assert nonces == list(range(len(nonces)))


def test_signatures_both_ways(rpc):
    me = masq(rpc, "address").stdout.strip()
    message = os.urandom(48)
    signature = masq(rpc, "sign", message.hex()).stdout.strip()
    assert Account.recover_message(encode_defunct(primitive=message), signature=bytes.fromhex(signature)).lower() == me
    other = Account.create()
    theirs = Account.sign_message(encode_defunct(primitive=message), other.key).signature.hex().removeprefix("0x")
    assert masq(rpc, "verify", other.address.lower(), message.hex(), theirs).stdout.strip() == "ok"
    forged = masq(rpc, "verify", other.address.lower(), (message + b"x").hex(), theirs, check=False)
    assert forged.returncode == 1


def test_balance_and_bad_input(rpc):
    assert masq(rpc, "balance").stdout.strip() == str(10 ** 24)
    bad = masq(rpc, "pay", "0x1234", "5", check=False)
    assert bad.returncode != 0 and "address" in bad.stderr
    bad = masq(rpc, "pay", "0x" + "12" * 20, "-5", check=False)
    assert bad.returncode != 0


def test_payments_are_verified_and_listed_for_the_payee(rpc):
    payer = masq(rpc, "address").stdout.strip()
    payee_address = masq(rpc, "address", name="payee").stdout.strip()
    txid = masq(rpc, "pay", payee_address, "777").stdout.strip()
    assert masq(rpc, "verify-payment", txid, payer, payee_address, "777", name="payee").stdout.strip() == "ok"
    assert masq(rpc, "verify-payment", txid, payer, payee_address, "778", name="payee", check=False).returncode == 1
    assert masq(rpc, "verify-payment", "0x" + "00" * 32, payer, payee_address, "1", name="payee", check=False).returncode == 2
    listed = masq(rpc, "payments", name="payee").stdout.strip().splitlines()
    entries = [json.loads(line) for line in listed[:-1]]
    assert {"from": payer, "amount": "777", "txid": txid} in [{k: e[k] for k in ("from", "amount", "txid")} for e in entries]
    cursor = int(listed[-1].split()[1])
    again = masq(rpc, "payments", "--after", str(cursor), name="payee").stdout.strip().splitlines()
    assert again == ["cursor %d" % cursor]


def test_the_chain_id_is_required_and_another_chain_is_refused(rpc):
    missing = masq(rpc, "address", chain_id=None, check=False)
    assert missing.returncode != 0 and "chain_id" in missing.stderr
    # The endpoint serves another chain (a transaction signed for 1337 replays nowhere, but the
    # balances, receipts and logs it reports are of another chain): nothing is sent.
    sent = len(rpc["chain"].sent)
    rpc["chain"].chain_id = 1
    try:
        r = masq(rpc, "pay", "0x" + "12" * 20, "5", check=False)
        assert r.returncode != 0 and "chain" in r.stderr, r.stderr
        assert masq(rpc, "payments", name="payee", check=False).returncode != 0
    finally:
        rpc["chain"].chain_id = CHAIN
    assert len(rpc["chain"].sent) == sent


@pytest.mark.parametrize("gas_price, changes, why", [
    (10 ** 13, {}, "cap"),                                   # 10,000 gwei suggested: above the default cap (500 gwei)
    (2 * 10 ** 9, {"max_fee_gwei": 501}, "cap"),             # configured above the cap
    (2 ** 127, {}, "overflow"),                              # 2 x the price overflows 128 bits
    (2 * 10 ** 9, {"max_fee_gwei": str(10 ** 30)}, "overflow"),  # gwei -> wei overflows
])
def test_fees_above_the_cap_or_that_overflow_are_refused_without_a_crash(rpc, gas_price, changes, why):
    sent = len(rpc["chain"].sent)
    rpc["chain"].gas_price = gas_price
    try:
        r = masq(rpc, "pay", "0x" + "12" * 20, "5", check=False, **changes)
    finally:
        rpc["chain"].gas_price = 2 * 10 ** 9
    assert r.returncode > 0, (r.returncode, r.stderr)         # an error, not a signal
    assert why in r.stderr, r.stderr
    assert len(rpc["chain"].sent) == sent
    # A cap raised on purpose lets a high fee through.
    if why == "cap" and not changes:
        rpc["chain"].gas_price = 10 ** 12
        try:
            assert masq(rpc, "pay", "0x" + "12" * 20, "5", fee_cap_gwei=5_000).returncode == 0
        finally:
            rpc["chain"].gas_price = 2 * 10 ** 9


def test_plain_http_only_to_loopback(rpc):
    for url in ("http://203.0.113.5:8545/", "http://rpc.example/", "http://[2001:db8::1]:8545/"):
        r = masq(rpc, "address", check=False, **{"rpc": url})
        assert r.returncode != 0 and "https" in r.stderr, (url, r.stderr)
    for url in ("https://203.0.113.5:8545/", "http://localhost:8545/", "http://[::1]:8545/", "http://127.0.0.9:8545/"):
        assert masq(rpc, "address", **{"rpc": url}).returncode == 0, url
