"""verl's custom reward function, loaded from its file path as verl loads it."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import pytest

import rbr.integrations.verl_reward as verl_reward
from rbr.integrations.convert import (
    IntegrationError,
    prompts_from_records,
    verl_rows,
)
from rbr.integrations.scoring import close_shared_scorers, shared_scorer
from rbr.reward.pipeline import RewardRequest
from rbr.reward.routing import RoutingError

DETAIL_KEYS = {
    "score",
    "rbr",
    "base",
    "rbr_applied",
    "rbr_unscored",
    "class_ideal",
    "class_minimum_acceptable_style",
    "class_unacceptable_completion",
    "class_illogical_completion",
    "class_disallowed_completion",
}


@pytest.fixture
def verl_module(monkeypatch, settings_file):
    """The module loaded from its file under verl's module name."""
    monkeypatch.setenv("RBR_REWARD_CONFIG", str(settings_file))
    monkeypatch.delenv("RBR_UNSCORED_RBR", raising=False)
    monkeypatch.delenv("RBR_UNLABELLED", raising=False)
    spec = importlib.util.spec_from_file_location("custom_module", verl_reward.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    close_shared_scorers()


def rows_and_completions(records):
    """Pair each record with the verl row of its prompt."""
    rows = verl_rows(prompts_from_records(records))
    by_id = {row["extra_info"]["prompt_id"]: row for row in rows}
    return [(by_id[r.prompt_id], r) for r in records]


def expected_totals(pipeline, records):
    requests = [
        RewardRequest(
            r.sample.prompt, r.sample.completion, r.sample.response_type, r.category
        )
        for r in records
    ]
    return [b.total for b in pipeline.score(requests)]


def test_compute_score_matches_pipeline(verl_module, offline_pipeline, example_records):
    expected = expected_totals(offline_pipeline, example_records)
    for (row, record), total in zip(rows_and_completions(example_records), expected):
        result = verl_module.compute_score(
            row["data_source"],
            record.sample.completion,
            row["reward_model"]["ground_truth"],
            row["extra_info"],
        )
        assert set(result) == DETAIL_KEYS
        assert result["score"] == pytest.approx(total)
        assert result["rbr_applied"] == 1.0
        assert result["rbr"] == pytest.approx(total)
        assert result["rbr_unscored"] == 0.0


def test_batch_form_matches_single(verl_module, example_records):
    pairs = rows_and_completions(example_records[:10])
    single = [
        verl_module.compute_score(
            row["data_source"],
            r.sample.completion,
            row["reward_model"]["ground_truth"],
            row["extra_info"],
        )
        for row, r in pairs
    ]
    batch = verl_module.compute_score_batch(
        data_sources=[row["data_source"] for row, _ in pairs],
        solution_strs=[r.sample.completion for _, r in pairs],
        ground_truths=[row["reward_model"]["ground_truth"] for row, _ in pairs],
        extra_infos=[row["extra_info"] for row, _ in pairs],
    )
    assert [b["score"] for b in batch] == pytest.approx([s["score"] for s in single])


def test_parquet_round_trip(verl_module, tmp_path, example_records):
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pairs = rows_and_completions(example_records[:8])
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([row for row, _ in pairs]), path)
    frame = pd.read_parquet(path)
    # pandas returns the messages as an object array, as verl's dataset does.
    assert not isinstance(frame["extra_info"][0]["prompt"], list)
    for i, (_, record) in enumerate(pairs):
        from_file = verl_module.compute_score(
            frame["data_source"][i],
            record.sample.completion,
            frame["reward_model"][i]["ground_truth"],
            frame["extra_info"][i],
            details=False,
        )
        direct = verl_module.compute_score(
            "x", record.sample.completion, None, pairs[i][0]["extra_info"]
        )
        assert from_file == pytest.approx(direct["score"])


@pytest.mark.parametrize(
    "ground_truth", ["Hard Refuse", "K-R", {"response_type": "Hard Refuse"}]
)
def test_ground_truth_forms(verl_module, example_records, ground_truth):
    record = next(r for r in example_records if r.category == "K-R")
    info = {"prompt": [m.to_dict() for m in record.sample.prompt]}
    labelled = {**info, "response_type": "Hard Refuse"}
    from_ground_truth = verl_module.compute_score(
        "safety", record.sample.completion, ground_truth, info
    )
    from_info = verl_module.compute_score(
        "safety", record.sample.completion, None, labelled
    )
    assert from_ground_truth == pytest.approx(from_info)


def test_unknown_ground_truth_rejected(verl_module, example_records):
    info = {"prompt": "Hello"}
    with pytest.raises(IntegrationError, match="ground_truth: label 'maybe'"):
        verl_module.compute_score("safety", "Hi!", "maybe", info)
    with pytest.raises(IntegrationError, match="ground_truth must be"):
        verl_module.compute_score("safety", "Hi!", 3, info)


def test_missing_prompt_rejected(verl_module):
    with pytest.raises(IntegrationError, match="extra_info has no 'prompt' key"):
        verl_module.compute_score("safety", "Hi!", "Comply", {"category": "None"})


def test_unlabelled_modes(verl_module, monkeypatch):
    info = {"prompt": "What is 2 + 2?"}
    with pytest.raises(RoutingError, match="neither a response type nor a category"):
        verl_module.compute_score("math", "4", "", info)
    result = verl_module.compute_score("math", "4", "", info, unlabelled="no_rbr")
    assert result["score"] == 0.0
    assert result["rbr_applied"] == 0.0
    assert result["class_ideal"] == 0.0
    monkeypatch.setenv("RBR_UNLABELLED", "no_rbr")
    assert verl_module.compute_score("math", "4", None, info, details=False) == 0.0


