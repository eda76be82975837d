"""What the mesh test modules do alike with their node processes."""
import signal
import subprocess


def stop_all(procs):
    """SIGTERM every process, then wait up to 5 s each; kill those still running."""
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


class Nodes:
    """`masq node` processes of one test, each on its own loopback address, ports picked by the nodes."""

    def __init__(self, work, masq, common=()):
        import os
        self.work, self.masq, self.common = work, masq, list(common)
        self.procs, self.descriptors, self.socks = {}, {}, {}
        self.os = os

    def start(self, name, host, extra=()):
        os = self.os
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        log = open(os.path.join(d, "log"), "w")
        p = subprocess.Popen([self.masq, "node", "--host", host, "--port", "0", "--data-dir", d] + self.common + list(extra),
                             stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs[name] = p
        line = p.stdout.readline()
        assert line.startswith("node masq://"), "%s did not start: %r %s" % (name, line, open(os.path.join(d, "log")).read())
        self.descriptors[name] = line.split()[1]
        if "--socks" in extra:
            self.socks[name] = int(p.stdout.readline().split(":")[1])
        return self.descriptors[name]

    def key(self, name):
        return self.descriptors[name].split(":")[2].split("@")[0]

    def host(self, name):
        return self.descriptors[name].rsplit("@", 1)[1].rsplit(":", 1)[0]

    def port(self, name):
        return int(self.descriptors[name].rsplit(":", 1)[1])

    def state(self, name):
        import json
        import time
        path = self.os.path.join(self.work, name, "state.json")
        for _ in range(50):
            try:
                return json.load(open(path))
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError("no state.json for " + name)

    def log(self, name):
        return open(self.os.path.join(self.work, name, "log")).read()

    def alive(self, name):
        return self.procs[name].poll() is None

    def stop(self):
        stop_all(self.procs)


def wait_for(condition, seconds, what):
    import time
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
