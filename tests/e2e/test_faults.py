"""Faults on real processes: a run killed mid-way, two runs of one date, the tracking
server gone. Each test has its own $QUANTREC_HOME; the run stops at a failpoint
(``QUANTREC_PAUSE_AT``), the test kills it (SIGKILL to its process group) or stops a server
under it, and a rerun must finish the day without training again, registering twice or
moving the champion to anything unevaluated.

    python -m pytest -q -m "slow or e2e" tests/e2e/test_faults.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Quantrec, alias, kill_group, runs_of, versions_of, wait_until

DAY = "2026-03-04"
VARIANTS = {"fp32", "fp16", "int8", "searched"}


def _run_json(*extra: str) -> tuple[str, ...]:
    return ("run", "--date", DAY, "--json", *extra)


def _has_open(pid: int, path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux: its /proc/PID/fd links)."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # a descriptor closed while listing
        return False


def _crashed_run(quantrec: Quantrec):
    """The run date's MLflow run, RUNNING while the process sits at a failpoint."""
    [run] = runs_of(quantrec.client(), DAY)
    # Nothing may mark it FINISHED before the summary: a crash would then look finished
    # and the next run would not close it as KILLED.
    assert run.info.status == "RUNNING", run.info
    return run


def _assert_day_finished(quantrec: Quantrec, record: dict, crashed_id: str) -> list:
    """Four versions of the day, the champion on an evaluated, promoted version (this
    day's when the gate promoted one, else the one before), the crash closed."""
    client = quantrec.client()
    versions = versions_of(client, DAY)
    assert {v.tags["quantrec.variant"] for v in versions} == VARIANTS
    assert len(versions) == 4, [(v.version, v.tags["quantrec.variant"]) for v in versions]
    # No version of the model is left without the identity that lets a rerun claim it.
    assert all("quantrec.run_key" in v.tags for v in versions_of(client)), versions_of(client)
    assert record.get("reused_from") is None
    champion = alias(client)
    assert champion == record["champion_version"]
    if record["promoted_variant"]:
        assert champion == record["registered_versions"][record["promoted_variant"]]
    else:  # the gate may reject every variant of a tiny day: then nothing moves
        assert champion == record["champion_version_before"]
    if champion is not None:
        tags = client.get_model_version("quantrec-ctr", champion).tags
        assert tags["quantrec.decision"] == "promoted" or "quantrec.override_reason" in tags
    crashed = client.get_run(crashed_id)
    assert crashed.info.status == "KILLED"
    assert crashed.data.tags["quantrec.decision"] == "crashed"
    assert client.get_run(record["mlflow_run_id"]).info.status == "FINISHED"
    return versions


@pytest.mark.slow
def test_run_killed_while_training_is_rerun_to_completion(quantrec):
    first = quantrec.start(*_run_json(), QUANTREC_PAUSE_AT="train")
    quantrec.paused(first, "train")
    crashed = _crashed_run(quantrec)
    kill_group(first)

    rerun = quantrec.run(*_run_json())

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = rerun.record()
    _assert_day_finished(quantrec, record, crashed.info.run_id)
    # Training never finished before the kill: nothing persisted, so the rerun trained.
    tags = quantrec.client().get_run(record["mlflow_run_id"]).data.tags
    assert "quantrec.resumed.train" not in tags


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["register", "register-files", "promote"])
def test_run_killed_while_registering_resumes_without_training_or_registering_twice(
    quantrec, stage
):
    # "register" stops before the first version is logged; "register-files" after the
    # first variant's files are logged, before its version is created (with its identity
    # tags, in one call: no untagged version can be left); "promote" after all four are
    # registered and tagged, before the alias switch.
    first = quantrec.start(*_run_json(), QUANTREC_PAUSE_AT=stage)
    quantrec.paused(first, stage)
    crashed = _crashed_run(quantrec)
    kill_group(first)
    client = quantrec.client()
    before = versions_of(client, DAY)
    assert len(before) == (4 if stage == "promote" else 0)
    assert alias(client) is None  # nothing was promoted by the killed run

    rerun = quantrec.run(*_run_json())

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = rerun.record()
    versions = _assert_day_finished(quantrec, record, crashed.info.run_id)
    assert {v.version for v in before} <= {v.version for v in versions}
    tags = client.get_run(record["mlflow_run_id"]).data.tags
    assert tags["quantrec.resumed.train"] == crashed.info.run_id
    assert tags["quantrec.resumed.search"] == crashed.info.run_id


