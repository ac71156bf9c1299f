"""Fail the image build when onnxruntime-gpu was built for another CUDA major version
than the base image provides: its CUDA provider would fail to load at run time, and
the worker would find no GPU."""

from __future__ import annotations

import os
import sys


def main() -> int:
    from onnxruntime.capi import build_and_package_info as build

    image_cuda = os.environ.get("CUDA_VERSION", "")  # set by the nvidia/cuda images
    ort_cuda = getattr(build, "cuda_version", "")
    print(
        f"onnxruntime {build.__version__} is built for CUDA {ort_cuda or '?'}; "
        f"the image has CUDA {image_cuda or '?'}"
    )
    if not image_cuda or not ort_cuda:
        print(
            "cannot compare CUDA versions: expected onnxruntime-gpu on an nvidia/cuda base",
            file=sys.stderr,
        )
        return 1
    if image_cuda.split(".")[0] != ort_cuda.split(".")[0]:
        print(
            f"onnxruntime-gpu needs CUDA {ort_cuda.split('.')[0]}.x, the base image has "
            f"CUDA {image_cuda}: build with --build-arg BASE_IMAGE=nvidia/cuda:"
            "<that version>-cudnn-runtime-ubuntu24.04, or pin onnxruntime-gpu to a "
            "release built for this CUDA",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
