"""The fast paths of dynamic decoding give exactly the tokens of the reference paths (issue #16).

- LoRA slicing (:func:`steerkit.shared_forward.sliced_lora_forward`): the shared forward adds the LoRA update to
  the warm half by slicing instead of peft's mixed-adapter gather/scatter; same numbers, bit for bit, and peft's
  path wherever slicing would not be what peft computes.
- Skipped base forwards (``DynamicSteeringProcessor(skip_single_token=...)``): with the ``−inf`` filter, a step
  whose mask keeps one token in every row needs no base logits; greedy decoding and seeded sampling give the
  tokens of the path that never skips, beam search never skips, and the returned scores differ only as documented.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_decode import PROMPTS, FullRecomputeProcessor, hand_vector, left_batch, reference_greedy, sharp_pair
from tiny import tiny_llama, tiny_lora, tiny_tokenizer
from transformers import LogitsProcessorList

from steerkit.decode import attach
from steerkit.processors import DynamicSteeringProcessor
from steerkit.shared_forward import shared_forward_layers, sliceable


@pytest.fixture
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture
def peft() -> Any:
    return sharp_pair()


def _generate(steered: Any, batch: dict[str, torch.Tensor], **kw: Any) -> Any:
    return steered.generate(**batch, return_dict_in_generate=True, output_scores=True, output_logits=True, **kw)


# --- LoRA slicing in the shared forward -------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"num_beams": 1}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beam"])
def test_sliced_shared_forward_equals_peft_mixed_batch_bit_for_bit(peft: Any, tok: Any, kw: dict[str, Any]) -> None:
    vector = hand_vector(peft, tok)
    batch = left_batch(tok, PROMPTS)
    sliced = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=True)
    mixed = attach(vector, peft, tokenizer=tok, mu=-40.0, shared_forward=True)
    assert mixed._shared is not None and sliced._shared is not None
    mixed._shared.slicing = False
    a = _generate(sliced, batch, max_new_tokens=8, do_sample=False, **kw)
    b = _generate(mixed, batch, max_new_tokens=8, do_sample=False, **kw)
    lora = [m for m in shared_forward_layers(peft) or [] if hasattr(m, "lora_A")]
    assert sliced._shared.sliced_layers == len(lora) > 0 and mixed._shared.sliced_layers == 0
    assert torch.equal(a.sequences, b.sequences)
    for x, y in zip(a.logits + a.scores, b.logits + b.scores, strict=True):
        assert torch.equal(x, y)
    assert all("forward" not in vars(m) for m in lora)  # the per-layer forwards are gone after generate


def test_slicing_steps_aside_where_it_would_not_be_what_peft_computes(peft: Any, tok: Any) -> None:
    layer = next(m for m in shared_forward_layers(peft) or [] if hasattr(m, "lora_A"))
    assert sliceable(layer, "default")
    dropout = torch.nn.Dropout(0.5)
    layer.lora_dropout["default"] = dropout
    dropout.train()
    assert not sliceable(layer, "default")  # random dropout: peft's path
    dropout.eval()
    assert sliceable(layer, "default")
    layer.forward = layer.forward  # someone else's per-instance forward (accelerate hooks do this)
    assert not sliceable(layer, "default")
    del layer.forward
    layer.lora_variant["default"] = object()  # DoRA and the other variants have their own forward
    assert not sliceable(layer, "default")
    del layer.lora_variant["default"]
    assert sliceable(layer, "default")


def test_a_sliced_layer_computes_what_peft_computes_for_every_call(peft: Any) -> None:
    from peft.tuners.lora.layer import Linear

    from steerkit.shared_forward import sliced_lora_forward

    layer = next(m for m in shared_forward_layers(peft) or [] if isinstance(m, Linear))
    rows = [0]
    forward = sliced_lora_forward(layer, "default", rows)
    torch.manual_seed(0)
    x = torch.randn(4, 3, layer.in_features)
    with torch.no_grad():
        assert torch.equal(forward(x), layer(x))  # outside a shared forward: peft's own (adapter on every row)
        rows[0] = 2
        mixed = Linear.forward(layer, x, adapter_names=["default", "default", "__base__", "__base__"])
        assert torch.equal(forward(x), mixed)
        base = layer.base_layer(x)
        assert torch.equal(mixed[2:], base[2:]) and not torch.allclose(mixed[:2], base[:2])  # warm half only
        with pytest.raises(ValueError, match="adapter_names"):
            forward(x[:3])  # a batch that is not [warm; base]: peft refuses it, as before slicing
        layer._disable_adapters = True
        try:
            assert torch.equal(forward(x), layer.base_layer(x))
        finally:
            layer._disable_adapters = False


# --- skipping the base forward at single-token steps ------------------------------------------------------


@pytest.fixture
def sharper() -> Any:
    """Logits sharp enough that some steps keep one token per row and others keep several."""
    return tiny_lora(tiny_llama(sharpness=200))


def _no_skip(steered: Any, batch: dict[str, torch.Tensor], **kw: Any) -> Any:
    """The same processor through plain ``generate``, never skipping (the reference path)."""
    proc = steered.processor
    proc.reset(attention_mask=batch["attention_mask"], skip_single_token=False)
    return steered.model.generate(**batch, logits_processor=LogitsProcessorList([proc]), **kw)


def _single_steps(scores: tuple[torch.Tensor, ...]) -> int:
    """Steps after the first whose filtered scores keep at most one finite entry in every row."""
    return sum(bool((torch.isfinite(s).sum(-1) <= 1).all()) for s in scores[1:])


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "left-padded-batch3"])
def test_greedy_with_skipped_base_forwards_gives_the_tokens_of_the_no_skip_path(
    sharper: Any, tok: Any, prompts: list[str]
) -> None:
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, prompts)
    steered = attach(vector, sharper, tokenizer=tok, mu=-40.0, shared_forward=False)
    kw = dict(max_new_tokens=14, do_sample=False, return_dict_in_generate=True)
    got = steered.generate(**batch, output_scores=True, output_logits=True, **kw)
    proc = steered.processor
    assert isinstance(proc, DynamicSteeringProcessor)
    skipped, calls, recomputes = proc.skipped_steps, proc.calls, proc.recomputes
    ref = _no_skip(steered, batch, output_scores=True, **kw)
    assert proc.skipped_steps == skipped  # the reference path never skipped
    assert torch.equal(got.sequences, ref.sequences)
    full = reference_greedy(sharper, batch["input_ids"], batch["attention_mask"], mu=-40.0, steps=14)
    assert torch.equal(got.sequences, full[:, : got.sequences.shape[1]])
    steps = len(got.scores)
    assert 0 < skipped == _single_steps(ref.scores) < steps  # exactly the single-token steps were skipped
    assert calls == steps - skipped and recomputes == 1  # one (catch-up) forward per step that needed base
    for warm, a, b in zip(got.logits, got.scores, ref.scores, strict=True):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b))  # the same kept tokens
        torch.testing.assert_close(torch.log_softmax(a, -1), torch.log_softmax(b, -1), rtol=1e-4, atol=1e-4)
        if bool((torch.isfinite(a).sum(-1) <= 1).all()) and not torch.equal(a, b):
            # a skipped step: the kept token keeps its warm score, log-softmax is 0 there either way
            kept = torch.isfinite(a)
            assert torch.equal(a[kept], warm.float()[kept])
            assert torch.equal(torch.log_softmax(a, -1), torch.log_softmax(b, -1))


def test_seeded_sampling_with_skipped_base_forwards_matches_the_reference(sharper: Any, tok: Any) -> None:
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, sharper, tokenizer=tok, mu=-20.0, shared_forward=False)
    kw = dict(max_new_tokens=12, do_sample=True, top_k=8, top_p=0.9, temperature=0.7, num_return_sequences=2)
    torch.manual_seed(0)
    got = steered.generate(**batch, **kw)
    assert steered.processor.skipped_steps > 0
    torch.manual_seed(0)
    ref_proc = FullRecomputeProcessor(sharper, batch["attention_mask"], -20.0)
    ref = sharper.generate(**batch, **kw, logits_processor=LogitsProcessorList([ref_proc]))
    assert torch.equal(got, ref)  # the sampler drew at every step: the random stream stayed aligned
    torch.manual_seed(0)
    assert torch.equal(_no_skip(steered, batch, **kw), got)


def test_beam_search_never_skips_and_matches_the_reference(sharper: Any, tok: Any) -> None:
    """Beam scores add the kept token's processed score, which needs the base logits: no skipping there."""
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, sharper, tokenizer=tok, mu=-30.0, shared_forward=False)
    kw = dict(max_new_tokens=8, num_beams=3, do_sample=False, num_return_sequences=2)
    out = steered.generate(**batch, **kw)
    ref_proc = FullRecomputeProcessor(sharper, batch["attention_mask"], -30.0)
    assert torch.equal(out, sharper.generate(**batch, **kw, logits_processor=LogitsProcessorList([ref_proc])))
    assert steered.processor.skipped_steps == 0 and steered.processor.calls == 8
    greedy = steered.generate(**batch, max_new_tokens=8, do_sample=False)
    assert steered.processor.skipped_steps > 0  # the same handle does skip when decoding greedily
    assert greedy.shape[0] == 3


