"""driftloop's flows: wiring only; the work is in tasks/."""

import tasks  # noqa: F401  (first: its OpenMP policy must be set before anything loads scikit-learn)
