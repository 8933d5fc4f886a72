"""/v1/jobs: batches scored off the request path (archives or manifests), polled, streamed
back as JSON lines, CSV or Parquet, cancelled."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from ai_photo_detector.batch.manifests import parse_manifest
from ai_photo_detector.batch.results import (
    FORMATS,
    csv_chunks,
    jsonl_chunks,
    parquet_available,
    write_parquet,
)
from ai_photo_detector.batch.service import JobService, Submission, Submitter
from ai_photo_detector.contract.schemas import (
    JobList,
    JobStatus,
)
from ai_photo_detector.errors import JobsUnavailable, ShuttingDown
from ai_photo_detector.serving.api.auth import JobsCaller, Principal
from ai_photo_detector.serving.api.body import body_chunks, read_limited
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)
from ai_photo_detector.serving.api.state import Services

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ARCHIVE_TYPES = (
    "application/zip",
    "application/x-zip-compressed",
    "application/x-tar",
    "application/gzip",
    "application/x-gzip",
    "application/x-gtar",
    "application/octet-stream",
)
MANIFEST_TYPES = ("application/json", "text/plain")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"paths": {"type": "array", "items": {"type": "string"}}},
                    "required": ["paths"],
                }
            },
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


def job_service(services: Services) -> JobService:
    if services.jobs is None:
        raise JobsUnavailable("batch jobs are turned off on this server (jobs.enabled)")
    return services.jobs


def submitter_of(principal: Principal) -> Submitter:
    return Submitter(principal.key_id or "", "admin" in principal.scopes)


async def _spool_body(request: Request, path: Path, limit: int, timeout_s: float) -> str:
    """Stream the body to ``path`` under the size and time limits; returns its SHA-256."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the archive exceeds {limit} bytes")
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        async for chunk in body_chunks(request, timeout_s):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"the archive exceeds {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise ApiError(400, "empty_body", "the request body is empty")
    return digest.hexdigest()


def _asked(model_name: str, callback_url: str | None) -> bytes:
    """What besides the body an idempotency key's replay must repeat."""
    return f"\0{model_name}".encode() + (f"\0{callback_url}".encode() if callback_url else b"")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 128:
        raise ApiError(400, "bad_idempotency_key", "Idempotency-Key must be 1 to 128 characters")
    return key


@router.post(
    "",
    status_code=202,
    response_model=JobStatus,
    summary="Submit a batch job",
    description="An archive of images as the raw body (zip, tar or tar.gz), or a manifest of "
    'paths under the configured storage roots (`{"paths": [...]}` as JSON, or one path per '
    "line as text). Answers at once: 202 with the job and its Location. A repeated "
    "`Idempotency-Key` with the same body returns the first job (200).",
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra=_SUBMIT_BODY,
)
async def submit(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: JobsCaller,
    model: str | None = Query(
        None, max_length=128, description="Model name, name@version or role (default: champion)."
    ),
    callback_url: str | None = Query(
        None,
        max_length=2048,
        description="Where to POST a signed event when the job is over (see webhooks).",
    ),
) -> JobStatus:
    jobs = job_service(services)
    if services.draining:
        raise ShuttingDown("the server is shutting down")
    # What the job asked for, resolved when each chunk is worked: the champion by default, so
    # a catalogue re-scored after a promotion is scored by the new one.
    services.models.get(model)  # ModelNotFound before the body is read
    model_name = model or "champion"
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    key = _idempotency_key(request)
    submitter = submitter_of(principal)
    settings = services.settings
    if content_type in MANIFEST_TYPES:
        server = settings.server
        body = await read_limited(
            request, MAX_MANIFEST_BYTES, server.max_discard_bytes, server.body_timeout_s
        )
        digest = hashlib.sha256(body + _asked(model_name, callback_url)).hexdigest()
        submission = Submission(submitter, key, digest, model_name, callback_url)
        paths = parse_manifest(body, settings.jobs.max_images_per_job)
        job, created = await asyncio.to_thread(jobs.submit_manifest, submission, paths)
    elif content_type in ARCHIVE_TYPES or not content_type:
        upload = jobs.new_spool_path()
        try:
            jobs_settings = settings.jobs
            digest = await _spool_body(
                request, upload, jobs_settings.max_archive_bytes, jobs_settings.upload_timeout_s
            )
        except BaseException:
            upload.unlink(missing_ok=True)
            raise
        digest = hashlib.sha256(digest.encode() + _asked(model_name, callback_url)).hexdigest()
        submission = Submission(submitter, key, digest, model_name, callback_url)
        job, created = await asyncio.to_thread(jobs.submit_archive, submission, upload)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send an archive (application/zip, application/x-tar, application/gzip) or a "
            "manifest (application/json, text/plain)",
        )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return await asyncio.to_thread(jobs.status, job)