def test_the_bare_processor_and_the_unfiltered_rule_never_skip(sharper: Any, tok: Any) -> None:
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, sharper, tokenizer=tok, mu=-40.0, shared_forward=False)
    sharper.generate(**batch, max_new_tokens=8, do_sample=False, logits_processor=steered.logits_processor())
    assert steered.processor.skipped_steps == 0  # pipelines may run beam search: off unless asked for
    unfiltered = attach(vector, sharper, tokenizer=tok, mu=-40.0, shared_forward=False, filter_masked=False)
    unfiltered.generate(**batch, max_new_tokens=8, do_sample=False)
    assert unfiltered.processor.skipped_steps == 0  # without the filter every token stays possible


def test_greedy_and_sampling_never_match_rows_against_the_cache_and_beams_still_do(
    sharper: Any, tok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 29: one generate call only appends tokens, so the per-step row check (a host sync on a GPU) is skipped;
    beam search reorders rows, so it keeps the check. Tokens are pinned by the tests above."""
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, sharper, tokenizer=tok, mu=-30.0, shared_forward=False)
    checked: list[bool] = []  # whether a call compared the rows with the cache (torch.equal / matching)
    equal = torch.equal

    def spy_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
        checked.append(True)
        return equal(a, b)

    monkeypatch.setattr("steerkit.processors.torch.equal", spy_equal)
    steered.generate(**batch, max_new_tokens=8, do_sample=False)
    assert steered.processor.calls > 1 and checked == []  # greedy: no row check at any step
    steered.generate(**batch, max_new_tokens=8, do_sample=True, top_k=5, num_return_sequences=2)
    assert checked == []
    out = steered.generate(**batch, max_new_tokens=8, num_beams=3, do_sample=False)
    ref_proc = FullRecomputeProcessor(sharper, batch["attention_mask"], -30.0)
    monkeypatch.setattr("steerkit.processors.torch.equal", equal)
    assert len(checked) > 0  # beam search: the rows are matched at every step
    ref = sharper.generate(
        **batch, max_new_tokens=8, num_beams=3, do_sample=False, logits_processor=LogitsProcessorList([ref_proc])
    )
    assert torch.equal(out, ref)


# --- the skip inside the shared forward: the base half lags ----------------------------------------------


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "left-padded-batch3"])
def test_a_lagging_base_half_gives_the_tokens_of_the_shared_forward_that_never_lags(
    sharper: Any, tok: Any, prompts: list[str]
) -> None:
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, prompts)
    lagging = attach(vector, sharper, tokenizer=tok, mu=-40.0, shared_forward=True)
    level = attach(vector, sharper, tokenizer=tok, mu=-40.0, shared_forward=True)
    assert lagging._shared is not None and level._shared is not None
    assert not level._shared.lagging  # off by default
    lagging._shared.lagging = True
    kw = dict(max_new_tokens=14, do_sample=False, return_dict_in_generate=True, output_scores=True)
    ref = level.generate(**batch, **kw)
    assert level._shared.warm_only_forwards == 0 and level.processor.skipped_steps == 0
    got = lagging.generate(**batch, **kw)
    proc, shared = lagging.processor, lagging._shared
    assert isinstance(proc, DynamicSteeringProcessor)
    assert torch.equal(got.sequences, ref.sequences)
    full = reference_greedy(sharper, batch["input_ids"], batch["attention_mask"], mu=-40.0, steps=14)
    assert torch.equal(got.sequences, full[:, : got.sequences.shape[1]])
    steps = len(got.scores)
    # every forward after a single-token step ran the warm rows alone; the base half caught up in one forward
    # (of several tokens) at each step that needed it, and no step recomputed the prompt
    assert 0 < proc.skipped_steps < shared.warm_only_forwards < steps
    assert proc.shared_steps + shared.warm_only_forwards == steps
    assert proc.calls == shared.warm_only_forwards - proc.skipped_steps and proc.recomputes == 0
    for a, b in zip(got.scores, ref.scores, strict=True):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b))  # the same kept tokens at every step


def test_a_lagging_base_half_samples_as_the_reference_and_beams_never_lag(sharper: Any, tok: Any) -> None:
    vector = hand_vector(sharper, tok)
    batch = left_batch(tok, PROMPTS)
    steered = attach(vector, sharper, tokenizer=tok, mu=-20.0, shared_forward=True)
    assert steered._shared is not None
    steered._shared.lagging = True
    kw = dict(max_new_tokens=12, do_sample=True, top_k=8, top_p=0.9, temperature=0.7, num_return_sequences=2)
    torch.manual_seed(0)
    got = steered.generate(**batch, **kw)
    assert steered._shared.warm_only_forwards > 0
    torch.manual_seed(0)
    ref_proc = FullRecomputeProcessor(sharper, batch["attention_mask"], -20.0)
    assert torch.equal(got, sharper.generate(**batch, **kw, logits_processor=LogitsProcessorList([ref_proc])))
    lagged = steered._shared.warm_only_forwards
    steered.generate(**batch, max_new_tokens=8, num_beams=3, do_sample=False)
    assert steered._shared.warm_only_forwards == lagged  # beam scores need the base logits at every step


def test_split_and_join_give_the_paired_cache_back_bit_for_bit(sharper: Any, tok: Any) -> None:
    from steerkit.shared_forward import join_rows, paired_cache, split_rows

    batch = left_batch(tok, PROMPTS)
    cache = paired_cache(sharper.get_base_model())
    ids = torch.cat([batch["input_ids"], batch["input_ids"]])
    with torch.no_grad():
        sharper.get_base_model()(
            input_ids=ids, attention_mask=torch.cat([batch["attention_mask"]] * 2), past_key_values=cache
        )
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    base, cut = split_rows(cache, 3)
    assert all(layer.keys.shape[0] == 3 for layer in cache.layers) and cut[0] == ["keys", "values"]
    assert torch.equal(base.layers[0].keys, before[0][0][3:]) and base.get_seq_length() == cache.get_seq_length()
    join_rows(cache, base, cut)
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
