"""``synthmed study``: the whole protocol (prepare -> train -> sample -> evaluate -> downstream -> report)
as resumable work units that several workers can share.

Study folder layout (``--out STUDY``; every path is relative to it)::

    STUDY/study.yaml                     the resolved study configuration (strict; written by the first run;
                                         a rerun with another configuration is refused)
    STUDY/.study.lock                    flock held while the first worker writes study.yaml and plan.json
    STUDY/plan.json                      every work unit: {"id", "kind", "needs": [unit ids], "output", "slice"}
                                         and the protocol ("fixed_validation" or "folds")
    STUDY/prepared/                      unit "prepare": the prepared dataset (absent when data.prepared names
                                         an existing prepared folder; plan.json then records that path)
    STUDY/slices/<slice>/manifest.json   unit "slice-<slice>": the sub-manifest of one real-set size and seed
                                         (and fold): train = exactly the real cases the arm trains on (and
                                         the generator sees), val = the real validation cases used for model
                                         selection (also its one fold's held-out part), test = the real test
                                         cases; case caches point into the prepared folder. <slice> is
                                         "r<size>-s<seed>" (fixed_validation) or "r<size>-s<seed>-f<fold>" (folds)
    STUDY/generators/<gen>/<slice>/      unit "train-<gen>-<slice>": a synthmed train run folder
                                         (config.yaml, checkpoints/, metrics.jsonl, plots/losses.png, ...)
    STUDY/synthetic/<gen>/<slice>/       unit "sample-<gen>-<slice>": a synthmed sample folder
                                         (imagesTr/, labelsTr/, card.json with trained_on_case_ids)
    STUDY/evaluation/<gen>/<slice>/      unit "evaluate-<gen>-<slice>": a synthmed evaluate folder
                                         (metrics.json, plots/)
    STUDY/downstream/<slice>/            unit "downstream-<slice>": a synthmed downstream folder
                                         (results.json, per_case.csv, summary.csv, arms/, plots/)
    STUDY/units/<unit id>.json           written last (atomically) when a unit finished: id, kind, wall_s,
                                         host, pid, finished (ISO time). Only units with this file count as
                                         finished: a rerun skips them; aggregation and the report read only them
    STUDY/units/<unit id>.failed.json    the error of a unit that failed (a rerun retries it)
    STUDY/locks/<unit id>.lock           a worker's lock on a unit (fcntl lock held while it runs; the file
                                         names the owner's pid and host). A dead worker's lock is free again
    STUDY/results.json                   unit "aggregate": per real-set size, per arm, Dice per test case (mean
                                         over seeds/folds), signed effects against real-only and against
                                         real + augmentation with bootstrap CIs, Wilcoxon p, Holm, the
                                         verdict sentences, the fidelity headline per generator, the protocol,
                                         the wall time per stage, the downstream's budget record
    STUDY/summary.csv                    the same table, one row per (real size, arm, baseline)
    STUDY/report.html                    unit "report": synthmed.report.write_report(STUDY) (until that stage is
                                         merged: a plain page of the verdicts)
"""
