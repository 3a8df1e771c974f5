"""What machine the benchmarks ran on: CPU, memory, OS, Python, libraries and tools."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _first_line(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return (done.stdout or done.stderr).partition("\n")[0].strip() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load() -> str:
    """The 1, 5 and 15 minute load averages, which say how busy the machine was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def describe() -> list[tuple[str, str]]:
    """The machine, as (name, value) pairs."""
    cpuinfo = _read("/proc/cpuinfo")
    model = _field(cpuinfo, "model name") or platform.processor() or "unknown"
    mhz = _field(cpuinfo, "cpu MHz")
    if mhz:
        model += f" at {float(mhz):.0f} MHz"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = f"{os.cpu_count()} logical" + (f", {usable} usable by this process" if usable else "")
    mem_kb = (_field(_read("/proc/meminfo"), "MemTotal") or "").removesuffix(" kB")
    ram = f"{int(mem_kb) / 1024**2:.1f} GiB" if mem_kb.isdigit() else "unknown"
    distro = _field(_read("/etc/os-release").replace("=", ":"), "PRETTY_NAME")
    system = platform.platform() + (f" ({distro.strip(chr(34))})" if distro else "")
    return [
        ("CPU", f"{model}, {cpus}"),
        ("RAM", ram),
        ("OS", system),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("aiohttp", _version("aiohttp")),
        ("kling_async", _version("kling_async")),
        # The first words only: name, version and platform, not every linked library.
        ("curl", " ".join(_first_line(["curl", "--version"]).split()[:3])),
        ("ffprobe", " ".join(_first_line(["ffprobe", "-version"]).split()[:3])),
    ]
