"""Steered decoding on a tiny model: the dynamic processor against hand-written references, static mode, attach /
detach, compatibility checks (steerkit.decode, steerkit.compatibility)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import mu_stats, tiny_llama, tiny_lora, tiny_tokenizer
from transformers import LogitsProcessor, LogitsProcessorList

import steerkit
from steerkit import svdecode
from steerkit.config import SteerConfig
from steerkit.decode import attach
from steerkit.errors import AdapterError, InvalidOptionError
from steerkit.format import adapter_sha256
from steerkit.models import tokenizer_fingerprint
from steerkit.processors import DynamicSteeringProcessor, StaticSteeringProcessor
from steerkit.vector import SteeringVector

PROMPTS = ["Q: what is 2+2? A:", "hi", "The cat sat on"]


# --- helpers shared with the evaluate/tune tests ---------------------------------------------------------


def sharp_pair(seed: int = 0) -> Any:
    """A tiny Llama with sharp logits wrapped in a non-trivial LoRA."""
    return tiny_lora(tiny_llama(sharpness=20, seed=seed))


def adapter_files(peft_model: Any) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def hand_vector(
    peft_model: Any,
    tokenizer: Any,
    *,
    texts: tuple[str, ...] = ("hello world, how are you?", "the cat sat on the mat"),
    with_adapter: bool = True,
    vocab_size: int | None = None,
) -> SteeringVector:
    """A steering vector built by hand with svdecode: the mean masked direction over a few texts."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        warm = peft_model(**enc).logits.float()[:, -enc["input_ids"].shape[1] :]  # skip virtual prompt tokens
        with peft_model.disable_adapter():
            base = peft_model(**enc).logits.float()
    delta, _ = svdecode.steering_delta(warm, base, alpha=0.1)
    v = delta[enc["attention_mask"].bool()].mean(0).float()
    files = adapter_files(peft_model) if with_adapter else None
    width = vocab_size or v.numel()
    config = SteerConfig(
        vocab_size=width,
        mu=mu_stats(-1.5),
        mu_static=mu_stats(-0.5),
        tokenizer=tokenizer_fingerprint(tokenizer),
        base_model={"name_or_path": "tiny-llama", "revision": None},
        calibration={"n_examples": len(texts)},
        adapter={"path": "adapter", "peft_type": "LORA", "sha256": adapter_sha256(files)} if files else None,
    )
    return SteeringVector(task_vector=v, config=config, adapter_files=files)


def left_batch(tokenizer: Any, prompts: list[str]) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "left"
    return dict(tokenizer(prompts, return_tensors="pt", padding=True))


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def reference_greedy(
    peft_model: Any, input_ids: torch.Tensor, mask: torch.Tensor, *, mu: float, steps: int, filter_masked: bool = True
) -> torch.Tensor:
    """Greedy SVDecode with a full recompute of both models at every step (no cache anywhere)."""
    pad, eos = 0, 2
    seqs, m = input_ids.clone(), mask.clone()
    done = torch.zeros(seqs.shape[0], dtype=torch.bool)
    for _ in range(steps):
        with torch.no_grad():
            warm = peft_model(input_ids=seqs, attention_mask=m, position_ids=positions(m)).logits[:, -1].float()
            with peft_model.disable_adapter():
                base = peft_model(input_ids=seqs, attention_mask=m, position_ids=positions(m)).logits[:, -1].float()
        delta, keep = svdecode.steering_delta(warm, base, alpha=0.1)
        z = svdecode.steer(warm, delta, keep, mu, filter_masked=filter_masked)
        nxt = torch.where(done, torch.full_like(done, pad, dtype=torch.long), z.argmax(-1))
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        m = torch.cat([m, torch.ones_like(nxt[:, None])], dim=1)
        done |= nxt == eos
        if bool(done.all()):
            break
    return seqs


