"""push_to_hub and save, against the Hub-API emulator with the real, unmodified clients.

Every test pushes to its own repo of the session-wide emulator (`hub` in conftest.py) with
`hub_client` pointing huggingface_hub and datasets at it as alice (HF_TOKEN=hf_test_writer).
"""

from __future__ import annotations

import logging
import pickle

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import RepositoryNotFoundError

import instag_hf
from instag_hf.errors import CardError, HubError, OutputError
from instag_hf.normalization.normalizer import TagNormalizer
from tests.publishing.test_cards import DATE, tagged_pool

WRITER = "hf_test_writer"
LAYOUT = [
    "README.md",
    "data/train-00000-of-00001.parquet",
    "normalizer.json",
    "plots/tags_per_row.png",
    "plots/top_tags.png",
]


@pytest.fixture(scope="module")
def curated():
    """(pool, subset, normalizer, card) for a small tagged pool."""
    pool, normalizer = tagged_pool()
    subset = instag_hf.sample(pool, n=4, seed=7)
    card = instag_hf.build_card(subset, pool=pool, normalizer=normalizer, source="org/sft-pool", date=DATE)
    return pool, subset, normalizer, card


def repo_files(hub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    return {path: data for path, data in hub.files(repo_id, revision=revision).items() if path != ".gitattributes"}


def test_push_then_load_back_in_one_commit(hub_client, curated, tmp_path):
    hub, (_, subset, normalizer, card) = hub_client, curated
    info = instag_hf.push_to_hub(subset, "alice/roundtrip", card=card)

    commits = hub.commits("alice/roundtrip")
    assert [c["title"] for c in commits][1:] == ["initial commit"] and commits[0]["id"] == info.oid
    assert sorted(set(commits[0]["files"]) - {".gitattributes"}) == LAYOUT  # data, card, normalizer, plots
    back = load_dataset("alice/roundtrip", split="train")
    assert back.features == subset.features and back.to_list() == subset.to_list()

    remote = DatasetCard.load("alice/roundtrip", repo_type="dataset")
    assert "instag" in remote.data.tags and remote.text == card.text
    assert remote.data.configs == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert remote.data.dataset_info["splits"] == [{"name": "train", "num_bytes": pytest.approx(
        remote.data.dataset_info["dataset_size"]), "num_examples": 4}]  # fmt: skip
    files = repo_files(hub, "alice/roundtrip")
    assert files["plots/top_tags.png"] == card.plots["plots/top_tags.png"]
    (tmp_path / "normalizer.json").write_bytes(files["normalizer.json"])
    assert TagNormalizer.load(tmp_path / "normalizer.json").content_hash == normalizer.content_hash


def test_identical_push_makes_no_commit(hub_client, curated, caplog):
    hub, (pool, subset, normalizer, card) = hub_client, curated
    first = instag_hf.push_to_hub(subset, "alice/idempotent", card=card)
    # A card rebuilt from the same input is byte-identical (parquet, PNGs, normalizer JSON, README).
    again = instag_hf.build_card(subset, pool=pool, normalizer=normalizer, source="org/sft-pool", date=DATE)
    with caplog.at_level(logging.INFO):
        second = instag_hf.push_to_hub(subset, "alice/idempotent", card=again)
    assert second.oid == first.oid and len(hub.commits("alice/idempotent")) == 2
    assert "no commit was made" in caplog.text


def test_private_repo(hub_client, curated):
    _, subset, _, card = curated
    instag_hf.push_to_hub(subset, "alice/secret", card=card, private=True)
    assert HfApi().dataset_info("alice/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token="hf_test_bob").dataset_info("alice/secret")
    assert len(load_dataset("alice/secret", split="train")) == 4  # alice's token reads it


def test_create_pr_leaves_main_alone(hub_client, curated):
    hub, (pool, subset, normalizer, card) = hub_client, curated
    instag_hf.push_to_hub(subset, "alice/reviewed", card=card)
    main_before = hub.refs("alice/reviewed")["refs/heads/main"]
    bigger = instag_hf.sample(pool, n=6, seed=7)
    info = instag_hf.push_to_hub(bigger, "alice/reviewed", normalizer=normalizer, create_pr=True)

    refs = hub.refs("alice/reviewed")
    assert refs["refs/heads/main"] == main_before and refs["refs/pr/1"] == info.oid
    assert info.pr_revision == "refs/pr/1"
    assert len(load_dataset("alice/reviewed", split="train", revision="refs/pr/1")) == 6
    assert len(load_dataset("alice/reviewed", split="train")) == 4


def test_merges_with_the_yaml_datasets_wrote(hub_client, curated):
    _, subset, _, card = curated
    held_out = subset.select([0, 1])
    held_out.push_to_hub("alice/merged", split="test")  # datasets writes configs + dataset_info
    readme = DatasetCard.load("alice/merged", repo_type="dataset")
    readme.data["language"] = ["en"]  # a key the owner added by hand
    readme.push_to_hub("alice/merged", repo_type="dataset")

    instag_hf.push_to_hub(subset, "alice/merged", card=card)
    merged = DatasetCard.load("alice/merged", repo_type="dataset").data
    assert merged.language == ["en"] and "instag" in merged.tags
    assert merged.configs == [{"config_name": "default", "data_files": [
        {"split": "test", "path": "data/test-*"}, {"split": "train", "path": "data/train-*"}]}]  # fmt: skip
    assert {s["name"]: s["num_examples"] for s in merged.dataset_info["splits"]} == {"test": 2, "train": 4}
    assert load_dataset("alice/merged", split="test").to_list() == held_out.to_list()
    assert load_dataset("alice/merged", split="train").to_list() == subset.to_list()


def test_stale_shards_are_deleted_in_the_same_commit(hub_client, curated):
    hub, (_, subset, _, card) = hub_client, curated
    instag_hf.push_to_hub(subset, "alice/reshard", card=card, max_shard_size=100)
    sharded = [p for p in repo_files(hub, "alice/reshard") if p.startswith("data/")]
    assert len(sharded) > 1 and all(p.endswith(f"-of-{len(sharded):05d}.parquet") for p in sharded)

    instag_hf.push_to_hub(subset, "alice/reshard", card=card)
    assert sorted(repo_files(hub, "alice/reshard")) == LAYOUT
    assert len(load_dataset("alice/reshard", split="train")) == 4


def test_a_folder_that_cannot_be_written_is_an_output_error_not_a_hub_error(curated, tmp_path):
    _, subset, _, card = curated
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="Cannot write the subset to") as caught:
        instag_hf.save(subset, blocker / "out", card=card)
    assert isinstance(caught.value, OSError) and not isinstance(caught.value, HubError)


def test_save_writes_the_repo_layout(hub_client, curated, tmp_path):
    hub, (_, subset, normalizer, card) = hub_client, curated
    folder = instag_hf.save(subset, tmp_path / "out", card=card)
    local = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    instag_hf.push_to_hub(subset, "alice/same-layout", card=card)
    assert local == repo_files(hub, "alice/same-layout")  # same paths, same bytes
    back = load_dataset(str(folder), split="train")
    assert back.features == subset.features and back.to_list() == subset.to_list()
    assert TagNormalizer.load(folder / "normalizer.json").content_hash == normalizer.content_hash

    instag_hf.save(subset, folder, card=card)  # again: identical, nothing left over
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == local


def test_push_without_a_card_builds_one(hub_client, curated):
    hub, (_, subset, normalizer, _) = hub_client, curated
    instag_hf.push_to_hub(subset, "alice/no-card", normalizer=normalizer)
    assert sorted(repo_files(hub, "alice/no-card")) == LAYOUT
    other = TagNormalizer(min_frequency=1, semantic_aggregation=False, rule_aggregation=False)
    other.fit(tagged_pool()[0])
    with pytest.raises(CardError, match="another normalizer"):
        instag_hf.push_to_hub(subset, "alice/no-card", card=curated[3], normalizer=other)


# --------------------------------------------------------------------------- failures


def assert_secret_kept(error: BaseException, token: str, *texts: str) -> None:
    chain, seen = [], error
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    assert all(token not in str(e) and token not in repr(e) for e in chain)
    assert token.encode() not in pickle.dumps(error)
    assert pickle.loads(pickle.dumps(error)).args == error.args  # crosses worker processes intact
    assert all(token not in text for text in texts)


@pytest.mark.parametrize(
    ("token", "status", "advice"),
    [
        ("hf_not_a_real_token_4242", 401, "hf auth login"),  # unknown token
        ("hf_test_reader", 403, "write token"),  # read-only token
        ("hf_test_bob", 403, "write token of 'alice'"),  # another user's namespace
    ],
)
def test_refused_tokens(hub_client, curated, caplog, token, status, advice):
    hub, (_, subset, _, card) = hub_client, curated
    with caplog.at_level(logging.DEBUG), pytest.raises(HubError) as caught:
        instag_hf.push_to_hub(subset, "alice/refused", card=card, token=token)
    assert f"({status}:" in str(caught.value) and advice in str(caught.value)
    assert "Nothing was committed" in str(caught.value) and caught.value.context["status"] == status
    assert_secret_kept(caught.value, token, str(card), caplog.text)
    assert "alice/refused" not in {r["id"] for r in hub.repos()}


def test_environment_token_is_kept_out_of_errors_too(hub_client, curated, caplog):
    _, subset, _, card = curated
    hub_client.set_faults(reject_commits=1, status=500, message=f"server echoed {WRITER}")
    with caplog.at_level(logging.DEBUG, logger="instag_hf"), pytest.raises(HubError) as caught:
        instag_hf.push_to_hub(subset, "alice/echo", card=card)  # token from HF_TOKEN
    assert "server echoed ***" in str(caught.value)
    # httpcore's own debug log shows the echoing response header; ours never holds the token.
    assert_secret_kept(caught.value, WRITER, str(card), caplog.text)


@pytest.mark.parametrize("repo_id", ["spaces/alice/app", "models/alice/model"])
def test_repo_of_another_type(hub_client, curated, repo_id):
    _, subset, _, card = curated
    sent = len(hub_client.requests())
    with pytest.raises(HubError, match="dataset repo") as caught:
        instag_hf.push_to_hub(subset, repo_id, card=card)
    assert f"'alice/{repo_id.rsplit('/', 1)[1]}'" in str(caught.value)  # says which id to pass instead
    assert len(hub_client.requests()) == sent  # refused before anything was sent


def test_dataset_prefix_and_url_are_accepted(hub_client, curated):
    _, subset, _, card = curated
    info = instag_hf.push_to_hub(subset, f"{hub_client.url}/datasets/alice/by-url", card=card)
    assert info.repo_url.repo_id == "alice/by-url"
    with pytest.raises(HubError, match="user/name"):
        instag_hf.push_to_hub(subset, "no-namespace", card=card)


def test_server_down(hub_client, curated):
    _, subset, _, card = curated
    hub_client.set_faults(down=True)
    with pytest.raises(HubError, match="503") as caught:
        instag_hf.push_to_hub(subset, "alice/down", card=card)
    assert "Try again later" in str(caught.value)
    hub_client.set_faults()
    assert "alice/down" not in {r["id"] for r in hub_client.repos()}


def test_rejected_commit_leaves_the_repo_as_it_was(hub_client, curated):
    hub, (pool, subset, normalizer, card) = hub_client, curated
    instag_hf.push_to_hub(subset, "alice/rejected", card=card)
    before_commits, before_files = hub.commits("alice/rejected"), repo_files(hub, "alice/rejected")

    hub.set_faults(reject_commits=1, status=500, message="storage exploded")
    bigger = instag_hf.sample(pool, n=6, seed=7)
    with pytest.raises(HubError, match="storage exploded") as caught:
        instag_hf.push_to_hub(bigger, "alice/rejected", normalizer=normalizer)
    assert "unchanged" in str(caught.value)
    assert hub.commits("alice/rejected") == before_commits and repo_files(hub, "alice/rejected") == before_files
    assert len(load_dataset("alice/rejected", split="train")) == 4


def test_extra_files_go_in_the_same_commit_and_cannot_replace_the_subset(hub_client, curated, tmp_path):
    # A refresh's state travels with the data it describes: one commit, or none.
    hub, (_, subset, _, card) = hub_client, curated
    instag_hf.push_to_hub(subset, "alice/extra-files", card=card, extra_files={"instag_state.json": b"{}"})
    commits = hub.commits("alice/extra-files")
    assert len(commits) == 2  # the new repo's initial commit, then ours with everything
    assert {"instag_state.json", "README.md"} <= set(hub.files("alice/extra-files"))
    folder = instag_hf.save(subset, tmp_path / "out", card=card, extra_files={"instag_state.json": b"{}"})
    assert (folder / "instag_state.json").read_bytes() == b"{}"
    with pytest.raises(HubError, match="would replace"):
        instag_hf.save(subset, tmp_path / "bad", card=card, extra_files={"README.md": b"oops"})


def test_a_readme_whose_yaml_datasets_cannot_read_is_a_hub_error_naming_it(hub_client, curated, tmp_path):
    hub, (_, subset, _, card) = hub_client, curated
    HfApi().create_repo("alice/bad-configs", repo_type="dataset")
    HfApi().upload_file(
        path_or_fileobj=b"---\nconfigs: 5\n---\nhand-written\n",
        path_in_repo="README.md",
        repo_id="alice/bad-configs",
        repo_type="dataset",
    )
    before = hub.commits("alice/bad-configs")
    with pytest.raises(HubError, match=r"README\.md of alice/bad-configs.*configs") as caught:
        instag_hf.push_to_hub(subset, "alice/bad-configs", card=card)
    assert "fix" in str(caught.value) and hub.commits("alice/bad-configs") == before
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("---\nconfigs: 5\n---\n", encoding="utf-8")
    with pytest.raises(HubError, match=r"README\.md.*configs"):
        instag_hf.save(subset, tmp_path / "out", card=card)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["README.md"]  # nothing written beside it


def test_disabled_progress_bars_silence_the_upload_bars_too(hub_client, curated, capfd):
    import datasets

    _, subset, _, card = curated
    capfd.readouterr()
    datasets.disable_progress_bars()
    try:
        instag_hf.push_to_hub(subset, "alice/quiet", card=card)
    finally:
        datasets.enable_progress_bars()
    err = capfd.readouterr().err
    assert "Upload" not in err and "%|" not in err, err
    from huggingface_hub.utils import are_progress_bars_disabled

    assert not are_progress_bars_disabled()  # huggingface_hub's own switch is left as it was
