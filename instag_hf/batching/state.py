"""The small state file next to the requests: which batch runs which requests file.

``requests.jsonl`` (the name given to prepare) keeps its state in ``requests.batches.json``:
the Batch API's base URL and, per requests file, its sha256, the uploaded file's id, the
batch id, the last status seen, its request counts, and the result files downloaded. It is
written after every call that learns something (atomically: a new file, then a rename), so
a session that ends at any point leaves ids a new session finds again. No key is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instag_hf.errors import BatchError, OutputError

#: Statuses after which a batch changes no more (OpenAI's Batch object).
FINAL_STATUSES = ("completed", "expired", "cancelled", "failed")


@dataclass
class BatchJob:
    """One requests file and the batch that runs it.

    Attributes:
        file: The requests file's name (in the state file's folder).
        sha256: Of its content when submitted; a file prepared again is another job.
        input_file_id: The uploaded file (kept, so a failed batch creation reuses it).
        batch_id: The batch, once created.
        status: Its last status seen (``validating`` ... ``completed``, ``expired``).
        request_counts: ``{total, completed, failed}`` as last seen.
        output_file_id, error_file_id: Its results, once there.
        results: Result files downloaded (names in the state file's folder).
    """

    file: str
    sha256: str
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: list[str] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def describe(self) -> str:
        counts = self.request_counts
        done = (
            f" ({counts.get('completed', 0):,} of {counts.get('total', 0):,} done, {counts.get('failed', 0):,} failed)"
            if counts
            else ""
        )
        return f"{self.file}: batch {self.batch_id or '(not created)'} {self.status or 'not submitted'}{done}"


@dataclass
class BatchState:
    """Every batch of one set of requests files.

    Attributes:
        path: The state file.
        endpoint: The Batch API's base URL the batches were submitted to.
        jobs: One per requests file submitted, in submission order.
    """

    path: Path
    endpoint: str | None = None
    jobs: list[BatchJob] = field(default_factory=list)

    @classmethod
    def load(cls, requests: str | os.PathLike[str]) -> BatchState:
        """The state of the requests named ``requests`` (empty when none was saved).

        Raises:
            BatchError: The file is there but unreadable.
        """
        path = state_path(requests)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data.get("endpoint"), [BatchJob(**job) for job in data.get("jobs", [])])
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise BatchError(
                f"The batch state file {str(path)!r} is unreadable ({error}): restore it, or delete it to "
                "submit the requests again (the batches it named keep running at the API)"
            ) from error

    def save(self) -> None:
        """Write the file (atomically).

        Raises:
            OutputError: It cannot be written.
        """
        data: dict[str, Any] = {"endpoint": self.endpoint, "jobs": [asdict(job) for job in self.jobs]}
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            partial.replace(self.path)
        except OSError as error:
            raise OutputError(f"Cannot write the batch state file {str(self.path)!r}: {error}") from error

    def job_for(self, requests_file: Path) -> BatchJob:
        """The job of this requests file as it is now, added when new."""
        digest = file_sha256(requests_file)
        for job in self.jobs:
            if job.file == requests_file.name and job.sha256 == digest:
                return job
        job = BatchJob(file=requests_file.name, sha256=digest)
        self.jobs.append(job)
        return job

    def describe(self) -> str:
        """One line per batch."""
        if not self.jobs:
            return f"No batch submitted yet ({self.path} does not name any)."
        return "\n".join(job.describe() for job in self.jobs)


def state_path(requests: str | os.PathLike[str]) -> Path:
    """``requests.jsonl`` -> ``requests.batches.json``."""
    path = Path(requests)
    return path.with_name(f"{path.stem}.batches.json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
