"""The live decision path: exchange events in, the offline store's features computed incrementally, every
market whose observation changed decided in one forward pass of the production model, decisions out.

`live.sources` turns a recording or the recorder's PostgreSQL tables into arrival batches of source rows,
`live.decisions` holds the paper positions and the batched policy call, `live.runner` is the loop behind
`kfs live`. The features come from `features.events.FeatureBuilder`, the very code that builds the offline
store, so the two cannot drift apart (tests/live/test_parity.py compares them row for row).
"""
