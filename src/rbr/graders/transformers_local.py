"""A grader that runs a Hugging Face causal LM from a local folder.

For each sample the grader runs the prompt prefix (instructions, conversation
and graded reply) through the model once, keeps its KV cache, and scores every
proposition's suffix in batches that reuse that cache. P(yes) is the
next-token probability mass of the "yes" tokens over the mass of the "yes"
and "no" tokens, so every cell gets a probability and nothing is sampled.

Consecutive samples whose prefixes start with the same tokens (the preamble,
or every definition in the ``shared_definitions`` layout) also share the KV
cache of those tokens, cropped back to the common part.

This module imports torch and transformers at the top, so import it only
when this grader is used.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jinja2 import TemplateError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

try:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
except ImportError:  # Older transformers releases have no cache layer classes.
    DynamicLayer = DynamicSlidingWindowLayer = None

from rbr.data.types import Sample
from rbr.errors import GraderError
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.prompts import (
    CHAT_SYSTEM_MESSAGE,
    DEFAULT_PREAMBLE,
    ExampleSource,
    Layout,
    PromptRenderer,
)
from rbr.policy.spec import Proposition

logger = logging.getLogger(__name__)

SCORING_VERSION = 1
"""Version of this module's tokenization and scoring; part of :attr:`identity`.

