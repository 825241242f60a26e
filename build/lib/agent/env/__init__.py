"""The environment: the vector env the learner and the evaluator step (`game`), the single env that
renders and shows its RAM (`single`), the evaluation protocol (`protocol`), the reference scores
(`scores`) and KungFuMaster's RAM map, read for measuring only (`ram`)."""
