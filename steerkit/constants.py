"""File names and fixed strings of the artifact format (docs/artifact-format.md), in one place."""

from __future__ import annotations

STEERING_FILE = "steering.safetensors"
CONFIG_FILE = "steer_config.json"
ADAPTER_DIR = "adapter"
CARD_FILE = "README.md"
TENSOR_NAME = "task_vector"

FORMAT_TAG = "steerkit/1"
FORMAT_VERSION = "1.0"  # MAJOR.MINOR: a newer major is refused, a newer minor warns about unknown keys
FORMAT_MAJOR = 1

METHOD = "svdecode"
PROJECTION = "softmax-jacobian"
KL_DIRECTION = "forward: KL(warm||base)"

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: Every file format 1 names: what a download fetches (never anything else under ``adapter/``, which is optional).
ARTIFACT_PATTERNS = [STEERING_FILE, CONFIG_FILE, CARD_FILE, *(f"{ADAPTER_DIR}/{name}" for name in ADAPTER_FILES)]
