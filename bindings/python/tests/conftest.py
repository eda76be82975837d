import os
import pathlib

import pytest

import masq

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "memory"])
def plugin(request):
    return request.param


@pytest.fixture
def store(tmp_path, plugin):
    with masq.Store.open_config({"data_dir": str(tmp_path / "data"), "storage": {"plugin": plugin}}) as s:
        yield s


@pytest.fixture
def bad_plugin_dir():
    path = os.environ.get("MASQ_BAD_PLUGIN_DIR")
    if not path:
        pytest.skip("MASQ_BAD_PLUGIN_DIR not set (Tests/c/plugins/build.sh builds them)")
    return path