class FullRecomputeProcessor(LogitsProcessor):
    """Reference dynamic processor: the whole base forward on the given rows at every step, no cache."""

    def __init__(self, peft_model: Any, prompt_mask: torch.Tensor, mu: float) -> None:
        self.peft_model, self.prompt_mask, self.mu = peft_model, prompt_mask, mu

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        b0, p = self.prompt_mask.shape
        prompt = self.prompt_mask.repeat_interleave(input_ids.shape[0] // b0, dim=0)
        mask = torch.cat([prompt, torch.ones(input_ids.shape[0], input_ids.shape[1] - p, dtype=torch.long)], dim=1)
        with torch.no_grad(), self.peft_model.disable_adapter():
            base = self.peft_model(input_ids=input_ids, attention_mask=mask, position_ids=positions(mask)).logits
        delta, keep = svdecode.steering_delta(scores, base[:, -1].float(), alpha=0.1)
        return svdecode.steer(scores, delta, keep, self.mu, filter_masked=True)


@pytest.fixture
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def peft() -> Any:
    return sharp_pair()


# --- the dynamic processor against references ------------------------------------------------------------


def assert_base_forwards(steered: Any, *, shared: bool, steps: int) -> None:
    """Every step's base logits came from the shared forward, or from the processor's own cached forward."""
    proc = steered.processor
    assert isinstance(proc, DynamicSteeringProcessor)
    assert steered.shared_forward is shared
    if shared:
        assert (proc.shared_steps, proc.calls, proc.recomputes) == (steps, 0, 0)
    else:
        assert (proc.shared_steps, proc.calls, proc.recomputes) == (0, steps, 1)


@pytest.mark.parametrize("shared", [False, True], ids=["own-forward", "shared-forward"])
def test_dynamic_greedy_batch1_matches_full_recompute_loop(peft: Any, tok: Any, shared: bool) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS[:1])
    steered = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=shared)
    out = steered.generate(**batch, max_new_tokens=12, do_sample=False)
    ref = reference_greedy(peft, batch["input_ids"], batch["attention_mask"], mu=-40.0, steps=12)
    assert torch.equal(out, ref[:, : out.shape[1]])
    plain = peft.generate(**batch, max_new_tokens=12, do_sample=False)
    assert not torch.equal(out, plain)  # the strength really steers
    assert_base_forwards(steered, shared=shared, steps=out.shape[1] - batch["input_ids"].shape[1])


@pytest.mark.parametrize("shared", [False, True], ids=["own-forward", "shared-forward"])
def test_dynamic_greedy_left_padded_batch_matches_reference(peft: Any, tok: Any, shared: bool) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    assert int((batch["attention_mask"] == 0).sum()) > 0  # prompts of different lengths
    steered = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=shared)
    out = steered.generate(**batch, max_new_tokens=10, do_sample=False)
    ref = reference_greedy(peft, batch["input_ids"], batch["attention_mask"], mu=-40.0, steps=10)
    assert torch.equal(out, ref[:, : out.shape[1]])
    assert_base_forwards(steered, shared=shared, steps=out.shape[1] - batch["input_ids"].shape[1])
    # Without the attention mask the processor infers the same prompt mask from pad tokens.
    proc = steered.logits_processor()
    out2 = peft.generate(**batch, max_new_tokens=10, do_sample=False, logits_processor=proc)
    assert torch.equal(out2, out)


@pytest.mark.parametrize("shared", [False, True], ids=["own-forward", "shared-forward"])
def test_dynamic_beam_search_matches_uncached_reference(peft: Any, tok: Any, shared: bool) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, peft, tokenizer=tok, mu=-30.0, shared_forward=shared)
    kw = dict(max_new_tokens=8, num_beams=3, do_sample=False, num_return_sequences=2)
    out = steered.generate(**batch, **kw)
    ref_proc = FullRecomputeProcessor(peft, batch["attention_mask"], -30.0)
    ref = peft.generate(**batch, **kw, logits_processor=LogitsProcessorList([ref_proc]))
    assert torch.equal(out, ref)
    proc = steered.processor
    assert isinstance(proc, DynamicSteeringProcessor)
    if shared:  # the paired cache reordered both halves; the processor never ran a forward
        assert proc.shared_steps == 8 and proc.calls == 0
    else:
        assert proc.reorders > 0 and proc.recomputes == 1  # beams reordered through the cache, never recomputed


