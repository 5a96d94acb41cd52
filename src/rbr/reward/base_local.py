"""A local Hugging Face sequence-classification reward model as the base reward.

Needs torch and transformers (the ``local`` extra). The model is loaded with
``AutoModelForSequenceClassification`` from a folder written by
``save_pretrained`` and must have one output (``num_labels == 1``); its
logit is the reward. Nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from rbr.data.types import Sample
from rbr.errors import GraderError
from rbr.graders.transformers_local import (
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
    resolve_dtype,
)
from rbr.reward.base_models import (
    BaseRewardError,
    check_finite_scores,
    render_text,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 4096
"""Token limit used when the model config states no maximum position."""


class LocalReward:
    """Score completions with a sequence-classification reward model.

    Each sample is rendered by :func:`rbr.reward.base_models.render_text`.
    When the tokenizer has a chat template, the completion is the last
    assistant turn, with no generation prompt and no further special tokens
    added. Otherwise the plain format gets the tokenizer's usual special
    tokens. A text longer than ``max_length`` tokens loses tokens from the
    left, so the completion and the latest turns are kept, and a warning
    counts the truncated samples of each call.

    Samples are sorted by length and scored in batches of ``batch_size``,
    padded on the right. The score is read where transformers' sequence
    classification head reads it: at the last token that is not the
    padding token (transformers 5.25). When the EOS token pads, a final EOS
    token is skipped too, in batches and single samples alike.

    Args:
        model_path: Folder with config, weights and tokenizer files.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when
            available).
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"auto"``
            (float32 on CPU, bfloat16 or float16 on CUDA).
        batch_size: Samples per forward pass.
        max_length: Maximum tokens per sample; None uses the model config's
            maximum position count, or :data:`DEFAULT_MAX_LENGTH`.

    Raises:
        BaseRewardError: When the folder, tokenizer or model cannot be loaded,
            the model has more than one output, or an option is invalid.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise BaseRewardError(f"batch_size must be 1 or more, got {batch_size}")
        self.model_path = _check_folder(model_path)
        self.batch_size = batch_size
        try:
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
            self.tokenizer = load_tokenizer(self.model_path)
            self.model: Any = load_model(
                self.model_path,
                self.device,
                self.dtype,
                auto_class=AutoModelForSequenceClassification,
                kind="sequence-classification model",
            )
        except GraderError as error:
            raise BaseRewardError(str(error)) from None
        _check_one_output(self.model, self.model_path)

        self.max_length = max_length or _config_max_length(self.model.config)
        self._pad_id = _pad_token_id(self.tokenizer)
        # The classification head finds each row's last token by this id.
        self.model.config.pad_token_id = self._pad_id
        self.model.config.get_text_config().pad_token_id = self._pad_id
        self._chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.fingerprint = model_fingerprint(self.model_path)
        logger.info(
            "loaded reward model %s on %s (%s, max_length %d, %s format)",
            self.model_path,
            self.device,
            self.dtype,
            self.max_length,
            "chat template" if self._chat else "plain",
        )

    def encode(self, sample: Sample) -> list[int]:
        """Return the token ids scored for ``sample``, truncated from the left."""
        return self._encode_counting(sample)[0]

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return one reward per sample, in order.

        Raises:
            BaseRewardError: When the model has been closed or returns NaN or
                an infinity.
        """
        if self.model is None:
            raise BaseRewardError(f"reward model {self.model_path} was closed")
        encoded = [self._encode_counting(sample) for sample in samples]
        truncated = sum(cut for _, cut in encoded)
        if truncated:
            logger.warning(
                "truncated %d of %d samples to their last %d tokens for reward "
                "model %s",
                truncated,
                len(samples),
                self.max_length,
                self.model_path,
            )
        rows = [ids for ids, _ in encoded]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        scores = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(order), self.batch_size):
            positions = order[start : start + self.batch_size]
            scores[positions] = self._forward([rows[i] for i in positions])
        check_finite_scores(scores.tolist(), samples, f"reward model {self.model_path}")
        return scores

    def close(self) -> None:
        """Drop the model and free cached CUDA memory."""
        if self.model is None:
            return
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _encode_counting(self, sample: Sample) -> tuple[list[int], bool]:
        text = render_text(sample, self.tokenizer)
        ids = list(self.tokenizer(text, add_special_tokens=not self._chat).input_ids)
        return ids[-self.max_length :], len(ids) > self.max_length

    def _forward(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
            ).logits
        return logits[:, 0].float().cpu().numpy().astype(np.float64)


def _check_folder(model_path: str | Path) -> Path:
    folder = Path(model_path).expanduser()
    if not (folder / "config.json").is_file():
        raise BaseRewardError(
            f"reward model folder {str(folder)!r} not found or without config.json; "
            "pass a local folder written by save_pretrained (rbr never downloads "
            "models)"
        )
    return folder.resolve()


def _check_one_output(model: Any, folder: Path) -> None:
    if model.config.num_labels != 1:
        raise BaseRewardError(
            f"reward model {str(folder)!r} has {model.config.num_labels} outputs; a "
            "base reward model needs exactly one (num_labels=1)"
        )


def _config_max_length(config: Any) -> int:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LENGTH


def _pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise BaseRewardError(
        "the reward model's tokenizer has neither a padding nor an EOS token, so "
        "batches cannot be padded; set tokenizer.pad_token and save it again"
    )
