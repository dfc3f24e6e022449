"""The gateway's choice of event loop (``gateway.event_loop``, zeroserve.event_loop)."""
import pytest

from zeroserve import event_loop
from zeroserve.config import load_settings
from zeroserve.event_loop import LoopUnavailable, chosen_loop


def test_auto_runs_on_uvloop_where_it_is_installed_and_on_asyncio_elsewhere():
    assert chosen_loop("auto", uvloop_installed=True) == "uvloop"
    assert chosen_loop("auto", uvloop_installed=False) == "asyncio"


def test_asyncio_is_chosen_even_where_uvloop_is_installed():
    assert chosen_loop("asyncio", uvloop_installed=True) == "asyncio"


def test_uvloop_where_it_is_not_installed_says_how_to_get_it():
    with pytest.raises(LoopUnavailable, match="pip install uvloop"):
        chosen_loop("uvloop", uvloop_installed=False)


def test_an_unknown_loop_is_refused_with_the_choices():
    with pytest.raises(LoopUnavailable, match="gateway.event_loop must be one of auto, "
                                              "uvloop, asyncio, got 'trio'"):
        chosen_loop("trio", uvloop_installed=True)


def test_the_default_is_asyncio_and_the_environment_sets_it():
    assert load_settings(environ={}).gateway.event_loop == "asyncio"
    settings = load_settings(environ={"ZEROSERVE_GATEWAY_EVENT_LOOP": "uvloop"})
    assert settings.gateway.event_loop == "uvloop"


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_run_runs_the_coroutine_on_the_loop_it_names(kind):
    if kind == "uvloop":
        pytest.importorskip("uvloop")

    async def running() -> str:
        return event_loop.running_loop()

    assert event_loop.run(running(), kind) == kind
