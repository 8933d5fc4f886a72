"""Locust load test for users: `locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000`.

Set APD_API_KEY to send a key. Photos are made from scikit-image's sample photographs.
"""

from __future__ import annotations

import os

from locust import HttpUser, between, task

from benchmarks.photos import sample_photo

PHOTOS = [sample_photo(1024, 1024, i) for i in range(4)] + [sample_photo(2048, 1536, 0)]


class Marketplace(HttpUser):
    weight = 20  # marketplace clients far outnumber reviewers
    wait_time = between(0.0, 0.2)

    def on_start(self) -> None:
        key = os.environ.get("APD_API_KEY")
        self.headers = {"content-type": "image/jpeg", **({"X-API-Key": key} if key else {})}
        self.turn = 0

    @task(10)
    def predict(self) -> None:
        self.turn += 1
        self.client.post("/v1/predict", data=PHOTOS[self.turn % len(PHOTOS)], headers=self.headers)

    @task(1)
    def batch(self) -> None:
        files = [("files", (f"{i}.jpg", photo, "image/jpeg")) for i, photo in enumerate(PHOTOS[:4])]
        headers = {k: v for k, v in self.headers.items() if k != "content-type"}
        self.client.post("/v1/predict/batch", files=files, headers=headers)


class Reviewer(HttpUser):
    """A trust-and-safety reviewer opening flagged photos in the review page: far fewer than
    the marketplace's calls, each an explanation."""

    weight = 1
    wait_time = between(2.0, 5.0)

    def on_start(self) -> None:
        key = os.environ.get("APD_API_KEY")
        self.headers = {"content-type": "image/jpeg", **({"X-API-Key": key} if key else {})}
        self.turn = 0

    @task
    def explain(self) -> None:
        self.turn += 1
        self.client.post("/v1/explain", data=PHOTOS[self.turn % len(PHOTOS)], headers=self.headers)
