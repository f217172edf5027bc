"""engine: everything that calls DeepSpeed (set-up, shards, checkpoints, deltas, the process group).

DeepSpeed reads DS_ACCELERATOR once, when it is first imported; every engine module is imported through this
package, so selecting it here comes first.
"""

from dsunlearn.engine.process_group import select_accelerator

select_accelerator()
