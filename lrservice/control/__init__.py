"""The learned LR controller (1909.09712): gymnasium env, RLlib PPO, trained-controller inference."""
