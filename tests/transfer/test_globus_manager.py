"""The Globus manager against the SDK's own testing fixtures: the real TransferClient, Globus faked at the HTTP level
(globus_sdk.testing's registered responses and `responses` registrations of the calls it has no fixture for)."""

from __future__ import annotations

import copy
import json
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from globus_sdk.testing import RegisteredResponse, load_response
from globus_sdk.testing.data.transfer.task_list import TASK_LIST_DOC

from services.transfer.managers.base import Delivered, Failed, FileToSend, Outcome
from services.transfer.managers.globus import GlobusManager, GlobusRefused, GlobusUnavailable
from services.transfer.managers.globus_options import GlobusOptions, globus_options
from shared.api.ingest import ReplicaFile
from shared.errors import ConfigurationError, PermanentError, TransientError
from shared.settings import PeerSettings

PEER = PeerSettings(name="karoo", manager="globus")
HERE = "11111111-1111-4111-8111-111111111111"
THERE = "22222222-2222-4222-8222-222222222222"
TRANSFER = "https://transfer.api.globus.org/v0.10"


class Journal:
    """An in-memory BatchJournal: the notes merged key by key, as the transfer schema's row does."""

    def __init__(self, notes: dict[str, Any] | None = None) -> None:
        self.notes: dict[str, Any] = copy.deepcopy(notes or {})
        self.history: list[dict[str, Any]] = []

    async def recall(self) -> dict[str, Any]:
        return copy.deepcopy(self.notes)

    async def note(self, values: dict[str, Any]) -> None:
        self.history.append(copy.deepcopy(values))
        self.notes.update(copy.deepcopy(values))


class Adopter:
    """The adopt callable: records what it was asked to adopt, and says the peer's ingest delivered it."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.refuse = refuse or {}

    async def __call__(self, peer: PeerSettings, record: ReplicaFile, path: str) -> Outcome:
        self.calls.append((peer.name, record.name, path))
        if record.name in self.refuse:
            return Failed(record.name, self.refuse[record.name], permanent=True)
        return Delivered(record.name)


@pytest.fixture
def mock() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as requests_mock:
        yield requests_mock


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


def options(tmp_path: Path, store: Path, **overrides: Any) -> GlobusOptions:
    token = tmp_path / "transfer-token"
    token.write_text("a-transfer-token\n")
    raw: dict[str, Any] = {
        "token_file": str(token), "collection_id": HERE, "path_map": {str(store): "/~/obsflow/main"},
        "peers": {"karoo": {"collection_id": THERE, "landing_path": "/landing", "ingest_path": "/data/landing"}},
        "poll_interval_s": 0.01, "request_retries": 0, "batch_files": 512,
    }
    raw.update(overrides)
    return globus_options(raw)


def batch(store: Path, count: int) -> list[FileToSend]:
    created = datetime(2026, 12, 1, tzinfo=UTC)
    return [FileToSend(ReplicaFile(name=f"obs{i:04d}.fits", size=1000 + i, checksum="xxh3-128:" + "0" * 32,
                                   file_type="fits", origin_site="atacama", uploader="obs", created_at=created),
                       store, store / "2026" / f"obs{i:04d}.fits")
            for i in range(count)]


def task(task_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A task document: the SDK fixture's own, with this task's id and status."""
    return {**TASK_LIST_DOC["DATA"][0], "DATA_TYPE": "task", "task_id": task_id, "status": status, **fields}


def register(mock: Any, path: str, body: dict[str, Any], *, method: str = "GET", status: int = 200) -> None:
    RegisteredResponse(service="transfer", path=f"/v0.10{path}", method=method, json=body,
                       status=status).add(requests_mock=mock)


