"""Generic evaluation primitives shared by every suite: sharded per-item NLL and sharded greedy generation.

Suite-specific metrics and log formats live in `dsunlearn/suites/<suite>/`. Submodules are not imported here
so that ``import dsunlearn.eval`` stays cheap.
"""
