"""Checks on base rewards: request values and model scores must be finite."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rbr.data.types import Message
from rbr.reward.pipeline import RewardRequest, RewardRequestError, check_base_reward

PROMPT = (Message("user", "Hi"),)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1.0", True])
def test_request_rejects_invalid_base(value):
    with pytest.raises(RewardRequestError, match="request r7: base_reward"):
        RewardRequest(PROMPT, "Hello", base_reward=value, request_id="r7")


def test_request_keeps_numpy_base():
    request = RewardRequest(PROMPT, "Hello", base_reward=np.float32(0.5))
    assert request.base_reward == 0.5
    assert type(request.base_reward) is float


def test_check_base_reward_names_field():
    with pytest.raises(RewardRequestError, match="label base_reward: expected"):
        check_base_reward("x", where="label base_reward")
    assert check_base_reward(None) is None
    assert check_base_reward(2) == 2.0
