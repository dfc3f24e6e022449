"""Load service targets in a child process before ``serve`` starts anything: each target's
service name, or the reason it cannot be loaded.

The supervisor never imports user code itself (a service module may import a framework
and claim devices on import); ``python -m zeroserve.cli.targets TARGET...`` loads each
target as a worker would (:func:`zeroserve.service.load_service`) and prints
``{target: [service name, target with its class]}`` as JSON, or the first problem on stderr
with exit status 2. A bare file target (``mlp.py``) comes back with the class it holds
(``mlp.py:MLP``), so that what is started names its class.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import NamedTuple

_TIMEOUT_S = 120.0


class TargetError(ValueError):
    """A target that cannot be served; the message says why."""


class LoadedTarget(NamedTuple):
    """What a target serves: the service's ``name`` and the ``target`` naming its class."""

    name: str
    target: str


def load_targets(targets: list[str], env: dict[str, str] | None = None,
                 timeout_s: float = _TIMEOUT_S) -> dict[str, LoadedTarget]:
    """What each target serves (loaded in a child process); TargetError with the child's
    message when one cannot be loaded."""
    try:
        done = subprocess.run([sys.executable, "-m", "zeroserve.cli.targets", *targets],
                              capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TargetError(f"loading {' '.join(targets)} took more than {timeout_s:.0f}s") \
            from None
    if done.returncode != 0:
        raise TargetError(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                          else f"loading the services failed (exit {done.returncode})")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return {target: LoadedTarget(*loaded) for target, loaded in answer.items()}


def main(argv: list[str]) -> int:
    from zeroserve.service import load_service

    names = {}
    for target in argv:
        try:
            spec = load_service(target)
            _, sep, attr = target.rpartition(":")
            qualified = target if sep and attr else f"{target.rstrip(':')}:{spec.cls.__name__}"
            names[target] = [spec.name, qualified]
        except (ValueError, TypeError, ImportError, AttributeError, OSError) as exc:
            print(f"cannot load service {target}: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
