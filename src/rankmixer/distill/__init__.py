"""External distillation (ExFM): the jobs around a teacher and its students.

* :mod:`.teacher_log`: the inference job: each row scored by the teacher as served when the
  row was logged (a day snapshot of a streamed teacher run, ``staleness`` days older);
* :mod:`.augment`: the data-augmentation job: logged predictions joined to student rows by
  request id, Parquet out.

The student itself is the ``exfm`` model (rankmixer.models.exfm).
"""
