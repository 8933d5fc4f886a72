"""Faults injected against a real service process and the real PostgreSQL and Redis servers,
hostile clients beside an honest one, and a short soak
(the short runs of ``reliability/faults.py``; ``make reliability`` runs the long ones).

Each scenario stops a server with its own command and always starts it again. They need root
(to stop the servers, to mount a small filesystem) and skip cleanly without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from reliability import faults, hostile, keepalive, soak

root = pytest.mark.skipif(os.geteuid() != 0, reason="stops servers and mounts: needs root")


@root
def test_a_postgres_outage_loses_no_row_and_answers_writes_503(tmp_path: Path) -> None:
    if shutil.which("pg_ctlcluster") is None or not faults.postgres_up():
        pytest.skip("needs the local PostgreSQL cluster")
    result = faults.postgres_outage(tmp_path, outage_s=4)
    assert result["load"]["server_errors_5xx"] == 0
    assert result["load"]["transport_errors"] == 0
    assert result["during_outage"]["predictions_answered_during_outage"] > 0
    assert result["during_outage"]["feedback"] == [503, "store_unavailable"]
    assert int(result["during_outage"]["feedback_retry_after"]) >= 1
    assert result["during_outage"]["job_submission"] == [503, "store_unavailable"]
    assert result["log_rows_lost"] == 0 and result["log_dropped_metric"] == 0
    assert result["log_retries_metric"] >= 1  # the writer held its rows and retried
    assert result["feedback_after_recovery"] == 201
    assert faults.postgres_up()


@root
def test_a_redis_outage_keeps_answering_under_the_local_policy(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or not faults.redis_up():
        pytest.skip("needs the local Redis server")
    result = faults.redis_outage(tmp_path, outage_s=3)
    assert result["load"]["server_errors_5xx"] == 0 and result["load"]["transport_errors"] == 0
    assert set(result["statuses_until_redis_returned"]) == {"200"}
    assert result["storage_errors_metric"] >= 1
    assert result["seconds_until_redis_used_again"] is not None  # it recovered by itself
    assert faults.redis_up()


def test_sigkill_mid_write_loses_no_acknowledged_write(tmp_path: Path) -> None:
    result = faults.sigkill_mid_write(tmp_path, run_s=4)
    assert result["integrity_check_after_kill"] == "ok"
    assert result["integrity_check_after_restart"] == "ok"
    assert result["acknowledged_predictions"] > 0 and result["acknowledged_feedback"] > 0
    assert result["acknowledged_predictions_missing"] == 0
    assert result["acknowledged_feedback_missing"] == 0
    assert result["load"]["server_errors_5xx"] == 0


@root
def test_a_full_disk_keeps_predictions_answered_and_loses_no_row(tmp_path: Path) -> None:
    result = faults.disk_full(tmp_path, run_s=4)
    if "skipped" in result:
        pytest.skip(f"cannot mount a small filesystem: {result['skipped']}")
    assert result["load"]["server_errors_5xx"] == 0
    assert set(result["statuses_while_full"]) == {"200"}
    assert result["feedback_while_full"] == [503, "store_unavailable"]
    assert result["log_retries_metric_while_full"] >= 1
    assert result["log_rows_lost"] == 0 and result["log_dropped_metric"] == 0
    assert result["integrity_check"] == "ok"


def test_idle_connections_are_closed_and_never_refuse_an_honest_client(tmp_path: Path) -> None:
    result = hostile.idle_connections(tmp_path, idle=500, header_timeout_s=2)
    assert result["honest_refused"] == {}
    assert result["closed_by_server"] == 500 and result["answered_408_first"] == 500


def test_a_flooding_key_is_limited_and_an_honest_key_is_not(tmp_path: Path) -> None:
    result = hostile.one_key_flood(tmp_path, flood_s=2, flooders=4)
    assert result["flood_answers"]["200"] == 120 and result["flood_answers"]["429"] > 0
    assert set(result["flood_answers"]) == {"200", "429"}
    assert result["honest_refused"] == {}


@pytest.mark.parametrize("where", ["route", "io"])
def test_a_request_arriving_during_a_loop_stall_past_keep_alive_is_answered(where: str) -> None:
    """Without the protocol's second look, a stall in an I/O callback reset the connection under
    uvloop (its overdue keep-alive timer ran before the waiting request was read)."""
    result = keepalive.stalled_keep_alive("uvloop", rounds=2, where=where)
    # The request really waited out the stall (sent 0.3 s into it), past the keep-alive deadline.
    assert result["shortest_wait_s"] >= result["stall_s"] - 0.5 > result["keep_alive_s"] - 0.3
    assert result["outcomes"] == {"200": 2}


def test_a_short_soak_answers_no_5xx_and_returns_its_files_and_threads(tmp_path: Path) -> None:
    result = soak.soak(tmp_path, duration_s=40, concurrency=8, sample_s=4)
    assert result["server_errors_5xx"] == 0
    kinds = {key.split()[0] for key in result["answers"]}
    assert {"predict", "invalid", "explain", "feedback", "drift"} <= kinds
    assert all(
        key.split()[1] in {"200", "201", "400", "413", "415", "422"} for key in result["answers"]
    )
    # Nothing piles up: connections and files are given back once the load stops.
    assert result["open_files"]["after_load"] <= result["open_files"]["idle"] + 8
