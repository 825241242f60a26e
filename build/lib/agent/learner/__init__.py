"""The learner: the training loop (`trainer`), its rollout buffer (`rollout`), PPO's and A2C's maths
(`ppo`) and the reconstruction side of the loss (`recon`)."""
