"""File names and fixed strings of the artifact format (DESIGN §2), in one place."""

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

#: Files that make up an artifact (what ``snapshot_download`` fetches); the adapter folder is optional.
ARTIFACT_PATTERNS = [STEERING_FILE, CONFIG_FILE, CARD_FILE, f"{ADAPTER_DIR}/*"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