def test_dynamic_recomputes_when_a_row_history_is_unknown(peft: Any, tok: Any) -> None:
    batch = left_batch(tok, PROMPTS[:2])
    proc = DynamicSteeringProcessor(peft, -1.0)
    ids = batch["input_ids"]
    first = proc.base_logits(ids)
    step = torch.cat([ids, torch.tensor([[5], [6]])], dim=1)
    cached = proc.base_logits(step)
    fresh = DynamicSteeringProcessor(peft, -1.0, use_cache=False)
    fresh.base_logits(ids)
    torch.testing.assert_close(cached, fresh.base_logits(step), rtol=1e-5, atol=1e-5)
    assert proc.recomputes == 1
    # Rows swapped: served by reordering the cache.
    swapped = torch.cat([step[[1, 0]], torch.tensor([[7], [8]])], dim=1)
    got = proc.base_logits(swapped)
    assert proc.reorders == 1 and proc.recomputes == 1
    torch.testing.assert_close(got, fresh.base_logits(swapped), rtol=1e-5, atol=1e-5)
    # A row whose history no cached row has: full recompute, same answer.
    alien = swapped.clone()
    alien[0, -2] = 9
    alien = torch.cat([alien, torch.tensor([[3], [4]])], dim=1)
    got = proc.base_logits(alien)
    assert proc.recomputes == 2
    torch.testing.assert_close(got, fresh.base_logits(alien), rtol=1e-5, atol=1e-5)
    assert first.shape == (2, 99)


@pytest.mark.parametrize("shared", [False, True], ids=["own-forward", "shared-forward"])
def test_sampling_is_reproducible_and_composes_with_warpers(peft: Any, tok: Any, shared: bool) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, peft, tokenizer=tok, mu=-20.0, shared_forward=shared)
    kw = dict(max_new_tokens=10, do_sample=True, top_k=8, top_p=0.9, temperature=0.7, num_return_sequences=2)
    torch.manual_seed(0)
    a = steered.generate(**batch, **kw)
    torch.manual_seed(0)
    b = steered.generate(**batch, **kw)
    assert torch.equal(a, b)
    # Same warpers after the uncached reference processor: the same samples (steering happens before the warpers).
    torch.manual_seed(0)
    ref_proc = FullRecomputeProcessor(peft, batch["attention_mask"], -20.0)
    ref = peft.generate(**batch, **kw, logits_processor=LogitsProcessorList([ref_proc]))
    assert torch.equal(a, ref)


