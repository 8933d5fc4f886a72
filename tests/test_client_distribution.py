"""The client's own distribution, ``clients/python`` (``ai-photo-detector-client``): its wheel is
built from the shared source and holds exactly the client, the contract and the two modules they
import; it requires httpx and pydantic only; and the client imports from it, and works, with every
module of the serving stack blocked and the main package's editable install out of reach."""

from __future__ import annotations

import email.parser
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENT_PROJECT = REPO / "clients" / "python"
SRC = REPO / "src" / "ai_photo_detector"
# What the serving install brings and the client must never import (the import-linter contract
# "The client and the contract install without the serving stack", and torch besides).
BLOCKED = (
    "fastapi",
    "starlette",
    "numpy",
    "PIL",
    "onnxruntime",
    "openvino",
    "sqlalchemy",
    "typer",
    "rich",
    "yaml",
    "pydantic_settings",
    "torch",
)


def source_version() -> str:
    text = (SRC / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "src/ai_photo_detector/__init__.py sets no __version__"
    return match.group(1)


def expected_files() -> set[str]:
    """Every module of the client and the contract as they are in src (a new one is expected
    without editing this test), and the three files beside them the client needs."""
    modules = {
        f"ai_photo_detector/{path.relative_to(SRC).as_posix()}"
        for package in ("client", "contract")
        for path in (SRC / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    return modules | {
        "ai_photo_detector/__init__.py",
        "ai_photo_detector/errors.py",
        "ai_photo_detector/py.typed",
    }


def build_environment(work: Path) -> dict[str, str]:
    """The environment in which ``pip wheel --no-build-isolation`` finds hatchling: the venv's
    own where it has one; else hatchling installed into a folder of this run, from the indexes
    pip is configured with (the build must not hide behind a skip when it is the build itself
    that fails, so only failing to get the backend skips)."""
    env = dict(os.environ)
    if importlib.util.find_spec("hatchling") is not None:
        return env
    backend = work / "backend"
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "20",
            "--retries",
            "1",
            "--target",
            str(backend),
            "hatchling>=1.25",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if got.returncode != 0:
        pytest.skip(
            "hatchling, the client's build backend, is not installed in this environment and "
            f"could not be installed from the package index:\n{got.stderr[-2000:]}"
        )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(backend), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("client-wheel")
    env = build_environment(work)
    out = work / "dist"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            str(CLIENT_PROJECT),
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=180,
    )
    assert built.returncode == 0, f"building clients/python failed:\n{built.stdout}\n{built.stderr}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("client-unpacked")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_holds_exactly_the_client_the_contract_and_what_they_import(
    wheel: Path,
) -> None:
    assert wheel.name == f"ai_photo_detector_client-{source_version()}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        shipped = {name for name in names if not name.split("/")[0].endswith(".dist-info")}
        assert shipped == expected_files(), (
            f"missing: {sorted(expected_files() - shipped)}; "
            f"unexpected: {sorted(shipped - expected_files())}"
        )
        for name in sorted(shipped):  # the very files of src, not stale copies
            source = SRC / name.removeprefix("ai_photo_detector/")
            assert archive.read(name) == source.read_bytes(), name
    dist_info = {name.split("/")[0] for name in names} - {"ai_photo_detector"}
    assert dist_info == {f"ai_photo_detector_client-{source_version()}.dist-info"}


def test_the_wheel_requires_httpx_and_pydantic_only_at_the_main_package_version(
    wheel: Path,
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(f"ai_photo_detector_client-{source_version()}.dist-info/METADATA")
    metadata = email.parser.BytesParser().parsebytes(raw)
    assert metadata["Name"] == "ai-photo-detector-client"
    assert metadata["Requires-Python"] == ">=3.11"
    assert sorted(metadata.get_all("Requires-Dist") or []) == ["httpx>=0.27", "pydantic>=2.8"]
    assert "Provides-Extra" not in metadata
    # One version for both distributions: the wheel reads src's __version__, which must also be
    # the version pyproject.toml gives the main package.
    main = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert metadata["Version"] == source_version() == main["project"]["version"]


# Runs under `python -I -S`: no site-packages, no .pth files (so not the main package's editable
# install), no PYTHONPATH. The unpacked wheel comes first on sys.path and the venv's
# site-packages after it, for httpx and pydantic only: the meta-path blocker refuses the rest.
IMPORT_CHECK = r"""
import asyncio
import json
import sys

unpacked, site_packages, *blocked = sys.argv[1:]
blocked = frozenset(blocked)
attempts = []


def importer():  # the module whose code asked for the import, past importlib's frames
    frame = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen")
        or frame.f_globals.get("__name__", "").partition(".")[0] == "importlib"
    ):
        frame = frame.f_back
    return frame.f_globals.get("__name__") if frame is not None else None


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            attempts.append([name, importer()])
            raise ImportError(f"{name} is blocked: the client must install without it")
        return None


sys.meta_path.insert(0, Blocker())
sys.path.insert(0, unpacked)
sys.path.append(site_packages)

try:  # the blocker blocks what site-packages does hold
    import numpy  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker let numpy through")
attempts.clear()

from ai_photo_detector.client import AsyncClient, Client, verify_signature
from ai_photo_detector.contract.signatures import signature_header
import httpx

agents = []


def answer(request):
    agents.append(request.headers["user-agent"])
    assert request.url.path == "/v2/health/ready", request.url
    return httpx.Response(200, json={"ready": True})


with Client("http://service.test", api_key="k", transport=httpx.MockTransport(answer)) as client:
    assert client.ready().ready is True


async def ready_async():
    transport = httpx.MockTransport(answer)
    async with AsyncClient("http://service.test", api_key="k", transport=transport) as client:
        return (await client.ready()).ready


assert asyncio.run(ready_async()) is True
body = b'{"event": "job.finished"}'
assert verify_signature("s3cret", signature_header("s3cret", body), body) > 0

import ai_photo_detector

print(json.dumps({
    "modules": {
        name: getattr(module, "__file__", None)
        for name, module in sys.modules.items()
        if name.partition(".")[0] == "ai_photo_detector"
    },
    "package_path": list(ai_photo_detector.__path__),
    "version": ai_photo_detector.__version__,
    "agents": agents,
    "attempts": attempts,
    "blocked_loaded": sorted(m for m in sys.modules if m.partition(".")[0] in blocked),
    "sys_path": sys.path,
}))
"""


def test_the_client_imports_and_works_from_the_wheel_without_the_serving_stack(
    unpacked: Path,
) -> None:
    site_packages = sysconfig.get_paths()["purelib"]
    ran = subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORT_CHECK, str(unpacked), site_packages, *BLOCKED],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unpacked,
    )
    assert ran.returncode == 0, f"the client failed to import from its wheel:\n{ran.stderr}"
    seen = json.loads(ran.stdout.strip().splitlines()[-1])

    # httpx tries `rich` for its optional command line and does without it: only the client's
    # and the contract's own attempts count. Nothing blocked got loaded, whoever asked.
    ours = [[name, by] for name, by in seen["attempts"] if by.startswith("ai_photo_detector")]
    assert ours == [], f"the client tried to import {ours}"
    assert seen["blocked_loaded"] == []
    assert seen["version"] == source_version()
    assert seen["agents"] == [f"ai-photo-detector-client/{source_version()}"] * 2

    # Everything came from the unpacked wheel, nothing from the main package's editable install.
    root = unpacked.resolve()
    assert [Path(entry).resolve() for entry in seen["package_path"]] == [root / "ai_photo_detector"]
    assert str(SRC.parent) not in seen["sys_path"]
    assert "ai_photo_detector.client" in seen["modules"]
    assert "ai_photo_detector.contract" in seen["modules"]
    for name, file in seen["modules"].items():
        assert file is not None, name
        assert Path(file).resolve().is_relative_to(root), f"{name} came from {file}"
        assert not Path(file).resolve().is_relative_to(SRC), f"{name} came from {file}"
