"""`effbench fleet`: many submissions (or shards of one) on a Ray cluster, each task exactly
`effbench run` (effbench/runner.py) in a folder every node can reach.

layout.py: FLEET_OUT's files and each submission's state; task.py: what one Ray task does;
driver.py: validation, scheduling, retries and the ranking; plan.py: the slot-hours plan and the
split of one suite into shards; merge.py: the shards' results.json as one.
"""
