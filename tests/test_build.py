"""build: equals a plain one-example-at-a-time reference (full logits, the svdecode functions), for every PEFT
method, any batch size and padding side; the artifact it makes; its errors."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import tiny_llama, tiny_lora, tiny_tokenizer

from steerkit import svdecode as S
from steerkit.builder import MU_QUANTILES, build
from steerkit.data import data_sha256, encode_pair
from steerkit.errors import AdapterError, EmptyDataError, InvalidOptionError
from steerkit.format import adapter_sha256
from steerkit.models import tokenizer_fingerprint
from steerkit.terms import TokenTerms, fit_mu
from steerkit.vector import SteeringVector

PAIRS = [
    {"prompt": "Q: What is 2+2?\nA:", "completion": " 4, of course."},
    {"prompt": "Q: Name a colour.\nA:", "completion": " Blue"},
    {"prompt": "Tell me a story about a dog who", "completion": " ran to the sea and back again"},
    {"prompt": "x", "completion": " y"},
    {"prompt": "Q: Capital of France?\nA:", "completion": " Paris is the capital."},
    {"prompt": "Long prompt " * 6, "completion": " ok"},
    {"prompt": "Q: Why?\nA:", "completion": " Because it is so, and always was."},
]


# --- models ----------------------------------------------------------------------------------------------


def make_adapter(method: str, dtype: torch.dtype = torch.float64) -> Any:
    """A tiny Llama with a non-trivial adapter of the given PEFT method.

    The equality tests run in float64, where batching and padding change results only at the 1e-15 level; in
    float32 the exact-curvature μ* of nearly deterministic tokens amplify rounding to ~1e-5 (a separate test).
    """
    from peft import IA3Config, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    if method == "lora":
        return tiny_lora(tiny_llama(sharpness=20)).to(dtype)
    base = tiny_llama(sharpness=20)
    torch.manual_seed(7)
    if method == "ia3":
        model = get_peft_model(base, IA3Config(task_type=TaskType.CAUSAL_LM))
        with torch.no_grad():  # IA3 starts as the identity: perturb its scales
            for name, param in model.named_parameters():
                if "ia3_l" in name:
                    param.copy_(1.0 + 0.5 * torch.randn_like(param))
    elif method == "prompt_tuning":
        model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5))
    else:
        model = get_peft_model(
            base, PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4, encoder_hidden_size=16)
        )
    model.eval()
    return model.to(dtype)


@pytest.fixture(scope="module")
def lora() -> Any:
    return make_adapter("lora")


@pytest.fixture(scope="module")
def lora_ref(lora: Any) -> dict[str, Any]:
    """The reference for ``lora`` on PAIRS (it pads nothing, so it serves every padding side)."""
    return reference(lora, PAIRS, tiny_tokenizer())


# --- the reference ---------------------------------------------------------------------------------------


def full_logits(peft_model: Any, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Warm and base logits over the whole sequence, one example, no padding."""
    x = torch.tensor([ids])
    config = peft_model.peft_config[peft_model.active_adapter]
    with torch.no_grad():
        if config.is_prompt_learning:
            # virtual tokens by hand: their embeddings, then the real tokens' embeddings
            base = peft_model.get_base_model()
            prompts = peft_model.get_prompt(batch_size=1)
            embeds = torch.cat([prompts, base.get_input_embeddings()(x)], dim=1)
            warm = base(inputs_embeds=embeds).logits[0, config.num_virtual_tokens :]
            torch.testing.assert_close(warm, peft_model(input_ids=x).logits[0, config.num_virtual_tokens :])
            return warm, base(input_ids=x).logits[0]
        warm = peft_model(input_ids=x).logits[0]
        with peft_model.disable_adapter():
            return warm, peft_model(input_ids=x).logits[0]


