"""``scripts/image build``: the image from this checkout, on a base from a registry or made by
debootstrap."""
from __future__ import annotations

import argparse
import configparser
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from image_lib import ROOT, SERVICE_MOUNT
from image_lib.engine import (
    ImageError,
    choose_engine,
    engine_options,
    image_exists,
    output,
    run,
    say,
)

DEBIAN_BASE = "localhost/zeroserve-base:bookworm"
PYTHON_BASE = "docker.io/library/python:3.11-slim"  # the Containerfile's default BASE

# what the image needs from the checkout (the Containerfile's COPY lines)
CONTEXT = ("setup.cfg", "pyproject.toml", "README.md", "zeroserve", "broker", "gateway",
           "worker", "batching", "deploy/Containerfile", "deploy/healthcheck.py",
           "deploy/no-service")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".git", ".venv", "venv",
                                 "run", ".mypy_cache", ".pytest_cache", ".ruff_cache")


def registry_reachable(timeout_s: float = 5.0) -> bool:
    """Whether Docker Hub's registry answers at all (401 is an answer)."""
    try:
        urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=timeout_s)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def debian_base(engine: str, rebuild: bool) -> str:
    """``localhost/zeroserve-base:bookworm``: debootstrap's minimal Debian with python3 and its
    venv module, imported as an image; made when missing (or ``rebuild``)."""
    if image_exists(engine, DEBIAN_BASE) and not rebuild:
        say(f"base {DEBIAN_BASE} (Debian bookworm by debootstrap, made earlier; "
            "--rebuild-base makes it again)")
        return DEBIAN_BASE
    if shutil.which("debootstrap") is None:
        raise ImageError("no registry is reachable and debootstrap is not installed "
                         "(apt-get install -y debootstrap), so there is no base to build on")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    started = time.monotonic()
    rootfs = tempfile.mkdtemp(prefix="zeroserve-rootfs-", dir="/var/tmp")
    try:
        say(f"making the base: debootstrap --variant=minbase bookworm into {rootfs}")
        run(sudo + ["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
                    "bookworm", rootfs, "http://deb.debian.org/debian"], capture_output=True)
        run(sudo + ["rm", "-rf", f"{rootfs}/var/cache/apt/archives", f"{rootfs}/var/lib/apt/lists"])
        tar = subprocess.Popen(sudo + ["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            run([engine, "import", "--change", 'CMD ["/bin/bash"]', "-", DEBIAN_BASE],
                stdin=tar.stdout, capture_output=True)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0:
                raise ImageError("tar of the debootstrap root filesystem failed")
    finally:
        subprocess.run(sudo + ["rm", "-rf", rootfs], check=False)
    say(f"base {DEBIAN_BASE} made in {time.monotonic() - started:.0f} s")
    return DEBIAN_BASE


def stage_context(folder: Path, service: str) -> tuple[str, str]:
    """Copy what the image needs into ``folder``: the checkout's packages and, for
    ``service`` (``path/file.py:Class``), the file's folder as ``service/``. Returns the build
    args SERVICE_DIR and SERVICE."""
    for name in CONTEXT:
        source, target = ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=SKIPPED)
        else:
            shutil.copy2(source, target)
    if not service:
        return "deploy/no-service", ""
    path, sep, cls = service.rpartition(":")
    if not sep or not path.endswith(".py") or not cls:
        raise ImageError(f"--service {service!r} must look like path/to/file.py:Class")
    source = Path(path).resolve()
    if not source.is_file():
        raise ImageError(f"--service: no such file {source}")
    shutil.copytree(source.parent, folder / "service", ignore=SKIPPED)
    return "service", f"{SERVICE_MOUNT}/{source.name}:{cls}"


def version_and_commit() -> tuple[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    version = config.get("metadata", "version", fallback="0.0.0")
    git = ["git", "-C", str(ROOT)]
    try:
        commit = output(git + ["rev-parse", "HEAD"])
        if output(git + ["status", "--porcelain", "--untracked-files=no"]):
            commit += "-dirty"
    except (ImageError, OSError):
        commit = "unknown"
    return version, commit


def ca_bundle(given: str) -> str:
    """A CA bundle for the build's pip (a proxy that re-signs TLS): --ca-bundle, else the one
    this machine's pip or Python is told to use; "" for none."""
    for candidate in (given, os.environ.get("PIP_CERT", ""), os.environ.get("SSL_CERT_FILE", ""),
                      os.environ.get("REQUESTS_CA_BUNDLE", "")):
        if candidate and Path(candidate).is_file():
            return candidate
    return ""


def build(args: argparse.Namespace) -> int:
    engine = choose_engine(args.engine)
    started = time.monotonic()
    if args.base == "auto":
        base = "" if registry_reachable() else debian_base(engine, args.rebuild_base)
        if not base:
            say(f"a registry is reachable: the base is the Containerfile's FROM ({PYTHON_BASE})")
            run([engine, "pull", PYTHON_BASE])
    elif args.base == "debootstrap":
        base = debian_base(engine, args.rebuild_base)
    else:
        base = args.base
    version, commit = version_and_commit()
    with tempfile.TemporaryDirectory(prefix="zeroserve-context-") as folder:
        service_dir, service = stage_context(Path(folder), args.service)
        command = [engine, "build", "--file", str(Path(folder) / "deploy" / "Containerfile"),
                   "--tag", args.tag, "--network", "host",
                   "--build-arg", f"VERSION={version}", "--build-arg", f"COMMIT={commit}",
                   "--build-arg", f"SERVICE_DIR={service_dir}",
                   "--build-arg", f"SERVICE={service}"]
        if engine == "podman":
            command += ["--format", "docker"]
        command += engine_options(engine, base or PYTHON_BASE)
        if base:
            command += ["--build-arg", f"BASE={base}"]
        if args.pip:
            command += ["--build-arg", f"PIP_EXTRA={args.pip}"]
        bundle = ca_bundle(args.ca_bundle)
        if bundle:
            command += ["--secret", f"id=ca-bundle,src={bundle}"]
        say(f"{engine} build {args.tag} (zeroserve {version}, commit {commit[:12]}, "
            f"service {service or 'none: mount one at ' + SERVICE_MOUNT})")
        run(command + [folder])
    size = output([engine, "image", "inspect", "--format", "{{.Size}}", args.tag])
    say(f"built {args.tag} in {time.monotonic() - started:.0f} s, "
        f"{int(size) / 1e6:.0f} MB" if size.isdigit() else f"built {args.tag}")
    return 0
