"""Two real stores sync over the lan transport alone, with no relay.

They pair through a relay (pairing needs one), then their configs name only
the lan transport — static peers on 127.0.0.1, fixed ports, as two laptops
at home would list each other — and the relay is stopped. `masq sync` on
both: writes flow both ways, and a device that restarts catches up and its
own writes reach the other again (docs/WRITING-A-PLUGIN.md: the peer events
make the kernel greet a returning device).

Environment: MASQ_BIN (the masq CLI), MASQ_PLUGIN_PATH (the storage and relay
plugins); the lan plugin is found in MASQ_PLUGIN_DIR or built.
"""
import os
import shutil
import sys

import pytest

from conftest import free_port, transport_name

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "adversary"))
from support import Device, Processes, pair, start_relay, start_sync, wait_for  # noqa: E402  (Tests/adversary)

pytestmark = [pytest.mark.skipif(not (os.environ.get("MASQ_BIN") or shutil.which("masq")),
                                 reason="MASQ_BIN (the masq CLI) is not set"),
              pytest.mark.skipif(transport_name() != "lan", reason="MASQ_TRANSPORT is not lan")]


@pytest.fixture
def procs(tmp_path, lan_plugin, monkeypatch):
    path = os.environ.get("MASQ_PLUGIN_PATH", "")
    monkeypatch.setenv("MASQ_PLUGIN_PATH", os.path.dirname(lan_plugin) + (":" + path if path else ""))
    p = Processes(str(tmp_path))
    yield p
    p.stop_all()


def use_lan_only(device, options):
    def change(config):
        config["transports"] = [{"plugin": "lan", "options": options}]
    device.edit_config(change)


def lan_options(how):
    """Options for a and b: each lists the other (fixed ports), or both find
    each other by beacons (127.255.255.255 reaches every socket on loopback)."""
    if how == "static peers":
        pa, pb = free_port(), free_port()
        return ({"bind": "127.0.0.1", "port": pa, "peers": f"127.0.0.1:{pb}", "discovery_port": 0},
                {"bind": "127.0.0.1", "port": pb, "peers": f"127.0.0.1:{pa}", "discovery_port": 0})
    both = {"bind": "127.0.0.1", "discovery_port": free_port(), "discovery_address": "127.255.255.255",
            "beacon_interval_ms": 500}
    return both, both


def arrives(device, ns, key, value, seconds=30):
    wait_for(seconds, f"{ns}/{key} = {value!r} on {device.name}", lambda: device.get(ns, key) == value)


@pytest.mark.parametrize("how", ["static peers", "discovery"])
def test_two_stores_sync_over_the_lan_without_a_relay(procs, tmp_path, how):
    relay, url = start_relay(procs)
    a, b = Device(str(tmp_path), "a"), Device(str(tmp_path), "b")
    pair(procs, a, b, url)
    options_a, options_b = lan_options(how)
    use_lan_only(a, options_a)
    use_lan_only(b, options_b)
    procs.stop(relay)

    sync_a, sync_b = start_sync(procs, a), start_sync(procs, b)
    a.put("notes", "hello", "from a")
    arrives(b, "notes", "hello", "from a")
    b.put("notes", "reply", "from b")
    arrives(a, "notes", "reply", "from b")

    # b goes away; a writes; b comes back and catches up.
    procs.stop(sync_b)
    for i in range(20):
        a.put("while-away", f"k{i}", f"v{i}")
    sync_b = start_sync(procs, b)
    arrives(b, "while-away", "k19", "v19")
    assert len(b.keys("while-away")) == 20
    # The device that restarted is heard again (the defect of issue 17.5).
    b.put("notes", "after-restart", "from b again")
    arrives(a, "notes", "after-restart", "from b again")

    # The same with a restarting.
    procs.stop(sync_a)
    b.put("notes", "while-a-away", "from b")
    sync_a = start_sync(procs, a)
    arrives(a, "notes", "while-a-away", "from b")
    a.put("notes", "a-back", "from a")
    arrives(b, "notes", "a-back", "from a")
