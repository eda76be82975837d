"""Upload through the mesh: a Python client pushes SIZE_MB to a TCP sink on
127.0.0.1, once directly and once through the origin's SOCKS5 front,
alternating REPS times; prints the medians and their ratio.

    python3 upload.py SOCKS_HOST:PORT SIZE_MB REPS
"""
import socket
import statistics
import struct
import sys
import threading
import time

socks_host, socks_port = sys.argv[1].rsplit(":", 1)
size = int(sys.argv[2]) * 1_000_000
reps = int(sys.argv[3])

sink = socket.socket()
sink.bind(("127.0.0.1", 0))
sink.listen(8)
port = sink.getsockname()[1]


def serve():
    """Count each connection's bytes; answer "ok" once all arrived."""
    while True:
        conn, _ = sink.accept()
        got = 0
        while got < size:
            data = conn.recv(1 << 20)
            if not data:
                break
            got += len(data)
        conn.sendall(b"ok" if got == size else b"no")
        conn.close()


threading.Thread(target=serve, daemon=True).start()
chunk = bytes(range(256)) * 4096  # 1 MiB


def push(conn):
    start = time.monotonic()
    sent = 0
    while sent < size:
        n = min(len(chunk), size - sent)
        conn.sendall(chunk[:n])
        sent += n
    conn.settimeout(60)
    if conn.recv(2) != b"ok":
        raise SystemExit("the sink did not get every byte")
    conn.close()
    return size / 1e6 / (time.monotonic() - start)


def through_socks():
    conn = socket.create_connection((socks_host, int(socks_port)))
    conn.sendall(b"\x05\x01\x00")
    if conn.recv(2) != b"\x05\x00":
        raise SystemExit("SOCKS5 greeting refused")
    conn.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port))
    reply = conn.recv(10)
    if len(reply) < 2 or reply[1] != 0:
        raise SystemExit("SOCKS5 CONNECT failed: %r" % reply)
    return conn


direct, mesh = [], []
for _ in range(reps):
    direct.append(push(socket.create_connection(("127.0.0.1", port))))
    mesh.append(push(through_socks()))
d, m = statistics.median(direct), statistics.median(mesh)
print("direct loopback TCP  %8.1f MB/s" % d)
print("mesh (SOCKS5, onion) %8.1f MB/s" % m)
print("ratio                %8.3f" % (m / d))
