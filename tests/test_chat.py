"""Conversational records (steerkit.chat): TRL's formats, rendered with the tokenizer's chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import tiny_llama, tiny_tokenizer

from steerkit.chat import encode_chat, template_sha256
from steerkit.data import as_items, as_pairs, encode_pair
from steerkit.errors import DataFormatError
from steerkit.readers import load_pairs

# A chat template over the character-level tiny tokenizer: "|" ends a turn.
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3+3?"},
    {"role": "assistant", "content": "6"},
]


@pytest.fixture
def tok() -> Any:
    t = tiny_tokenizer()
    t.chat_template = TEMPLATE
    return t


def ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_messages_give_one_pair_per_assistant_turn_in_order() -> None:
    pairs = as_pairs([{"messages": CHAT}])
    assert pairs == [
        {"prompt": CHAT[:2], "completion": [CHAT[2]]},
        {"prompt": CHAT[:4], "completion": [CHAT[4]]},
    ]


def test_token_ids_of_each_format(tok: Any) -> None:
    # messages: the prompt is the template with its generation prompt; the completion what the reply adds
    first, second = (encode_pair(tok, p["prompt"], p["completion"]) for p in as_pairs([{"messages": CHAT}]))
    head = "<system>be brief|<user>2+2?|<assistant>"
    assert first == (ids(tok, head) + ids(tok, "4|"), len(ids(tok, head)))
    head = "<system>be brief|<user>2+2?|<assistant>4|<user>and 3+3?|<assistant>"
    assert second == (ids(tok, head) + ids(tok, "6|"), len(ids(tok, head)))
    # conversational prompt/completion: the same rendering
    record = {"prompt": CHAT[:2], "completion": [CHAT[2]]}
    assert encode_pair(tok, *as_pairs([record])[0].values()) == first
    # plain text is unchanged: the tokenizer's special tokens on the prompt, none on the completion
    text, start = encode_pair(tok, "2+2?", " 4")
    assert (text, start) == (list(tok("2+2?")["input_ids"]) + ids(tok, " 4"), len(tok("2+2?")["input_ids"]))
    # a multiple-choice item in chat form: each choice is an assistant reply
    item = as_items([{"prompt": CHAT[:2], "choices": ["4", "5"], "label": 0}])[0]
    assert encode_pair(tok, item["prompt"], "5") == (first[0][: first[1]] + ids(tok, "5|"), first[1])


def test_the_completion_mask_is_the_assistant_turn(tok: Any) -> None:
    """warm_start's loss and build's calibration tokens are exactly the rendered completion tokens."""
    from peft import LoraConfig, get_peft_model

    from steerkit.warmstart import _batch_loss

    model = get_peft_model(tiny_llama(sharpness=20), LoraConfig(r=2, init_lora_weights=False))
    model.eval()
    pair = as_pairs([{"messages": CHAT[:3]}])[0]
    encoded = encode_pair(tok, pair["prompt"], pair["completion"])
    with torch.no_grad():
        loss = _batch_loss(model, [encoded], pad_id=0, num_virtual=0, device=torch.device("cpu"))
        full, start = encoded
        lp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].float(), -1)
    expected = torch.stack([-lp[j - 1, full[j]] for j in range(start, len(full))]).mean()
    assert full[start:] == ids(tok, "4|")
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_warm_start_build_and_eval_on_a_messages_jsonl(tok: Any, tmp_path: Path) -> None:
    from steerkit.builder import build
    from steerkit.evaluate import evaluate_mc
    from steerkit.steering import Steering
    from steerkit.warmstart import warm_start

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": CHAT[:1] + m}) + "\n" for m in (CHAT[1:3], CHAT[3:5])))
    pairs = load_pairs(path)
    assert [p["completion"][0]["content"] for p in pairs] == ["4", "6"]
    warm = warm_start(tiny_llama(), pairs, tokenizer=tok, epochs=1, batch_size=2)
    vector = build(warm, None, pairs, tokenizer=tok)
    calibration = vector.config.calibration
    assert calibration["n_tokens"] == 4  # "4|" and "6|": the completion tokens only
    assert calibration["chat_template_sha256"] == template_sha256(tok)
    plain = build(warm, None, [{"prompt": "2+2?", "completion": " 4"}], tokenizer=tok)
    assert "chat_template_sha256" not in plain.config.calibration  # text data records nothing
    items = [{"prompt": CHAT[:2], "choices": ["4", "5"], "label": 0}]
    result = evaluate_mc(warm, items, tokenizer=tok, steering=Steering(vector, mode="static"), n_bootstrap=0)
    assert result["accuracy"]["n"] == 1


def test_generation_renders_messages_with_the_generation_prompt(tok: Any) -> None:
    from test_decode import hand_vector, sharp_pair

    from steerkit.chat import prompt_ids
    from steerkit.compare import generate_settings

    peft = sharp_pair()
    vector = hand_vector(peft, tok)
    rows = generate_settings(vector, peft, [CHAT[:2]], tokenizer=tok, settings=["warm"], max_new_tokens=3)
    prompt = torch.tensor([prompt_ids(tok, CHAT[:2])])
    with torch.no_grad():
        out = peft.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, pad_token_id=0)
    assert rows[0]["warm"] == tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


def test_template_mismatch_warns_when_attaching(tok: Any) -> None:
    from test_decode import hand_vector, sharp_pair

    from steerkit.compatibility import ChatTemplateMismatchWarning, check_compatible

    peft = sharp_pair()
    vector = hand_vector(peft, tok)
    config = vector.config.__class__(
        **{**vector.config.__dict__, "calibration": {**vector.config.calibration, "chat_template_sha256": "ab" * 32}}
    )
    chatty = vector.__class__(task_vector=vector.task_vector, config=config)
    with pytest.warns(ChatTemplateMismatchWarning, match="calibrated on chat-formatted data"):
        check_compatible(chatty, peft, tokenizer=tok)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "the conversation has no assistant turn"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0] has unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0] must be an object with a string 'content'"),
        ({"messages": []}, "'messages' must be a non-empty list of messages"),
        ({"prompt": CHAT[:2], "completion": "4"}, 'a conversational "prompt" needs a "completion" list'),
        ({"prompt": CHAT[:2], "completion": [CHAT[1]]}, '"completion" messages must all have role "assistant"'),
    ],
)
def test_bad_conversations_name_the_record(record: dict[str, Any], message: str) -> None:
    with pytest.raises(DataFormatError, match="record 0") as info:
        as_pairs([record])
    assert message in str(info.value)


def test_a_tokenizer_without_a_chat_template_is_refused() -> None:
    with pytest.raises(DataFormatError, match="has no chat template, so conversational records cannot be rendered"):
        encode_chat(tiny_tokenizer(), CHAT[:2], [CHAT[2]])


@pytest.mark.slow
def test_smollm2_template_renders_like_its_own_apply_chat_template(smollm2_dir: Path) -> None:
    """On the real SmolLM2-135M-Instruct template: prompt = the generation-prompt rendering; completion = the
    assistant text and its end-of-turn marker (TRL's completion mask)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    got, start = encode_pair(tok, CHAT[1:2], [CHAT[2]])
    prompt_text = tok.apply_chat_template(CHAT[1:2], add_generation_prompt=True, tokenize=False)
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert got[:start] == list(tok(prompt_text, add_special_tokens=False)["input_ids"])
    assert tok.decode(got[start:]) == "4<|im_end|>\n"


def test_steered_generate_takes_messages(tok: Any) -> None:
    from test_decode import hand_vector, sharp_pair

    import steerkit
    from steerkit.chat import prompt_ids
    from steerkit.errors import InvalidOptionError

    peft = sharp_pair()
    vector = hand_vector(peft, tok)
    prompt = torch.tensor([prompt_ids(tok, CHAT[:2])])
    with steerkit.attach(vector, peft, mode="static", tokenizer=tok) as steered:
        by_messages = steered.generate(messages=CHAT[:2], max_new_tokens=4, pad_token_id=0)
        by_ids = steered.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, pad_token_id=0
        )
        with pytest.raises(InvalidOptionError, match="needs the tokenizer given to attach, and no input_ids"):
            steered.generate(input_ids=prompt, messages=CHAT[:2])
    assert torch.equal(by_messages, by_ids)