def test_caller_processors_are_kept(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS[:1])
    seen: list[int] = []

    class Spy(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            seen.append(input_ids.shape[1])
            return scores

    steered = attach(vector, peft, tokenizer=tok, mode="static", mu=0.0)
    steered.generate(**batch, max_new_tokens=3, do_sample=False, logits_processor=LogitsProcessorList([Spy()]))
    assert len(seen) == 3


# --- μ = 0, static mode, detach --------------------------------------------------------------------------


def test_mu_zero_reproduces_plain_generate(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    plain = peft.generate(**batch, max_new_tokens=10, do_sample=False)
    with attach(vector, peft, tokenizer=tok, mode="static", mu=0.0) as steered:
        assert torch.equal(steered.generate(**batch, max_new_tokens=10, do_sample=False), plain)
    with attach(vector, peft, tokenizer=tok, mode="dynamic", mu=0.0, filter_masked=False) as steered:
        assert torch.equal(steered.generate(**batch, max_new_tokens=10, do_sample=False), plain)
    torch.manual_seed(3)
    plain_s = peft.generate(**batch, max_new_tokens=10, do_sample=True, top_k=20)
    with attach(vector, peft, tokenizer=tok, mode="static", mu=0.0) as steered:
        torch.manual_seed(3)
        assert torch.equal(steered.generate(**batch, max_new_tokens=10, do_sample=True, top_k=20), plain_s)
    assert torch.equal(peft.generate(**batch, max_new_tokens=10, do_sample=False), plain)


def test_static_processor_adds_masked_vector() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 11) * 4
    v = torch.randn(11)
    proc = StaticSteeringProcessor(v, torch.tensor([1.0, -2.0, 0.5]))
    out = proc(torch.zeros(3, 1, dtype=torch.long), scores)
    keep = svdecode.confidence_mask(scores, alpha=0.1)
    expected = scores + torch.tensor([1.0, -2.0, 0.5])[:, None] * torch.where(keep, v, torch.zeros(()))
    assert torch.equal(out, expected)
    # Per-row μ is repeated for expanded rows (beams / return sequences): 2 prompts x 3 rows.
    proc2 = StaticSteeringProcessor(v, torch.tensor([1.0, -2.0]))
    scores6 = torch.randn(6, 11)
    keep6 = svdecode.confidence_mask(scores6, alpha=0.1)
    mu6 = torch.tensor([1.0, 1.0, 1.0, -2.0, -2.0, -2.0])[:, None]
    assert torch.equal(proc2(torch.zeros(6, 1, dtype=torch.long), scores6), scores6 + mu6 * torch.where(keep6, v, 0.0))
    with pytest.raises(InvalidOptionError, match="2 per-row strengths but generate is decoding 5 rows"):
        proc2(torch.zeros(5, 1, dtype=torch.long), torch.randn(5, 11))


def test_static_processor_float_mu_padding_and_filter_match_the_decode_rule() -> None:
    from steerkit.svdecode import steering_direction

    torch.manual_seed(1)
    v = torch.randn(12)
    for mu, filter_masked in ((-3.0, False), (2.5, True), (0.0, False), (0.0, True)):
        proc = StaticSteeringProcessor(v, mu, alpha=0.2, n_tokens=9, filter_masked=filter_masked)
        for _ in range(2):  # the second step reuses the scaled vector
            scores = torch.randn(4, 12) * 3
            scores[0, 3] = float("-inf")
            direction, keep = steering_direction(scores, static_vector=v, alpha=0.2, n_tokens=9)
            expected = svdecode.steer(scores, direction, keep, mu, filter_masked=filter_masked)
            assert torch.equal(proc(torch.zeros(4, 1, dtype=torch.long), scores), expected)
    # The mask from logits is the mask from log-probabilities (a per-row shift), down to ties at the threshold.
    z = torch.randn(50, 300) * 5
    lp = torch.log_softmax(z.double(), dim=-1)
    assert torch.equal(
        svdecode.confidence_mask(z.double(), alpha=0.1), lp >= lp.max(-1, keepdim=True).values + math.log(0.1)
    )


def test_static_steering_changes_output_and_per_row_mu(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    plain = peft.generate(**batch, max_new_tokens=8, do_sample=False)
    with steerkit.attach(vector, peft, mode="static", mu=-3000.0, tokenizer=tok) as steered:
        strong = steered.generate(**batch, max_new_tokens=8, do_sample=False)
    assert not torch.equal(strong, plain)
    # Per-row μ: row 0 unsteered, rows 1-2 steered as with the float.
    with steerkit.attach(
        vector, peft, mode="static", mu=torch.tensor([0.0, -3000.0, -3000.0]), tokenizer=tok
    ) as steered:
        mixed = steered.generate(**batch, max_new_tokens=8, do_sample=False)
    assert torch.equal(mixed[0], plain[0]) and torch.equal(mixed[1:], strong[1:])


def test_dynamic_attach_loads_adapter_and_detach_restores_base(tok: Any) -> None:
    peft_model = sharp_pair()
    vector = hand_vector(peft_model, tok)
    base = tiny_llama(sharpness=20)  # the same base weights as inside peft_model
    batch = left_batch(tok, PROMPTS)
    before_state = {k: v.clone() for k, v in base.state_dict().items()}
    before_attrs = set(vars(base))
    before_grad = {k: p.requires_grad for k, p in base.named_parameters()}
    plain = base.generate(**batch, max_new_tokens=8, do_sample=False)
    steered = steerkit.attach(vector, base, mode="dynamic", mu=-40.0, tokenizer=tok)
    assert steered.model is not base
    out = steered.generate(**batch, max_new_tokens=8, do_sample=False)
    ref = reference_greedy(peft_model, batch["input_ids"], batch["attention_mask"], mu=-40.0, steps=8)
    assert torch.equal(out, ref[:, : out.shape[1]])
    steered.detach()
    steered.detach()  # idempotent
    after = base.state_dict()
    assert list(after) == list(before_state)
    assert all(torch.equal(after[k], before_state[k]) for k in before_state)
    assert set(vars(base)) == before_attrs
    assert {k: p.requires_grad for k, p in base.named_parameters()} == before_grad
    assert type(base.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert torch.equal(base.generate(**batch, max_new_tokens=8, do_sample=False), plain)
    with pytest.raises(Exception, match="detached"):
        steered.generate(**batch, max_new_tokens=2)


def test_dynamic_without_adapter_suggests_static(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok, with_adapter=False)
    with pytest.raises(AdapterError, match='mode="static"'):
        attach(vector, tiny_llama(sharpness=20), tokenizer=tok)
    # A PeftModel given directly needs no stored adapter.
    assert attach(vector, peft, tokenizer=tok).model is peft
    with pytest.raises(InvalidOptionError, match="unknown steering mode 'fast'"):
        attach(vector, peft, mode="fast")  # type: ignore[arg-type]


def test_prompt_tuning_adapter_base_sees_only_real_tokens(tok: Any) -> None:
    from peft import PromptTuningConfig, TaskType, get_peft_model

    torch.manual_seed(0)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    pt = get_peft_model(tiny_llama(sharpness=20), config)
    with torch.no_grad():
        pt.prompt_encoder["default"].embedding.weight.normal_(0.0, 1.0)
    pt.eval()
    vector = hand_vector(pt, tok)
    # The reference takes the warm scores from peft's own prompt-tuning `generate` (whose cached steps do not
    # reproduce a full recompute exactly, with or without steering) and recomputes the base logits in full.
    batch = left_batch(tok, PROMPTS)
    with attach(vector, pt, tokenizer=tok, mu=-30.0) as steered:
        out = steered.generate(**batch, max_new_tokens=8, do_sample=False)
    reference = FullRecomputeProcessor(pt, batch["attention_mask"], -30.0)
    ref = pt.generate(**batch, max_new_tokens=8, do_sample=False, logits_processor=LogitsProcessorList([reference]))
    assert torch.equal(out, ref)
    assert not torch.equal(out, pt.generate(**batch, max_new_tokens=8, do_sample=False))


# --- base and warm rows in one forward (LoRA mixed-adapter batches) --------------------------------------


def test_shared_forward_is_the_default_for_lora_only(peft: Any, tok: Any) -> None:
    from peft import IA3Config, TaskType, get_peft_model

    vector = hand_vector(peft, tok)
    assert attach(vector, peft, tokenizer=tok).shared_forward is True
    assert attach(vector, peft, tokenizer=tok, shared_forward=False).shared_forward is False
    assert attach(vector, peft, tokenizer=tok, mode="static").shared_forward is False
    with pytest.raises(InvalidOptionError, match="shared_forward is a dynamic-mode option"):
        attach(vector, peft, tokenizer=tok, mode="static", shared_forward=True)
    ia3 = get_peft_model(tiny_llama(sharpness=20), IA3Config(task_type=TaskType.CAUSAL_LM)).eval()
    assert attach(vector, ia3, tokenizer=tok).shared_forward is False  # IA3 has no mixed-adapter batches
    with pytest.raises(InvalidOptionError, match="shared_forward needs a LoRA adapter"):
        attach(vector, ia3, tokenizer=tok, shared_forward=True)
    peft.merge_adapter()
    try:
        assert attach(vector, peft, tokenizer=tok).shared_forward is False  # merged weights: no base rows
    finally:
        peft.unmerge_adapter()


def test_shared_forward_leaves_the_model_as_it_was(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    inner = peft.get_base_model()
    hooks = sum(len(m._forward_pre_hooks) for m in peft.modules())
    steered = attach(vector, peft, tokenizer=tok, mu=-40.0)
    steered.generate(**batch, max_new_tokens=4, do_sample=False)
    with pytest.raises(ValueError):
        steered.generate(**batch, max_new_tokens=4, num_beams=2, num_return_sequences=3)  # generate refuses
    assert "forward" not in vars(inner)
    assert sum(len(m._forward_pre_hooks) for m in peft.modules()) == hooks
    assert steered.processor.shared_base is None
    plain = peft.generate(**batch, max_new_tokens=6, do_sample=False)
    assert plain.shape == (3, batch["input_ids"].shape[1] + 6)  # plain generate still sees 3 rows


def test_shared_forward_without_cache_and_with_outputs(peft: Any, tok: Any) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    own = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=False)
    kw = dict(max_new_tokens=6, do_sample=False, return_dict_in_generate=True, output_scores=True)
    ref = own.generate(**batch, **kw)
    shared = attach(vector, peft, tokenizer=tok, mu=-40.0)
    got = shared.generate(**batch, use_cache=False, output_hidden_states=True, **kw)
    assert torch.equal(got.sequences, ref.sequences)
    assert all(a.shape == (3, 99) for a in got.scores)
    for a, b in zip(got.scores, ref.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert all(h.shape[0] == 3 for step in got.hidden_states for h in step)  # warm rows only
    assert shared.processor.shared_steps == 6


def test_shared_forward_steps_aside_for_a_caller_cache(peft: Any, tok: Any) -> None:
    from transformers import DynamicCache

    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS[:1])
    steered = attach(vector, peft, tokenizer=tok, mu=-40.0)
    out = steered.generate(**batch, max_new_tokens=5, do_sample=False, cache=DynamicCache(config=peft.config))
    ref = reference_greedy(peft, batch["input_ids"], batch["attention_mask"], mu=-40.0, steps=5)
    assert torch.equal(out, ref[:, : out.shape[1]])
    proc = steered.processor
    assert proc.shared_steps == 0 and proc.calls == 5  # the processor's own base forward served every step


def test_paired_cache_moves_each_row_with_its_base_twin() -> None:
    from steerkit.shared_forward import paired_cache

    cache = paired_cache(tiny_llama())
    rows = torch.arange(6, dtype=torch.float32)  # rows 0-2 warm, 3-5 their base twins
    keys = rows.view(6, 1, 1, 1).expand(6, 2, 1, 4).contiguous()
    cache.update(keys, keys.clone(), 0)
    cache.update(keys.clone(), keys.clone(), 1)

    def first_col() -> list[float]:
        return [float(v) for v in cache.layers[1].keys[:, 0, 0, 0]]

    cache.reorder_cache(torch.tensor([2, 2, 0]))
    assert first_col() == [2, 2, 0, 5, 5, 3]
    cache.batch_select_indices(torch.tensor([0, 2]))
    assert first_col() == [2, 0, 5, 3]
    cache.batch_repeat_interleave(2)
    assert first_col() == [2, 2, 0, 0, 5, 5, 3, 3]
    assert [float(v) for v in cache.layers[0].keys[:, 0, 0, 0]] == first_col()  # every layer moved alike


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning"])
def test_adapter_switch_gives_exactly_what_peft_disable_adapter_gives(tok: Any, method: str) -> None:
    """AdapterSwitch flips peft's private per-layer flag: pinned against the public disable_adapter(), so that a
    peft upgrade renaming the flag fails here, loudly."""
    from peft import get_peft_model

    from steerkit._hf import AdapterSwitch
    from steerkit.warmstart import peft_config

    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(sharpness=20), peft_config(method))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn_like(param))  # a non-trivial adapter
    model.eval()
    ids = torch.tensor([[1, 14, 15, 16, 17]])
    with torch.no_grad():
        warm = model(input_ids=ids).logits
        with model.disable_adapter():
            reference = model(input_ids=ids).logits
        switch = AdapterSwitch(model)
        with switch.off():
            switched = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.equal(warm, reference)  # the adapter matters
    assert torch.equal(switched, reference)
    assert torch.equal(after, warm)  # the switch put the adapter back
    if method != "prompt_tuning":
        assert switch.layers, "the per-layer flag was not found: peft may have renamed _disable_adapters"