@router.get(
    "",
    response_model=JobList,
    summary="List jobs",
    description="This key's jobs, newest first (an admin key sees every key's).",
    responses=error_responses(401, 403, 422, 429, 503),
)
async def list_jobs(
    services: ServicesDep,
    principal: JobsCaller,
    limit: int = Query(50, ge=1, le=500),
) -> JobList:
    jobs = job_service(services)
    found = await asyncio.to_thread(jobs.newest, submitter_of(principal), limit)
    return JobList(jobs=await asyncio.to_thread(lambda: [jobs.status(job) for job in found]))


@router.get(
    "/{job_id}",
    response_model=JobStatus,
    summary="A job's status",
    description="Status, counts done / failed / total, images per second and an ETA.",
    responses=error_responses(401, 403, 404, 422, 429, 503),
)
async def get_job(job_id: str, services: ServicesDep, principal: JobsCaller) -> JobStatus:
    jobs = job_service(services)
    job = await asyncio.to_thread(jobs.get, job_id, submitter_of(principal))
    return await asyncio.to_thread(jobs.status, job)


@router.delete(
    "/{job_id}",
    response_model=JobStatus,
    summary="Cancel a job",
    description="Chunks not yet started are dropped; results written so far stay readable.",
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
)
async def cancel_job(job_id: str, services: ServicesDep, principal: JobsCaller) -> JobStatus:
    jobs = job_service(services)
    job = await asyncio.to_thread(jobs.cancel, job_id, submitter_of(principal))
    return await asyncio.to_thread(jobs.status, job)


async def _pages_off_loop(pages: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Database reads for each page run on a thread, never on the event loop."""
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, pages, done)
        if chunk is done:
            return
        yield chunk  # type: ignore[misc]


def _results_format(request: Request, format: str | None) -> str:
    if format is None:
        accept = request.headers.get("accept", "")
        format = next((f for f, t in FORMATS.items() if t.split(";")[0] in accept), "jsonl")
    if format not in FORMATS:
        raise ApiError(422, "invalid_request", "format must be jsonl, csv or parquet")
    if format == "parquet" and not parquet_available():
        raise ApiError(406, "format_unavailable", "Parquet needs pyarrow, not installed here")
    return format


@router.get(
    "/{job_id}/results",
    summary="A job's results",
    description="One row per image in item order: the fields of /v1/predict, or an error. "
    "`format` (or the Accept header): jsonl (default), csv or parquet. Rows written so far "
    "while the job runs; all of them once it is done.",
    responses={
        200: {"content": {t: {} for t in FORMATS.values()}, "description": "The rows."},
        **error_responses(401, 403, 404, 406, 422, 429, 503),
    },
)
async def job_results(
    request: Request,
    job_id: str,
    services: ServicesDep,
    principal: JobsCaller,
    format: str | None = Query(None, description="jsonl, csv or parquet."),
) -> Response:
    jobs = job_service(services)
    chosen = _results_format(request, format)
    job = await asyncio.to_thread(jobs.get, job_id, submitter_of(principal))
    headers = {
        "Cache-Control": "no-store",
        "X-Job-Status": job.status,
        "Content-Disposition": f'attachment; filename="{job.id}.{chosen}"',
    }
    if chosen == "parquet":  # a footer at the end: written to a file, then sent
        handle = tempfile.NamedTemporaryFile(suffix=".parquet", delete=False)  # noqa: SIM115
        handle.close()
        path = Path(handle.name)
        await asyncio.to_thread(write_parquet, jobs.result_pages(job.id), path)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as file:
                while block := file.read(1 << 20):
                    yield block

        return StreamingResponse(
            _pages_off_loop(chunks()),
            media_type=FORMATS[chosen],
            headers=headers,
            background=BackgroundTask(path.unlink, missing_ok=True),
        )
    encode = jsonl_chunks if chosen == "jsonl" else csv_chunks
    return StreamingResponse(
        _pages_off_loop(encode(jobs.result_pages(job.id))),
        media_type=FORMATS[chosen],
        headers=headers,
    )
