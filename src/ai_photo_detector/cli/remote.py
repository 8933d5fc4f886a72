"""Commands against a running service, through the typed client: photos scored where the
prediction log, monitoring and the review queue live, jobs and feedback managed from a shell.

The key comes from ``--api-key-file``, else ``APD_API_KEY`` or the file ``APD_API_KEY_FILE``
names; never from the command line itself (it would sit in the shell's history).
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from ai_photo_detector.cli.common import KeyFileOption
from ai_photo_detector.client import AsyncClient, Client
from ai_photo_detector.client.base import read_key_file
from ai_photo_detector.client.errors import ServiceError
from ai_photo_detector.contract.schemas import ExplainResponse, Prediction
from ai_photo_detector.errors import InputError

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str, typer.Option("--url", envvar="APD_URL", help="The service's base URL (or APD_URL).")
]


def api_key(key_file: Path | None) -> str | None:
    if key_file is None:
        return None  # the client reads APD_API_KEY / APD_API_KEY_FILE itself
    try:
        return read_key_file(key_file) or ""  # an empty file: no key, as before
    except OSError as exc:
        raise InputError(f"{key_file}: {exc.strerror or exc}") from exc


def client_for(url: str, key_file: Path | None) -> Client:
    return Client(url, api_key(key_file))


def prediction_result(path: Path, answer: Prediction) -> dict[str, Any]:
    """A service answer in the shape the local ``predict`` prints, plus its id and model."""
    return {
        "path": str(path),
        "label": answer.label,
        "band": answer.band,
        "probability": round(answer.probability, 6),
        "scores": {k: round(v, 6) for k, v in answer.scores.items()},
        "reasons": list(answer.reasons),
        "evidence": answer.evidence.model_dump(mode="json"),
        "prediction_id": answer.prediction_id,
        "model": answer.model.model_dump(),
    }


def failure(path: Path, code: str, message: str) -> dict[str, Any]:
    return {"path": str(path), "error": {"code": code, "message": message}}


async def _score(client: AsyncClient, path: Path, bound: asyncio.Semaphore) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return failure(path, "unreadable", str(exc))
    async with bound:
        try:
            return prediction_result(path, await client.predict(data))
        except ServiceError as exc:  # one photo's failure; the others go on
            return failure(path, exc.code, exc.message)


async def scored_in_order(
    client: AsyncClient, paths: Iterable[Path], concurrency: int
) -> AsyncIterator[dict[str, Any]]:
    """Results in the order of ``paths``, with at most ``concurrency`` requests in flight.

    A few times more photos than that are read ahead, so one slow answer at the head does not
    leave the connections idle; memory stays bounded however many photos there are.
    """
    bound = asyncio.Semaphore(concurrency)
    window: deque[asyncio.Task[dict[str, Any]]] = deque()
    for path in paths:
        window.append(asyncio.create_task(_score(client, path, bound)))
        if len(window) >= concurrency * 4:
            yield await window.popleft()
    while window:
        yield await window.popleft()


def predict_remote(
    paths: list[Path],
    url: str,
    key_file: Path | None,
    concurrency: int,
    emit: Callable[[dict[str, Any]], None],
    advance: Callable[[int], None],
) -> None:
    async def run() -> None:
        limits = max(concurrency, 1)
        async with AsyncClient(url, api_key(key_file), max_connections=limits) as client:
            async for result in scored_in_order(client, paths, limits):
                emit(result)
                advance(1)

    asyncio.run(run())


def explain_remote(
    image: Path, url: str, key_file: Path | None, out: Path | None
) -> ExplainResponse:
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise InputError(f"{image}: {exc.strerror or exc}") from exc
    with client_for(url, key_file) as client:
        answer = client.explain(data, overlay=out is not None)
    if out is not None and answer.explanation.overlay_jpeg:
        out.write_bytes(base64.b64decode(answer.explanation.overlay_jpeg))
    return answer


# --- jobs and feedback, against the service -----------------------------------------------------

jobs_app = typer.Typer(no_args_is_help=True, help="Batch jobs on a running service.")


def _print_status(status: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(status.model_dump_json())
        return
    line = f"{status.id}\t{status.status}\t{status.done + status.failed}/{status.total}"
    if status.failed:
        line += f"\t({status.failed} failed)"
    if status.callback is not None:
        line += f"\twebhook {status.callback.status}, {len(status.callback.attempts)} attempt(s)"
    typer.echo(line)


def _archive_of(source: Path) -> bytes | Path:
    """An archive as it is, or a folder zipped in memory (its images, relative names)."""
    if not source.is_dir():
        if not source.is_file():
            raise InputError(f"{source}: no such file or folder")
        return source
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not shrink
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(source).as_posix())
    return buffer.getvalue()


@jobs_app.command("submit")
def jobs_submit(
    source: Annotated[
        Path,
        typer.Argument(help="An archive (zip, tar, tar.gz), a folder of photos, or a manifest."),
    ],
    manifest: Annotated[
        bool,
        typer.Option(help="SOURCE is a text file of paths under the server's storage roots."),
    ] = False,
    model: Annotated[str | None, typer.Option(help="Model name or role.")] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="POST a signed event here when the job is over.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Resubmitting with the same key returns the same job.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job, with a progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key_file: KeyFileOption = None,
) -> None:
    """Submit a job; prints its id and status (with --wait, once it is over)."""
    from ai_photo_detector.cli.common import progress_bars

    if manifest:
        try:
            body: bytes | Path | list[str] = [
                line.strip() for line in source.read_text().splitlines() if line.strip()
            ]
        except OSError as exc:
            raise InputError(f"{source}: {exc.strerror or exc}") from exc
    else:
        body = _archive_of(source)
    with client_for(url, api_key_file) as client:
        status = client.submit_job(body, model, callback_url, idempotency_key)
        if wait:
            with progress_bars() as progress:
                advance = progress(f"job {status.id}", status.total)
                seen = [0]

                def moved(current: Any) -> None:
                    processed = current.done + current.failed
                    advance(processed - seen[0])
                    seen[0] = processed

                status = client.wait_for_job(status.id, on_progress=moved)
    _print_status(status, as_json)


@jobs_app.command("status")
def jobs_status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key_file: KeyFileOption = None,
) -> None:
    """A job's status, counts and webhook deliveries."""
    with client_for(url, api_key_file) as client:
        _print_status(client.job(job_id), as_json)


