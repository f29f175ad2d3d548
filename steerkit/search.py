"""Finding steering vectors on the Hub: :func:`search` lists the repos whose card says ``library_name: steerkit``.

It asks the Hub's model listing (``HfApi.list_models``) for the ``steerkit`` tag every steerkit card carries,
optionally narrowed to a base model (the Hub tags a repo ``base_model:<id>`` from its card) and to words in the
repo id, and reads what each card's metadata carries: the base model, its tags, and the ``steerkit`` block (modes,
μ, μ_s and the validation summary) where the card has one. Nothing is downloaded; :func:`steerkit.load` fetches a
result. ``steerkit list`` lists the local cache instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steerkit._hub_errors import Context, translated
from steerkit._io import check_json
from steerkit.card import CARD_TAGS
from steerkit.errors import ArtifactValueError, HubServerError, InvalidOptionError, SteerkitError
from steerkit.schema import finite

__all__ = ["Found", "search"]

#: The most results one search returns (``limit=None`` too): a listing that pages on forever ends there.
MAX_RESULTS = 1000


@dataclass(frozen=True)
class Found:
    """One steering vector on the Hub.

    Attributes:
        repo_id: ``"user/name"``.
        base_model: The base model its card names, or ``None``.
        tags: The repo's tags (the Hub's, sorted).
        sha: The commit the listing saw.
        private: Whether the repo is private (visible with your token).
        summary: The card's ``steerkit`` metadata block (modes, μ, μ_s, validation) where it has one; ``modes``,
            ``mu`` and ``mu_static`` only when well typed (a list of strings, finite numbers).
        unreadable: The card fields that were left out because their type was wrong (every card is untrusted).
    """

    repo_id: str
    base_model: str | None
    tags: list[str]
    sha: str | None
    private: bool
    summary: dict[str, Any] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "repo_id": self.repo_id,
            "base_model": self.base_model,
            "tags": self.tags,
            "sha": self.sha,
            "private": self.private,
            "summary": self.summary,
            "unreadable": self.unreadable,
        }


def search(
    *,
    base_model: str | None = None,
    task: str | None = None,
    tags: list[str] | None = None,
    limit: int | None = 100,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> list[Found]:
    """Steering vectors on the Hub, filtered by base model, words in the repo id, and tags.

    Args:
        base_model: Only vectors whose card names this base model (a Hub id).
        task: Words that must occur in the repo id (the Hub's ``search``).
        tags: More tags every result must carry.
        limit: Most results, at most :data:`MAX_RESULTS` (``None``: that many).
        token: Hub token (also lists your private repos); never printed or stored.
        endpoint: Hub URL (default: huggingface_hub's).

    Returns:
        :class:`Found` entries, in the Hub's order.

    Raises:
        InvalidOptionError: A ``limit`` that is not an integer in ``1..MAX_RESULTS``.
        HubError: A subclass when the Hub refuses or cannot be reached; ``HubServerError`` when its listing is
            malformed (an entry without an id, say).

    Example:
        >>> [f.repo_id for f in search(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")]   # doctest: +SKIP
        ['me/truthfulqa-smollm2']
    """
    from huggingface_hub import HfApi

    wanted = [CARD_TAGS[0], *(tags or [])]
    if base_model:
        wanted.append(f"base_model:{base_model}")
    ctx = Context(repo_id="(search)", revision=None, endpoint=endpoint, action="search", token=token)
    api = HfApi(endpoint=endpoint, token=token)
    with translated(ctx):
        listing = api.list_models(filter=wanted, search=task or None, cardData=True, limit=_limit(limit))
        try:
            return [_found(m) for m in listing]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise HubServerError(
                f"the Hub's model listing is malformed ({type(exc).__name__}: {str(exc)[:80]})",
                hint="the server answered with entries steerkit cannot read; try again, or another --endpoint",
            ) from None


def _limit(limit: Any) -> int:
    """The most results one search returns: a listing that pages on and on ends there."""
    if limit is None:
        return MAX_RESULTS
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RESULTS:
        raise InvalidOptionError(
            f"limit must be an integer from 1 to {MAX_RESULTS}, got {limit!r}", hint="narrow the search instead"
        )
    return limit


def _found(m: Any) -> Found:
    """One listing entry, every card field type-checked: a wrong one is left out and named in ``unreadable``."""
    data = getattr(m, "card_data", None)
    raw = data.to_dict() if data is not None and hasattr(data, "to_dict") else data
    card: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    unreadable = [] if raw is None or isinstance(raw, Mapping) else ["cardData"]
    found_base = card.get("base_model")
    if found_base is not None and not isinstance(found_base, str):
        unreadable.append("base_model")
    block = card.get("steerkit")
    if block is not None and not isinstance(block, Mapping):
        unreadable.append("steerkit")
    summary = dict(block) if isinstance(block, Mapping) else {}
    for key in ("mu", "mu_static"):
        value = summary.get(key)
        if value is not None and not _finite(value):
            del summary[key]
            unreadable.append(f"steerkit.{key}")
    modes = summary.get("modes")
    if modes is not None and not (isinstance(modes, list) and all(isinstance(x, str) for x in modes)):
        del summary["modes"]
        unreadable.append("steerkit.modes")
    for key in list(summary):  # what JSON cannot carry (a YAML date, a NaN, a non-string key) is left out
        if not isinstance(key, str) or not _json_safe(summary[key]):
            del summary[key]
            unreadable.append(f"steerkit.{key}")
    return Found(
        repo_id=str(m.id),
        base_model=found_base if isinstance(found_base, str) else None,
        tags=sorted(str(t) for t in m.tags or []),
        sha=m.sha if isinstance(m.sha, str) else None,
        private=bool(m.private),
        summary=summary,
        unreadable=unreadable,
    )


def _finite(value: Any) -> bool:
    """Whether a card number passes the artifact's own check (:func:`steerkit.schema.finite`)."""
    try:
        finite(value, "card value")
    except ArtifactValueError:
        return False
    return True


def _json_safe(value: Any) -> bool:
    """Whether a card value is plain JSON that round-trips (:func:`steerkit._io.check_json`)."""
    try:
        check_json(value, "card value", hint="")
    except SteerkitError:
        return False
    return True
