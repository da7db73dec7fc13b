"""The load of bench/serving.py: locust users posting prepared JSON bodies back to back.

Run by `locust -f bench/locustfile_serving.py --headless ...` as a process of its own (locust
monkeypatches with gevent: never imported by our processes). Read from the environment:
`BENCH_SERVING_BODIES` (a JSON list of request bodies, each a JSON text), `BENCH_SERVING_PATH`
(`/predict` or `/invocations`) and `BENCH_SERVING_OUT`, where at the end it writes every request's
end time, latency (ms, unrounded), success, and the model version our service named in its
`x-model-version` header. Any status but 200 is a failure.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

BODIES = [body.encode() for body in json.loads(Path(os.environ["BENCH_SERVING_BODIES"]).read_text())]
PATH = os.environ.get("BENCH_SERVING_PATH", "/predict")
OUT = Path(os.environ["BENCH_SERVING_OUT"])
HEADERS = {"content-type": "application/json"}

answered: list[tuple[float, float, bool, str | None]] = []  # end time, ms, ok, x-model-version
_written = False


class Client(FastHttpUser):
    wait_time = constant(0)  # closed loop: each user sends its next request when the last is answered

    def on_start(self) -> None:
        self.next = random.randrange(len(BODIES))

    @task
    def predict(self) -> None:
        body = BODIES[self.next]
        self.next = (self.next + 1) % len(BODIES)
        started = time.perf_counter()
        with self.client.post(PATH, data=body, headers=HEADERS, name=PATH, catch_response=True) as response:
            ms = (time.perf_counter() - started) * 1000
            ok = response.status_code == 200
            version = response.headers.get("x-model-version") if ok and response.headers else None
            answered.append((time.time(), ms, ok, version))
            if not ok:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")


def _write(**_: Any) -> None:
    global _written
    if not _written:
        _written = True
        OUT.write_text(json.dumps(answered))


events.test_stop.add_listener(_write)
events.quitting.add_listener(_write)