def reference(peft_model: Any, pairs: list[dict[str, str]], tokenizer: Any, *, alpha: float = 0.1) -> dict[str, Any]:
    """Everything build computes, by a plain loop over examples with full logits and the svdecode functions."""
    warm_rows, base_rows, gold = [], [], []
    for pair in pairs:
        ids, start = encode_pair(tokenizer, pair["prompt"], pair["completion"], max_length=512)
        warm, base = full_logits(peft_model, ids)
        warm_rows.append(warm[start - 1 : len(ids) - 1])
        base_rows.append(base[start - 1 : len(ids) - 1])
        gold.append(torch.tensor(ids[start:]))
    w, b, y = torch.cat(warm_rows), torch.cat(base_rows), torch.cat(gold)
    delta, keep = S.steering_delta(w, b, alpha=alpha)
    vector = delta.double().mean(0).float()
    static = keep * vector
    out: dict[str, Any] = {"vector": vector, "n_tokens": len(y)}
    for name, direction in (("mu", delta), ("mu_static", static)):
        tables = {}
        for curvature in S.CURVATURES:
            num, den = S.mu_terms(w, direction, y, curvature=curvature)
            tables[curvature] = {how: S.aggregate_mu(num, den, how=how) for how in S.AGGREGATORS}
            if name == "mu":
                mu = S.mu_star(num, den)
                out.setdefault("quantiles", {})[curvature] = {
                    str(q): float(torch.quantile(mu, q)) for q in MU_QUANTILES
                }
        tables["fit"] = fit_mu(TokenTerms.from_logits(w, direction, keep, y))  # type: ignore[assignment]
        out[name] = tables
    p = torch.softmax(w, -1)
    out["kl_mean"] = float((p * (torch.log_softmax(w, -1) - torch.log_softmax(b, -1))).sum(-1).mean())
    out["kept_mean"] = float(keep.sum(-1).double().mean())
    out["masked_gold_fraction"] = float((~keep.gather(1, y[:, None])).double().mean())
    return out


def close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


def assert_matches(vector: SteeringVector, ref: dict[str, Any], tol: float = 1e-9) -> None:
    """Every number build stores equals the reference's to ``tol`` (relative, absolute below 1)."""
    cfg = vector.config
    torch.testing.assert_close(vector.task_vector, ref["vector"], rtol=tol, atol=tol * 1e-2)
    for name in ("mu", "mu_static"):
        stats = getattr(cfg, name)
        for curvature in S.CURVATURES:
            for how in S.AGGREGATORS:
                got, want = getattr(stats, curvature)[how], ref[name][curvature][how]
                assert close(got, want, tol), (name, curvature, how, got, want)
        assert close(stats.fit, ref[name]["fit"], tol), (name, "fit", stats.fit, ref[name]["fit"])
    cal = cfg.calibration
    assert cal["n_tokens"] == ref["n_tokens"]
    for key in ("kl_mean", "kept_mean", "masked_gold_fraction"):
        assert close(cal[key], ref[key], tol), (key, cal[key], ref[key])
    for curvature in S.CURVATURES:
        for q, want in ref["quantiles"][curvature].items():
            assert close(cal["mu_star_quantiles"][curvature][q], want, tol), (curvature, q)


# --- equality with the reference -------------------------------------------------------------------------


def test_reference_is_non_trivial(lora_ref: dict[str, Any]) -> None:
    ref = lora_ref
    assert ref["kl_mean"] > 0.1  # the LoRA moves the model
    assert 1.0 < ref["kept_mean"] < 15.0  # the mask keeps a few of the 99 tokens
    assert 0.0 < ref["masked_gold_fraction"] < 1.0
    assert len({round(ref["mu"]["paper"][h], 6) for h in S.AGGREGATORS}) == 4


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_lora_matches_reference_for_any_batch_and_padding(
    lora: Any, lora_ref: dict[str, Any], batch_size: int, side: str
) -> None:
    tok = tiny_tokenizer()
    tok.padding_side = side
    vector = build(lora, lora, PAIRS, tokenizer=tok, batch_size=batch_size)
    assert_matches(vector, lora_ref)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("method", ["ia3", "prompt_tuning", "p_tuning"])
def test_every_peft_method_matches_reference(method: str, side: str) -> None:
    model = make_adapter(method)
    tok = tiny_tokenizer()
    tok.padding_side = side
    ref = reference(model, PAIRS, tok)
    assert ref["kl_mean"] > 0.01  # the adapter is not the identity
    vector = build(model, None, PAIRS, tokenizer=tok, batch_size=3)
    assert_matches(vector, ref)
    assert vector.config.adapter["peft_type"] == {"ia3": "IA3", "prompt_tuning": "PROMPT_TUNING"}.get(
        method, "P_TUNING"
    )


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("method", ["lora", "p_tuning"])
def test_float32_matches_reference(method: str, side: str) -> None:
    model = make_adapter(method, torch.float32)
    tok = tiny_tokenizer()
    tok.padding_side = side
    vector = build(model, None, PAIRS, tokenizer=tok, batch_size=3)
    assert_matches(vector, reference(model, PAIRS, tok), tol=1e-4)


def test_alpha_is_used(lora: Any, tokenizer: Any) -> None:
    vector = build(lora, lora, PAIRS[:3], tokenizer=tokenizer, alpha=0.3)
    assert vector.config.alpha == 0.3
    assert_matches(vector, reference(lora, PAIRS[:3], tokenizer, alpha=0.3))


