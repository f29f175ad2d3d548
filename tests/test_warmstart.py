"""warm_start: the four PEFT methods, completion-only loss, seeded bit-reproducibility, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny import tiny_llama

from steerkit.errors import AdapterError, EmptyDataError, InvalidOptionError
from steerkit.warmstart import METHODS, _batch_loss, warm_start

YES = [{"prompt": f"Is {i} fine?", "completion": " yes"} for i in range(8)]


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_lora_lowers_the_loss_on_a_toy_task(tokenizer: Any) -> None:
    warm = warm_start(tiny_llama(sharpness=20), YES, tokenizer=tokenizer, lr=1e-2, epochs=3, batch_size=4)
    losses = warm.steerkit_losses
    assert len(losses) == 6  # 3 epochs of 2 steps
    assert losses[-1] < 0.6 * losses[0]
    assert not warm.training
    config = warm.peft_config["default"]
    assert (config.peft_type.value, config.r, config.lora_alpha, config.lora_dropout) == ("LORA", 8, 16, 0.1)
    assert set(config.target_modules) == {"q_proj", "v_proj"}  # peft's default for Llama
    # the trained model puts more probability on " yes" after an unseen prompt
    ids = tokenizer("Is 99 fine?")["input_ids"]
    yes = tokenizer(" yes", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        warm_lp = torch.log_softmax(warm(input_ids=torch.tensor([ids])).logits[0, -1], -1)[yes]
        with warm.disable_adapter():
            base_lp = torch.log_softmax(warm(input_ids=torch.tensor([ids])).logits[0, -1], -1)[yes]
    assert warm_lp > base_lp + 0.5


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_is_bit_reproducible(tokenizer: Any, method: str) -> None:
    def run(seed: int) -> Any:
        return warm_start(
            tiny_llama(sharpness=20),
            YES,
            tokenizer=tokenizer,
            method=method,
            lr=1e-2,
            epochs=2,
            batch_size=4,
            seed=seed,
        )

    first, again, other = run(0), run(0), run(1)
    a, b, c = adapter_state(first), adapter_state(again), adapter_state(other)
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.steerkit_losses == again.steerkit_losses
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert first.steerkit_losses[-1] < first.steerkit_losses[0]
    assert not first.training
    config = first.peft_config["default"]
    assert config.peft_type.value == {"lora": "LORA", "ia3": "IA3", "prompt_tuning": "PROMPT_TUNING"}.get(
        method, "P_TUNING"
    )
    if method in ("prompt_tuning", "p_tuning"):
        assert config.num_virtual_tokens == 20


def test_loss_counts_completion_tokens_only(tokenizer: Any) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(sharpness=20), LoraConfig(r=2, init_lora_weights=False))
    model.eval()
    a = ([14, 15, 16, 98, 17, 18], 4)  # prompt 4 tokens, completion 2
    b = ([20, 21, 98, 22], 3)
    with torch.no_grad():
        loss = _batch_loss(model, [a, b], pad_id=0, num_virtual=0, device=torch.device("cpu"))
        terms = []
        for ids, start in (a, b):
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            lp = torch.log_softmax(logits.float(), -1)
            terms += [-lp[j - 1, ids[j]] for j in range(start, len(ids))]
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_loss_on_kept_logits_equals_the_loss_on_full_logits(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits from the earliest completion position on (``logits_to_keep``) give the loss of full logits."""
    from peft import get_peft_model

    import steerkit.warmstart as ws

    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(sharpness=20), ws.peft_config(method))
    model.eval()
    batch = [([14, 15, 16, 17, 98, 17, 18], 5), ([20, 21, 98, 22], 3), ([30, 31, 32, 33, 34, 35, 36, 37], 7)]
    virtual = 20 if method == "prompt_tuning" else 0
    assert ws._takes_logits_to_keep(model)
    with torch.no_grad():
        kept = _batch_loss(model, batch, pad_id=0, num_virtual=virtual, device=torch.device("cpu"))
        monkeypatch.setattr(ws, "_takes_logits_to_keep", lambda _: False)
        full = _batch_loss(model, batch, pad_id=0, num_virtual=virtual, device=torch.device("cpu"))
    torch.testing.assert_close(kept, full, rtol=1e-6, atol=1e-6)


def test_leaves_the_global_rng_alone_and_reports_progress(tokenizer: Any) -> None:
    model = tiny_llama()  # (seeds the global RNG itself)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    seen: list[tuple[int, int]] = []
    warm_start(model, YES[:3], tokenizer=tokenizer, batch_size=2, progress=lambda s, t: seen.append((s, t)))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert seen == [(1, 2), (2, 2)]


