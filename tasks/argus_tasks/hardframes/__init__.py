"""The hard-frame flywheel: frames the generators keep getting wrong, grouped, versioned and fed back.

* :mod:`.groups`: the metadata a user reads a hard frame by (sequence, dominant classes, capture-time
  bucket, brightness bucket) and the group summaries;
* :mod:`.selection`: pure selection of the frames repeatedly in the worst fraction over the last N
  evaluations;
* :mod:`.history`: where those evaluations come from (the per-frame score files of past runs, found
  through a small index in the store);
* :mod:`.versioning`: content-hashed hard sets under ``<store>/hardsets/<condition>/`` and the
  ``latest`` pointer;
* :mod:`.sampling`: the weights with which ``train`` oversamples frames like the hard ones;
* :mod:`.gallery`: the static HTML page a person looks at.

The step is ``argus-task hard-frames`` (:mod:`argus_tasks.steps.hard_frames`).
"""