def test_a_long_batch_uses_several_chunks(
    lora: Any, lora_ref: dict[str, Any], tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steerkit.calibration as C

    monkeypatch.setattr(C, "CHUNK_ELEMENTS", 1)  # chunks of 16 rows
    assert_matches(build(lora, lora, PAIRS, tokenizer=tokenizer, batch_size=8), lora_ref)


# --- strengths, artifact, provenance ---------------------------------------------------------------------


def test_mu_value_follows_the_aggregator(lora: Any, tokenizer: Any) -> None:
    by_name = {
        name: build(lora, lora, PAIRS[:4], tokenizer=tokenizer, mu_aggregator=name)
        for name in ("median", "mean/exact", "fit", "ratio/paper")
    }
    for name, chosen_by in (("median", "median/paper"), ("mean/exact", "mean/exact"), ("fit", "fit")):
        cfg = by_name[name].config
        assert (cfg.mu.chosen_by, cfg.mu_static.chosen_by) == (chosen_by, chosen_by)
        assert cfg.mu.value == cfg.mu.select(name)
        assert cfg.mu_static.value == cfg.mu_static.select(name)
    assert by_name["ratio/paper"].mu == by_name["median"].config.mu.paper["ratio"]
    with pytest.raises(InvalidOptionError, match="unknown μ aggregator 'middle'"):
        build(lora, lora, PAIRS, tokenizer=tokenizer, mu_aggregator="middle")


def test_artifact_contents_and_round_trip(lora: Any, tokenizer: Any, tmp_path: Path) -> None:
    vector = build(lora, lora, PAIRS, tokenizer=tokenizer)
    cfg = vector.config
    assert cfg.vocab_size == 99 and vector.task_vector.shape == (99,)
    assert cfg.tokenizer == tokenizer_fingerprint(tokenizer)
    assert cfg.base_model == {"name_or_path": None, "revision": None}
    assert set(vector.adapter_files or {}) == {"adapter_config.json", "adapter_model.safetensors"}
    assert cfg.adapter == {"path": None, "peft_type": "LORA", "sha256": adapter_sha256(vector.adapter_files or {})}
    cal = cfg.calibration
    assert cal["n_examples"] == len(PAIRS)
    assert cal["data_sha256"] == data_sha256(PAIRS)
    assert list(cal["mu_star_quantiles"]["paper"]) == [
        "0.01",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "0.75",
        "0.9",
        "0.95",
        "0.99",
    ]
    assert cal["mu_star_quantiles"]["paper"]["0.5"] == cfg.mu.paper["median"]
    # save → load is identical
    vector.save(tmp_path / "vec")
    loaded = SteeringVector.load(tmp_path / "vec")
    assert torch.equal(loaded.task_vector, vector.task_vector)
    assert loaded.config == vector.config
    assert loaded.adapter_files == vector.adapter_files
    # the stored adapter is the one the vector was built from: building from it gives the same vector
    base = tiny_llama(sharpness=20).double()
    again = build(base, tmp_path / "vec" / "adapter", PAIRS, tokenizer=tokenizer)
    assert torch.equal(again.task_vector, vector.task_vector)
    assert again.config.mu == vector.config.mu
    assert again.config.adapter == {**cfg.adapter, "path": str(tmp_path / "vec" / "adapter")}
    # ... and the plain model is left as it was (the loaded adapter is unloaded again)
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in base.modules())
    x = torch.tensor([[14, 15, 16, 17]])
    with torch.no_grad():
        assert torch.equal(base(input_ids=x).logits, tiny_llama(sharpness=20).double()(input_ids=x).logits)


