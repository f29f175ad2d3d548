"""The live registry over vLLM's OpenAI-compatible server, as docs/serve-vllm.md shows it.

One ``vllm serve`` process (CPU build, the SmolLM2 folder) with ``$STEERKIT_VLLM_REGISTRY`` and vLLM's runtime
LoRA loading: put a vector in the registry, load its adapter through ``/v1/load_lora_adapter``, get a steered
completion whose tokens equal the engine test's steered tokens, then remove both and get HTTP 400.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import HANG_SECONDS


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=HANG_SECONDS) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A running ``vllm serve`` with an empty registry: ``(port, registry folder)``."""
    from steerkit.models import default_model_dir

    registry = tmp_path_factory.mktemp("server-registry")
    port = _free_port()
    env = {
        **os.environ,
        "STEERKIT_VLLM_REGISTRY": str(registry),
        "STEERKIT_VLLM_VECTORS": "",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    log = (registry.parent / "server.log").open("w")
    # vllm.entrypoints.openai.api_server is `vllm serve` (whose CLI looks up a "vllm" distribution; this is vllm-cpu)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_model_dir())]
    command += ["--dtype", "float32", "--max-model-len", "512", "--gpu-memory-utilization", "0.15"]
    command += ["--enable-lora", "--max-lora-rank", "8", "--no-enable-prefix-caching", "--seed", "0"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + HANG_SECONDS  # only a hang ends this wait, never a slow machine
    try:
        while True:
            assert proc.poll() is None, (registry.parent / "server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "vllm serve never became healthy"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield port, registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_a_registry_vector_and_its_adapter_are_added_served_and_removed_over_http(
    server: Any, artifacts: tuple[Path, Path], engine: dict[str, Any]
) -> None:
    port, registry = server
    ids = engine["prompts"][0]
    completion = {"model": "live", "prompt": ids, "max_tokens": 16, "temperature": 0, "return_token_ids": True}
    completion["vllm_xargs"] = {"steerkit_vector": "live"}
    shutil.copytree(artifacts[0], registry / ".live.tmp")
    os.rename(registry / ".live.tmp", registry / "live")
    adapter = {"lora_name": "live", "lora_path": str(registry / "live" / "adapter")}
    status, _ = _post(port, "/v1/load_lora_adapter", adapter)
    assert status == 200
    status, body = _post(port, "/v1/completions", completion)
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["choices"][0]["token_ids"] == engine["static"][0]  # the steered tokens of the Python engine

    status, _ = _post(port, "/v1/unload_lora_adapter", {"lora_name": "live"})
    assert status == 200
    shutil.rmtree(registry / "live")
    status, body = _post(port, "/v1/completions", completion)
    assert status in (400, 404), body  # the adapter is gone
    unsteered_model = {key: value for key, value in completion.items() if key != "model"}  # the served base model
    status, body = _post(port, "/v1/completions", unsteered_model)
    assert status == 400 and "unknown steering vector 'live'" in json.dumps(body), body
