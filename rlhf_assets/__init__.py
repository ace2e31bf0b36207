"""rlhf-assets: the RLHF recipe (data -> SFT -> reward model -> PPO -> evaluation) as a Dagster asset graph."""
