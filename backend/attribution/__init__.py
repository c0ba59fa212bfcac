"""Attribution methods behind one interface: each turns a run into scores [n_test, n_train].

A method is a class with a `name`, its `config` and `models` (JSON, recorded in meta.json), and two
steps: `prepare(progress)` (train or load what scoring needs) and `score(rows)` (float32 scores of the
test targets `rows` against every training image; positive = the image raises the target's margin).
`backend.attribution.compute.attribute` runs any of them in resumable blocks and stores the result.
"""
