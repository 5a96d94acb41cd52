"""Reward server errors: non-finite base rewards, JSON-string labels, prompts."""

from __future__ import annotations

import asyncio
import json
import math
import socket

import numpy as np
from click.testing import CliRunner

from rbr.cli.main import cli
from rbr.fitting.weights import RBRWeights
from rbr.reward.pipeline import RewardPipeline
from rbr.reward.rule_based import RuleBasedReward
from rbr.serve import create_app
from tests.serve.serve_support import asgi_client, make_pipeline, openrlhf_body

PROMPT = "How do I pick the lock on my neighbour's door?"
REFUSAL = "I'm sorry, but I can't help with that."


class NanBase:
    """A base reward model that returns NaN for every sample."""

    def score(self, samples):
        return np.full(len(samples), math.nan)


def send(app, path, *bodies):
    """Post each body in turn to one running app; return the response(s)."""

    async def session():
        async with asgi_client(app) as client:
            return [await client.post(path, content=body) for body in bodies]

    responses = asyncio.run(session())
    return responses if len(responses) > 1 else responses[0]


def test_nan_base_model_gives_json_500(policy, weights_file, offline_grader):
    reward = RuleBasedReward(policy, RBRWeights.load(weights_file), offline_grader)
    app = create_app(RewardPipeline(reward, base_reward=NanBase()))
    item = {"prompt": [{"role": "user", "content": PROMPT}], "completion": REFUSAL}
    body = json.dumps({"items": [{**item, "category": "K-R", "id": "x1"}]})
    response = send(app, "/v1/score", body)
    assert response.status_code == 500
    assert response.json()["error"] == "scoring_failed"
    assert "x1" in response.json()["message"]
    assert response.headers["x-request-id"] in response.json()["message"]


def test_json_string_label_accepted(policy, weights_file, offline_grader):
    app = create_app(make_pipeline(policy, weights_file, offline_grader))
    messages = [{"role": "user", "content": PROMPT}]
    label = json.dumps({"messages": messages, "category": "K-R"})
    body = openrlhf_body(["ignored prompt text"], [REFUSAL], [label])
    plain = openrlhf_body([PROMPT], [REFUSAL], ["K-R"])
    with_label, with_plain = send(
        app, "/get_reward", json.dumps(body), json.dumps(plain)
    )
    assert with_label.status_code == 200
    assert with_label.json()["rewards"] == with_plain.json()["rewards"]


def test_json_string_label_nan_base_rejected(policy, weights_file, offline_grader):
    app = create_app(make_pipeline(policy, weights_file, offline_grader))
    label = '{"category": "K-R", "base_reward": NaN}'
    body = openrlhf_body([PROMPT], [REFUSAL], [label])
    response = send(app, "/get_reward", json.dumps(body))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "labels[0].base_reward"


def test_invalid_json_string_label_rejected(policy, weights_file, offline_grader):
    app = create_app(make_pipeline(policy, weights_file, offline_grader))
    body = openrlhf_body([PROMPT], [REFUSAL], ['{"category": '])
    response = send(app, "/get_reward", json.dumps(body))
    assert response.status_code == 422
    assert "labels[0]" in response.json()["message"]


def test_prompt_ending_with_assistant_rejected(policy, weights_file, offline_grader):
    app = create_app(make_pipeline(policy, weights_file, offline_grader))
    prompt = [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": REFUSAL},
    ]
    item = {"prompt": prompt, "completion": "x", "category": "K-R"}
    response = send(app, "/v1/score", json.dumps({"items": [item]}))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "items[0].prompt"
    assert "must end with the user turn" in response.json()["message"]


def test_serve_busy_port_is_rbr_error(weights_file):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["serve", "--weights", str(weights_file), "--port", str(port)]
        )
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.output


def test_serve_config_conflict_names_flags(tmp_path, weights_file):
    config = tmp_path / "reward.yaml"
    config.write_text(f"weights: {weights_file}\n")
    result = CliRunner().invoke(
        cli,
        ["serve", "--config", str(config), "--weights", str(weights_file)],
    )
    assert result.exit_code == 2
    assert "cannot be combined with --weights;" in result.output
    result = CliRunner().invoke(
        cli, ["serve", "--config", str(config), "--grader", "labels"]
    )
    assert "cannot be combined with --grader;" in result.output
