"""Export stage: hand synthmed's data to other tools.

`synthmed export nnunet` (`synthmed.export.nnunet.export_nnunet`) writes a ready-to-train nnU-Net v2
raw dataset from a prepared manifest and synthetic sets; `synthmed.export.folds` makes its
``splits_final.json``; `synthmed.export.cli` adds the ``export`` sub-command.
"""
