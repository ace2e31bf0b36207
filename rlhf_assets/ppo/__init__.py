"""Our PPO for RLHF, faithful to trlx's AcceleratePPOTrainer (examples/hh); imports neither dagster nor boto3."""
