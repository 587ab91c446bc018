"""Every tag sslray writes on an MLflow run, in one place: the search, the comparison, the finals,
a distillation and the report read and write runs by these names.

    run                     tags
    a search's parent run   ROLE = search, SEARCH (its name), OVERRIDES, SPACE_FILE
    a trial's run           TRIAL_ID (the Tune trial id), SEARCHED (the searched paths, ", "-joined),
                            CHECKPOINT (its latest), OUTCOME and STOP_REASON (when it ended);
                            under PBT, segment(epoch) for each segment after the first
    a comparison's run      ROLE = compare, ARMS
    a final's run           ROLE = final, FINAL ("<arm>/seed<seed>"), ARM; the trial tags above
    a distillation's run    ROLE = distill, TEACHER (as given)
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
SEGMENT = "sslray.segment."  # + the epoch a PBT segment starts at: {"parent": trial id, "values": its config}


def segment(start_epoch: int) -> str:
    """The tag of a PBT trial's segment that began (from another trial's checkpoint) at this epoch."""
    return f"{SEGMENT}{start_epoch}"

ALL = (ROLE, SEARCH, OVERRIDES, SPACE_FILE, TRIAL_ID, SEARCHED, CHECKPOINT, OUTCOME, STOP_REASON, FINAL, ARM, ARMS,
       TEACHER, SEGMENT)
