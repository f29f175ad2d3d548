"""The steering vector value object (docs/artifact-format.md): :class:`SteeringVector`, its strengths, save and load.

A frozen value: methods that change something (:meth:`SteeringVector.with_mu`) return a new vector. It stands on
the layers below it and imports nothing above: :mod:`steerkit.config` (what it holds), :mod:`steerkit.format`
(its bytes), :mod:`steerkit.card` (its README) and :mod:`steerkit.hub` (where it comes from and goes). Attaching
it to a model is :func:`steerkit.attach`, one layer up.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerkit import constants as C
from steerkit._io import atomic_directory, check_replaceable, recover, write_files
from steerkit.card import render_card
from steerkit.checks import check_mu
from steerkit.config import SteerConfig, canonical_mu_name
from steerkit.errors import (
    ArtifactExistsError,
    ArtifactIntegrityError,
    ArtifactValueError,
    SteerkitError,
)
from steerkit.format import ArtifactParts, adapter_sha256, artifact_files, tensor_sha256
from steerkit.hub import check_push_revision, push_folder, resolve

__all__ = ["SteeringVector", "load", "pull", "push_to_hub"]


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A steering vector: the static task vector, its config, and (optionally) the adapter it came from.

    A value object: methods that change something return a new vector. Build one with
    :func:`steerkit.build`, load one with :func:`steerkit.load`, attach it with :func:`steerkit.attach`.

    Attributes:
        task_vector: float32 ``[V]``, the mean masked direction over the calibration tokens.
        config: Every setting and statistic (:class:`SteerConfig`).
        adapter_files: The PEFT adapter's files (relative name → bytes), or ``None``.

    Example:
        >>> vector = SteeringVector.load("my-vector")          # doctest: +SKIP
        >>> vector.mu, vector.mu_static                        # doctest: +SKIP
        (-2.31, -0.87)
    """

    task_vector: Tensor
    config: SteerConfig
    adapter_files: Mapping[str, bytes] | None = None

    def __post_init__(self) -> None:
        v = self.task_vector
        if not isinstance(v, Tensor) or v.dim() != 1 or v.dtype != torch.float32:
            got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
            raise ArtifactValueError(f"task_vector must be a float32 tensor of shape [V], got {got}")
        if v.numel() != self.config.vocab_size:
            raise ArtifactValueError(
                f"task_vector has {v.numel()} entries but vocab_size is {self.config.vocab_size}",
                expected=self.config.vocab_size,
                got=v.numel(),
            )
        if not bool(torch.isfinite(v).all()):
            raise ArtifactValueError("task_vector has non-finite entries (NaN or inf)", hint="re-create the artifact")
        digest = tensor_sha256(v)
        if not self.config.task_vector_sha256:
            object.__setattr__(self, "config", dataclasses.replace(self.config, task_vector_sha256=digest))
        elif self.config.task_vector_sha256 != digest:
            raise ArtifactIntegrityError(
                f"task_vector sha256 {digest[:12]}… does not match the config's {self.config.task_vector_sha256[:12]}…",
                hint="the tensor was changed after the config was written; re-download or re-create the artifact",
                expected=self.config.task_vector_sha256,
                got=digest,
            )
        if self.adapter_files is not None:
            files = dict(sorted(self.adapter_files.items()))
            object.__setattr__(self, "adapter_files", files)
            if self.config.adapter is not None and self.config.adapter.get("sha256") not in (
                None,
                adapter_sha256(files),
            ):
                raise ArtifactIntegrityError(
                    "adapter files do not match the config's adapter sha256",
                    hint="re-download or re-create the artifact",
                )

    # --- the selected strengths ------------------------------------------------------------------------

    @property
    def mu(self) -> float:
        """The default dynamic-mode strength μ̄ (``config.mu.value``)."""
        return self.config.mu.value

    @property
    def mu_static(self) -> float:
        """The default static-mode strength μ_s (``config.mu_static.value``)."""
        return self.config.mu_static.value

    @functools.cached_property
    def max_abs(self) -> float:
        """The largest ``|v|`` entry: the scale a static μ multiplies (:func:`steerkit.checks.check_mu` bounds
        ``|μ|·max_abs``). Computed once per vector."""
        return float(self.task_vector.abs().max()) if self.task_vector.numel() else 0.0

    @property
    def vocab_size(self) -> int:
        """Logits width V the vector applies to."""
        return self.config.vocab_size

    def with_mu(
        self,
        value: float | str,
        *,
        static: bool = False,
        chosen_by: str | None = None,
        chosen_on: str | None = None,
    ) -> SteeringVector:
        """A copy whose default μ (or μ_s with ``static=True``) is ``value``.

        Args:
            value: A number, or the name of a stored alternative (``"median"``, ``"mean/exact"``, ``"fit"``).
            static: Change ``mu_static`` instead of ``mu``.
            chosen_by: Recorded in ``chosen_by`` (defaults to the name, or ``"manual"`` for a number).
            chosen_on: sha256 of the data ``value`` was chosen on, if any.

        Returns:
            A new vector; this one is unchanged.

        Raises:
            InvalidOptionError: An unknown aggregator name, or a number that is not finite.

        Example:
            >>> vector.with_mu("fit").config.mu.chosen_by                 # doctest: +SKIP
            'fit'
        """
        stats = self.config.mu_static if static else self.config.mu
        if isinstance(value, str):
            number, label = stats.select(value), chosen_by or canonical_mu_name(value)
        else:
            number, label = float(check_mu(value, per_row=False)), chosen_by or "manual"
        new = dataclasses.replace(stats, value=number, chosen_by=label, chosen_on=chosen_on)
        if static:
            config = dataclasses.replace(self.config, mu_static=new)
        else:
            config = dataclasses.replace(self.config, mu=new)
        return dataclasses.replace(self, config=config)

    # --- persistence -----------------------------------------------------------------------------------

    def files(self, *, repo_id: str | None = None) -> dict[str, bytes]:
        """Every file of the artifact, relative name → bytes, exactly as :meth:`save` writes them.

        The same vector always gives the same bytes (no timestamps, a fixed key order in every header).

        Args:
            repo_id: The Hub repo the model card's usage snippets name (a placeholder when ``None``).
        """
        card = render_card(self.config, has_adapter=self.adapter_files is not None, repo_id=repo_id)
        return artifact_files(self.task_vector, self.config, card, self.adapter_files)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the artifact to ``directory`` atomically.

        Every file is written into a temporary directory beside the target, which then replaces the target
        in one ``os.replace``: an interrupted save leaves either the old artifact or the new one, never a
        mixture, and no temporary directory behind. A save killed between its two renames leaves the old artifact
        in ``.NAME.XXXXXXXX.old/previous``: the next load of ``directory`` puts it back, the next save cleans up.

        Args:
            directory: Target directory (its parents are created). It may be new, empty, or (with
                ``overwrite``) an existing artifact.
            overwrite: Replace an existing artifact. A non-empty directory that is not a steering artifact
                (no ``steering.safetensors``) is never replaced.

        Returns:
            The directory path.

        Raises:
            ArtifactExistsError: ``directory`` is a file, a non-empty directory and ``overwrite`` is false (also
                when another saver got there first), a non-empty directory that is not an artifact, or a place
                that cannot be written (under a file, or read-only).

        Example:
            >>> vector.save("my-vector", overwrite=True)                # doctest: +SKIP
            PosixPath('my-vector')
        """
        target = Path(directory)
        recover(target)  # a save killed between its two renames: put the old artifact back first
        check_replaceable(target, overwrite=overwrite, marker=C.STEERING_FILE, kind="a steering artifact")
        try:
            with atomic_directory(target, replace=overwrite) as staging:
                write_files(staging, self.files())
        except (NotADirectoryError, FileExistsError, PermissionError) as exc:
            if isinstance(exc, SteerkitError):
                raise
            what = (
                "cannot write there (permission denied)"
                if isinstance(exc, PermissionError)
                else ("lies under a path that is not a directory")
            )
            raise ArtifactExistsError(
                f"cannot save to '{target}': it {what} ({exc.strerror or type(exc).__name__})",
                hint="choose a writable output folder whose parents are directories",
                path=str(target),
            ) from None
        return target

    @classmethod
    def load(
        cls,
        path_or_repo_id: str | os.PathLike[str],
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        endpoint: str | None = None,
        show_progress: bool = False,
    ) -> SteeringVector:
        """Load an artifact from a local directory or a Hub repository (a local directory wins).

        Args:
            path_or_repo_id: A directory written by :meth:`save`, or a Hub repo id ``"user/name"``.
            revision: Hub branch, tag or commit sha.
            token: Hub token (never printed or stored).
            cache_dir: Hub cache directory.
            local_files_only: Use only the Hub cache, never the network.
            endpoint: Hub endpoint URL (defaults to huggingface_hub's).
            show_progress: Show download progress bars.

        The folder or Hub id is resolved by :func:`steerkit.hub.resolve` (a local folder wins), which reads and
        verifies the artifact once.

        Raises:
            ArtifactNotFoundError: No artifact there.
            HubError: A subclass, when the Hub refuses or cannot be reached (see :func:`steerkit.hub.resolve`).
            ArtifactFormatError: A subclass naming the file and the problem (corrupt, checksum, missing key,
                bad value, newer version).
        """
        parts = resolve(
            path_or_repo_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            endpoint=endpoint,
            show_progress=show_progress,
        )
        return cls.from_parts(parts)

    @classmethod
    def from_parts(cls, parts: ArtifactParts) -> SteeringVector:
        """The vector of an artifact already read and verified (:func:`steerkit.format.read_dir`)."""
        return cls(task_vector=parts.task_vector, config=parts.config, adapter_files=parts.adapter_files)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        commit_message: str | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        show_progress: bool = False,
    ) -> str:
        """Upload to a Hub model repo in one commit (the repo, and the branch, are created if needed).

        The commit holds ``steering.safetensors``, ``steer_config.json``, ``adapter/`` (when the vector carries
        its adapter; stale adapter files from an earlier push are removed) and ``README.md``, the model card
        rendered for ``repo_id``. Pushing a vector identical to the one on the branch makes no commit and returns
        the head's URL. See :func:`steerkit.hub.push_folder` for the arguments and errors.

        Returns:
            The URL of the commit.

        Example:
            >>> url = vector.push_to_hub("me/truthfulqa-smollm2", private=True)          # doctest: +SKIP
            >>> steerkit.load("me/truthfulqa-smollm2", revision=url.rsplit("/", 1)[1])    # doctest: +SKIP
        """
        check_push_revision(revision)
        message = commit_message or (
            f"Upload SVDecode steering vector ({self.config.base_model.get('name_or_path') or 'unknown base'}, "
            f"μ̄={self.mu:.4g}, μ_s={self.mu_static:.4g})"
        )
        with tempfile.TemporaryDirectory(prefix="steerkit-push-") as tmp:
            write_files(tmp, self.files(repo_id=repo_id))
            return push_folder(
                tmp,
                repo_id,
                commit_message=message,
                private=private,
                revision=revision,
                token=token,
                endpoint=endpoint,
                show_progress=show_progress,
            )


def load(path_or_repo_id: str | os.PathLike[str], **kwargs: Any) -> SteeringVector:
    """Load a steering vector from a folder or a Hub repo id: :meth:`SteeringVector.load`.

    Example:
        >>> vector = steerkit.load("me/truthfulqa-smollm2", revision="v1")      # doctest: +SKIP
    """
    return SteeringVector.load(path_or_repo_id, **kwargs)


def pull(
    repo_id: str, *, to: str | os.PathLike[str] | None = None, overwrite: bool = False, **kwargs: Any
) -> tuple[SteeringVector, Path]:
    """Download (or find in the cache) a verified artifact; with ``to``, also save a copy there.

    Args:
        repo_id: A Hub repo id (a local folder works too: it wins, as everywhere).
        to: A folder to save the artifact to (atomic; see :meth:`SteeringVector.save`).
        overwrite: Replace an existing artifact at ``to``.
        **kwargs: ``revision``, ``token``, ``cache_dir``, ``local_files_only``, ``endpoint``, ``show_progress``
            (see :func:`steerkit.hub.resolve`).

    Returns:
        ``(vector, folder)``: the vector, read and verified once, and the snapshot folder it was read from.

    Example:
        >>> vector, folder = pull("me/truthfulqa-smollm2", to="./vector", overwrite=True)   # doctest: +SKIP
    """
    parts = resolve(repo_id, **kwargs)
    vector = SteeringVector.from_parts(parts)
    if to is not None:
        vector.save(to, overwrite=overwrite)
    return vector, parts.directory


def push_to_hub(vector: SteeringVector, repo_id: str, **kwargs: Any) -> str:
    """Upload ``vector`` to the Hub in one commit: :meth:`SteeringVector.push_to_hub`.

    Example:
        >>> steerkit.push_to_hub(vector, "me/truthfulqa-smollm2")               # doctest: +SKIP
    """
    return vector.push_to_hub(repo_id, **kwargs)
