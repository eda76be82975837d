"""Run inside a network namespace of its own (test_limits.py starts it with
`unshare -rn`): a node on fd00:1::1, connections from several addresses of
one IPv6 /64 and from another /64. Prints what happened as JSON.

Usage: unshare -rn python3 ipv6_prefix.py MASQ_BIN WORKDIR
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from noise_client import Peer  # noqa: E402

PER_PREFIX = 4
SAME_64 = ["fd00:2::%x" % i for i in range(1, PER_PREFIX + 2)]        # 5 addresses of fd00:2::/64
OTHER_64 = ["fd00:3::1", "fd00:3::2"]


def closed_at_once(sock, wait=1.0):
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def main(masq, work):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in ["fd00:1::1"] + SAME_64 + OTHER_64:
        subprocess.run(["ip", "-6", "addr", "add", address + "/128", "dev", "lo", "nodad"], check=True)
    node = subprocess.Popen([masq, "node", "--host", "fd00:1::1", "--port", "0", "--data-dir", work, "--log-level", "error", "--gossip-ms", "200",
                             "--max-pending-handshakes", "16", "--max-pending-handshakes-per-prefix", str(PER_PREFIX)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    result = {}
    try:
        descriptor = node.stdout.readline().split()[1]
        port = int(descriptor.rsplit(":", 1)[1])
        held = []
        for source in SAME_64[:PER_PREFIX]:
            held.append(socket.create_connection(("fd00:1::1", port), timeout=2, source_address=(source, 0)))
        time.sleep(0.3)
        result["same_64_kept"] = sum(not closed_at_once(s, 0.2) for s in held)
        # Another address of the same /64: its prefix's share is taken.
        extra = socket.create_connection(("fd00:1::1", port), timeout=2, source_address=(SAME_64[PER_PREFIX], 0))
        result["same_64_next_refused"] = closed_at_once(extra)
        # Another /64 is counted apart: a connection is kept, a client links.
        other = socket.create_connection(("fd00:1::1", port), timeout=2, source_address=(OTHER_64[0], 0))
        result["other_64_kept"] = not closed_at_once(other, 0.5)
        peer = Peer("fd00:1::1", port, source=OTHER_64[1], client=True)
        peer.handshake()
        peer.ping()
        result["other_64_client_ping"] = True
        time.sleep(0.5)
        result["state"] = json.load(open(os.path.join(work, "state.json")))
        for s in held + [extra, other, peer.sock]:
            s.close()
    finally:
        node.terminate()
        node.wait(5)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