def test_show_progress_prints_to_stderr(tokenizer: Any, capsys: pytest.CaptureFixture[str]) -> None:
    warm_start(tiny_llama(), YES[:2], tokenizer=tokenizer, batch_size=2, show_progress=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("warm_start: step 1/1 loss ")


def test_errors(tokenizer: Any, lora_model: Any) -> None:
    with pytest.raises(InvalidOptionError) as info:
        warm_start(tiny_llama(), YES, tokenizer=tokenizer, method="prefix")
    assert str(info.value) == "unknown warm-start method 'prefix' — use one of: lora, ia3, prompt_tuning, p_tuning"
    with pytest.raises(InvalidOptionError, match="epochs must be a positive integer"):
        warm_start(tiny_llama(), YES, tokenizer=tokenizer, epochs=0)
    with pytest.raises(InvalidOptionError, match="lr must be positive"):
        warm_start(tiny_llama(), YES, tokenizer=tokenizer, lr=0.0)
    with pytest.raises(AdapterError, match="already a PeftModel"):
        warm_start(lora_model, YES, tokenizer=tokenizer)
    with pytest.raises(EmptyDataError):
        warm_start(tiny_llama(), [], tokenizer=tokenizer)
    # a completion whose only token has no context (empty prompt, no BOS) leaves nothing to learn
    with pytest.raises(EmptyDataError, match="no completion tokens"):
        warm_start(tiny_llama(), [{"prompt": "", "completion": "y"}], tokenizer=tokenizer)


def test_save_adapter_is_atomic_and_never_replaces_a_folder_that_is_not_an_adapter(
    tokenizer: Any, tmp_path: Any
) -> None:
    from steerkit.errors import ArtifactExistsError
    from steerkit.warmstart import save_adapter

    pairs = [{"prompt": "ab=", "completion": "ba"}, {"prompt": "cd=", "completion": "dc"}]
    warm = warm_start(tiny_llama(), pairs, tokenizer=tokenizer, epochs=1, batch_size=2)
    out = save_adapter(warm, tmp_path / "lora")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    first = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ArtifactExistsError, match="already exists and is not empty"):
        save_adapter(warm, out)
    assert save_adapter(warm, out, overwrite=True) == out  # an adapter folder may be replaced
    assert (out / "adapter_model.safetensors").read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["lora"]  # no staging folder left behind
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("mine")
    with pytest.raises(ArtifactExistsError, match=r"not a PEFT adapter .* refusing to replace it even with overwrite"):
        save_adapter(warm, documents, overwrite=True)
    assert (documents / "thesis.txt").read_text() == "mine"


def test_an_adapter_folder_left_absent_by_a_killed_swap_is_put_back_by_its_next_reader(
    tokenizer: Any, tmp_path: Any
) -> None:
    """issue 28: a warm start killed between its two renames left the adapter folder absent until the next
    warm start; every reader of an adapter folder (here build's, through resolve_adapter) now recovers it."""
    import os

    from steerkit.adapters import resolve_adapter
    from steerkit.warmstart import save_adapter

    pairs = [{"prompt": "ab=", "completion": "ba"}, {"prompt": "cd=", "completion": "dc"}]
    out = save_adapter(warm_start(tiny_llama(), pairs, tokenizer=tokenizer, epochs=1, batch_size=2), tmp_path / "lora")
    before = (out / "adapter_model.safetensors").read_bytes()
    old = tmp_path / ".lora.abcd_123.old"
    old.mkdir()
    os.replace(out, old / "previous")  # killed between the renames: the old adapter beside, none in place
    assert not out.exists()
    _, source, loaded = resolve_adapter(tiny_llama(), str(out))
    assert loaded and source == str(out)
    assert (out / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora"]


def _nll_per_token(model: Any, tokenizer: Any, pairs: list[dict[str, str]]) -> float:
    """Mean cross-entropy per completion token, one pair at a time (an independent recomputation)."""
    from steerkit.data import encode_pair

    total = tokens = 0.0
    with torch.no_grad():
        for pair in pairs:
            ids, start = encode_pair(tokenizer, pair["prompt"], pair["completion"], max_length=512)
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
            first = max(start, 1)
            lp = torch.log_softmax(logits[first - 1 : len(ids) - 1], -1)
            total -= float(lp.gather(1, torch.tensor(ids[first:])[:, None]).sum())
            tokens += len(ids) - first
    return total / tokens


def test_the_loss_is_reported_on_the_same_pairs_before_and_after(tokenizer: Any) -> None:
    pairs = [{"prompt": f"Is {i} fine?", "completion": " yes" if i % 2 else " no, not at all"} for i in range(10)]
    warm = warm_start(tiny_llama(sharpness=20), pairs, tokenizer=tokenizer, lr=1e-2, epochs=2, batch_size=4)
    loss = warm.steerkit_loss
    assert loss["pairs"] == 10 and loss["after"] < loss["before"]
    assert loss["after"] == pytest.approx(_nll_per_token(warm, tokenizer, pairs), rel=1e-5)
    with warm.disable_adapter():  # LoRA starts at B = 0: "before" is the base model's loss
        assert loss["before"] == pytest.approx(_nll_per_token(warm, tokenizer, pairs), rel=1e-5)
    # measuring costs forward passes only: training is exactly what it is without the measurement
    plain = warm_start(
        tiny_llama(sharpness=20), pairs, tokenizer=tokenizer, lr=1e-2, epochs=2, batch_size=4, loss_pairs=0
    )
    assert plain.steerkit_losses == warm.steerkit_losses and plain.steerkit_loss["before"] is None
    few = warm_start(tiny_llama(sharpness=20), pairs, tokenizer=tokenizer, lr=1e-2, batch_size=4, loss_pairs=3)
    assert few.steerkit_loss["pairs"] == 3


def test_a_loss_that_rose_is_a_warning() -> None:
    from steerkit_cli.render import loss_lines

    assert loss_lines({"before": 1.5, "after": 0.5, "pairs": 32}) == [
        "Loss on the same 32 training pairs (mean per completion token): 1.5000 → 0.5000"
    ]
    rose = loss_lines({"before": 1.487, "after": 1.74, "pairs": 32})
    assert len(rose) == 2 and "raised the loss on its own training pairs" in rose[1] and "lower --lr" in rose[1]
    assert loss_lines({"before": None, "after": None, "pairs": 0}) == []