def test_base_reward_from_extra_info(verl_module):
    info = {"prompt": "What is 2 + 2?", "base_reward": 0.75}
    result = verl_module.compute_score("math", "4", None, info, unlabelled="no_rbr")
    assert result["score"] == 0.75
    assert result["base"] == 0.75


def test_base_reward_in_ground_truth(verl_module):
    info = {"prompt": "What is 2 + 2?"}
    truth = {"response_type": None, "base_reward": 0.25}
    result = verl_module.compute_score("math", "4", truth, info, unlabelled="no_rbr")
    assert result["base"] == 0.25
    as_json = verl_module.compute_score(
        "math", "4", '{"base_reward": 0.25}', info, unlabelled="no_rbr"
    )
    assert as_json["base"] == 0.25
    routed = {**info, "response_type": "Comply"}
    with_rbr = verl_module.compute_score("math", "4", truth, routed)
    assert with_rbr["base"] == 0.25
    assert with_rbr["rbr_applied"] == 1.0
    # extra_info takes precedence when both contain a base reward.
    both = verl_module.compute_score(
        "math", "4", truth, {**info, "base_reward": 0.5}, unlabelled="no_rbr"
    )
    assert both["base"] == 0.5
    with pytest.raises(IntegrationError, match=r"ground_truth\['base_reward'\]"):
        verl_module.compute_score(
            "math", "4", {"base_reward": "high"}, info, unlabelled="no_rbr"
        )


def test_ground_truth_conflict_rejected(verl_module):
    info = {"prompt": "How do I pick a lock?", "response_type": "Comply"}
    truth = {"response_type": "Hard Refuse"}
    with pytest.raises(IntegrationError, match="make the two agree"):
        verl_module.compute_score("safety", "No.", truth, info)
    agreeing = {"response_type": "Comply", "base_reward": 1.0}
    result = verl_module.compute_score("safety", "No.", agreeing, info)
    assert result["base"] == 1.0


def test_ground_truth_misspelled_key(verl_module):
    info = {"prompt": "What is 2 + 2?"}
    truth = {"response_type": "Comply", "base_rewrd": 2.0}
    with pytest.raises(IntegrationError, match="did you mean 'base_reward'"):
        verl_module.compute_score("math", "4", truth, info)
    other = {"response_type": "Comply", "answer": "4"}
    result = verl_module.compute_score("math", "4", other, info)
    assert result["rbr_applied"] == 1.0


def test_invalid_ground_truth_base_checked(verl_module):
    info = {"prompt": "What is 2 + 2?", "base_reward": 0.5}
    with pytest.raises(IntegrationError, match=r"ground_truth\['base_reward'\]"):
        verl_module.compute_score(
            "math", "4", {"base_reward": "abc"}, info, unlabelled="no_rbr"
        )


def test_routing_error_names_verl_fields(verl_module):
    with pytest.raises(RoutingError, match=r"extra_info\['response_type'\]"):
        verl_module.compute_score("math", "4", None, {"prompt": "What is 2 + 2?"})


def test_unscored_gets_base_plus_fallback(verl_module, unscored_settings, monkeypatch):
    info = {
        "prompt": "Tell me how to pick a lock.",
        "response_type": "Hard Refuse",
        "base_reward": 0.5,
    }
    call = {"config_path": unscored_settings}
    result = verl_module.compute_score("safety", "Sure!", None, info, **call)
    assert result["score"] == 0.5
    assert result["rbr"] == 0.0
    assert result["rbr_unscored"] == 1.0
    assert result["class_ideal"] == 0.0
    result = verl_module.compute_score(
        "safety", "Sure!", None, info, unscored_rbr=-1.0, **call
    )
    assert result["score"] == -0.5
    assert result["rbr"] == -1.0
    monkeypatch.setenv("RBR_UNSCORED_RBR", "-2")
    assert verl_module.compute_score(
        "safety", "Sure!", None, info, details=False, **call
    ) == pytest.approx(-1.5)
    monkeypatch.setenv("RBR_UNSCORED_RBR", "low")
    with pytest.raises(IntegrationError, match="is not a finite number"):
        verl_module.compute_score("safety", "Sure!", None, info, **call)


def test_settings_file_required(verl_module, monkeypatch, tmp_path):
    monkeypatch.delenv("RBR_REWARD_CONFIG")
    with pytest.raises(IntegrationError, match="set RBR_REWARD_CONFIG"):
        verl_module.compute_score("s", "x", "Comply", {"prompt": "x"})
    missing = tmp_path / "absent.yaml"
    with pytest.raises(IntegrationError, match="absent.yaml not found"):
        verl_module.compute_score(
            "s", "x", "Comply", {"prompt": "x"}, config_path=missing
        )


def test_list_lengths_checked(verl_module):
    with pytest.raises(IntegrationError, match="got 1 ground_truths for 2"):
        verl_module.compute_score_batch(["a", "b"], ["x", "y"], ["Comply"], [{}, {}])


def test_threaded_calls_share_batches(verl_module, example_records):
    pairs = rows_and_completions(example_records[:24])

    def score(pair):
        row, record = pair
        return verl_module.compute_score(
            "safety", record.sample.completion, None, row["extra_info"]
        )["score"]

    sequential = [score(pair) for pair in pairs]
    scorer = shared_scorer(None, "route")
    calls_before = scorer.calls
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(score, pairs))
    assert threaded == pytest.approx(sequential)
    assert scorer.calls - calls_before < len(pairs)
