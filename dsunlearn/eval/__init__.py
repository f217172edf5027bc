"""Generic evaluation primitives shared by every suite: sharded per-item NLL (`nll`), sharded greedy generation
(`generate`), a saved model loaded for evaluation (`saved`).

Suite-specific metrics and log formats live in `dsunlearn/suites/<suite>/`. Submodules are not imported here
so that ``import dsunlearn.eval`` stays cheap.
"""
