"""The Hub emulator, exercised only through the real `huggingface_hub` and `datasets` clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from datasets import Dataset, load_dataset
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.servers.hub_emulator import client_environment, start_hub_emulator

WRITER, OTHER, READER = "hf_test_writer", "hf_test_bob", "hf_test_reader"
TOKENS = {WRITER: "alice", OTHER: "bob", READER: {"user": "alice", "role": "read"}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with start_hub_emulator(tmp_path_factory.mktemp("hub"), tokens=TOKENS, orgs={"curators": ["alice"]}) as hub:
        yield hub


@pytest.fixture
def api(hub, tmp_path):
    """An HfApi for alice, with both libraries pointed at the emulator and caching under tmp_path."""
    with client_environment(hub.url, tmp_path / "hf_home", token=WRITER):
        yield HfApi(token=WRITER)
    hub.set_faults()


def test_create_repo_types_private_and_exist_ok(hub, api):
    url = api.create_repo("alice/basics", repo_type="dataset")
    assert url.repo_id == "alice/basics" and url.repo_type == "dataset"
    assert api.create_repo("alice/basics", repo_type="dataset", exist_ok=True).repo_id == "alice/basics"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("alice/basics", repo_type="dataset")
    assert conflict.value.response.status_code == 409
    api.create_repo("alice/basics", repo_type="model")  # same name, other type: another repo
    api.create_repo("curators/shared", repo_type="space", space_sdk="static")

    info = api.dataset_info("alice/basics")
    assert info.private is False and len(info.sha) == 40 and info.last_modified is not None
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert api.list_repo_commits("alice/basics", repo_type="dataset")[0].title == "initial commit"
    assert {r["id"] for r in hub.repos()} >= {"alice/basics", "curators/shared"}

    api.create_repo("alice/secret", repo_type="dataset", private=True)
    assert api.dataset_info("alice/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=OTHER).dataset_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).dataset_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=OTHER).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/secret", repo_type="dataset"
        )
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/secret")  # a dataset asked for as a model

    api.delete_repo("alice/secret", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("alice/secret")


def test_regular_and_lfs_files_round_trip(hub, api):
    repo = "alice/files"
    api.create_repo(repo, repo_type="dataset")
    weights = bytes(range(256)) * 64
    info = api.create_commit(
        repo,
        repo_type="dataset",
        operations=[
            CommitOperationAdd("notes/readme.txt", b"plain text"),
            CommitOperationAdd("weights.bin", weights),
        ],
        commit_message="Add two files",
    )
    assert hub.commits(repo)[0]["id"] == info.oid and hub.commits(repo)[0]["title"] == "Add two files"
    assert hub.files(repo) | {".gitattributes": b""} == {
        ".gitattributes": b"",
        "notes/readme.txt": b"plain text",
        "weights.bin": weights,
    }

    entries = {e.path: e for e in api.list_repo_tree(repo, repo_type="dataset", recursive=True)}
    assert entries["weights.bin"].lfs.size == len(weights) and entries["notes/readme.txt"].lfs is None
    assert "notes" in entries and not hasattr(entries["notes"], "size")
    expanded = api.get_paths_info(repo, ["weights.bin", "notes"], repo_type="dataset", expand=True)
    assert [e.last_commit.oid for e in expanded] == [info.oid, info.oid]
    siblings = {s.rfilename: s for s in api.dataset_info(repo, files_metadata=True).siblings}
    assert siblings["weights.bin"].lfs.sha256 == entries["weights.bin"].lfs.sha256

    with open(hf_hub_download(repo, "weights.bin", repo_type="dataset"), "rb") as f:
        assert f.read() == weights
    with open(hf_hub_download(repo, "notes/readme.txt", repo_type="dataset", revision=info.oid), "rb") as f:
        assert f.read() == b"plain text"
    statuses = {(r["method"], r["path"].split("?")[0]): r["status"] for r in hub.requests()}
    assert statuses[("HEAD", f"/datasets/{repo}/resolve/main/weights.bin")] == 302  # LFS: redirect to "CDN"
    assert statuses[("HEAD", f"/datasets/{repo}/resolve/{info.oid}/notes/readme.txt")] == 200

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt", repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, "weights.bin", repo_type="dataset", revision="no-such-branch")

    api.create_commit(repo, repo_type="dataset", operations=[CommitOperationDelete("notes/")], commit_message="rm")
    assert set(api.list_repo_files(repo, repo_type="dataset")) == {".gitattributes", "weights.bin"}


def test_upload_folder_twice_makes_one_commit(hub, api, tmp_path):
    repo = "alice/folder"
    api.create_repo(repo, repo_type="dataset")
    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# Folder\n")
    first = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=folder)
    commits = hub.commits(repo)

    # Identical content: preupload returns each file's oid, the client drops every file and makes no commit.
    second = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=folder)
    again = api.create_commit(
        repo,
        repo_type="dataset",
        operations=[CommitOperationAdd("README.md", folder / "README.md")],
        commit_message="x",
    )
    assert second.oid == again.oid == first.oid and hub.commits(repo) == commits
    assert api.dataset_info(repo).card_data.license == "mit"
    assert DatasetCard.load(repo).data.license == "mit"


def test_push_to_hub_then_load_dataset(hub, api):
    repo = "alice/pushed"
    ds = Dataset.from_dict({"instruction": ["a", "b", "c"], "n": [1, 2, 3]})
    ds.push_to_hub(repo)
    paths = set(hub.files(repo))
    assert "README.md" in paths and any(p.startswith("data/train-") and p.endswith(".parquet") for p in paths)
    assert load_dataset(repo, split="train").to_dict() == ds.to_dict()

    card = DatasetCard.load(repo)
    assert card.data.configs[0]["config_name"] == "default" and card.data.dataset_info["splits"][0]["num_examples"] == 3

    commits = hub.commits(repo)
    ds.push_to_hub(repo)  # identical data and card: no new commit
    assert hub.commits(repo) == commits

    smaller = ds.select([0])
    smaller.push_to_hub(repo, revision="v2")
    assert load_dataset(repo, split="train", revision="v2").to_dict() == smaller.to_dict()
    assert load_dataset(repo, split="train").to_dict() == ds.to_dict()

    # A card pushed afterwards replaces the README that push_to_hub wrote, YAML included.
    DatasetCard("---\nlicense: mit\n---\n# Hand-written\n").push_to_hub(repo)
    assert "configs" not in hub.files(repo)["README.md"].decode()


def test_create_pr_and_parent_commit(hub, api):
    repo = "alice/prs"
    api.create_repo(repo, repo_type="dataset")
    head = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=repo, repo_type="dataset").oid

    pr = api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=repo, repo_type="dataset", create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    assert hub.refs(repo)["refs/heads/main"] == head and hub.refs(repo)["refs/pr/1"] == pr.oid
    assert hub.files(repo, revision="refs/pr/1")["f.txt"] == b"v2" and hub.files(repo)["f.txt"] == b"v1"
    refs = api.list_repo_refs(repo, repo_type="dataset", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]
    with open(hf_hub_download(repo, "f.txt", repo_type="dataset", revision="refs/pr/1"), "rb") as f:
        assert f.read() == b"v2"

    with pytest.raises(HfHubHTTPError) as stale:
        api.upload_file(
            path_or_fileobj=b"v3", path_in_repo="f.txt", repo_id=repo, repo_type="dataset", parent_commit="0" * 40
        )
    assert stale.value.response.status_code == 412
    assert hub.refs(repo)["refs/heads/main"] == head


def test_tokens(hub, api):
    api.create_repo("alice/auth", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as bad:
        HfApi(token="hf_not_a_token").upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/auth", repo_type="dataset"
        )
    assert bad.value.response.status_code == 401 and "Invalid credentials" in str(bad.value)
    with pytest.raises(HfHubHTTPError):
        HfApi(token="hf_not_a_token").whoami()
    with pytest.raises(HfHubHTTPError) as read_only:
        HfApi(token=READER).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/auth", repo_type="dataset"
        )
    assert read_only.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as not_yours:
        HfApi(token=OTHER).create_repo("alice/bobs", repo_type="dataset")
    assert not_yours.value.response.status_code == 403
    assert api.whoami()["name"] == "alice" and HfApi(token=READER).dataset_info("alice/auth").id == "alice/auth"


def test_rejected_commit_leaves_no_trace(hub, api):
    repo = "alice/rejected"
    api.create_repo(repo, repo_type="dataset")
    before = hub.commits(repo)
    hub.set_faults(reject_commits=1, status=500, message="storage backend exploded")
    with pytest.raises(HfHubHTTPError) as rejected:
        api.create_commit(
            repo,
            repo_type="dataset",
            operations=[CommitOperationAdd("a.txt", b"a"), CommitOperationAdd("b.bin", b"\0" * 10)],
            commit_message="doomed",
        )
    assert rejected.value.response.status_code == 500 and "storage backend exploded" in str(rejected.value)
    assert hub.commits(repo) == before and set(hub.files(repo)) == {".gitattributes"}
    api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=repo, repo_type="dataset")
    assert len(hub.commits(repo)) == len(before) + 1


def test_server_down(hub, api):
    api.create_repo("alice/down", repo_type="dataset")
    hub.set_faults(down=True)
    with pytest.raises(HfHubHTTPError) as down:
        api.dataset_info("alice/down")
    assert down.value.response.status_code == 503
    with pytest.raises(HfHubHTTPError):
        api.create_repo("alice/down2", repo_type="dataset")
    hub.set_faults()
    assert api.dataset_info("alice/down").id == "alice/down"


def test_model_repo_snapshot_and_filesystem(hub, api, tmp_path):
    repo = "alice/model"
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=b'{"a": 1}', path_in_repo="config.json", repo_id=repo)
    api.upload_file(path_or_fileobj=b"\0" * 2048, path_in_repo="model.safetensors", repo_id=repo)
    local = snapshot_download(repo, local_dir=tmp_path / "snap")
    assert (tmp_path / "snap" / "config.json").read_bytes() == b'{"a": 1}'
    assert os.path.getsize(os.path.join(local, "model.safetensors")) == 2048

    fs = HfFileSystem(skip_instance_cache=True)
    assert sorted(fs.ls(repo, detail=False)) == [
        f"{repo}/.gitattributes",
        f"{repo}/config.json",
        f"{repo}/model.safetensors",
    ]
    with fs.open(f"{repo}/model.safetensors", "rb") as f:
        f.seek(1000)
        assert f.read(10) == b"\0" * 10
    assert json.loads(fs.read_text(f"{repo}/config.json")) == {"a": 1}


def test_listing_pagination(tmp_path):
    with (
        start_hub_emulator(tmp_path / "hub", tokens=TOKENS, page_size=3) as hub,
        client_environment(hub.url, tmp_path / "hf_home"),
    ):
        api = HfApi(token=WRITER)
        api.create_repo("alice/many", repo_type="dataset")
        for i in range(4):
            ops = [CommitOperationAdd(f"dir/f{j}.txt", f"{i}-{j}".encode()) for j in range(7)]
            api.create_commit("alice/many", repo_type="dataset", operations=ops, commit_message=f"c{i}")
        assert len(api.list_repo_files("alice/many", repo_type="dataset")) == 8
        assert len(api.list_repo_commits("alice/many", repo_type="dataset")) == 5
        assert any("cursor=" in r["path"] for r in hub.requests())


def test_client_in_a_subprocess_shares_the_emulator(hub, api, tmp_path):
    script = textwrap.dedent(
        """
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("alice/from-cli", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"hi", path_in_repo="hi.txt", repo_id="alice/from-cli", repo_type="dataset")
        print(api.whoami()["name"])
        """
    )
    env = {**os.environ, **hub.env(tmp_path / "child_home", token=WRITER)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alice"
    assert hub.files("alice/from-cli")["hi.txt"] == b"hi"


def test_command_line_server(tmp_path):
    command = [sys.executable, "-m", "tests.servers.hub_emulator", "--port", "0", "--storage", str(tmp_path)]
    command += ["--token", "hf_cli=carol:read"]
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, text=True) as server:
        try:
            ready, url = server.stdout.readline().split()
            assert ready == "READY" and url.startswith("http://127.0.0.1:")
            request = urllib.request.Request(f"{url}/api/whoami-v2", headers={"Authorization": "Bearer hf_cli"})
            with urllib.request.urlopen(request, timeout=30) as response:
                me = json.loads(response.read())
            assert me["name"] == "carol" and me["auth"]["accessToken"]["role"] == "read"
        finally:
            server.terminate()
