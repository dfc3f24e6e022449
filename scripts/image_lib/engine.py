"""The container engine (podman or docker) and the commands run with it."""
from __future__ import annotations

import resource
import shutil
import subprocess


class ImageError(RuntimeError):
    """A step that cannot go on; the message says what and why."""


def say(message: str) -> None:
    print(f"image: {message}", flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``, raising ImageError (with its stderr) when it fails."""
    result = subprocess.run(command, text=True, **kwargs)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if isinstance(result.stderr, str) else ""
        raise ImageError(f"{' '.join(command[:4])} ... exited {result.returncode}"
                         + (f": {detail}" if detail else ""))
    return result


def output(command: list[str]) -> str:
    return run(command, capture_output=True).stdout.strip()



def choose_engine(wanted: str) -> str:
    """podman when installed, else docker when its daemon answers; ImageError otherwise."""
    candidates = [wanted] if wanted != "auto" else ["podman", "docker"]
    for engine in candidates:
        if shutil.which(engine) is None:
            continue
        if engine == "docker" and subprocess.run(["docker", "info"], capture_output=True,
                                                 timeout=20).returncode != 0:
            continue
        return engine
    raise ImageError(f"no container engine: {' or '.join(candidates)} is not installed or its "
                     "daemon does not answer (apt-get install -y podman runc)")


def shell_limits() -> tuple[int, int]:
    """The open-files and processes limits of this shell (soft)."""
    def soft(which: int, fallback: int) -> int:
        value = resource.getrlimit(which)[0]
        return fallback if value == resource.RLIM_INFINITY else value
    return soft(resource.RLIMIT_NOFILE, 65536), soft(resource.RLIMIT_NPROC, 65536)


def _ulimits(nofile: int, nproc: int) -> list[str]:
    return [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]


def _runtime(engine: str) -> list[str]:
    # crun refuses kernels with hybrid cgroups; runc runs there
    return ["--runtime", "runc"] if engine == "podman" and shutil.which("runc") else []


_CHOSEN_LIMITS: list[str] = []


def engine_options(engine: str, image: str) -> list[str]:
    """The runtime and rlimits every container (and podman's build steps) gets: explicit
    rlimits, since raising the defaults is not permitted on these machines. They start at this
    shell's limits and halve while the runtime refuses them (the runtime's own hard limit can
    be lower than the shell's: runc refused nproc above 32768 under a shell limit of 96365)."""
    if not _CHOSEN_LIMITS:
        nofile, nproc = shell_limits()
        while True:
            probe = subprocess.run([engine, "run", "--rm", "--network", "host", *_runtime(engine),
                                    *_ulimits(nofile, nproc), "--entrypoint", "/bin/true",
                                    "--no-healthcheck", image],
                                   text=True, capture_output=True)
            if probe.returncode == 0:
                break
            if "rlimit" not in probe.stderr or (nofile <= 1024 and nproc <= 1024):
                raise ImageError(f"{engine} cannot run a container of {image}: "
                                 f"{probe.stderr.strip()[-1500:]}")
            if "rlimit type 7" in probe.stderr:  # RLIMIT_NOFILE
                nofile = max(1024, nofile // 2)
            else:                                 # RLIMIT_NPROC (type 6)
                nproc = max(1024, nproc // 2)
        say(f"containers run with {' '.join(_runtime(engine))} nofile={nofile} nproc={nproc} "
            f"(this shell: nofile={shell_limits()[0]} nproc={shell_limits()[1]})")
        _CHOSEN_LIMITS.extend(_ulimits(nofile, nproc))
    return _runtime(engine) + _CHOSEN_LIMITS


def image_exists(engine: str, name: str) -> bool:
    return subprocess.run([engine, "image", "inspect", name], capture_output=True).returncode == 0
