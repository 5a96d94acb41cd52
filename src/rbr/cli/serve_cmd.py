"""``rbr serve``: run the HTTP reward server for RL training loops."""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from rbr.cli.common import (
    GRADER_OPTION_NAMES,
    allow_grader_mismatch_option,
    build_grader,
    grader_options,
    load_policy_or_default,
    policy_option,
    weights_option,
)
from rbr.fitting.weights import RBRWeights
from rbr.integrations.openrlhf_text import DEFAULT_END_TOKENS
from rbr.reward.config import RewardSettings, build_pipeline
from rbr.reward.pipeline import RewardPipeline
from rbr.reward.rule_based import RuleBasedReward

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Reward settings YAML (weights, policy, grader, base_reward, classifier, "
    "base_normalization). Replaces --weights, --policy and the grader options.",
)
@weights_option(required=False)
@policy_option
@grader_options
@allow_grader_mismatch_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any non-loopback address exposes the server to "
    "the network: set a token then.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@click.option(
    "--token",
    envvar="RBR_SERVE_TOKEN",
    show_envvar=True,
    default=None,
    help="Bearer token required on every endpoint except /health. Prefer the "
    "environment variable: other users can read command lines.",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum completions merged into one grader batch. Default: --batch-size.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Maximum wait, in milliseconds, for a batch to fill, counted from its "
    "oldest completion's arrival or the end of the previous batch.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=16384,
    show_default=True,
    help="Maximum completions waiting to be scored; requests beyond it get 503 "
    "with Retry-After.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="Maximum request body size in bytes; larger requests get 413.",
)
@click.option(
    "--unscored-rbr",
    type=float,
    default=0.0,
    show_default=True,
    help="RBR term of a /get_reward reward when the grader could not score a "
    "needed proposition (the reward is the base reward plus this value).",
)
@click.option(
    "--end-token",
    "end_tokens",
    multiple=True,
    help="Extra token to strip from the end of /get_reward completions, in "
    "addition to the usual end-of-turn tokens (repeatable).",
)
@click.option("--access-log", is_flag=True, help="Log every HTTP request.")
def serve_command(
    config_path: Path | None,
    weights_path: Path | None,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    batch_size: int,
    allow_grader_mismatch: bool,
    host: str,
    port: int,
    token: str | None,
    max_batch_size: int | None,
    max_wait_ms: float,
    max_queue: int,
    max_body_bytes: int,
    unscored_rbr: float,
    end_tokens: tuple[str, ...],
    access_log: bool,
) -> None:
    """Serve rewards over HTTP: OpenRLHF's POST /get_reward and POST /v1/score.

    Start it with --weights from 'rbr fit' (and the grader options), or with
    --config. Point OpenRLHF at it with
    --remote_rm_url http://127.0.0.1:PORT/get_reward.
    """
    try:
        from rbr.serve.app import ServeSettings, create_app
    except ImportError as error:
        raise click.ClickException(
            f"rbr serve needs the 'serve' extra ({error.name} is missing); "
            'install it from the rbr checkout with: pip install -e ".[serve]"'
        ) from None
    ctx = click.get_current_context()
    batch = _max_batch_size(ctx, max_batch_size, batch_size)
    settings = ServeSettings(
        max_batch_size=batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        token=token,
        unscored_rbr=unscored_rbr,
        end_tokens=DEFAULT_END_TOKENS + tuple(t for t in end_tokens if t),
    )
    if token is None and not _is_loopback(host):
        click.echo(
            f"warning: listening on {host} without a token: anyone who can reach "
            "this port can use the grader; set --token or $RBR_SERVE_TOKEN",
            err=True,
        )
    pipeline = _build_pipeline(
        ctx, config_path, weights_path, policy_path, grader_spec, allow_grader_mismatch
    )
    with pipeline:
        click.echo(
            f"rbr serve: grader {pipeline.reward.grader.identity}, policy "
            f"{pipeline.policy.name!r}; POST /get_reward, POST /v1/score, "
            f"GET /health, GET /metrics on {host}:{port}",
            err=True,
        )
        _run_uvicorn(create_app(pipeline, settings), host, port, access_log, settings)


