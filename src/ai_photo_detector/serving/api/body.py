"""Read request bodies with the size limit enforced while they stream in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.settings import ServerSettings


@dataclass
class Upload:
    data: bytes
    filename: str | None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body exceeds {limit} bytes")


async def _discard(chunks: AsyncIterator[bytes], received: int, discard: int) -> None:
    """Read and drop the rest of an over-limit body, up to ``discard`` bytes in all.

    Most HTTP clients (Python's requests and urllib, most SDKs) send the whole body before they
    read any answer. Answered early, such a client finds the connection reset and never sees
    the 413; drained, it gets it. Past ``discard`` bytes the connection is dropped instead: a
    bounded cost, paid in network reads only (nothing is kept).
    """
    async for chunk in chunks:
        received += len(chunk)
        if received > discard:
            return


async def body_chunks(request: Request, timeout_s: float) -> AsyncIterator[bytes]:
    """The body as it arrives, cut off with 408 once it has taken ``timeout_s`` in all: a slow
    client holds an event-loop wait, never a thread, and not for ever."""
    deadline = time.monotonic() + timeout_s
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), deadline - time.monotonic())
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise ApiError(
                408, "body_timeout", f"the request body did not arrive within {timeout_s:g} s"
            ) from exc
        yield chunk


async def read_limited(request: Request, limit: int, discard: int, timeout_s: float) -> bytes:
    """The whole body, refusing with 413 as soon as it passes ``limit`` bytes, and with 408
    when it takes longer than ``timeout_s``."""
    declared = request.headers.get("content-length")
    chunks = body_chunks(request, timeout_s)
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "invalid Content-Length header")
        if int(declared) > limit:
            if int(declared) <= discard:
                await _discard(chunks, 0, discard)
            raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            await _discard(chunks, size, discard)
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _is_form(request: Request) -> bool:
    """Only multipart carries files. A urlencoded "form" is what curl --data-binary sends by
    default: its body is the image itself (the bytes decide, never the content type)."""
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_uploads(
    request: Request, limit: int, discard: int, max_files: int, field: str, timeout_s: float
) -> list[Upload]:
    """Images of a request: the multipart files under ``field`` (or any field), or a raw body.

    The body is read under the size limit first, then the multipart parser works on memory, so
    no upload can grow past the limit on disk or in memory.
    """
    body = await read_limited(request, limit, discard, timeout_s)
    if not _is_form(request):
        return [Upload(body, None)]
    request._body = body  # starlette's form parser reads the cached body
    try:
        form = await request.form(max_files=max_files + 1, max_fields=max_files + 16)
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"invalid multipart body: {exc.message}") from exc
    except HTTPException as exc:  # starlette's own limits (files, fields, part size)
        detail = str(exc.detail)
        if "files" in detail.lower():
            raise ApiError(413, "too_many_files", f"at most {max_files} files per request") from exc
        raise ApiError(400, "bad_multipart", f"invalid multipart body: {detail}") from exc
    try:
        files = [v for k, v in form.multi_items() if isinstance(v, UploadFile) and k == field]
        if not files:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(400, "missing_file", f"no file in the form (expected field '{field}')")
        if len(files) > max_files:
            raise ApiError(
                413, "too_many_files", f"at most {max_files} files per request, got {len(files)}"
            )
        return [Upload(await f.read(), f.filename) for f in files]
    finally:
        await form.close()


async def read_one_image(request: Request, server: ServerSettings) -> bytes:
    """The single image of a request (multipart field ``file`` or a raw body)."""
    uploads = await read_uploads(
        request,
        server.max_upload_bytes,
        server.max_discard_bytes,
        1,
        "file",
        server.body_timeout_s,
    )
    return uploads[0].data


async def read_batch(request: Request, server: ServerSettings) -> list[Upload]:
    """The images of a batch request (repeated multipart field ``files``), up to
    ``server.max_batch_items`` of ``server.max_upload_bytes`` each."""
    return await read_uploads(
        request,
        server.max_upload_bytes * server.max_batch_items,
        server.max_discard_bytes,
        server.max_batch_items,
        "files",
        server.body_timeout_s,
    )
