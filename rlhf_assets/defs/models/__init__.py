"""The models domain: the base model, SFT, the reward model and judge, and the PPO and DPO policies."""