def _build_pipeline(
    ctx: click.Context,
    config_path: Path | None,
    weights_path: Path | None,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    allow_grader_mismatch: bool,
) -> RewardPipeline:
    if config_path is not None:
        conflicting = [
            _option_flag(ctx, name)
            for name in ("weights_path", "policy_path", "allow_grader_mismatch")
            + GRADER_OPTION_NAMES
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        ]
        if conflicting:
            raise click.UsageError(
                f"--config cannot be combined with {', '.join(conflicting)}; put these "
                "settings in the config file"
            )
        return build_pipeline(RewardSettings.load(config_path))
    if weights_path is None:
        raise click.UsageError(
            "pass --weights FILE (written by 'rbr fit') or --config reward.yaml"
        )
    if grader_spec["grader_kind"] == "labels":
        raise click.UsageError(
            "the labels grader returns labels stored in a data file and cannot "
            "score new completions; use --grader offline, openai or local"
        )
    policy = load_policy_or_default(policy_path)
    weights = RBRWeights.load(weights_path)
    grader = build_grader(grader_spec, (), policy)
    try:
        reward = RuleBasedReward(
            policy, weights, grader, allow_grader_mismatch=allow_grader_mismatch
        )
    except BaseException:
        grader.close()
        raise
    return RewardPipeline(reward)


def _option_flag(ctx: click.Context, name: str) -> str:
    """Return the command-line flag of parameter ``name``, such as ``--weights``."""
    for param in ctx.command.params:
        if param.name == name and param.opts:
            return max(param.opts, key=len)
    return f"--{name.replace('_', '-')}"


def _max_batch_size(
    ctx: click.Context, max_batch_size: int | None, batch_size: int
) -> int:
    """Use --max-batch-size, else --batch-size (the shared grader option)."""
    if max_batch_size is None:
        return batch_size
    explicit = ctx.get_parameter_source("batch_size") == ParameterSource.COMMANDLINE
    if explicit and batch_size != max_batch_size:
        raise click.UsageError(
            f"--batch-size {batch_size} and --max-batch-size {max_batch_size} "
            "disagree; pass only --max-batch-size"
        )
    return max_batch_size


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _StopSignal(Exception):
    """SIGTERM arrived; raised so the pipeline is closed before exiting."""


def _run_uvicorn(
    app: Any, host: str, port: int, access_log: bool, settings: Any
) -> None:
    """Serve until SIGINT or SIGTERM, finish open requests, then return.

    uvicorn handles both signals itself and, after its graceful shutdown,
    raises the signal again. The handlers installed here turn that second
    delivery into a normal return, so the caller can close the pipeline.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )

    def stop(signum: int, frame: Any) -> None:
        raise _StopSignal(signum)

    listener = _bind(host, port)
    bound_port = listener.getsockname()[1]
    click.echo(f"rbr serve: running on http://{host}:{bound_port}", err=True)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except (KeyboardInterrupt, _StopSignal):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
    click.echo("rbr serve: stopped", err=True)


def _bind(host: str, port: int) -> socket.socket:
    """Open the listening socket, so a busy port is an rbr error, not uvicorn's.

    Raises:
        ServeConfigError: When the address is in use or cannot be bound.
    """
    from rbr.serve.app import ServeConfigError

    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ServeConfigError(
            f"cannot resolve --host {host!r}: {error}; pass an IP address such as "
            "127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ServeConfigError(
                f"port {port} on {host} is already in use; stop the process that "
                "listens there or pass another --port (0 picks a free one)"
            ) from None
        raise ServeConfigError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; pass "
            "another --host or --port"
        ) from None
    listener.set_inheritable(True)
    return listener
