"""PPO sampling throughput (env steps/s) with 1 vs 2 env runners, and with vectorized envs.

Builds a real RLlib PPO algorithm on a local Ray instance (``num_cpus=2``) and times
``sample()`` on every remote env runner at once. Envs per runner: 1 (the plain case)
and K (one LRVectorEnv whose K children train as one batch).
Run: ``python bench/ppo_sampling.py [--repeats 3] [--timesteps 60] [--k 4]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import fmt, preamble, spread, table, timed  # noqa: E402

ENV_CONFIG = {
    "task": {"dataset": "digits", "model": "mlp", "batch_size": 32, "steps": 1000, "val_subset": 128,
             "device": "cpu"},
    "controller": {"action_every": 10},
}


def sample_rates(runners: int, envs_per_runner: int, timesteps: int, repeats: int) -> list[float]:
    """Env steps/s over all runners sampling ``timesteps`` each, in parallel."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from lrservice.control.vector_env import register_vector_env

    config = (PPOConfig()
              .environment(register_vector_env(), env_config=ENV_CONFIG)
              .env_runners(num_env_runners=runners, num_envs_per_env_runner=envs_per_runner,
                           num_cpus_per_env_runner=1, gym_env_vectorize_mode="vector_entry_point",
                           rollout_fragment_length=max(1, timesteps // envs_per_runner))
              .learners(num_learners=0)
              .training(train_batch_size=timesteps * runners, minibatch_size=timesteps)
              .rl_module(model_config={"fcnet_hiddens": [32, 32]}))
    algo = config.build_algo()
    group = algo.env_runner_group

    def sample(runner):
        import torch

        torch.set_num_threads(1)
        return sum(len(e) for e in runner.sample(num_timesteps=timesteps, random_actions=False))

    try:
        group.foreach_env_runner(sample, local_env_runner=False)  # warm-up: data, modules, first reset
        rates = []
        for _ in range(repeats):
            counts = []
            seconds = timed(lambda: counts.extend(group.foreach_env_runner(sample, local_env_runner=False)))
            rates.append(sum(counts) / seconds)
        return rates
    finally:
        algo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=60, help="env steps per runner per sample")
    parser.add_argument("--k", type=int, default=4, help="envs per runner in the vectorized rows")
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    preamble("PPO sampling throughput, 1 vs 2 env runners (digits, mlp, action_every 10)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows, results = [], {}
        for runners, k in [(1, 1), (2, 1), (1, args.k), (2, args.k)]:
            print(f"[lrservice] {runners} runner(s) x {k} env(s) ...", flush=True)
            results[runners, k] = sample_rates(runners, k, args.timesteps, args.repeats)
        for (runners, k), rates in results.items():
            scale = [r / b for r, b in zip(rates, results[1, 1])]
            rows.append([runners, k, fmt(spread(rates)), fmt(spread(scale), 2)])
    finally:
        ray.shutdown()
    print(table(["env runners", "envs per runner", "env steps/s", "vs 1 runner x 1 env"], rows))
    print("[lrservice] figures: median [min-max] over repeats; one env step = 10 child steps + observe()")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