@pytest.mark.slow
def test_second_run_of_a_date_is_refused_or_queues_behind_the_first(quantrec):
    first = quantrec.start(*_run_json(), QUANTREC_PAUSE_AT="train")
    quantrec.paused(first, "train")

    refused = quantrec.run(*_run_json(), timeout_s=120)

    assert refused.returncode == 4, refused.stderr[-3000:]
    assert DAY in refused.stderr and "lock" in refused.stderr and "--wait" in refused.stderr
    assert f"pid {first.pid}" in refused.stderr
    print(f"refused in {refused.seconds:.1f} s")

    started = time.monotonic()
    queued = quantrec.start(*_run_json("--wait"))
    lock = quantrec.home / "locks" / f"quantrec-ctr-{DAY}.lock"
    wait_until(
        lambda: _has_open(queued.pid, lock),
        timeout_s=120,
        every_s=0.2,
        what=f"the queued run to open {lock}",
        alive=queued,
    )
    time.sleep(5)  # a few polls of the lock (every 2 s) while the first run holds it
    assert queued.poll() is None, quantrec.output(queued)[1][-3000:]
    # Queued behind the lock, before opening a run of its own.
    assert len(runs_of(quantrec.client(), DAY)) == 1
    crashed = _crashed_run(quantrec)
    kill_group(first)

    finished = quantrec.finish(queued, timeout_s=300, started=started)

    assert finished.returncode == 0, finished.stderr[-3000:]
    _assert_day_finished(quantrec, finished.record(), crashed.info.run_id)


@pytest.mark.e2e
def test_tracking_server_lost_mid_run_exits_5_and_the_champion_stays(
    tmp_path, prefect_api, mlflow_servers
):
    server = mlflow_servers(tmp_path / "mlflow")
    quantrec = Quantrec(tmp_path / "home", prefect_api=prefect_api, tracking_uri=server.url)
    try:
        _server_lost_mid_run(quantrec, server, mlflow_servers)
    finally:
        quantrec.close()


