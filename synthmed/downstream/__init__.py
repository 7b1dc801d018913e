"""Downstream benchmark: does synthetic data improve segmentation of real held-out cases?

Entry points: `run_downstream` (synthmed.downstream.benchmark), `load_downstream_config`
(synthmed.downstream.config), and `add_downstream_parser` (synthmed.downstream.cli).
"""