@pytest.mark.slow
def test_rendering_matches_trl_on_smollm2(smollm2_dir: Path) -> None:
    """TRL's own conversational prompt/completion rendering (``trl.data_utils.apply_chat_template``), tokenized as
    its SFT data processing does, gives exactly steerkit's token ids and completion mask."""
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    for pair in as_pairs([{"messages": CHAT}, {"prompt": CHAT[1:2], "completion": [CHAT[2]]}]):
        texts = apply_chat_template({"prompt": pair["prompt"], "completion": pair["completion"]}, tok)
        prompt = list(tok(texts["prompt"])["input_ids"])
        full = list(tok(texts["prompt"] + texts["completion"])["input_ids"])
        ids, start = encode_pair(tok, pair["prompt"], pair["completion"])
        assert ids == full
        assert start == len(prompt) and full[:start] == prompt  # completion mask: the tokens after the prompt


# --- the work one record causes is bounded (issue 28, defect 9) -----------------------------------------------


def _whole(tok: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]], max_length: int) -> Any:
    """The encoding with the whole history rendered, as before the bound: what the bound must reproduce."""
    from steerkit.chat import _render, fit_length

    head = _render(tok, prompt, add_generation_prompt=True)
    full = _render(tok, [*prompt, *completion], add_generation_prompt=False)
    return fit_length(head, full[len(head) :], max_length)


