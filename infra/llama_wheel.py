"""Build llama-cpp-python once, portably, with its progress shown; install it into a virtualenv.

    python infra/llama_wheel.py .venv/bin/python

llama-cpp-python ships only as source on PyPI, and its default build is ``-march=native``: the
library then uses every instruction the build machine advertises (AVX-512, AMX, ...), and a virtual
machine that advertises one it does not allow kills the model server with "illegal instruction" on
the first request. This build turns that off (``GGML_NATIVE=OFF``) and enables only the widely
shared x86-64 extensions (AVX, AVX2, FMA, F16C, BMI2) when this CPU has all of them; arm64 gets the
plain armv8-a baseline. The bundled model is tiny, so nothing is lost that a person would notice.

The wheel is kept in ``~/.cache/personae/wheels/<version>-<flavour>/`` (PERSONAE_WHEEL_CACHE
overrides the directory), so a second virtualenv installs it in seconds. pip's own cache is not
used for it: pip keys built wheels by source alone, so it could hand back a native build made
earlier with other flags.

Only the standard library is used: this runs before the virtualenv has anything in it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "llama-cpp-python"
DEFAULT_VERSION = "0.3.36"
X86_SHARED = ("avx", "avx2", "fma", "f16c", "bmi2")
# Parts of llama.cpp the embedded server does not use: vision (llava/mtmd), tests, examples, tools.
TRIM = (
    "-DLLAVA_BUILD=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)
STEP = re.compile(r"\[(\d+)/(\d+)\]")
ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(text, flush=True)


def pinned_version() -> str:
    """The version constraints.txt pins (so every install builds the same source), else the default."""
    constraints = ROOT / "constraints.txt"
    if constraints.is_file():
        for line in constraints.read_text().splitlines():
            name, sep, version = line.partition("==")
            if sep and name.strip().lower().replace("_", "-") == PACKAGE:
                return version.strip()
    return DEFAULT_VERSION


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def flavour() -> tuple[str, list[str]]:
    """A name for the instruction set chosen, and the CMake arguments that choose it."""
    machine = platform.machine().lower()
    args = ["-DGGML_NATIVE=OFF", *TRIM]
    if machine in ("x86_64", "amd64"):
        # /proc/cpuinfo names the first three "avx", "avx2", "fma"; "f16c" and "bmi2" likewise.
        if set(X86_SHARED) <= cpu_flags():
            return "x86_64-avx2", args + ["-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON"]
        off = ["-DGGML_AVX=OFF", "-DGGML_AVX2=OFF", "-DGGML_FMA=OFF", "-DGGML_F16C=OFF", "-DGGML_BMI2=OFF"]
        return "x86_64-baseline", args + off
    if machine in ("aarch64", "arm64"):
        return "arm64-armv8", args
    return f"{machine}-generic", args


def cache_dir(version: str, name: str) -> Path:
    base = os.environ.get("PERSONAE_WHEEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "personae", "wheels"
    )
    return Path(base) / f"{version}-{name}"


def minutes(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def build(python: str, version: str, cmake_args: list[str], into: Path) -> Path:
    """Compile the wheel into ``into``, printing how far the compiler is; returns the wheel."""
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(cmake_args)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2))
    log_path = Path(tempfile.gettempdir()) / f"personae-llama-build-{os.getpid()}.log"
    command = [
        python, "-m", "pip", "wheel", "--verbose", "--no-deps", "--no-cache-dir",
        "--no-binary", PACKAGE, "--wheel-dir", str(into), f"{PACKAGE}=={version}",
    ]  # fmt: skip
    say(f"Compiling llama.cpp {version} for the bundled model (a portable build: {env['CMAKE_ARGS'].split()[0]}).")
    say("This happens once; it takes 3-8 minutes on 2 cores. Full log: " + str(log_path))
    started = last_report = time.monotonic()
    last_done = -1
    with open(log_path, "w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            found = STEP.search(line)
            now = time.monotonic()
            if found:
                done, total = int(found.group(1)), int(found.group(2))
                # A line every 10% or every 30 s, whichever comes first.
                if done * 10 // total > last_done * 10 // max(total, 1) or now - last_report >= 30:
                    elapsed = now - started
                    # The first steps are small: a guess at what is left means something from 10% on.
                    left = f", about {minutes(elapsed / done * (total - done))} left" if done * 10 >= total else ""
                    say(f"  compiling: {done}/{total} ({100 * done // total}%), {minutes(elapsed)} so far{left}")
                    last_report, last_done = now, done
            elif now - last_report >= 30:
                say(f"  preparing the build ({minutes(now - started)} so far)...")
                last_report = now
        code = process.wait()
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        say("\n".join(tail))
        sys.exit(
            f"error: compiling llama-cpp-python failed (exit {code}); the whole log is {log_path}. "
            "It needs a C/C++ compiler (gcc or clang), cmake is fetched by pip."
        )
    wheels = sorted(into.glob("llama_cpp_python-*.whl"))
    if not wheels:
        sys.exit(f"error: the build finished but left no wheel in {into}; see {log_path}")
    say(f"llama.cpp compiled in {minutes(time.monotonic() - started)}.")
    log_path.unlink(missing_ok=True)
    return wheels[0]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python infra/llama_wheel.py PATH/TO/VENV/bin/python")
    python = sys.argv[1]
    version = pinned_version()
    name, cmake_args = flavour()
    target = cache_dir(version, name)
    wheels = sorted(target.glob("llama_cpp_python-*.whl"))
    if wheels:
        say(f"Using llama.cpp {version} built earlier ({name}): {wheels[0]}")
        wheel = wheels[0]
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            built = build(python, version, cmake_args, scratch)
            target.mkdir(parents=True, exist_ok=True)
            wheel = target / built.name
            shutil.move(str(built), wheel)  # only a finished wheel ever lands in the cache
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    result = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)])
    if result.returncode != 0:
        sys.exit(f"error: installing {wheel} failed (exit {result.returncode})")


if __name__ == "__main__":
    main()
