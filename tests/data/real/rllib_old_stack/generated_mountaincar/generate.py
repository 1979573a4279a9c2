"""Regenerate progress.csv here (GENERATED, not someone else's log): a real RLlib old-API-stack run.

    python tests/data/real/rllib_old_stack/generated_mountaincar/generate.py /tmp/out

PPO on MountainCar-v0 (200-step episodes) with 64-step train batches: no
episode finishes in the first three iterations, so RLlib reports NaN
returns there, as every RLlib log of long episodes starts. Ray 2.60, torch
2.13 (CPU); about 10 s. Copy <out>/old_stack/PPO_*/progress.csv here.
"""

import sys

import ray
from ray import tune
from ray.rllib.algorithms.ppo import PPOConfig

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/scan_old_stack"
ray.init(num_cpus=1, include_dashboard=False)
cfg = (PPOConfig()
       .api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
       .environment("MountainCar-v0")
       .env_runners(num_env_runners=0, rollout_fragment_length=64)
       .training(train_batch_size=64, minibatch_size=32, num_epochs=2)
       .debugging(seed=0))
tune.Tuner("PPO", param_space=cfg.to_dict(),
           run_config=tune.RunConfig(storage_path=out, name="old_stack", stop={"training_iteration": 12},
                                     verbose=0)).fit()
