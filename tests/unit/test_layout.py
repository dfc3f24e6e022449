"""The layout's promises: daemons import the wire contract, never the client SDK."""
import subprocess
import sys

import pytest

_LOADED = (
    "import sys, importlib\n"
    "for name in {modules!r}: importlib.import_module(name)\n"
    "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'tornado')"
    " or m.startswith('zeroserve.client'))))\n"
)


def _loaded_by(*modules: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _LOADED.format(modules=modules)],
                         capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


def test_importing_the_broker_loads_neither_grpc_nor_the_sdk():
    loaded = _loaded_by("broker.daemon", "broker.core", "broker.jobs.desk")
    assert not loaded, f"the broker loaded {sorted(loaded)}"


@pytest.mark.parametrize("daemon", ["gateway.daemon", "worker.daemon"])
def test_daemons_do_not_load_the_sdk(daemon):
    loaded = _loaded_by(daemon)
    assert not {m for m in loaded if m.startswith("zeroserve.client")}


def test_public_names_still_import_from_zeroserve():
    import zeroserve

    for name in zeroserve.__all__:
        assert getattr(zeroserve, name) is not None
    from zeroserve import BadRequest, Client  # noqa: F401
