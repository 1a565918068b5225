"""The learner's metric names (TensorBoard tags), as constants: what `Learner.update` returns."""

POLICY_LOSS = "learner/policy_loss"
VALUE_LOSS = "learner/value_loss"
ENTROPY = "learner/entropy"
CLIP_FRACTION = "learner/clip_fraction"
APPROX_KL = "learner/approx_kl"
GRAD_NORM = "learner/grad_norm"
REWARD_EXTRINSIC_MEAN = "learner/reward_extrinsic_mean"
REWARD_INTRINSIC_MEAN = "learner/reward_intrinsic_mean"
POLICY_LAG = "perf/policy_lag"  # updates between the weights that acted and these
POLICY_LAG_MAX = "perf/policy_lag_max"
SAMPLES_PER_S = "perf/learner_samples_per_s"
# Fragments an update left out: their worker process died before the learner could map the
# shared memory holding their observations (actors/observation_slots.py). Absent when none.
FRAGMENTS_LOST = "learner/fragments_lost"
# The learner process's memory at one point of every update, its end (after the optimiser step),
# in MB: RSS, and glibc's live malloc heap (absent off glibc). learner/memory_stats.py.
RSS_MB = "learner/rss_mb"
HEAP_MB = "learner/heap_mb"
RETURN_INTRINSIC = "episode/return_intrinsic"  # mean over the episodes an update finished
