"""Fuzzing the artifact reader, and killing savers: the reliability counts of issue 14.

- fuzz: ``--cases`` artifacts generated from valid ones by a seeded generator (the safetensors header mutated
  as a tree, the embedded and the file config mutated apart or together, wrong JSON types, NaN/Infinity, deep
  nesting, huge numbers, lone surrogates, damaged bytes, truncation, links, pickle and odd adapter files), each
  read with :func:`steerkit.format.read_config` and :meth:`SteeringVector.load`. Every failure must be a
  steerkit error, and every artifact that loads must save, re-load and give the same ``files()`` bytes.
- cards: ``--cards`` hostile Hub listing entries through ``steerkit search``'s reader and its two outputs
  (``benchmarks/fuzz_cards.py``).
- crash: ``--kills`` child processes (forked from a forkserver with steerkit imported) each save two vectors in
  turn with ``overwrite=True`` until SIGKILL after a random delay; the destination must then be the old or the
  new artifact, or absent with the old one restorable (a load restores it), and the next save leaves no
  leftovers.

Writes ``benchmarks/results/fuzz.json``. Usage::

    .venv/bin/python benchmarks/fuzz.py [--cases 12000] [--kills 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from steerkit import constants as C
from steerkit.config import MuStats, SteerConfig
from steerkit.errors import SteerkitError
from steerkit.format import adapter_sha256, read_config
from steerkit.vector import SteeringVector

HERE = Path(__file__).resolve().parent
RAW = "@@RAW@@"
ADAPTER = {"adapter_config.json": b'{"peft_type": "LORA", "r": 4}', "adapter_model.safetensors": b"\x00w\xff" * 9}


def _stats(value: float) -> MuStats:
    table = {"mean": value * 1.2, "median": value, "trimmed": value * 1.1, "ratio": value * 0.8}
    return MuStats(
        value=value, chosen_by="median/paper", paper=table, exact={k: 4 * v for k, v in table.items()}, fit=2 * value
    )


#: A build's ``validation`` block (rank criterion), so the generator mutates every key a reader of it uses.
VALIDATION: dict[str, Any] = {
    "measure": "rank",
    "criterion": "rank",
    "distractors": {"source": "drawn", "k": 3},
    "unit": "example",
    "folds": 5,
    "n": 40,
    "seed": 0,
    "n_bootstrap": 1000,
    "candidates": [
        {"setting": "warm", "mode": None, "rule": None, "mu": 0.0, "estimate": 0.6, "delta_vs_warm": 0.0,
         "ci_low": 0.0, "ci_high": 0.0},
        {"setting": "base", "mode": None, "rule": None, "mu": 0.0, "estimate": 0.5, "delta_vs_warm": -0.1,
         "ci_low": -0.2, "ci_high": -0.05},
        {"setting": "static/fit", "mode": "static", "rule": "fit", "mu": -0.5, "estimate": 0.7,
         "delta_vs_warm": 0.1, "ci_low": 0.05, "ci_high": 0.15},
    ],
    "warm_vs_base": None,
    "recommended": {"setting": "static/fit", "mode": "static", "rule": "fit", "mu": -0.5},
    "reason": "static/fit gains +0.1 [+0.05, +0.15]",
}  # fmt: skip


def base_vectors() -> list[SteeringVector]:
    """A few valid vectors: with and without adapter, evaluation, quantiles."""
    out = []
    for seed, size in ((0, 13), (1, 99), (2, 7)):
        g = torch.Generator().manual_seed(seed)
        calibration: dict[str, Any] = {"n_examples": 4, "n_tokens": 40, "data_sha256": "1" * 64, "kl_mean": 0.5}
        if seed == 1:
            calibration["mu_star_quantiles"] = {"paper": {"0.5": -1.0, "0.9": 0.5}, "exact": {"0.5": -2.0}}
        config = SteerConfig(
            vocab_size=size,
            mu=_stats(-1.5),
            mu_static=_stats(-0.5),
            tokenizer={"class": "Tok", "vocab_length": size, "sha256": "0" * 64},
            base_model={"name_or_path": "org/model" if seed else "/tmp/m", "revision": None},
            calibration=calibration,
            adapter={"path": None, "peft_type": "LORA", "sha256": adapter_sha256(ADAPTER)} if seed != 2 else None,
            evaluation={"mc2": {"value": 0.4, "n": 10, "ci_low": 0.3, "ci_high": 0.5}} if seed == 1 else None,
            validation=VALIDATION if seed == 1 else None,
        )
        files = dict(ADAPTER) if seed != 2 else None
        out.append(SteeringVector(torch.randn(size, generator=g) * 0.01, config, files))
    return out


# --- generating damaged artifacts -------------------------------------------------------------------------

WEIRD_RAW = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e999", "9" * 400, "9" * 5000, "[" * 3000 + "]" * 3000,
    '"\\ud800"', '{"\\udfff": 1}', '"1.5"', '"99"', "true", "false", "null", "0", "-1", "1.5", "4294967297",
    "[]", "{}", '[1, "a", null]', '{"nested": {"x": [1, {"y": null}]}}', '""', '"x"', '"é ü ∑"', "1e-320",
    "-0.0", "0.1", "2", '"steerkit/1"', '"2.0"', '"1.0"', '"1.9"', '{"value": 1}', '"' + "a" * 5000 + '"',
    "[" * 70 + "]" * 70, '"\\u0000"', "123456789012345678901234567890",
]  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def mutate_tree(rng: random.Random, tree: Any, *, edits: int) -> str:
    """JSON text of ``tree`` with random edits: a value replaced (raw JSON text), a key dropped or added."""
    raws: list[str] = []
    for _ in range(edits):
        paths = _paths(tree)
        path = rng.choice(paths)
        action = rng.random()
        if action < 0.15 and path:
            parent = tree
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict):
                del parent[path[-1]]
                continue
        if action < 0.3 and isinstance(_get(tree, path), dict):
            _get(tree, path)[rng.choice(["new", "x", "0.5", "gauss", "__metadata__", "format"])] = RAW + str(len(raws))
            raws.append(rng.choice(WEIRD_RAW))
            continue
        tree = _set(tree, path, RAW + str(len(raws)))
        raws.append(rng.choice(WEIRD_RAW))
    text = json.dumps(tree, sort_keys=True, indent=2)
    for i in reversed(range(len(raws))):
        text = text.replace(f'"{RAW}{i}"', raws[i])
    return text + "\n"


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def tensor_bytes(header_text: bytes, data: bytes) -> bytes:
    header_text += b" " * (-len(header_text) % 8)
    return struct.pack("<Q", len(header_text)) + header_text + data


def make_case(rng: random.Random, base: SteeringVector, folder: Path) -> str:
    """Write one damaged (or intact) artifact into ``folder``; return the kinds of damage done."""
    files = base.files()
    config = json.loads(files[C.CONFIG_FILE])
    data = base.task_vector.numpy().astype("<f4").tobytes()
    kinds: list[str] = []
    roll = rng.random()
    config_text = files[C.CONFIG_FILE].decode()
    if roll < 0.55:  # the config, in both copies (so the reader gets past the equality check) or in one
        config_text = mutate_tree(rng, config, edits=rng.choice([1, 1, 1, 2, 3]))
        kinds.append("config")
    file_text = config_text
    if rng.random() < 0.1:
        file_text = mutate_tree(rng, json.loads(files[C.CONFIG_FILE]), edits=1)
        kinds.append("file-config")
    metadata: Any = {"config": config_text, "format": C.FORMAT_TAG}
    header: Any = {
        "__metadata__": metadata,
        C.TENSOR_NAME: {"dtype": "F32", "shape": [base.vocab_size], "data_offsets": [0, len(data)]},
    }
    if rng.random() < 0.3:  # the safetensors header as a tree
        header_text = mutate_tree(rng, header, edits=rng.choice([1, 1, 2])).encode("utf-8", "surrogatepass")
        kinds.append("header")
    else:
        header_text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    raw = tensor_bytes(header_text, data)
    if rng.random() < 0.12:  # bytes
        raw = bytearray(raw)
        how = rng.randrange(5)
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        elif how == 1:
            raw = raw[: rng.randrange(len(raw))]
        elif how == 2:
            raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif how == 3:
            raw[:8] = struct.pack("<Q", rng.choice([0, 1, 7, len(raw), 2**63, rng.randrange(2**16)]))
        else:
            raw = bytearray(
                rng.choice([b"\x80\x04", b"PK\x03\x04", b""]) + bytes(rng.randrange(256) for _ in range(40))
            )
        raw = bytes(raw)
        kinds.append("bytes")
    folder.mkdir(parents=True)
    (folder / C.STEERING_FILE).write_bytes(raw)
    if rng.random() > 0.05:
        (folder / C.CONFIG_FILE).write_text(file_text, encoding="utf-8", errors="surrogatepass")
    (folder / C.CARD_FILE).write_bytes(files[C.CARD_FILE] if rng.random() > 0.1 else b"tampered")
    for name, content in (base.adapter_files or {}).items():
        path = folder / C.ADAPTER_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if rng.random() < 0.12:
        kinds.append("adapter")
        _damage_adapter(rng, folder)
    return "+".join(kinds) or "intact"


def _damage_adapter(rng: random.Random, folder: Path) -> None:
    adapter = folder / C.ADAPTER_DIR
    adapter.mkdir(exist_ok=True)
    how = rng.randrange(8)
    if how == 0:
        (adapter / rng.choice(["adapter_model.bin", "w.pt", "x.pth", "y.pkl", "z.ckpt"])).write_bytes(b"\x80\x04K.")
    elif how == 1:
        (adapter / "adapter_model.safetensors").unlink(missing_ok=True)
        (adapter / "adapter_model.safetensors").symlink_to("/etc/hostname")
    elif how == 2:
        shutil.rmtree(adapter)
        adapter.symlink_to(folder.parent)
    elif how == 3:
        (adapter / "sub").mkdir()
        (adapter / "sub" / "notes.txt").write_bytes(b"extra")
    elif how == 4:
        os.mkfifo(adapter / "fifo")
    elif how == 5:
        (adapter / os.fsdecode(b"bad\xffname")).write_bytes(b"x")
    elif how == 6:
        shutil.rmtree(adapter)
        adapter.write_bytes(b"a file, not a folder")
    else:
        (folder / C.CONFIG_FILE).unlink(missing_ok=True)
        (folder / C.CONFIG_FILE).symlink_to(folder / C.STEERING_FILE)


def run_fuzz(cases: int, seed: int = 0, *, work: Path | None = None) -> dict[str, Any]:
    """Generate and read ``cases`` artifacts; count outcomes (``non_steerkit``, ``round_trip_failures`` must be 0)."""
    rng = random.Random(seed)
    bases = base_vectors()
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failures: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="steerkit-fuzz-", dir=work))
    started = time.perf_counter()
    try:
        for i in range(cases):
            folder = root / f"c{i}"
            kind = make_case(rng, rng.choice(bases), folder)
            kinds[kind.split("+")[0]] += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for reader in ("read_config", "load"):
                    try:
                        loaded = read_config(folder) if reader == "read_config" else SteeringVector.load(folder)
                    except SteerkitError as exc:
                        errors[f"{reader}:{type(exc).__name__}"] += 1
                        if "\n" in str(exc):
                            counts["multi_line_messages"] += 1
                        continue
                    except BaseException as exc:
                        counts["non_steerkit"] += 1
                        failures.append(f"case {i} ({kind}) {reader}: {type(exc).__name__}: {str(exc)[:200]}")
                        continue
                    counts[f"{reader}_ok"] += 1
                    if isinstance(loaded, SteeringVector) and not _round_trips(
                        loaded, root / f"r{i}", failures, i, kind
                    ):
                        counts["round_trip_failures"] += 1
            shutil.rmtree(folder, ignore_errors=True)
            if (folder.parent / f"r{i}").exists():
                shutil.rmtree(folder.parent / f"r{i}")
            if os.path.lexists(folder):
                os.unlink(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "cases": cases,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
        "non_steerkit": counts["non_steerkit"],
        "round_trip_failures": counts["round_trip_failures"],
        "multi_line_messages": counts["multi_line_messages"],
        "loaded": counts["load_ok"],
        "read_config_ok": counts["read_config_ok"],
        "refused_by_error": dict(sorted(errors.items())),
        "damage_kinds": dict(sorted(kinds.items())),
        "failures": failures[:20],
    }


def _inspect(vector: SteeringVector) -> None:
    """What ``steerkit inspect`` prints of the config (the validation table too), rendered into a buffer."""
    import io

    from rich.console import Console

    from steerkit_cli.render import render_validation

    render_validation(Console(file=io.StringIO(), width=120), vector.config.validation, full=True)


def _round_trips(vector: SteeringVector, out: Path, failures: list[str], i: int, kind: str) -> bool:
    try:
        files = vector.files()  # renders the card
        _inspect(vector)
        again = SteeringVector.load(vector.save(out))
        if again.files() != files or again.config != vector.config:
            failures.append(f"case {i} ({kind}): re-loaded files differ")
            return False
        return True
    except BaseException as exc:
        failures.append(f"case {i} ({kind}) round trip: {type(exc).__name__}: {str(exc)[:200]}")
        return False


# --- killing savers -----------------------------------------------------------------------------------------


def _saver(sources: tuple[str, str], target: str, ready: Any, slow: bool) -> None:
    vectors = [SteeringVector.load(s) for s in sources]
    for vector in vectors:
        vector.files()  # warm up (the card's first rendering imports huggingface_hub modules)
    if slow:  # widen the windows between renames (the same code path, so kills land inside the swap)
        real = os.replace

        def replace(src: Any, dst: Any) -> None:
            real(src, dst)
            time.sleep(0.003)

        os.replace = replace
    ready.set()
    while True:
        for vector in vectors:
            vector.save(target, overwrite=True)


def _tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run_crash(kills: int, seed: int = 0, *, work: Path | None = None, max_delay: float = 0.05) -> dict[str, Any]:
    """Kill ``kills`` savers at random times; count what the destination was (``bad`` must be 0)."""
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("forkserver")
    # Python 3.11's forkserver ignores sys.path, so preload what is installed; each child then imports this file.
    ctx.set_forkserver_preload(["torch", "huggingface_hub", "safetensors.torch", "steerkit.vector"])
    root = Path(tempfile.mkdtemp(prefix="steerkit-crash-", dir=work))
    counts: Counter[str] = Counter()
    problems: list[str] = []
    started = time.perf_counter()
    try:
        a, b = base_vectors()[:2]
        sources = (str(a.save(root / "src" / "a")), str(b.save(root / "src" / "b")))
        expected = [a.files(), b.files()]
        arena = root / "arena"
        target = arena / "vector"
        clock = time.perf_counter()
        a.save(target, overwrite=True)
        one_save = min(time.perf_counter() - clock, max_delay)
        for k in range(kills):
            a.save(target, overwrite=True)
            ready = ctx.Event()
            slow = k % 2 == 1
            child = ctx.Process(target=_saver, args=(sources, str(target), ready, slow), daemon=True)
            child.start()
            if not ready.wait(60):
                raise RuntimeError("the saver never started")
            time.sleep(rng.uniform(0, 4 * one_save + (0.03 if slow else 0)))
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join()
            state = _classify(target, expected)
            counts[state] += 1
            counts["slowed_swaps"] += slow
            if state == "absent":  # a load must restore the old artifact
                try:
                    restored = SteeringVector.load(target).files()
                    state = "absent_restored" if restored in expected and _tree(target) in expected else "lost"
                except SteerkitError as exc:
                    state, problems = "lost", [*problems, f"kill {k}: {exc}"]
                counts[state] += 1
            if state not in ("old", "new", "absent_restored"):
                counts["bad"] += 1
                problems.append(f"kill {k}: {state}: {sorted(p.name for p in arena.iterdir())}")
            b.save(target, overwrite=True)  # the next save cleans up every leftover
            left = sorted(p.name for p in arena.iterdir())
            if left != ["vector"] or _tree(target) != expected[1]:
                counts["bad"] += 1
                counts["leftovers_after_save"] += 1
                problems.append(f"kill {k}: after the next save: {left}")
            else:
                counts["cleaned"] += 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "kills": kills,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
        "bad": counts["bad"],
        "old": counts["old"],
        "new": counts["new"],
        "absent_restored": counts["absent_restored"],
        "kills_during_slowed_swaps": counts["slowed_swaps"],
        "cleaned_by_next_save": counts["cleaned"],
        "problems": problems[:20],
    }


def _classify(target: Path, expected: list[dict[str, bytes]]) -> str:
    """``old``, ``new``, ``absent`` (to be restored by a load) or ``broken``."""
    if not os.path.lexists(target):
        return "absent"
    got = _tree(target)
    return "old" if got == expected[0] else "new" if got == expected[1] else "broken"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=12_000)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--cards", type=int, default=12_000, help="hostile Hub listing entries (fuzz_cards.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    args = parser.parse_args(argv)
    fuzz = run_fuzz(args.cases, args.seed)
    print(json.dumps({k: v for k, v in fuzz.items() if k != "failures"}, indent=2), flush=True)
    crash = run_crash(args.kills, args.seed)
    print(json.dumps(crash, indent=2), flush=True)
    from fuzz_cards import run_card_fuzz

    cards = run_card_fuzz(args.cards, args.seed)
    print(json.dumps({k: v for k, v in cards.items() if k != "failures"}, indent=2), flush=True)
    result = {
        "fuzz": fuzz,
        "crash": crash,
        "cards": cards,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    ok = (
        fuzz["non_steerkit"] == 0 and fuzz["round_trip_failures"] == 0 and crash["bad"] == 0 and not cards["n_failures"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