def test_same_inputs_same_bytes(lora: Any, tokenizer: Any) -> None:
    a = build(lora, lora, PAIRS[:3], tokenizer=tokenizer)
    b = build(lora, lora, PAIRS[:3], tokenizer=tokenizer)
    assert torch.equal(a.task_vector, b.task_vector)
    files_a, files_b = a.files(), b.files()
    # steering.safetensors is left out: the safetensors writer orders its metadata keys at random (artifact.py)
    for name in ("steer_config.json", "README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert files_a[name] == files_b[name], name


def test_model_mode_is_restored_and_progress_reported(tokenizer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_adapter("lora")
    model.train()
    seen: list[tuple[int, int]] = []
    build(model, None, PAIRS, tokenizer=tokenizer, batch_size=3, progress=lambda i, n: seen.append((i, n)))
    assert model.training
    assert seen == [(1, 3), (2, 3), (3, 3)]
    build(model, None, PAIRS[:2], tokenizer=tokenizer, batch_size=1, show_progress=True)
    err = capsys.readouterr().err
    assert err == "build: batch 1/2\nbuild: batch 2/2\n"


def test_data_from_a_file(lora: Any, tokenizer: Any, tmp_path: Path) -> None:
    import json

    path = tmp_path / "calib.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS[:3]), encoding="utf-8")
    from_file = build(lora, lora, path, tokenizer=tokenizer)
    from_list = build(lora, lora, PAIRS[:3], tokenizer=tokenizer)
    assert torch.equal(from_file.task_vector, from_list.task_vector)
    assert from_file.config == from_list.config


# --- errors ----------------------------------------------------------------------------------------------


def test_errors(lora: Any, tokenizer: Any, tmp_path: Path) -> None:
    plain = tiny_llama()
    with pytest.raises(AdapterError, match="no adapter given and the model is not a PeftModel"):
        build(plain, None, PAIRS, tokenizer=tokenizer)
    with pytest.raises(AdapterError) as info:
        build(plain, tmp_path, PAIRS, tokenizer=tokenizer)
    assert info.value.message == f"'{tmp_path}' has no adapter_config.json"
    with pytest.raises(AdapterError, match=r"no adapter at '\./missing'"):
        build(plain, "./missing", PAIRS, tokenizer=tokenizer)
    with pytest.raises(AdapterError, match="got int"):
        build(plain, 3, PAIRS, tokenizer=tokenizer)
    with pytest.raises(AdapterError, match="already a PeftModel"):
        build(lora, str(tmp_path), PAIRS, tokenizer=tokenizer)
    with pytest.raises(InvalidOptionError, match=r"alpha must be in \[0, 1\]"):
        build(lora, lora, PAIRS, tokenizer=tokenizer, alpha=1.5)
    with pytest.raises(InvalidOptionError, match="batch_size must be an integer ≥ 1"):
        build(lora, lora, PAIRS, tokenizer=tokenizer, batch_size=0)
    with pytest.raises(EmptyDataError, match="no completion tokens"):
        build(lora, lora, [{"prompt": "", "completion": "y"}], tokenizer=tokenizer)
    with pytest.raises(EmptyDataError):
        build(lora, lora, [], tokenizer=tokenizer)


def test_prefix_tuning_is_refused(tokenizer: Any) -> None:
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    model = get_peft_model(tiny_llama(), PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3))
    with pytest.raises(AdapterError, match="PEFT method PREFIX_TUNING is not supported by build"):
        build(model, None, PAIRS, tokenizer=tokenizer)


def test_mu_stats_fields_are_floats(lora: Any, tokenizer: Any) -> None:
    mu = build(lora, lora, PAIRS[:2], tokenizer=tokenizer).config.mu
    for field in dataclasses.fields(mu):
        value = getattr(mu, field.name)
        if isinstance(value, dict):
            assert all(type(v) is float for v in value.values())
    assert type(mu.fit) is float and type(mu.value) is float


def test_max_length_truncates_prompts_first(lora: Any, tokenizer: Any) -> None:
    pairs = PAIRS[:3]
    vector = build(lora, lora, pairs, tokenizer=tokenizer, max_length=12)
    expected = 0
    for pair in pairs:
        ids, start = encode_pair(tokenizer, pair["prompt"], pair["completion"], max_length=12)
        assert len(ids) <= 12
        expected += len(ids) - start
    assert vector.config.calibration["n_tokens"] == expected
    assert expected < reference(lora, pairs, tokenizer)["n_tokens"]  # the third completion was cut


def test_package_exports(lora: Any, tokenizer: Any) -> None:
    import steerkit
    import steerkit.builder  # importing the module must not shadow the exported function

    assert steerkit.build is build
    a = steerkit.build(lora, lora, PAIRS[:2], tokenizer=tokenizer)
    b = build(lora, lora, PAIRS[:2], tokenizer=tokenizer)
    assert torch.equal(a.task_vector, b.task_vector) and a.config == b.config
    from steerkit.warmstart import warm_start

    assert steerkit.warm_start is warm_start


def test_bad_build_options_say_the_default(lora: Any) -> None:
    """issue 28: build(batch_size=0) was refused with no hint."""
    for name in ("batch_size", "max_length", "folds"):
        with pytest.raises(InvalidOptionError) as info:
            build(lora, None, PAIRS, tokenizer=tiny_tokenizer(), **{name: -1})
        default = inspect.signature(build).parameters[name].default
        assert info.value.hint == f"the default is {default}"
    with pytest.raises(InvalidOptionError, match="a steering vector is named by a folder or a Hub repo id, got int"):
        SteeringVector.load(123)  # type: ignore[arg-type]
