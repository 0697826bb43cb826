"""ecqx-bench experiment plumbing: configs, data, models, training, tracking, search, reports."""