Raise it whenever a change here can change the probabilities for the same
model and prompts. Changes to the prompt text are covered by the renderer's
fingerprint.
"""

MAX_PADDING_SHARE = 0.1
"""Largest share of padding tokens allowed in a batch of right-padded rows."""

YES_VARIANTS = ("yes", " yes", "Yes", " Yes", "YES", " YES")
NO_VARIANTS = ("no", " no", "No", " No", "NO", " NO")

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

_HASHED_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
_SAMPLE_BYTES = 256 * 1024
# Cache layers that store keys and values only, appended by concatenation.
_VIEW_LAYERS = tuple(
    layer for layer in (DynamicLayer, DynamicSlidingWindowLayer) if layer is not None
)


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    """Token ids of one grading prompt, split where propositions start to differ.

    The model input is always ``prefix_ids + suffix_ids``, both for prefix
    reuse and for a plain full forward pass.
    """

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]

    @property
    def input_ids(self) -> tuple[int, ...]:
        return self.prefix_ids + self.suffix_ids


@dataclass(slots=True)
class TokenCounts:
    """Tokens run through the model since the grader was built.

    Attributes:
        prefix: Prefix tokens run, after reuse of cached tokens.
        suffix: Real suffix tokens run, padding excluded; without prefix
            reuse, the whole prompts.
        forward_passes: Calls of the model.
    """

    prefix: int = 0
    suffix: int = 0
    forward_passes: int = 0


class TransformersGrader(Grader):
    """Grade propositions with a local causal LM, reusing each sample's prefix.

    Args:
        model_path: Folder with the model's config, weights and tokenizer,
            as written by ``save_pretrained``. Nothing is ever downloaded.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when
            available, else CPU).
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"auto"``
            (float32 on CPU; bfloat16 on CUDA when supported, else float16).
        batch_size: Number of proposition suffixes (or full prompts, without
            prefix reuse) per forward pass.
        preamble: Grading instructions at the start of every prompt.
        layout: Prompt layout, ``conversation_first`` or ``shared_definitions``
            (see :mod:`rbr.graders.prompts`).
        definitions: Every proposition of the run; required by
            ``shared_definitions``.
        few_shot: Few-shot examples per proposition, chosen per sample (see
            :class:`rbr.graders.fewshot.FewShotPool`); None shows each
            proposition's own examples.
        use_chat_template: Whether to wrap each prompt as one user message
            with the tokenizer's chat template and the assistant cue.
        reuse_prefix: Whether to reuse the prefix KV cache. False runs one
            full forward pass per (sample, proposition), which is slower and
            gives the same probabilities up to float rounding.

    Raises:
        GraderError: When the folder is missing, an option is invalid, the
            model cannot be loaded, the tokenizer has no single-token "yes" or
            "no", or a chat template is requested and the tokenizer has none.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        preamble: str = DEFAULT_PREAMBLE,
        layout: Layout = "conversation_first",
        definitions: Sequence[Proposition] | None = None,
        few_shot: ExampleSource | None = None,
        use_chat_template: bool = False,
        reuse_prefix: bool = True,
    ) -> None:
        self.model_path = _check_model_folder(model_path)
        if batch_size < 1:
            raise GraderError(
                f"batch_size must be at least 1, got {batch_size}; pass a positive "
                "number of prompts per forward pass"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        try:
            self.renderer = PromptRenderer(
                layout=layout,
                preamble=preamble,
                definitions=definitions,
                few_shot=few_shot,
            )
        except ValueError as error:
            raise GraderError(str(error)) from None
        self.use_chat_template = use_chat_template
        self.reuse_prefix = reuse_prefix
        self.token_counts = TokenCounts()
        self._lock = threading.Lock()
        self._cached_ids: tuple[int, ...] = ()
        self._cache: DynamicCache | None = None
        self.model: PreTrainedModel | None = None

        self._init_tokenizer()
        self._init_model()
        self._identity = self._build_identity()
        logger.info(
            "loaded %s on %s as %s (yes token ids %s, no token ids %s)",
            self.model_path,
            self.device,
            self.dtype,
            self.yes_token_ids,
            self.no_token_ids,
        )

    def _init_tokenizer(self) -> None:
        """Load the tokenizer and find the yes, no and leading special tokens."""
        self.tokenizer = load_tokenizer(self.model_path)
        if self.use_chat_template and not self.tokenizer.chat_template:
            raise GraderError(
                f"the tokenizer in {str(self.model_path)!r} has no chat template; "
                "drop the chat-template option or add a chat_template to the tokenizer"
            )
        self.yes_token_ids = find_single_token_ids(self.tokenizer, YES_VARIANTS)
        self.no_token_ids = find_single_token_ids(self.tokenizer, NO_VARIANTS)
        _check_answer_tokens(self.model_path, self.yes_token_ids, self.no_token_ids)
        self._leading_ids = _leading_special_token_ids(self.tokenizer)
        self._pad_id = _padding_token_id(self.tokenizer)

    def _init_model(self) -> None:
        """Load the model and read the limits and arguments its forward pass takes."""
        self.model = load_model(self.model_path, self.device, self.dtype)
        text_config = self.model.config.get_text_config()
        self.max_length: int | None = getattr(
            text_config, "max_position_embeddings", None
        )
        forward_parameters = inspect.signature(self.model.forward).parameters
        # transformers 5.25 calls the forward argument cache, older releases
        # past_key_values.
        self._cache_argument = (
            "cache" if "cache" in forward_parameters else "past_key_values"
        )
        self._keeps_selected_logits = "logits_to_keep" in forward_parameters

    @property
    def identity(self) -> str:
        return self._identity

    def _build_identity(self) -> str:
        settings = {
            "scoring": SCORING_VERSION,
            "dtype": str(self.dtype),
            "prompt": self.renderer.fingerprint(),
            "chat_template": (
                self.tokenizer.chat_template if self.use_chat_template else None
            ),
        }
        settings_text = json.dumps(settings, sort_keys=True, ensure_ascii=False)
        settings_hash = hashlib.sha256(settings_text.encode("utf-8")).hexdigest()
        return (
            f"transformers:{self.model_path.name}"
            f":model-{model_fingerprint(self.model_path)[:16]}"
            f":prompt-{self.renderer.template_hash}"
            f":settings-{settings_hash[:12]}"
        )

    def encode(self, sample: Sample, proposition: Proposition) -> EncodedPrompt:
        """Return the token ids of the grading prompt for one pair."""
        return self.encode_sample(sample, [proposition])[0]

    def encode_sample(
        self, sample: Sample, propositions: Sequence[Proposition]
    ) -> list[EncodedPrompt]:
        """Return the token ids of the grading prompts of one sample.

        The prefix and each suffix are tokenized separately and concatenated.
        Tokenizing the joined text could merge characters across the boundary
        into one token, and then no cached prefix would match it. Every
        forward pass of this grader, with or without prefix reuse, reads this
        same token sequence.
        """
        prefix = self.renderer.prefix(sample)
        suffixes = [self.renderer.suffix(sample, p) for p in propositions]
        if not self.use_chat_template:
            prefix_ids = self._leading_ids + self._tokenize(prefix)
            return [EncodedPrompt(prefix_ids, self._tokenize(s)) for s in suffixes]
        # The rendered template contains its own special tokens as text, so no
        # leading ids are added. Templates normally wrap every message alike,
        # so all suffixes of a sample share one tokenized prefix.
        tokenized: dict[str, tuple[int, ...]] = {}
        encoded = []
        for suffix in suffixes:
            chat_prefix, chat_suffix = self._wrap_in_chat_template(prefix, suffix)
            if chat_prefix not in tokenized:
                tokenized[chat_prefix] = self._tokenize(chat_prefix)
            encoded.append(
                EncodedPrompt(tokenized[chat_prefix], self._tokenize(chat_suffix))
            )
        return encoded

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def _wrap_in_chat_template(self, prefix: str, suffix: str) -> tuple[str, str]:
        """Render the prompt as a chat and split it where the suffix starts.

        The chat has the grading system message and the prompt as the user
        message, as the HTTP graders send it. Templates that reject a system
        turn get the user message alone.
        """
        content = prefix + suffix
        user = {"role": "user", "content": content}
        system = {"role": "system", "content": CHAT_SYSTEM_MESSAGE}
        try:
            rendered = self._render_chat([system, user])
        except TemplateError:
            rendered = self._render_chat([user])
        start = rendered.find(content)
        if start < 0:
            raise GraderError(
                f"the chat template of {str(self.model_path)!r} changes the message "
                "text, so the prompt cannot be split into a shared prefix and a "
                "suffix; drop the chat-template option"
            )
        split = start + len(prefix)
        return rendered[:split], rendered[split:]

    def _render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        if self.model is None:
            raise GraderError(
                f"the grader for {str(self.model_path)!r} is closed; build a new one"
            )
        try:
            self.renderer.check_propositions(propositions)
        except ValueError as error:
            raise GraderError(str(error)) from None
        names = tuple(p.name for p in propositions)
        probabilities = np.full((len(samples), len(names)), np.nan)
        unscored: list[Unscored] = []
        logger.info(
            "grading %d samples x %d propositions with %s",
            len(samples),
            len(names),
            self.model_path.name,
        )
        # One lock per grader: the kept prefix cache is shared state.
        with self._lock:
            for index, sample in enumerate(samples):
                if not names:
                    continue
                encoded = self.encode_sample(sample, propositions)
                fits = self._columns_that_fit(index, sample, names, encoded, unscored)
                try:
                    scores = self._score_sample([encoded[j] for j in fits])
                except torch.OutOfMemoryError as error:
                    self._record_out_of_memory(index, sample, names, error, unscored)
                    continue
                probabilities[index, fits] = scores
        return GradeResult(names, probabilities, unscored)

    def _columns_that_fit(
        self,
        index: int,
        sample: Sample,
        names: Sequence[str],
        encoded: Sequence[EncodedPrompt],
        unscored: list[Unscored],
    ) -> list[int]:
        """Return the columns whose prompt fits the model, recording the others."""
        fits = []
        for column, prompt in enumerate(encoded):
            length = len(prompt.input_ids)
            if self.max_length is None or length <= self.max_length:
                fits.append(column)
                continue
            detail = (
                f"the prompt has {length} tokens but the model takes at most "
                f"{self.max_length}; shorten the conversation or the few-shot "
                "examples, or use a model with a longer context"
            )
            unscored.append(
                Unscored(
                    index,
                    names[column],
                    "prompt_too_long",
                    detail,
                    None,
                    sample.sample_id,
                )
            )
        return fits

    def _record_out_of_memory(
        self,
        index: int,
        sample: Sample,
        names: Sequence[str],
        error: torch.OutOfMemoryError,
        unscored: list[Unscored],
    ) -> None:
        logger.error(
            "out of memory grading sample %d (id %s): %s",
            index,
            sample.sample_id,
            error,
        )
        self._drop_cache()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        detail = (
            f"out of memory on {self.device}; lower the batch size "
            f"(now {self.batch_size}) or shorten the prompts ({error})"
        )
        for name in names:
            unscored.append(
                Unscored(index, name, "out_of_memory", detail, None, sample.sample_id)
            )

    def _score_sample(self, encoded: Sequence[EncodedPrompt]) -> np.ndarray:
        """Return P(yes) for prompts of one sample, in the order given."""
        if not encoded:
            return np.empty(0)
        if not self.reuse_prefix:
            return self.score_full([prompt.input_ids for prompt in encoded])
        scores = np.empty(len(encoded))
        # Propositions of one sample share one prefix unless a chat template
        # renders it differently, so group by prefix to stay correct anyway.
        groups: dict[tuple[int, ...], list[int]] = {}
        for position, prompt in enumerate(encoded):
            groups.setdefault(prompt.prefix_ids, []).append(position)
        for prefix_ids, positions in groups.items():
            suffixes = [encoded[position].suffix_ids for position in positions]
            scores[positions] = self.score_with_prefix(prefix_ids, suffixes)
        return scores

    @torch.inference_mode()
    def score_with_prefix(
        self, prefix_ids: Sequence[int], suffixes: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Return P(yes) after ``prefix_ids + suffix`` for each suffix.

        The prefix runs once, or only its part not already in the kept cache.
        Each batch of suffixes then runs on a copy of the prefix KV cache,
        repeated along the batch dimension. Batches group suffixes of similar
        length, so little padding is run.

        NOTE: each batch contains batch_size copies of the prefix's keys and
        values, so long prefixes (``shared_definitions``) may need a smaller
        batch size.
        """
        prefix_ids = tuple(prefix_ids)
        if not prefix_ids:
            raise GraderError(
                "the prompt prefix encodes to no tokens; pass a non-empty preamble"
            )
        prefix_cache = self._extend_cache(prefix_ids)
        scores = np.empty(len(suffixes))
        for batch in self._length_sorted_batches(suffixes):
            cache = _repeat_cache(prefix_cache, len(batch))
            rows = [suffixes[i] for i in batch]
            scores[batch] = self._score_batch(rows, len(prefix_ids), cache)
        return scores

    def _length_sorted_batches(self, rows: Sequence[Sequence[int]]) -> list[list[int]]:
        """Split row indices into batches of similar length, longest first.

        A batch closes at ``batch_size`` rows, or earlier when the next row
        would make padding more than :data:`MAX_PADDING_SHARE` of its tokens.
        """
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        batches: list[list[int]] = []
        current: list[int] = []
        real_tokens = 0
        for index in order:
            length = len(rows[index])
            if current and len(current) < self.batch_size:
                padded_tokens = len(rows[current[0]]) * (len(current) + 1)
                padding = padded_tokens - real_tokens - length
                if padding <= MAX_PADDING_SHARE * padded_tokens:
                    current.append(index)
                    real_tokens += length
                    continue
            if current:
                batches.append(current)
            current, real_tokens = [index], length
        if current:
            batches.append(current)
        return batches

    def _extend_cache(self, prefix_ids: tuple[int, ...]) -> DynamicCache:
        """Return the KV cache of ``prefix_ids``, reusing the kept one if it matches."""
        common = 0
        if self._cache is not None and _is_croppable(self._cache):
            common = _common_prefix_length(self._cached_ids, prefix_ids)
        if common == 0:
            self._drop_cache()
            self._cache = self._new_cache()
        elif common < len(self._cached_ids):
            self._cache.crop(common - len(self._cached_ids))
        # Until the forward pass succeeds, the kept cache matches no ids.
        self._cached_ids = ()
        rest = prefix_ids[common:]
        if rest:
            self.model(
                input_ids=torch.tensor([rest], device=self.device),
                attention_mask=torch.ones((1, len(prefix_ids)), device=self.device),
                position_ids=torch.arange(
                    common, len(prefix_ids), device=self.device
                ).unsqueeze(0),
                use_cache=True,
                **{self._cache_argument: self._cache},
                **({"logits_to_keep": 1} if self._keeps_selected_logits else {}),
            )
            self.token_counts.prefix += len(rest)
            self.token_counts.forward_passes += 1
        self._cached_ids = prefix_ids
        return self._cache

    def _drop_cache(self) -> None:
        self._cache = None
        self._cached_ids = ()

    @torch.inference_mode()
    def score_full(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Return P(yes) after each whole token sequence, without any cache."""
        scores = np.empty(len(sequences))
        for batch in self._length_sorted_batches(sequences):
            rows = [sequences[i] for i in batch]
            scores[batch] = self._score_batch(rows, 0, None)
        return scores

    def _score_batch(
        self, rows: Sequence[Sequence[int]], offset: int, cache: DynamicCache | None
    ) -> np.ndarray:
        """Run one right-padded batch and return P(yes) at each row's last token.

        Args:
            rows: Token ids per row; none may be empty.
            offset: Number of tokens already in ``cache`` (0 without one).
            cache: KV cache of the shared prefix, with one copy per row.
        """
        lengths = [len(row) for row in rows]
        if min(lengths) == 0:
            raise GraderError(
                "a prompt suffix encodes to no tokens; check the proposition text"
            )
        width = max(lengths)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        # The mask covers the cached prefix, then each row's real tokens. Pads
        # come after every real token, so causal attention already keeps them
        # out of the logits read below.
        attention_mask = torch.zeros((len(rows), offset + width), dtype=torch.long)
        attention_mask[:, :offset] = 1
        for row_index, row in enumerate(rows):
            input_ids[row_index, : len(row)] = torch.tensor(list(row))
            attention_mask[row_index, offset : offset + len(row)] = 1
        position_ids = torch.arange(offset, offset + width).repeat(len(rows), 1)
        last_positions = torch.tensor([length - 1 for length in lengths])
        options: dict[str, object] = {"use_cache": cache is not None}
        if cache is not None:
            options[self._cache_argument] = cache
        kept_positions = torch.unique(last_positions)
        if self._keeps_selected_logits:
            # Only the rows' last positions go through the LM head.
            options["logits_to_keep"] = kept_positions.to(self.device)
        logits = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            position_ids=position_ids.to(self.device),
            **options,
        ).logits
        self.token_counts.suffix += sum(lengths)
        self.token_counts.forward_passes += 1
        columns = last_positions
        if self._keeps_selected_logits:
            columns = torch.searchsorted(kept_positions, last_positions)
        last_logits = logits[torch.arange(len(rows)), columns.to(logits.device)]
        return self._yes_probability(last_logits)

    def _yes_probability(self, logits: torch.Tensor) -> np.ndarray:
        """Return yes mass / (yes mass + no mass) from next-token logits (n, vocab)."""
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        yes_ids = torch.tensor(self.yes_token_ids, device=log_probs.device)
        no_ids = torch.tensor(self.no_token_ids, device=log_probs.device)
        log_yes = torch.logsumexp(log_probs[:, yes_ids], dim=-1).double()
        log_no = torch.logsumexp(log_probs[:, no_ids], dim=-1).double()
        return torch.sigmoid(log_yes - log_no).cpu().numpy()

    def _new_cache(self) -> DynamicCache:
        try:
            return DynamicCache(config=self.model.config)
        except TypeError:
            # Older transformers releases build DynamicCache without a config.
            return DynamicCache()

    def close(self) -> None:
        """Drop the model and the kept cache, and free cached CUDA memory."""
        self._drop_cache()
        if self.model is None:
            return
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def resolve_device(device: str) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` into a torch device.

    Raises:
        GraderError: When the name is unknown or CUDA is requested but absent.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GraderError(
            f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GraderError(
            f"device {device!r} requested but torch {torch.__version__} finds no "
            "CUDA device; use device 'cpu' or install a CUDA build of torch"
        )
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Turn a dtype name or ``"auto"`` into a torch dtype for ``device``.

    Raises:
        GraderError: When the name is unknown.
    """
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        known = ", ".join(repr(name) for name in (*DTYPES, "auto"))
        raise GraderError(f"unknown dtype {dtype!r}; use one of {known}")
    return DTYPES[dtype]


def find_single_token_ids(
    tokenizer: PreTrainedTokenizerBase, variants: Sequence[str]
) -> list[int]:
    """Return the ids of the variants that the tokenizer encodes as one token.

    A variant counts only when its single token decodes back to the same word,
    so the id of an unknown token is never taken for it.
    """
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    found: list[int] = []
    for variant in variants:
        ids = tokenizer.encode(variant, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == unknown_id or ids[0] in found:
            continue
        if tokenizer.decode(ids).strip() == variant.strip():
            found.append(ids[0])
    return found


def model_fingerprint(folder: Path) -> str:
    """Return a SHA-256 hex digest that changes when the model in ``folder`` does.

    It covers the config and tokenizer files' contents and, for each weights
    file, its name, size and three sampled 256 KiB windows (start, middle,
    end), so a large checkpoint is not read in full.

    NOTE: a weights change of the same size that touches none of the
    sampled windows goes unnoticed. The folder name is part of
    :attr:`TransformersGrader.identity`, so save new weights under a new name.
    """
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.name in _HASHED_FILES:
            digest.update(f"{path.name}\0".encode())
            digest.update(path.read_bytes())
        elif path.name.endswith(_WEIGHT_SUFFIXES):
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            digest.update(_sampled_bytes(path, size))
    return digest.hexdigest()


def _sampled_bytes(path: Path, size: int) -> bytes:
    middle = max(0, size // 2 - _SAMPLE_BYTES // 2)
    offsets = sorted({0, middle, max(0, size - _SAMPLE_BYTES)})
    chunks = []
    with path.open("rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            chunks.append(handle.read(_SAMPLE_BYTES))
    return b"".join(chunks)


def _repeat_cache(cache: DynamicCache, rows: int) -> DynamicCache:
    """Return a cache containing ``rows`` copies of ``cache``, which stays unchanged.

    Plain attention layers get broadcast views of the cached keys and values,
    so the only copy is the one the next forward pass makes when it appends
    to them. Other layer kinds, and caches without ``layers`` (older
    transformers releases), get real copies.
    """
    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer) not in _VIEW_LAYERS for layer in layers):
        repeated = copy.deepcopy(cache)
        repeated.batch_repeat_interleave(rows)
        return repeated
    repeated = copy.copy(cache)
    repeated.layers = []
    for layer in layers:
        view = copy.copy(layer)
        if layer.keys is not None and layer.keys.numel() > 0:
            view.keys = layer.keys.expand(rows, -1, -1, -1)
            view.values = layer.values.expand(rows, -1, -1, -1)
        repeated.layers.append(view)
    return repeated


def _is_croppable(cache: DynamicCache) -> bool:
    """Return whether ``cache`` can be cut back to any earlier length.

    Only plain attention layers qualify, because a sliding-window layer
    cannot be cut back once it has dropped tokens.
    """
    layers = getattr(cache, "layers", None)
    return layers is not None and all(type(layer) is DynamicLayer for layer in layers)


def _common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    limit = min(len(first), len(second))
    for index in range(limit):
        if first[index] != second[index]:
            return index
    return limit


def _check_model_folder(model_path: str | Path) -> Path:
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise GraderError(
            f"model folder {str(folder)!r} not found; pass a local folder written by "
            "save_pretrained (this grader never downloads models)"
        )
    if not (folder / "config.json").is_file():
        raise GraderError(
            f"model folder {str(folder)!r} has no config.json; pass the folder that "
            "save_pretrained wrote, with config, weights and tokenizer files"
        )
    return folder.resolve()


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in ``folder``; nothing is downloaded.

    Raises:
        GraderError: When the folder has no tokenizer that loads.
    """
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise GraderError(
            f"cannot load a tokenizer from {str(folder)!r}: {error}; save the "
            "model's tokenizer into the same folder with save_pretrained"
        ) from error


def load_model(
    folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    auto_class: Any = AutoModelForCausalLM,
    kind: str = "causal language model",
) -> PreTrainedModel:
    """Load a model from ``folder`` onto ``device`` in eval mode; nothing is downloaded.

    Args:
        folder: Folder written by ``save_pretrained``.
        device: Where the model runs.
        dtype: Weight type.
        auto_class: The transformers auto class that builds the model.
        kind: What the model is, for the error message.

    Raises:
        GraderError: When the folder has no model of that class that loads.
    """
    try:
        model = auto_class.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as error:
        raise GraderError(
            f"cannot load a {kind} from {str(folder)!r}: {error}; pass a folder "
            f"with the config and weights of a {kind}, written by save_pretrained"
        ) from error
    return model.to(device).eval()


def _check_answer_tokens(folder: Path, yes_ids: list[int], no_ids: list[int]) -> None:
    missing = [
        f"{word!r} (tried {', '.join(repr(v) for v in variants)})"
        for word, ids, variants in (
            ("yes", yes_ids, YES_VARIANTS),
            ("no", no_ids, NO_VARIANTS),
        )
        if not ids
    ]
    if missing:
        raise GraderError(
            f"the tokenizer in {str(folder)!r} has no single token for "
            f"{' or '.join(missing)}, so P(yes) cannot be read from one next-token "
            "distribution; use a model whose vocabulary has these words"
        )


def _leading_special_token_ids(
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[int, ...]:
    """Return the special tokens the tokenizer puts before a text, such as BOS.

    Tokens it appends after a text (an EOS) are left out, because the prompt
    continues after the prefix.
    """
    probe = "Conversation"
    plain = tokenizer.encode(probe, add_special_tokens=False)
    full = tokenizer.encode(probe, add_special_tokens=True)
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start])
    return ()


def _padding_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Pads sit after each row's last real token and are masked, so any id works.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
