"""verl and OpenRLHF entry points raise IntegrationError on bad input."""

from __future__ import annotations

import math

import pytest

from rbr.integrations import IntegrationError
from rbr.reward.routing import RoutingError
from tests.integrations.test_integration_openrlhf import chatml, reward_module  # noqa: F401
from tests.integrations.test_integration_verl import verl_module  # noqa: F401

PROMPT = chatml([{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize(
    ("queries", "prompts", "labels", "match"),
    [
        (
            [PROMPT + "Hello"],
            [PROMPT],
            ['{"category":"K-R","base_reward":"x"}'],
            "sample 0: label base_reward",
        ),
        ([1], [PROMPT], ["K-R"], "sample 0: query must be a string"),
        (
            [PROMPT + "Hello"],
            [PROMPT],
            ['{"category":"K-R","base_reward":NaN}'],
            "expected a finite number",
        ),
    ],
)
def test_openrlhf_bad_sample(reward_module, queries, prompts, labels, match):  # noqa: F811
    with pytest.raises(IntegrationError, match=match):
        reward_module.reward_func(queries, prompts, labels)


def test_openrlhf_none_columns(reward_module):  # noqa: F811
    result = reward_module.reward_func([PROMPT + "Hello"], None, ["Comply"])
    assert len(result["rewards"]) == 1
    with pytest.raises(RoutingError, match="neither a response type nor a category"):
        reward_module.reward_func([PROMPT + "Hello"], [PROMPT], None)


@pytest.mark.parametrize(
    ("solution", "info", "match"),
    [
        (None, {"prompt": "Hi"}, "solution_str must be a string"),
        ("ok", {"prompt": "Hi", "base_reward": "x"}, r"extra_info\['base_reward'\]"),
        ("ok", {"prompt": "Hi", "base_reward": math.nan}, "finite number"),
    ],
)
def test_verl_bad_sample(verl_module, solution, info, match):  # noqa: F811
    with pytest.raises(IntegrationError, match=match):
        verl_module.compute_score("d", solution, "Comply", info)
