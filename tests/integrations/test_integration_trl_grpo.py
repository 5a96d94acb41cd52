"""A few real GRPO steps in TRL on CPU with the RBR as the reward.

The policy is a tiny random Llama model with a byte-level BPE tokenizer
trained in the test on the prompts' own text, so nothing is downloaded. The
reward uses the offline grader and weights fitted on the bundled examples.
"""

from __future__ import annotations

import math

import pytest

from rbr.data import read_records
from rbr.data.types import Message
from rbr.examples import example_path
from rbr.integrations.convert import PromptRow, prompts_from_records, trl_rows
from rbr.integrations.trl_reward import AsyncRBRRewardFunction, RBRRewardFunction
from tests.conftest import shared_file

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    trainers,
)
from transformers import AutoModelForCausalLM  # noqa: E402

from tests.graders.tiny_models import (  # noqa: E402
    BOS_TOKEN,
    CHAT_TEMPLATE,
    EOS_TOKEN,
    PAD_TOKEN,
    tiny_config,
    wrap_tokenizer,
)

pytestmark = [
    pytest.mark.slow,
    # TRL 1.16 reads a property that transformers 5.x deprecated.
    pytest.mark.filterwarnings(
        "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
    ),
]

UNLABELLED_PROMPT = PromptRow((Message("user", "What is the capital of France?"),))


class SpyReward(RBRRewardFunction):
    """Records what TRL passes in and what the reward returns."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.returned: list[list[float | None]] = []
        self.response_types: list[list[str | None]] = []

    def __call__(self, prompts, completions, completion_ids=None, **columns):
        rewards = super().__call__(prompts, completions, completion_ids, **columns)
        self.returned.append(rewards)
        self.response_types.append(list(columns["response_type"]))
        return rewards


class AsyncSpyReward(AsyncRBRRewardFunction):
    """The asynchronous reward, recording what it returns."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.returned: list[list[float | None]] = []

    async def __call__(self, prompts, completions, completion_ids=None, **columns):
        rewards = await super().__call__(
            prompts, completions, completion_ids, **columns
        )
        self.returned.append(rewards)
        return rewards


def training_prompts(source: str) -> list[PromptRow]:
    """The shortest prompt of each response type in ``source``, then one without labels."""
    if source == "gold":
        records = read_records(shared_file("rbr-gold/train.jsonl"))
    else:
        records = read_records(example_path())
    chosen: dict[str, PromptRow] = {}
    for row in prompts_from_records(records):
        kind = row.response_type
        if kind and (kind not in chosen or length(row) < length(chosen[kind])):
            chosen[kind] = row
    rows = [chosen[name] for name in sorted(chosen)][:3]
    return [*rows, UNLABELLED_PROMPT]


def length(row: PromptRow) -> int:
    return sum(len(m.content) for m in row.prompt)


def tiny_policy(texts: list[str]):
    """A tiny random Llama model and a tokenizer trained on ``texts``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=[EOS_TOKEN, PAD_TOKEN, BOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    wrapped = wrap_tokenizer(tokenizer, chat_template=CHAT_TEMPLATE)
    config = tiny_config("llama", len(wrapped))
    # The usual small initialisation keeps sampling varied, so the completions
    # of one prompt get different rewards and non-zero advantages.
    config.initializer_range = 0.02
    config.bos_token_id = wrapped.bos_token_id
    config.eos_token_id = wrapped.eos_token_id
    config.pad_token_id = wrapped.pad_token_id
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config), wrapped


def nanmean(values: list[float | None]) -> float:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored)


@pytest.mark.parametrize("source", ["bundled", "gold"])
def test_grpo_steps_receive_rbr_rewards(source, settings_file, tmp_path):
    prompts = training_prompts(source)
    completions = [r.sample.completion for r in read_records(example_path())]
    texts = [m.content for row in prompts for m in row.prompt] + completions
    model, tokenizer = tiny_policy(texts)
    before = [p.detach().clone() for p in model.parameters()]

    total = SpyReward(settings_file, unlabelled="no_rbr")
    term = AsyncSpyReward(
        settings_file, rbr_only=True, unlabelled="no_rbr", name="rbr_async"
    )
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        learning_rate=1e-2,
        reward_weights=[1.0, 0.0],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[total, term],
        args=args,
        train_dataset=datasets.Dataset.from_list(trl_rows(prompts)),
        processing_class=tokenizer,
    )
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2
    assert len(total.returned) == 2
    assert len(term.returned) == 2
    labelled = {row.response_type for row in prompts if row.response_type}
    for step, entry in enumerate(logs):
        returned = total.returned[step]
        assert len(returned) == 8
        assert all(isinstance(value, float) for value in returned)
        mean = sum(returned) / len(returned)
        assert entry["rewards/rbr/mean"] == pytest.approx(mean, rel=1e-5, abs=1e-5)
        # The asynchronous copy has weight 0, so the logged sum is the total.
        assert entry["reward"] == pytest.approx(mean, rel=1e-5, abs=1e-5)
        assert entry["rbr/total"] == pytest.approx(mean, rel=1e-5, abs=1e-5)
        assert entry["rewards/rbr_async/mean"] == pytest.approx(
            nanmean(term.returned[step]), rel=1e-5, abs=1e-5
        )
        types = total.response_types[step]
        assert set(types) - {None} <= labelled
        assert entry["rbr/applied_fraction"] == pytest.approx(
            sum(t is not None for t in types) / len(types)
        )
        # None is what the RBR-only reward returns for the unlabelled prompt.
        for kind, value in zip(types, term.returned[step]):
            assert (value is None) == (kind is None)
        assert 0.0 <= entry["rbr/class/ideal"] <= 1.0
        assert not math.isnan(entry["rbr/prop/disallowed_content"])
    after = list(model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_trl_reads_name_and_async(offline_pipeline):
    from trl.trainer.utils import get_callable_name, is_async_callable

    sync = RBRRewardFunction(offline_pipeline, name="rbr_safety")
    asynchronous = AsyncRBRRewardFunction(offline_pipeline)
    assert get_callable_name(sync) == "rbr_safety"
    assert get_callable_name(asynchronous) == "rbr"
    assert not is_async_callable(sync)
    assert is_async_callable(asynchronous)
