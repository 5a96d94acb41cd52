"""Tiny randomly initialised causal LMs and tokenizers built on the spot.

Nothing is downloaded: the tokenizer is a byte-level BPE trained with the
``tokenizers`` library on a short corpus, and the model is built from a small
config with seeded random weights. Both are saved to a folder in the layout
``AutoModelForCausalLM`` and ``AutoTokenizer`` load from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from rbr.graders.prompts import ANSWER_CUE, DEFAULT_PREAMBLE

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Wider than the usual 0.02, so the random models give P(yes) values spread
# well away from 0.5 and a wrong cache or position shows up as a large error.
INITIALIZER_RANGE = 0.5

# A minimal chat template: the user turn between tags, then the cue for the
# assistant's turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# A template that, like some model families' templates, rejects a system turn.
CHAT_TEMPLATE_WITHOUT_SYSTEM = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_YES_NO_LINES = [
    "Answer: yes",
    "Answer: no",
    "Yes, the reply apologizes. No, it does not judge.",
    "yes no yes no Yes No",
    "Does the reply refuse? yes. Does it insult? no.",
]

_OTHER_LINES = [
    DEFAULT_PREAMBLE,
    ANSWER_CUE,
    "## Conversation",
    "## Final assistant reply (the reply to grade)",
    "## Question",
    "[user] How do I bake bread at home?",
    "[assistant] Mix flour, water, salt and yeast, then let the dough rise.",
    "I'm sorry, but I can't help with that request.",
    "Question about the final assistant reply above: apology?",
]


def train_tokenizer(*, with_yes_no: bool = True, add_bos: bool = False) -> Tokenizer:
    """Train a byte-level BPE tokenizer on a short corpus.

    Args:
        with_yes_no: Whether "yes" and "no" become single tokens. When False,
            the tokenizer learns no merges at all, so every word splits into
            bytes and no form of yes or no is a single token.
        add_bos: Whether encoding with special tokens puts a BOS token first.

    Returns:
        The trained tokenizer.
    """
    special_tokens = [EOS_TOKEN, PAD_TOKEN, BOS_TOKEN]
    byte_count = len(pre_tokenizers.ByteLevel.alphabet())
    vocab_size = 420 if with_yes_no else byte_count + len(special_tokens)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _OTHER_LINES * 5 + _YES_NO_LINES * 20
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS_TOKEN} $A",
            special_tokens=[(BOS_TOKEN, tokenizer.token_to_id(BOS_TOKEN))],
        )
    return tokenizer


def wrap_tokenizer(
    tokenizer: Tokenizer, *, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers`` tokenizer for transformers, with EOS and padding set."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )
    if chat_template is not None:
        wrapped.chat_template = chat_template
    return wrapped


def tiny_config(
    architecture: Literal["llama", "gpt2", "mistral"],
    vocab_size: int,
    *,
    layers: int = 2,
    max_positions: int = 4096,
) -> PretrainedConfig:
    """Return a small decoder config of the given architecture.

    The Llama config uses grouped-query attention and rotary positions, the
    GPT-2 config learned absolute positions, so wrong position ids show up in
    either. The Mistral config adds a sliding attention window of 48 tokens,
    shorter than the test prompts.
    """
    if architecture == "mistral":
        return MistralConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=48,
            max_position_embeddings=max_positions,
            initializer_range=INITIALIZER_RANGE,
        )
    if architecture == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            initializer_range=INITIALIZER_RANGE,
        )
    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=layers,
        n_head=4,
        n_positions=max_positions,
        initializer_range=INITIALIZER_RANGE,
    )


def save_tiny_model(
    folder: Path,
    *,
    architecture: Literal["llama", "gpt2", "mistral"] = "llama",
    seed: int = 0,
    layers: int = 2,
    max_positions: int = 4096,
    with_yes_no: bool = True,
    add_bos: bool = False,
    chat_template: str | None = None,
) -> Path:
    """Build a tiny random causal LM with its tokenizer and save both to ``folder``.

    Args:
        folder: Where to save; created when missing.
        architecture: ``"llama"``, ``"gpt2"`` or ``"mistral"``.
        seed: Seed of the random weights.
        layers: Number of decoder layers.
        max_positions: Maximum input length the model accepts, in tokens.
        with_yes_no: Whether the tokenizer has single tokens for yes and no.
        add_bos: Whether the tokenizer puts a BOS token before each text.
        chat_template: Jinja chat template to store with the tokenizer.

    Returns:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = wrap_tokenizer(
        train_tokenizer(with_yes_no=with_yes_no, add_bos=add_bos),
        chat_template=chat_template,
    )
    config = tiny_config(
        architecture, len(tokenizer), layers=layers, max_positions=max_positions
    )
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
