"""Every tag sslray writes on an MLflow run, in one place: the search, the comparison, the finals,
a distillation and the report read and write runs by these names.

    run                     tags
    a search's parent run   ROLE = search, SEARCH (its name), OVERRIDES, SPACE_FILE
    a trial's run           TRIAL_ID (the Tune trial id), SEARCHED (the searched paths, ", "-joined),
                            CHECKPOINT (its latest), OUTCOME and STOP_REASON (when it ended)
    a comparison's run      ROLE = compare, ARMS
    a final's run           ROLE = final, FINAL ("<arm>/seed<seed>"), ARM; the trial tags above
    a distillation's run    ROLE = distill, TEACHER (as given)
    a PBT trial's run       segment(start): each later segment's parent and values
"""

ROLE = "sslray.role"  # search | compare | final | distill
SEARCH = "sslray.search"
OVERRIDES = "sslray.overrides"
SPACE_FILE = "sslray.space_file"
TRIAL_ID = "sslray.trial_id"  # a resumed search finds and continues a trial's run by it
SEARCHED = "sslray.searched"
CHECKPOINT = "sslray.checkpoint"
OUTCOME = "sslray.outcome"  # finished | asha | collapsed | diverged | failed: set once a run has ended
STOP_REASON = "sslray.stop_reason"
FINAL = "sslray.final"  # a resumed comparison finds its finals' runs by it
ARM = "sslray.arm"
ARMS = "sslray.arms"
TEACHER = "sslray.teacher"

SEGMENT_PREFIX = "sslray.segment."


def segment(start: int) -> str:
    """The tag of a trial's segment that starts at epoch ``start`` (PBT: the trial went on from
    another trial's checkpoint with new values)."""
    return f"{SEGMENT_PREFIX}{start}"


ALL = (ROLE, SEARCH, OVERRIDES, SPACE_FILE, TRIAL_ID, SEARCHED, CHECKPOINT, OUTCOME, STOP_REASON, FINAL, ARM, ARMS,
       TEACHER)
