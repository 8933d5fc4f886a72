"""The micro-batcher: lone images inferred where they were decoded, others batched."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.serving.engine import MicroBatcher

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default"


SIZE = load_bundle(SHIPPED).manifest.preprocessing.input_size


def _batcher() -> MicroBatcher:
    return MicroBatcher(OnnxDetector(load_bundle(SHIPPED)), 8, 0.004, 16)


def _images(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (count, 3, SIZE, SIZE)).astype(np.float32)


def test_a_lone_image_is_inferred_in_place_with_the_batched_answer() -> None:
    batcher = _batcher()
    image = _images(1)[0]
    ticket = batcher.admit()
    alone = batcher.run_alone(image)
    assert alone is not None and alone.batch_size == 1 and alone.queue_ms == 0.0
    expected = batcher.detector.run(image[None])
    np.testing.assert_allclose(alone.logits, expected.logits[0], atol=1e-5)
    np.testing.assert_allclose(alone.embedding, expected.embedding[0], atol=1e-5)
    batcher.release(ticket)


def test_company_or_a_busy_model_sends_the_image_through_the_queue() -> None:
    batcher = _batcher()
    image = _images(1)[0]
    tickets = [batcher.admit(), batcher.admit()]
    assert batcher.run_alone(image) is None  # another image is admitted: batch them
    batcher.release(tickets.pop())
    with batcher._model_lock:  # a batch is running
        assert batcher.run_alone(image) is None
    assert batcher.run_alone(image) is not None
    batcher.release(tickets.pop())


def test_queued_images_are_batched_and_answered_in_order() -> None:
    images = _images(6)

    async def scenario() -> list[np.ndarray]:
        batcher = _batcher()
        batcher.start()
        tickets = [batcher.admit() for _ in images]
        results = await asyncio.gather(
            *(batcher.submit(image, ticket) for image, ticket in zip(images, tickets, strict=True))
        )
        await batcher.stop()
        assert max(r.batch_size for r in results) > 1 and batcher.pending == 0
        return [r.logits for r in results]

    logits = asyncio.run(scenario())
    expected = OnnxDetector(load_bundle(SHIPPED)).run(images).logits
    np.testing.assert_allclose(np.stack(logits), expected, atol=1e-4)


def test_stopping_answers_every_image_it_holds_and_admits_nothing_more() -> None:
    """A model retired while its loop holds an image (taken off the queue, waiting for company
    from images still decoding) answers it with a retry-later error instead of leaving its
    request waiting forever; afterwards it admits and queues nothing."""
    from ai_photo_detector.errors import Overloaded
    from ai_photo_detector.serving.engine import Ticket

    image = _images(1)[0]

    async def scenario() -> tuple[BaseException | None, int, list[str]]:
        batcher = MicroBatcher(OnnxDetector(load_bundle(SHIPPED)), 8, 30.0, 16)
        batcher.start()
        tickets = [batcher.admit() for _ in range(3)]  # two of them still "decoding"
        answer = asyncio.ensure_future(batcher.submit(image, tickets[0]))
        while batcher.depth:  # the loop takes it and waits up to 30 s for the other two
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await batcher.stop()
        await asyncio.wait({answer}, timeout=5)  # answered, not left waiting
        assert answer.done()
        refused = []
        for attempt in (batcher.admit, lambda: batcher.submit(image, Ticket())):
            try:
                outcome = attempt()
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Overloaded as exc:
                refused.append(exc.message)
        return answer.exception(), batcher.pending, refused

    error, pending, refused = asyncio.run(scenario())
    assert isinstance(error, Exception) and "shutting down" in str(error)
    assert pending == 2  # its own ticket released; the decoding two release theirs
    assert refused == ["the model is shutting down"] * 2


class _InstantDetector:
    """Answers at once: the race below is between the event loop's steps, not inference."""

    def run(self, batch: np.ndarray, with_features: bool = False):  # type: ignore[no-untyped-def]
        from ai_photo_detector.model.inference import BatchOutput

        rows = len(batch)
        return BatchOutput(np.zeros((rows, 2), np.float32), np.zeros((rows, 4), np.float32))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("steps", range(6))
def test_stop_returns_when_an_image_arrives_just_before_it(steps: int) -> None:
    """An image queued a few event-loop steps before stop(), while the loop waits for company:
    with asyncio.wait_for on Python 3.11 the cancellation could be swallowed and stop() never
    returned. Every image is answered and stop() returns at once, whatever the interleaving."""

    async def scenario() -> tuple[bool, bool]:
        batcher = MicroBatcher(_InstantDetector(), 8, 30.0, 16)  # type: ignore[arg-type]
        batcher.start()
        tickets = [batcher.admit() for _ in range(3)]
        first = asyncio.ensure_future(batcher.submit(np.zeros(3, np.float32), tickets[0]))
        while batcher.depth:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)  # the loop now waits up to 30 s for company
        second = asyncio.ensure_future(batcher.submit(np.zeros(3, np.float32), tickets[1]))
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(batcher.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)
        await asyncio.wait({first, second}, timeout=5)
        return bool(done), first.done() and second.done()

    stopped, answered = asyncio.run(scenario())
    assert stopped and answered
