"""huggingface_hub's errors become ours in one place, each saying what to do, with no secret."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from instag_hf.errors import ConfigurationError, HubError
from instag_hf.hub_errors import hub_error

TOKEN = "hf_secret_in_a_message"


def http_error(cls: type[HfHubHTTPError], status: int, text: str = "") -> HfHubHTTPError:
    request = httpx2.Request("GET", "http://127.0.0.1:1/api/datasets/alice/data")
    response = httpx2.Response(status, request=request, json={"error": text or f"status {status}"})
    return cls(f"{status} Client Error {text}", response=response)


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (http_error(HfHubHTTPError, 401, f"bad token {TOKEN}"), HubError, "hf auth login"),
        (http_error(HfHubHTTPError, 403), HubError, "write token of 'alice'"),
        (http_error(HfHubHTTPError, 503), HubError, "Try again later"),
        (http_error(RepositoryNotFoundError, 404), ConfigurationError, "neither a local file"),
        (http_error(RevisionNotFoundError, 404), ConfigurationError, "has no revision 'v9'"),
        (httpx2.ConnectError(f"refused {TOKEN}"), HubError, "Cannot reach the Hub"),
    ],
)
def test_each_hub_error_is_ours_and_says_what_to_do(error, kind, words):
    ours = hub_error(error, "read 'alice/data'", repo_id="alice/data", revision="v9", secrets=[TOKEN])
    assert type(ours) is kind and words in str(ours) and TOKEN not in str(ours)
    assert ours.context["repo_id"] == "alice/data"


def test_a_push_to_a_missing_repo_is_the_hub_refusing_not_a_missing_source():
    ours = hub_error(
        http_error(RepositoryNotFoundError, 404), "push to alice/data", repo_id="alice/data", writing=True,
        then="Nothing was committed.",
    )  # fmt: skip
    assert isinstance(ours, HubError) and ours.context["status"] == 404
    assert str(ours).endswith("Nothing was committed.")