def succeeded(mock: Any, task_id: str, files: list[FileToSend], *, page: int = 100, **fields: Any) -> None:
    """The task ACTIVE on the first poll and SUCCEEDED on the next, every file listed as transferred."""
    register(mock, f"/task/{task_id}", task(task_id, "ACTIVE", bytes_transferred=1000))
    register(mock, f"/task/{task_id}", task(task_id, "SUCCEEDED", bytes_transferred=5000, **fields))
    pages = [files[i:i + page] for i in range(0, len(files), page)] or [[]]
    for number, part in enumerate(pages):
        register(mock, f"/task/{task_id}/successful_transfers", {
            "DATA_TYPE": "successful_transfers", "marker": number,
            "next_marker": number + 1 if number + 1 < len(pages) else None,
            "DATA": [{"DATA_TYPE": "successful_transfer", "source_path": f"/~/obsflow/main/2026/{f.name}",
                      "destination_path": f"/landing/{f.name}"} for f in part]})


def calls(mock: Any, method: str, path: str) -> list[Any]:
    return [c for c in mock.calls if c.request.method == method and c.request.url.split("?")[0] == TRANSFER + path]


def body(call: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(call.request.body)
    return result


async def progress_into(seen: list[int]) -> Any:
    async def progress(sent: int) -> None:
        seen.append(sent)
    return progress


async def test_a_batch_of_200_files_is_one_checksummed_task_and_every_file_is_adopted(mock, tmp_path, store):
    submission_id = load_response("transfer.get_submission_id", requests_mock=mock).metadata["submission_id"]
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    files = batch(store, 200)
    succeeded(mock, task_id, files)
    journal, adopt, seen = Journal(), Adopter(), []
    manager = GlobusManager(options(tmp_path, store), adopt)
    try:
        outcomes = await manager.send(PEER, "b-42", files, journal, await progress_into(seen))
    finally:
        await manager.close()
    assert outcomes == [Delivered(f.name) for f in files]
    [submit] = calls(mock, "POST", "/transfer")
    sent = body(submit)
    assert sent["submission_id"] == submission_id
    assert sent["verify_checksum"] is True and sent["sync_level"] == 3  # 3 is Globus's "checksum"
    assert sent["source_endpoint"] == HERE and sent["destination_endpoint"] == THERE
    assert "b-42" in sent["label"]
    assert len(sent["DATA"]) == 200
    assert sent["DATA"][0]["source_path"] == "/~/obsflow/main/2026/obs0000.fits"
    assert sent["DATA"][0]["destination_path"] == "/landing/obs0000.fits"
    assert submit.request.headers["Authorization"] == "Bearer a-transfer-token"
    assert len(calls(mock, "GET", f"/task/{task_id}/successful_transfers")) == 2  # both pages read
    assert sorted(adopt.calls) == [("karoo", f.name, f"/data/landing/{f.name}") for f in files]
    # The submission id was noted before the submit, the task id after it.
    assert journal.history[1] == {"globus.part.0": {"submission_id": submission_id, "deadline": pytest.approx(
        time.time() + 86400, abs=60)}}
    assert journal.notes["globus.part.0"]["task_id"] == task_id
    assert seen == [1000, 4000]


async def test_more_files_than_batch_files_go_as_several_tasks_each_noted(mock, tmp_path, store):
    files = batch(store, 300)
    ids = [f"0000000{n}-0000-4000-8000-000000000000" for n in range(3)]
    for n, task_id in enumerate(ids):
        register(mock, "/submission_id", {"value": f"sub-{n}"})
        register(mock, "/transfer", {"code": "Accepted", "task_id": task_id, "submission_id": f"sub-{n}"},
                 method="POST", status=202)
        succeeded(mock, task_id, sorted(files, key=lambda f: f.name)[n * 128:(n + 1) * 128])
    journal, adopt = Journal(), Adopter()
    manager = GlobusManager(options(tmp_path, store, batch_files=128), adopt)
    outcomes = await manager.send(PEER, "b-43", list(reversed(files)), journal, await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered(f.name) for f in reversed(files)]  # in the order handed
    sizes = [len(body(c)["DATA"]) for c in calls(mock, "POST", "/transfer")]
    assert sizes == [128, 128, 44]
    assert [body(c)["submission_id"] for c in calls(mock, "POST", "/transfer")] == ["sub-0", "sub-1", "sub-2"]
    assert [journal.notes[f"globus.part.{n}"]["task_id"] for n in range(3)] == ids
    assert journal.notes["globus.batch_files"] == 128
    assert len(adopt.calls) == 300


async def test_a_failed_task_fails_every_file_with_its_reason(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    register(mock, f"/task/{task_id}", task(task_id, "FAILED", fatal_error={
        "code": "PERMISSION_DENIED", "description": "permission denied on /landing"}))
    register(mock, f"/task/{task_id}/event_list", {"DATA_TYPE": "event_list", "DATA": [
        {"DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True,
         "description": "mkdir /landing: permission denied", "details": "", "time": "2026-12-08T01:00:00+00:00"}]})
    files, adopt = batch(store, 3), Adopter()
    manager = GlobusManager(options(tmp_path, store), adopt)
    outcomes = await manager.send(PEER, "b-44", files, Journal(), await progress_into([]))
    await manager.close()
    assert [o.name for o in outcomes] == [f.name for f in files]
    for outcome in outcomes:
        assert isinstance(outcome, Failed) and not outcome.permanent
        assert "PERMISSION_DENIED: permission denied on /landing" in outcome.reason
        assert "mkdir /landing: permission denied" in outcome.reason
    assert adopt.calls == []


async def test_a_task_past_its_deadline_is_cancelled_and_its_files_fail(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    register(mock, f"/task/{task_id}", task(task_id, "ACTIVE", nice_status="CONNECTION_FAILED"))
    register(mock, f"/task/{task_id}/cancel", {"code": "Canceled", "message": "The task has been cancelled."},
             method="POST")
    register(mock, f"/task/{task_id}/event_list", {"DATA_TYPE": "event_list", "DATA": []})
    files, adopt = batch(store, 2), Adopter()
    manager = GlobusManager(options(tmp_path, store, deadline_s=0.3), adopt)
    outcomes = await manager.send(PEER, "b-45", files, Journal(), await progress_into([]))
    await manager.close()
    assert len(calls(mock, "POST", f"/task/{task_id}/cancel")) == 1
    assert len(calls(mock, "GET", f"/task/{task_id}")) > 1  # polled until the deadline
    for outcome in outcomes:
        assert isinstance(outcome, Failed)
        assert "deadline" in outcome.reason and "CONNECTION_FAILED" in outcome.reason
    assert adopt.calls == []


async def test_a_task_that_ends_as_it_is_cancelled_counts_as_what_it_ended_as(mock, tmp_path, store):
    task_id = "88888888-8888-4888-8888-888888888888"
    files = batch(store, 2)
    succeeded(mock, task_id, files)  # ACTIVE when polled, SUCCEEDED when looked at again after the refused cancel
    register(mock, f"/task/{task_id}/cancel", {"code": "TaskComplete", "message": "already complete"},
             method="POST", status=409)
    journal = Journal({"globus.batch_files": 512,
                       "globus.part.0": {"submission_id": "noted", "deadline": time.time() - 1, "task_id": task_id}})
    manager = GlobusManager(options(tmp_path, store), Adopter())
    outcomes = await manager.send(PEER, "b-60", files, journal, await progress_into([]))
    await manager.close()
    assert len(calls(mock, "POST", f"/task/{task_id}/cancel")) == 1
    assert outcomes == [Delivered(f.name) for f in files]


async def test_a_batch_whose_task_id_is_noted_is_polled_and_never_submitted(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    load_response("transfer.submit_transfer", requests_mock=mock)
    task_id = "33333333-3333-4333-8333-333333333333"
    files = batch(store, 5)
    succeeded(mock, task_id, files)
    journal = Journal({"globus.batch_files": 512,
                       "globus.part.0": {"submission_id": "noted", "deadline": time.time() + 600, "task_id": task_id}})
    adopt = Adopter()
    manager = GlobusManager(options(tmp_path, store), adopt)
    outcomes = await manager.send(PEER, "b-46", files, journal, await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered(f.name) for f in files]
    assert calls(mock, "POST", "/transfer") == [] and calls(mock, "GET", "/submission_id") == []
    assert journal.history == []


async def test_a_batch_with_a_submission_id_but_no_task_id_is_submitted_again_with_the_same_id(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = "44444444-4444-4444-8444-444444444444"
    noted = "55555555-5555-4555-8555-555555555555"
    deadline = time.time() + 3600
    # Globus answers a submission id it accepted before with the original task: code Duplicate.
    register(mock, "/transfer", {"DATA_TYPE": "transfer_result", "code": "Duplicate", "task_id": task_id,
                                 "submission_id": noted}, method="POST")
    files = batch(store, 4)
    succeeded(mock, task_id, files)
    journal = Journal({"globus.batch_files": 512, "globus.part.0": {"submission_id": noted, "deadline": deadline}})
    manager = GlobusManager(options(tmp_path, store), Adopter())
    outcomes = await manager.send(PEER, "b-47", files, journal, await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered(f.name) for f in files]
    [submit] = calls(mock, "POST", "/transfer")
    assert body(submit)["submission_id"] == noted
    assert body(submit)["deadline"] == datetime.fromtimestamp(deadline, UTC).isoformat(timespec="seconds")
    assert calls(mock, "GET", "/submission_id") == []
    assert journal.notes["globus.part.0"] == {"submission_id": noted, "deadline": deadline, "task_id": task_id}


async def test_a_part_never_submitted_before_its_deadline_is_not_submitted_late(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    load_response("transfer.submit_transfer", requests_mock=mock)
    files = batch(store, 2)
    journal = Journal({"globus.batch_files": 512,
                       "globus.part.0": {"submission_id": "noted", "deadline": time.time() - 1}})
    manager = GlobusManager(options(tmp_path, store), Adopter())
    outcomes = await manager.send(PEER, "b-59", files, journal, await progress_into([]))
    await manager.close()
    for outcome in outcomes:
        assert isinstance(outcome, Failed) and "not submitted to Globus before its deadline" in outcome.reason
    assert len(mock.calls) == 0


async def test_an_unavailable_globus_hands_the_batch_back_and_the_retry_reuses_the_submission_id(
        mock, tmp_path, store):
    submission_id = load_response("transfer.get_submission_id", requests_mock=mock).metadata["submission_id"]
    register(mock, "/transfer", {"code": "ServiceUnavailable", "message": "down for maintenance"},
             method="POST", status=503)
    files, journal = batch(store, 3), Journal()
    manager = GlobusManager(options(tmp_path, store), Adopter())
    with pytest.raises(GlobusUnavailable, match="503 ServiceUnavailable") as raised:
        await manager.send(PEER, "b-48", files, journal, await progress_into([]))
    assert isinstance(raised.value, TransientError)
    assert journal.notes["globus.part.0"]["submission_id"] == submission_id
    assert "task_id" not in journal.notes["globus.part.0"]

    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    succeeded(mock, task_id, files)
    outcomes = await manager.send(PEER, "b-48", files, journal, await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered(f.name) for f in files]
    assert [body(c)["submission_id"] for c in calls(mock, "POST", "/transfer")] == [submission_id, submission_id]
    assert len(calls(mock, "GET", "/submission_id")) == 1


async def test_a_connection_error_is_transient(mock, tmp_path, store):
    mock.add(responses.GET, f"{TRANSFER}/submission_id", body=requests.ConnectionError("connection refused"))
    manager = GlobusManager(options(tmp_path, store), Adopter())
    with pytest.raises(GlobusUnavailable, match="connection refused"):
        await manager.send(PEER, "b-49", batch(store, 1), Journal(), await progress_into([]))
    await manager.close()


async def test_a_401_is_a_permanent_error_that_says_what_to_fix(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    register(mock, "/transfer", {"code": "AuthenticationFailed", "message": "Token is not active",
                                 "request_id": "x"}, method="POST", status=401)
    journal = Journal()
    manager = GlobusManager(options(tmp_path, store), Adopter())
    with pytest.raises(GlobusRefused) as raised:
        await manager.send(PEER, "b-50", batch(store, 2), journal, await progress_into([]))
    await manager.close()
    error = raised.value
    assert isinstance(error, PermanentError) and isinstance(error, ConfigurationError)
    assert "401 AuthenticationFailed" in str(error)
    assert "token_file" in str(error) and "consented" in str(error)
    assert "a-transfer-token" not in str(error)
    assert len(calls(mock, "POST", "/transfer")) == 1


async def test_a_409_on_resubmission_finds_the_task_by_its_label(mock, tmp_path, store):
    task_id = "66666666-6666-4666-8666-666666666666"
    register(mock, "/transfer", {"code": "Conflict", "message": "submission id already used"},
             method="POST", status=409)
    register(mock, "/task_list", {**TASK_LIST_DOC, "DATA": [task(task_id, "ACTIVE", label="obsflow b-51 1 of 1")]})
    files = batch(store, 2)
    succeeded(mock, task_id, files)
    journal = Journal({"globus.part.0": {"submission_id": "noted", "deadline": time.time() + 600}})
    manager = GlobusManager(options(tmp_path, store), Adopter())
    outcomes = await manager.send(PEER, "b-51", files, journal, await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered(f.name) for f in files]
    [listing] = calls(mock, "GET", "/task_list")
    query = parse_qs(urlsplit(listing.request.url).query)
    assert query["filter"] == ["label:obsflow b-51 1 of 1/type:TRANSFER"]
    assert journal.notes["globus.part.0"]["task_id"] == task_id


async def test_files_of_a_succeeded_task_that_did_not_land_fail(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    files = batch(store, 5)
    # obs0000 transferred; obs0001 skipped for a source error; the other three neither listed nor counted as in sync.
    succeeded(mock, task_id, files[:1], subtasks_skipped_errors=1, files_skipped=0)
    register(mock, f"/task/{task_id}/skipped_errors", {"DATA_TYPE": "skipped_errors", "next_marker": None, "DATA": [
        {"DATA_TYPE": "skipped_error", "error_code": "FILE_NOT_FOUND", "error_details": "no such file",
         "source_path": "/~/obsflow/main/2026/obs0001.fits", "destination_path": "/landing/obs0001.fits"}]})
    adopt = Adopter()
    manager = GlobusManager(options(tmp_path, store), adopt)
    outcomes = await manager.send(PEER, "b-52", files, Journal(), await progress_into([]))
    await manager.close()
    assert outcomes[0] == Delivered("obs0000.fits")
    assert isinstance(outcomes[1], Failed) and "FILE_NOT_FOUND: no such file" in outcomes[1].reason
    for outcome in outcomes[2:]:
        assert isinstance(outcome, Failed) and "without listing it" in outcome.reason
    assert [name for _, name, _ in adopt.calls] == ["obs0000.fits"]


async def test_files_a_checksum_sync_found_in_place_are_adopted(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    files = batch(store, 4)
    succeeded(mock, task_id, files[:1], files_skipped=3)  # three were identical at the destination already
    adopt = Adopter()
    manager = GlobusManager(options(tmp_path, store), adopt)
    outcomes = await manager.send(PEER, "b-53", files, Journal(), await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered(f.name) for f in files]
    assert len(adopt.calls) == 4


async def test_a_confidential_app_gets_its_token_with_client_credentials(mock, tmp_path, store):
    token = load_response("auth.oauth2_client_credentials_tokens", requests_mock=mock).metadata["access_token"]
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    files = batch(store, 1)
    succeeded(mock, task_id, files)
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")
    opts = options(tmp_path, store, token_file=None, client_id="77777777-7777-4777-8777-777777777777",
                   client_secret_file=str(secret))
    manager = GlobusManager(opts, Adopter())
    assert await manager.send(PEER, "b-54", files, Journal(), await progress_into([])) == [Delivered(files[0].name)]
    await manager.close()
    [submit] = calls(mock, "POST", "/transfer")
    assert submit.request.headers["Authorization"] == f"Bearer {token}"


async def test_what_the_peers_ingest_says_of_a_landed_file_is_its_outcome(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    task_id = load_response("transfer.submit_transfer", requests_mock=mock).metadata["task_id"]
    files = batch(store, 3)
    succeeded(mock, task_id, files)
    adopt = Adopter(refuse={"obs0001.fits": "checksum_mismatch: the landed bytes are not the minted ones"})
    manager = GlobusManager(options(tmp_path, store), adopt)
    outcomes = await manager.send(PEER, "b-56", files, Journal(), await progress_into([]))
    await manager.close()
    assert outcomes == [Delivered("obs0000.fits"),
                        Failed("obs0001.fits", "checksum_mismatch: the landed bytes are not the minted ones", True),
                        Delivered("obs0002.fits")]


async def test_an_unknown_collection_is_refused_naming_the_setting(mock, tmp_path, store):
    load_response("transfer.get_submission_id", requests_mock=mock)
    register(mock, "/transfer", {"code": "EndpointNotFound", "message": f"No such endpoint '{THERE}'"},
             method="POST", status=404)
    manager = GlobusManager(options(tmp_path, store), Adopter())
    with pytest.raises(GlobusRefused, match=r"404 EndpointNotFound.*collection ids and paths in \[services"):
        await manager.send(PEER, "b-57", batch(store, 1), Journal(), await progress_into([]))
    await manager.close()


async def test_a_confidential_app_asks_globus_nothing_until_used_and_a_refused_secret_says_what_to_fix(
        mock, tmp_path, store):
    secret = tmp_path / "client-secret"
    secret.write_text("wrong\n")
    opts = options(tmp_path, store, token_file=None, client_id="77777777-7777-4777-8777-777777777777",
                   client_secret_file=str(secret))
    manager = GlobusManager(opts, Adopter())
    assert len(mock.calls) == 0  # built at start-up: no token fetched yet
    RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", status=401,
                       json={"error": "invalid_client"}).add(requests_mock=mock)
    with pytest.raises(GlobusRefused, match="401.*client_secret_file") as raised:
        await manager.send(PEER, "b-58", batch(store, 1), Journal(), await progress_into([]))
    await manager.close()
    assert "wrong" not in str(raised.value)


def test_the_documented_settings_are_valid_options():
    text = (Path(__file__).parents[2] / "docs" / "transfer-globus.md").read_text()
    config = tomllib.loads(text.split("```toml\n")[1].split("```")[0])
    parsed = globus_options(config["services"]["transfer"]["globus"])
    assert parsed.peers["karoo"].ingest_path == "/srv/obsflow/incoming/landing"
    assert parsed.path_map == {"/data/stores/main": "/obsflow/main"}
    assert PeerSettings.model_validate(config["peers"][0]).manager == "globus"


def test_options_refuse_what_cannot_work(tmp_path, store):
    with pytest.raises(ConfigurationError, match="client_id and client_secret_file .* or token_file"):
        options(tmp_path, store, token_file=None)
    with pytest.raises(ConfigurationError, match="client_id and client_secret_file .* or token_file"):
        options(tmp_path, store, client_id="77777777-7777-4777-8777-777777777777")  # and a token file
    with pytest.raises(ConfigurationError, match="absolute"):
        options(tmp_path, store, token_file="relative.token")
    with pytest.raises(ConfigurationError, match="batch_files"):
        options(tmp_path, store, batch_files=2000)
    with pytest.raises(ConfigurationError, match="batch_files"):
        options(tmp_path, store, batch_files=100)
    with pytest.raises(ConfigurationError, match="landing_path"):
        options(tmp_path, store, peers={"karoo": {"collection_id": THERE, "landing_path": "landing",
                                                  "ingest_path": "/data/landing"}})
    with pytest.raises(ConfigurationError, match="token_file .* cannot be read"):
        GlobusManager(options(tmp_path, store, token_file=str(tmp_path / "missing")), Adopter())


async def test_a_store_without_a_path_map_entry_or_an_unknown_peer_is_refused_before_anything_is_submitted(
        mock, tmp_path, store):
    other = tmp_path / "other"
    manager = GlobusManager(options(tmp_path, store), Adopter())
    with pytest.raises(ConfigurationError, match="path_map"):
        await manager.send(PEER, "b-55", batch(other, 1), Journal(), await progress_into([]))
    with pytest.raises(ConfigurationError, match="peers.elsewhere"):
        await manager.send(PeerSettings(name="elsewhere", manager="globus"), "b-55", batch(store, 1), Journal(),
                           await progress_into([]))
    await manager.close()
    assert len(mock.calls) == 0