def _server_lost_mid_run(quantrec: Quantrec, server, mlflow_servers) -> None:
    earlier = quantrec.run("run", "--date", "2026-03-03", "--json")
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    champion = earlier.record()["champion_version"]
    if champion is None:  # the gate rejected the tiny day: a reviewer promotes its fp32
        champion = earlier.record()["registered_versions"]["fp32"]
        promoted = quantrec.run("promote", champion, "--reason", "a champion to keep")
        assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert alias(quantrec.client()) == champion

    failing = quantrec.start(*_run_json(), QUANTREC_PAUSE_AT="train", QUANTREC_PAUSE_S="20")
    quantrec.paused(failing, "train")
    crashed = _crashed_run(quantrec)
    server.stop()
    stopped = time.monotonic()
    lost = quantrec.finish(failing, timeout_s=400, started=stopped)
    print(
        f"exit {lost.returncode} {lost.seconds:.0f} s after the server stopped "
        f"(20 s of it the failpoint's pause)"
    )

    assert lost.returncode == 5, lost.stderr[-3000:]
    assert "unreachable" in lost.stderr and server.url in lost.stderr
    assert "Nothing was promoted; the champion is unchanged" in lost.stderr
    assert lost.seconds < 300

    port = int(server.url.rsplit(":", 1)[1])
    mlflow_servers(server.log.parent, port=port)  # the same store, the same address
    client = quantrec.client()
    assert alias(client) == champion
    assert client.get_run(crashed.info.run_id).info.status == "RUNNING"
    assert versions_of(client, DAY) == []

    rerun = quantrec.run(*_run_json())

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = rerun.record()
    assert record["champion_version_before"] == champion
    _assert_day_finished(quantrec, record, crashed.info.run_id)
    # Training finished before the tracking calls failed; its result was persisted.
    tags = client.get_run(record["mlflow_run_id"]).data.tags
    assert tags["quantrec.resumed.train"] == crashed.info.run_id


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_run_leaves_no_temporary_prefect_server_behind(quantrec):
    """Without PREFECT_API_URL the CLI starts a temporary Prefect server, a child process;
    SIGKILL of the CLI alone (not its group) takes the server with it."""
    first = quantrec.start(*_run_json(), QUANTREC_PAUSE_AT="train", PREFECT_API_URL="")
    quantrec.paused(first, "train")
    servers = [
        pid
        for pid in _children(first.pid)
        if "uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]
    assert servers, "the paused run should have a temporary Prefect server as its child"

    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)

    wait_until(
        lambda: not any(_alive(pid) for pid in servers),
        timeout_s=30,
        what=f"the temporary Prefect server(s) {servers} to exit with their parent",
    )


@pytest.mark.slow
def test_sigterm_stops_a_run_with_one_paragraph_and_the_rerun_finishes(quantrec):
    first = quantrec.start(*_run_json(), QUANTREC_PAUSE_AT="train")
    quantrec.paused(first, "train")
    crashed = _crashed_run(quantrec)

    os.kill(first.pid, signal.SIGTERM)
    finished = quantrec.finish(first, timeout_s=120)

    assert finished.returncode == 143, finished.stderr[-3000:]
    assert "stopped by signal SIGTERM" in finished.stderr and "Traceback" not in finished.stderr
    assert "Crash detected" not in finished.stderr  # the engine's report: --verbose only
    assert quantrec.client().get_run(crashed.info.run_id).info.status == "KILLED"
    rerun = quantrec.run(*_run_json())
    assert rerun.returncode == 0, rerun.stderr[-3000:]


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs for the home (needs the right to mount: skipped without it)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_reported_as_such_and_the_rerun_after_freeing_space_works(
    small_disk, prefect_api
):
    runner = Quantrec(small_disk / "home", prefect_api=prefect_api)
    try:
        filler = small_disk / "filler"
        with open(filler, "wb") as out:  # leave about 1.5 MiB: less than one run writes
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            out.write(b"\0" * max(0, free - 3 * 2**19))

        full = runner.run(*_run_json(), timeout_s=600)

        assert full.returncode == 6, (full.returncode, full.stderr[-3000:])
        assert "no space left on the disk" in full.stderr and "Traceback" not in full.stderr
        assert alias(runner.client()) is None  # nothing was promoted
        filler.unlink()
        rerun = runner.run(*_run_json(), timeout_s=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert len(versions_of(runner.client(), DAY)) == 4
    finally:
        runner.close()


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_prefect_api_is_named_as_such_and_nothing_is_registered(quantrec):
    lost = f"http://127.0.0.1:{_closed_port()}/api"
    down = quantrec.run(*_run_json(), PREFECT_API_URL=lost, timeout_s=300)

    assert down.returncode == 7, (down.returncode, down.stderr[-3000:])
    assert f"Prefect API at {lost}" in down.stderr and "Traceback" not in down.stderr
    assert "MLflow" not in down.stderr.split("Prefect API", 1)[0]  # not called a lost MLflow
    assert versions_of(quantrec.client()) == [] and alias(quantrec.client()) is None
    rerun = quantrec.run(*_run_json())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(versions_of(quantrec.client(), DAY)) == 4