def test_a_long_conversation_encodes_as_the_whole_history_would(tok: Any) -> None:
    words = ["ab", "cde", "f", "ghij", "kl"]
    chat = [{"role": "system", "content": "be brief"}] + [
        {
            "role": "user" if k % 2 == 0 else "assistant",
            "content": " ".join(words[(k + j) % 5] for j in range(k % 7 + 1)),
        }
        for k in range(120)
    ]
    pairs = as_pairs([{"messages": chat}])
    for max_length in (16, 40, 200):
        for pair in pairs:
            got = encode_pair(tok, pair["prompt"], pair["completion"], max_length=max_length)
            assert got == _whole(tok, pair["prompt"], pair["completion"], max_length), (max_length, len(pair["prompt"]))


def test_one_records_work_is_bounded_by_max_length(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from steerkit import chat

    rendered: list[int] = []  # messages given to the template, per call
    tokenized: list[int] = []  # characters given to the tokenizer, per call
    render = tok.apply_chat_template

    def spy_render(messages: list[dict[str, str]], **kwargs: Any) -> Any:
        rendered.append(len(messages))
        return render(messages, **kwargs)

    monkeypatch.setattr(tok, "apply_chat_template", spy_render)
    original_call = type(tok).__call__
    monkeypatch.setattr(
        type(tok), "__call__", lambda self, text, **kw: tokenized.append(len(text)) or original_call(self, text, **kw)
    )
    long_chat = [{"role": "user" if k % 2 == 0 else "assistant", "content": "abcd efgh"} for k in range(400)]
    for pair in as_pairs([{"messages": long_chat}]):
        encode_chat(tok, pair["prompt"], pair["completion"], max_length=32)
    assert max(rendered) <= 12  # 32 tokens of ~10-character messages: a few messages, whatever the history
    huge = [{"role": "user", "content": "x" * 5_000_000}]
    tokenized.clear()
    got = encode_chat(tok, huge, [{"role": "assistant", "content": "y" * 3_000_000}], max_length=32)
    limit = 32 * chat.CHARS_PER_TOKEN  # each message is cut to this before tokenizing
    assert tokenized[0] == limit and max(tokenized) < 2 * limit + 100  # the render: two cut messages and markup
    assert got == _whole(
        tok, [{"role": "user", "content": "x" * 2048}], [{"role": "assistant", "content": "y" * 2048}], 32
    )


def test_the_data_hash_streams_the_bytes_of_the_whole_list() -> None:
    import hashlib

    from steerkit.data import data_sha256

    records = [{"prompt": "é", "completion": "1"}, {"b": [1, {"z": 2, "a": None}], "a": "x"}]
    text = json.dumps(records, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert data_sha256(records) == hashlib.sha256(text.encode()).hexdigest()
    assert data_sha256([]) == hashlib.sha256(b"[]").hexdigest()