@jobs_app.command("results")
def jobs_results(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: UrlOption = DEFAULT_URL,
    api_key_file: KeyFileOption = None,
) -> None:
    """Stream a job's rows as JSON lines (the rows written so far, while it runs)."""
    with client_for(url, api_key_file) as client:
        for row in client.iter_results(job_id):
            typer.echo(row.model_dump_json(exclude_none=True))


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    url: UrlOption = DEFAULT_URL,
    api_key_file: KeyFileOption = None,
) -> None:
    """Cancel a job: chunks not yet started are dropped; rows written so far stay."""
    with client_for(url, api_key_file) as client:
        _print_status(client.cancel_job(job_id), as_json=False)


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    url: UrlOption = DEFAULT_URL,
    api_key_file: KeyFileOption = None,
) -> None:
    """This key's jobs, newest first."""
    with client_for(url, api_key_file) as client:
        for status in client.jobs(limit).jobs:
            _print_status(status, as_json=False)


def feedback_send(
    prediction_id: Annotated[str, typer.Argument(help="From a prediction's answer.")],
    label: Annotated[str, typer.Argument(help="The verdict: a model label (ai or real).")],
    source: Annotated[str, typer.Option(help="Who reviewed.")] = "reviewer",
    url: UrlOption = DEFAULT_URL,
    api_key_file: KeyFileOption = None,
) -> None:
    """Send a reviewer's verdict on a prediction to the service (one per prediction and source)."""
    with client_for(url, api_key_file) as client:
        stored = client.feedback(prediction_id, label, source)
    state = "recorded" if stored.created else "updated" if stored.updated else "already recorded"
    typer.echo(
        f"{stored.prediction_id}\t{stored.label}\t{state}\t(model said {stored.predicted_label})"
    )
